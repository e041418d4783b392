"""linformer.Model: construction, forward on arrays, weights, checkpoints and the text methods, against
the engine's own results (the CLI, the engine's padding invariance) and with the errors users meet."""
import pathlib
import subprocess
import threading
import time

import numpy as np
import pytest

import linformer
from conftest import tiny_config


@pytest.fixture()
def model():
    return linformer.Model(tiny_config(), seed=3, threads=1)


def test_forward_shapes_and_dtypes(model):
    tokens = np.arange(10).reshape(2, 5)
    logits = model.forward(tokens)
    assert logits.shape == (2, 5, linformer.VOCAB_SIZE) and logits.dtype == np.float32
    assert np.isfinite(logits).all()
    # Any integer dtype and any strides give the same result; a (n,) array drops the batch axis.
    for variant in (tokens.astype(np.int32), tokens.astype(np.uint8), np.asfortranarray(tokens), tokens[:, ::1]):
        np.testing.assert_array_equal(model.forward(variant), logits)
    np.testing.assert_array_equal(model(tokens[1]), logits[1])
    logits2, hidden = model.forward(tokens, return_hidden=True)
    np.testing.assert_array_equal(logits2, logits)
    assert hidden.shape == (2, 5, 32)


def test_rows_are_independent_of_the_batch(model):
    tokens = np.array([[1, 2, 3, 4], [9, 8, 7, 6]])
    both = model.forward(tokens)
    np.testing.assert_allclose(model.forward(tokens[:1]), both[:1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.forward(tokens[1:]), both[1:], rtol=1e-5, atol=1e-5)


def test_key_padding_mask_hides_the_padding(model):
    real = np.array([[5, 6, 7, 8, 9]])
    padded = np.array([[5, 6, 7, 8, 9, linformer.PAD, linformer.PAD]])
    mask = np.array([[False] * 5 + [True] * 2])
    np.testing.assert_allclose(model.forward(padded, key_padding_mask=mask)[:, :5], model.forward(real),
                               rtol=1e-4, atol=1e-4)
    # Without the mask the padding is attended to and changes the real rows.
    assert np.abs(model.forward(padded)[:, :5] - model.forward(real)).max() > 1e-3
    np.testing.assert_array_equal(model.forward(padded, key_padding_mask=mask.astype(np.uint8)),
                                  model.forward(padded, key_padding_mask=mask))


def test_bad_arrays_raise_clear_errors(model):
    with pytest.raises(TypeError, match="integer token ids.*float32"):
        model.forward(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(batch, length\).*\(1, 2, 3\)"):
        model.forward(np.zeros((1, 2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="empty"):
        model.forward(np.zeros((2, 0), dtype=np.int64))
    with pytest.raises(linformer.InvalidArgument, match="max_len of 32"):
        model.forward(np.zeros((1, 40), dtype=np.int64))
    with pytest.raises(linformer.InvalidArgument, match="260"):
        model.forward(np.array([[1, 2, 260]]))
    with pytest.raises(ValueError, match="outside int32"):
        model.forward(np.array([[1, 2 ** 40]]))
    with pytest.raises(ValueError, match=r"shape \(1, 3\)"):
        model.forward(np.array([[1, 2, 3]]), key_padding_mask=np.zeros((1, 4), dtype=bool))
    with pytest.raises(TypeError, match="bool or integer"):
        model.forward(np.array([[1, 2, 3]]), key_padding_mask=np.zeros((1, 3), dtype=np.float32))
    # The exception classes are also the standard ones.
    assert issubclass(linformer.InvalidArgument, ValueError) and issubclass(linformer.IoError, OSError)
    assert issubclass(linformer.InvalidArgument, linformer.Error)


def test_bad_configs_are_refused_naming_the_key():
    with pytest.raises(linformer.InvalidArgument, match="d_modle"):
        linformer.Model(dict(tiny_config(), d_modle=3))
    with pytest.raises(linformer.InvalidArgument, match="n_heads"):
        linformer.Model(dict(tiny_config(), n_heads=5))
    with pytest.raises(TypeError, match="JSON-serialisable"):
        linformer.Model({"d_model": object()})
    with pytest.raises(linformer.InvalidArgument, match="precision"):
        linformer.Model(tiny_config(), precision="fp8")


def test_config_and_seed(model):
    assert model.config["attention"][0]["kind"] == "linformer" and model.config["max_len"] == 32
    assert model.task == "mlm" and model.max_len == 32 and model.d_model == 32
    again = linformer.Model(tiny_config(), seed=3)
    other = linformer.Model(tiny_config(), seed=4)
    tokens = np.arange(8)[None]
    np.testing.assert_array_equal(again.forward(tokens), model.forward(tokens))
    assert np.abs(other.forward(tokens) - model.forward(tokens)).max() > 1e-3


def test_state_dict_round_trip(model):
    sd = model.state_dict()
    assert "embeddings.token.weight" in sd and sd["embeddings.token.weight"].shape == (linformer.VOCAB_SIZE, 32)
    assert sum(v.size for v in sd.values()) == model.num_parameters
    other = linformer.Model(tiny_config(), seed=9)
    tokens = np.arange(12)[None]
    other.load_state_dict({k: v.astype(np.float64) for k, v in sd.items()})
    np.testing.assert_array_equal(other.forward(tokens), model.forward(tokens))
    # Non-contiguous arrays are read through their strides.
    other.load_state_dict({k: np.asfortranarray(v) for k, v in sd.items()})
    np.testing.assert_array_equal(other.forward(tokens), model.forward(tokens))


def test_load_state_dict_refuses_before_changing_anything(model):
    sd = model.state_dict()
    before = model.forward(np.arange(6)[None])
    with pytest.raises(linformer.InvalidArgument, match="no tensor 'extra.weight'"):
        model.load_state_dict(dict(sd, **{"extra.weight": np.zeros(3, np.float32)}))
    missing = dict(sd)
    del missing["layers.1.ffn.fc1.bias"]
    with pytest.raises(linformer.InvalidArgument, match="missing 'layers.1.ffn.fc1.bias'"):
        model.load_state_dict(missing)
    with pytest.raises(ValueError, match="embeddings.token.weight.*shape"):
        model.load_state_dict(dict(sd, **{"embeddings.token.weight": np.zeros((3, 3), np.float32)}))
    with pytest.raises(TypeError, match="float32 or float64"):
        model.load_state_dict(dict(sd, **{"embeddings.token.weight": sd["embeddings.token.weight"].astype(np.int32)}))
    np.testing.assert_array_equal(model.forward(np.arange(6)[None]), before)


def test_checkpoint_round_trip(model, tmp_path):
    model.save(str(tmp_path / "ck"))
    loaded = linformer.Model.from_checkpoint(str(tmp_path / "ck"), threads=1)
    tokens = np.arange(20).reshape(2, 10)
    np.testing.assert_array_equal(loaded.forward(tokens), model.forward(tokens))
    assert loaded.checkpoint_dir.endswith("ck") and loaded.config == model.config


def test_missing_or_corrupt_checkpoint(tmp_path):
    with pytest.raises(linformer.IoError, match="does not exist"):
        linformer.Model.from_checkpoint(str(tmp_path / "nothing"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(OSError, match="config.json"):
        linformer.Model.from_checkpoint(str(tmp_path / "bad"))


def test_encode_decode():
    ids = linformer.encode("héllo")
    assert ids.dtype == np.int32 and list(ids[:2]) == [104, 0xC3]
    assert linformer.decode(ids) == "héllo"
    assert linformer.decode([104, linformer.MASK, 105]) == "hi"


def test_predict_masked_matches_the_cli(trained_mlm, cli):
    run, _ = trained_mlm
    model = linformer.Model.from_checkpoint(str(run), threads=1)
    texts = ["The q_ick br_wn fox jumps over the l_zy dog.", "A dicti_nary defines w_rds."]
    filled = model.predict_masked(texts)
    assert isinstance(filled, list) and len(filled) == 2
    assert model.predict_masked(texts[0]) == filled[0]
    for text, ours in zip(texts, filled):
        out = subprocess.run([cli, "predict", "--checkpoint", str(run), "--text", text], capture_output=True,
                             text=True, check=True, env={"LINFORMER_NUM_THREADS": "1"})
        assert out.stdout.rstrip("\n") == ours
    assert all("_" not in f and len(f) == len(t) for f, t in zip(filled, texts))
    with pytest.raises(linformer.InvalidArgument, match="no '_' to predict"):
        model.predict_masked("no masks here")


def test_embed_is_the_pooled_hidden_state(trained_mlm):
    run, _ = trained_mlm
    model = linformer.Model.from_checkpoint(str(run), threads=1)
    text = "A dictionary defines words."
    _, hidden = model.forward(linformer.encode(text), return_hidden=True)
    np.testing.assert_allclose(model.embed(text), hidden.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.embed([text], pooling="first")[0], hidden[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.embed(text, pooling="max"), hidden.max(axis=0), rtol=1e-5, atol=1e-5)
    with pytest.raises(linformer.InvalidArgument, match="pooling"):
        model.embed(text, pooling="median")
    with pytest.raises(TypeError, match="str or a list"):
        model.embed(3)


@pytest.fixture(scope="module")
def clm_checkpoint(tmp_path_factory):
    model = linformer.Model(tiny_config(kind="causal_linformer", task="clm", max_len=64,
                                        attention={"kind": "causal_linformer", "options": {"block": 8, "slots": 2}}),
                            seed=5, threads=1)
    path = tmp_path_factory.mktemp("clm") / "ck"
    model.save(str(path))
    return path


def test_generate_matches_the_cli_and_streams(clm_checkpoint, cli):
    model = linformer.Model.from_checkpoint(str(clm_checkpoint), threads=1)
    pieces = []
    text = model.generate("The quick", max_new_tokens=40, seed=7, temperature=0, on_token=pieces.append)
    assert b"".join(pieces).decode("utf-8", errors="replace") == text
    assert len(pieces) == 40  # greedy, no stop: every token
    out = subprocess.run([cli, "generate", "--checkpoint", str(clm_checkpoint), "--prompt", "The quick",
                          "--max-new-tokens", "40", "--seed", "7", "--temperature", "0", "--quiet"],
                         capture_output=True, check=True, env={"LINFORMER_NUM_THREADS": "1"})
    assert out.stdout.decode("utf-8", errors="replace").rstrip("\n") == text.rstrip("\n")
    # Sampling is a function of the seed.
    a = model.generate("ab", max_new_tokens=30, seed=1, temperature=1.0)
    assert a == model.generate("ab", max_new_tokens=30, seed=1, temperature=1.0)
    # on_token returning False stops; an exception in it is raised after the C++ call returns.
    assert len(model.generate("ab", max_new_tokens=30, on_token=lambda p: False).encode()) <= 1

    def boom(piece):
        raise RuntimeError("stop here")
    with pytest.raises(RuntimeError, match="stop here"):
        model.generate("ab", on_token=boom)
    with pytest.raises(linformer.InvalidArgument, match="top_p"):
        model.generate("ab", top_p=2.0)


def test_generate_needs_a_causal_model(model):
    with pytest.raises(linformer.InvalidArgument, match="causal language model"):
        model.generate("ab")


def test_forward_releases_the_gil():
    big = linformer.Model(tiny_config(kind="full", max_len=1024, d_model=64, d_ff=256), threads=1)
    tokens = np.zeros((8, 1024), dtype=np.int32)
    counter = 0
    worker = threading.Thread(target=lambda: [big.forward(tokens) for _ in range(3)])
    start = time.perf_counter()
    worker.start()
    while worker.is_alive():
        counter += 1
    elapsed = time.perf_counter() - start
    # Holding the GIL for the whole call would leave this thread a few switch intervals (5 ms each).
    assert elapsed > 0.05 and counter > 10000, (elapsed, counter)


def test_type_stubs_are_installed():
    package = pathlib.Path(linformer.__file__).parent
    assert (package / "py.typed").exists()
    stubs = (package / "_core.pyi").read_text()
    assert "class Model" in stubs and "def forward(self, tokens" in stubs and "class Trainer" in stubs


def test_torch_tensors_are_accepted(model):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (CI runs without it)")
    tokens = np.arange(12).reshape(2, 6)
    np.testing.assert_array_equal(model.forward(torch.from_numpy(tokens)), model.forward(tokens))
    np.testing.assert_array_equal(model.forward(torch.from_numpy(tokens).t().contiguous().t()), model.forward(tokens))
    sd = model.state_dict()
    other = linformer.Model(tiny_config(), seed=8)
    other.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    np.testing.assert_array_equal(other.forward(tokens), model.forward(tokens))
    with pytest.raises(TypeError, match="integer token ids"):
        model.forward(torch.zeros(2, 3))
