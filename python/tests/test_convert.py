"""The converters (linformer.convert, docs/convert.md) on real peer checkpoints made by the peers' own
code (tests/data/peers/, scripts/make_peer_checkpoints.py): our logits against the peer's, the round
trip back to lucidrains, bad input refused naming the key, and `linformer convert --from` end to end.
No torch needed except where a test says so."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="the converters read .safetensors with it")
from safetensors import safe_open  # noqa: E402

import linformer  # noqa: E402
from linformer import convert  # noqa: E402
from linformer.convert import ConversionError  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
PEERS = REPO / "tests" / "data" / "peers"
CASES = {"lucidrains": ["headwise", "share_kv_one_kv_head"],
         "tatp22": ["layerwise", "none", "kv", "convolution_headwise"],
         "fairseq": ["roberta_post_ln", "shared_kv_pre_ln", "layerwise"]}


def expected(peer, case):
    path = PEERS / peer / f"{case}.expected.safetensors"
    with safe_open(str(path), framework="np") as f:
        spec = json.loads(f.metadata()["spec"])
        return spec, f.get_tensor("tokens"), f.get_tensor("logits")


def state_dict(peer, case):
    return safetensors_numpy.load_file(str(PEERS / peer / f"{case}.safetensors"))


def convert_case(peer, case, out, source=None):
    spec, _, _ = expected(peer, case)
    source = PEERS / peer / f"{case}.safetensors" if source is None else source
    if peer == "lucidrains":
        return convert.from_lucidrains(source, out, heads=spec["heads"])
    if peer == "tatp22":
        return convert.from_tatp22(source, out, input_size=spec["input_size"])
    return convert.from_fairseq(source, out, **spec)


def assert_logits_match(out, tokens, logits):
    ours = linformer.Model.from_checkpoint(str(out)).forward(tokens.astype(np.int64))
    assert ours.shape == logits.shape
    # float32 on both sides: the difference is rounding, far below the logits' scale
    np.testing.assert_allclose(ours, logits, rtol=1e-5, atol=1e-5 * float(np.abs(logits).max()))


@pytest.mark.parametrize("peer,case", [(p, c) for p, cs in CASES.items() for c in cs])
def test_peer_logits(peer, case, tmp_path):
    config = convert_case(peer, case, tmp_path / "ckpt")
    _, tokens, logits = expected(peer, case)
    assert_logits_match(tmp_path / "ckpt", tokens, logits)
    written = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert written == config


def test_options_read_from_each_peer(tmp_path):
    """What each layout becomes in our config (docs/convert.md's tables)."""
    opts = lambda peer, case: convert_case(peer, case, tmp_path / f"{peer}-{case}")["attention"][0]["options"]
    assert opts("lucidrains", "headwise")["sharing"] == "headwise"
    o = opts("lucidrains", "share_kv_one_kv_head")
    assert (o["sharing"], o["share_kv_linear"], o["one_kv_head"], o["dim_head"]) == ("kv", True, True, 5)
    assert [opts("tatp22", c)["sharing"] for c in ("layerwise", "none", "kv")] == ["layerwise", "none", "kv"]
    assert opts("tatp22", "convolution_headwise")["projection"] == "conv_full"
    c = convert_case("tatp22", "layerwise", tmp_path / "t")
    assert (c["pre_ln"], c["embedding_norm"], c["output_head"]) == (False, False, "linear")
    assert "embedding_norm" not in convert_case("fairseq", "roberta_post_ln", tmp_path / "f")  # the default
    o = opts("fairseq", "roberta_post_ln")
    assert (o["order"], o["qkv_bias"], o["sharing"]) == ("compress_first", True, "headwise")
    assert opts("fairseq", "shared_kv_pre_ln")["sharing"] == "kv"
    assert opts("fairseq", "layerwise")["sharing"] == "layerwise"


def test_fairseq_checkpoint_dict_carries_its_args(tmp_path):
    """A fairseq checkpoint {"model": ..., "args": ...}: the args come from it, nothing passed."""
    args = json.loads((PEERS / "fairseq" / "roberta_post_ln.args.json").read_text())
    convert.from_fairseq({"model": state_dict("fairseq", "roberta_post_ln"), "args": args}, tmp_path / "c")
    _, tokens, logits = expected("fairseq", "roberta_post_ln")
    assert_logits_match(tmp_path / "c", tokens, logits)
    with pytest.raises(ConversionError, match="encoder_attention_heads"):
        convert.from_fairseq(state_dict("fairseq", "roberta_post_ln"), tmp_path / "d")


def test_in_memory_dict_and_overwrite(tmp_path):
    sd = state_dict("lucidrains", "headwise")
    convert.from_lucidrains(sd, tmp_path / "c", heads=2)
    with pytest.raises(ConversionError, match="not empty"):
        convert.from_lucidrains(sd, tmp_path / "c", heads=2)
    convert.from_lucidrains(sd, tmp_path / "c", heads=2, overwrite=True)
    with pytest.raises(ConversionError, match="heads"):
        convert.from_lucidrains(sd, tmp_path / "d")


def test_round_trip_to_lucidrains_arrays(tmp_path):
    """ours -> lucidrains gives back the peer's own arrays, bit for bit (float32 both ways)."""
    for case in CASES["lucidrains"]:
        sd = state_dict("lucidrains", case)
        convert_case("lucidrains", case, tmp_path / case)
        back = convert.to_lucidrains(tmp_path / case, as_torch=False)
        assert sorted(back) == sorted(sd)
        for k in sd:
            assert back[k].dtype == np.float32 and back[k].shape == sd[k].shape, k
            np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
        spec, _, _ = expected("lucidrains", case)
        assert convert.lucidrains_kwargs(tmp_path / case) == {"dim_head": 16 // spec["heads"], "one_kv_head": False,
                                                              "share_kv": False, **spec}


def test_to_lucidrains_refuses_what_linformerlm_cannot_hold(tmp_path):
    convert_case("fairseq", "roberta_post_ln", tmp_path / "f")
    with pytest.raises(ConversionError) as e:
        convert.to_lucidrains(tmp_path / "f")
    assert e.value.key == "config.pre_ln"
    convert_case("tatp22", "layerwise", tmp_path / "t")
    with pytest.raises(ConversionError) as e:
        convert.to_lucidrains(tmp_path / "t")
    assert e.value.key == "config.pre_ln"


def test_pt_file_needs_torch(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails, as without torch
    with pytest.raises(ConversionError, match="needs torch"):
        convert.from_lucidrains(PEERS / "lucidrains" / "headwise.pt", tmp_path / "c", heads=2)


def test_pt_file_with_torch(tmp_path):
    torch = pytest.importorskip("torch", reason="reading a .pt state dict needs torch")
    convert.from_lucidrains(PEERS / "lucidrains" / "headwise.pt", tmp_path / "c", heads=2)
    _, tokens, logits = expected("lucidrains", "headwise")
    assert_logits_match(tmp_path / "c", tokens, logits)
    # torch tensors in memory too, and to_lucidrains hands torch tensors back with the .pt's keys
    sd = torch.load(PEERS / "lucidrains" / "headwise.pt", weights_only=True)
    convert.from_lucidrains(sd, tmp_path / "d", heads=2)
    back = convert.to_lucidrains(tmp_path / "d")
    assert sorted(back) == sorted(sd)
    for k, v in sd.items():
        assert isinstance(back[k], torch.Tensor) and torch.equal(back[k], v), k


def test_round_trip_loads_into_lucidrains_linformerlm(tmp_path):
    """load_state_dict into lucidrains' LinformerLM and compare its logits with the stored ones. Its
    package is also named `linformer`, so it runs in the interpreter LINFORMER_PEER_PYTHON names (one
    with torch and lucidrains' linformer, e.g. scripts/requirements-peers.txt)."""
    peer_python = os.environ.get("LINFORMER_PEER_PYTHON")
    if not peer_python:
        pytest.skip("LINFORMER_PEER_PYTHON (an interpreter with torch and lucidrains' linformer) is not set")
    for case in CASES["lucidrains"]:
        convert_case("lucidrains", case, tmp_path / case)
        back = convert.to_lucidrains(tmp_path / case, as_torch=False)
        safetensors_numpy.save_file(back, str(tmp_path / f"{case}.back.safetensors"))
        kwargs = convert.lucidrains_kwargs(tmp_path / case)
        script = (
            "import json, sys, torch\n"
            "from linformer import LinformerLM\n"
            "from safetensors.torch import load_file\n"
            "m = LinformerLM(**json.loads(sys.argv[1])).eval()\n"
            "m.load_state_dict(load_file(sys.argv[2]))\n"
            "e = load_file(sys.argv[3])\n"
            "print(float((m(e['tokens'].long()) - e['logits']).abs().max()))\n")
        r = subprocess.run([peer_python, "-c", script, json.dumps(kwargs), str(tmp_path / f"{case}.back.safetensors"),
                            str(PEERS / "lucidrains" / f"{case}.expected.safetensors")],
                           capture_output=True, text=True, timeout=300,
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})  # its own `linformer`
        assert r.returncode == 0, r.stderr
        assert float(r.stdout.strip().splitlines()[-1]) == 0.0  # the same weights in the same code


# --- bad input: the exception names the key ---------------------------------------------------------
def refused(fn, key, match=None):
    with pytest.raises(ConversionError) as e:
        fn()
    assert e.value.key == key, str(e.value)
    assert key in str(e.value)
    if match:
        assert match in str(e.value), str(e.value)
    return e.value


def test_bad_lucidrains_state_dicts(tmp_path):
    base = state_dict("lucidrains", "headwise")
    run = lambda sd: (lambda: convert.from_lucidrains(sd, tmp_path / "c", heads=2))
    refused(run({**base, "linformer.net.layers.0.0.fn.extra": base["pos_emb.weight"]}),
            "linformer.net.layers.0.0.fn.extra", "unknown key")
    missing = dict(base)
    del missing["linformer.net.layers.1.0.fn.to_out.bias"]
    refused(run(missing), "linformer.net.layers.1.0.fn.to_out.bias", "missing")
    refused(run({**base, "to_logits.bias": base["to_logits.bias"][:-1]}), "to_logits.bias", "shape")
    refused(run({**base, "pos_emb.weight": base["pos_emb.weight"].astype(np.int32)}), "pos_emb.weight", "dtype")
    refused(run({**base, "linformer.net.blocks.0.f.net.fn.to_q.weight": base["pos_emb.weight"]}),
            "linformer.net.blocks.0.f.net.fn.to_q.weight", "reversible")
    refused(run({k[len("linformer."):]: v for k, v in base.items() if k.startswith("linformer.")}),
            "net.layers.0.0.fn.proj_k", "LinformerLM")
    with pytest.raises(ConversionError, match="heads=3"):
        convert.from_lucidrains(base, tmp_path / "c", heads=3)
    assert not (tmp_path / "c").exists()  # nothing written on a refusal


def test_lucidrains_layer_tensors():
    base = state_dict("lucidrains", "headwise")
    layers = convert.lucidrains_layer_tensors({k[len("linformer."):]: v for k, v in base.items()
                                               if k.startswith("linformer.")})
    np.testing.assert_array_equal(layers["layers.1.attn.proj_k"], base["linformer.net.layers.1.0.fn.proj_k"].T)
    attn = convert.lucidrains_layer_tensors(base, prefix="linformer.net.layers.0.0.fn.")
    assert sorted(attn) == ["proj_k", "proj_v", "to_k.weight", "to_out.bias", "to_out.weight", "to_q.weight",
                            "to_v.weight"]


def test_bad_tatp22_state_dicts(tmp_path):
    # the peer's default: E/F are nn.Linear with a (nonzero) bias, which the engine has no place for
    refused(lambda: convert.from_tatp22(PEERS / "tatp22" / "layerwise_with_proj_bias.safetensors", tmp_path / "c"),
            "linformer.seq.0.fn.heads.0.E.bias", "nonzero bias")
    # a duplicated shared E that differs from the one it shares with
    sd = state_dict("tatp22", "layerwise")
    sd["linformer.seq.2.fn.heads.1.F.weight"] = sd["linformer.seq.2.fn.heads.1.F.weight"] + 1
    refused(lambda: convert.from_tatp22(sd, tmp_path / "c", parameter_sharing="layerwise"),
            "linformer.seq.2.fn.heads.1.F.weight", "share")
    sd = state_dict("tatp22", "layerwise")
    sd["linformer.seq.0.resample.weight"] = sd["to_logits.bias"]
    refused(lambda: convert.from_tatp22(sd, tmp_path / "c"), "linformer.seq.0.resample.weight", "ff_intermediate")
    sd = state_dict("tatp22", "layerwise")
    del sd["linformer.seq.1.fn.w_2.bias"]
    refused(lambda: convert.from_tatp22(sd, tmp_path / "c"), "linformer.seq.1.fn.w_2.bias", "missing")
    with pytest.raises(ConversionError, match="causal"):
        convert.from_tatp22(state_dict("tatp22", "layerwise"), tmp_path / "c", causal=True)
    with pytest.raises(ConversionError, match="input_size"):
        convert.from_tatp22(state_dict("tatp22", "convolution_headwise"), tmp_path / "c")


def test_bad_fairseq_state_dicts(tmp_path):
    spec, _, _ = expected("fairseq", "roberta_post_ln")
    base = state_dict("fairseq", "roberta_post_ln")
    run = lambda sd, **kw: (lambda: convert.from_fairseq(sd, tmp_path / "c", **{**spec, **kw}))
    untied = {**base, "encoder.lm_head.weight": base["encoder.lm_head.weight"] * 2}
    refused(run(untied), "encoder.lm_head.weight", "ties")
    refused(run({**base, "encoder.classification_heads.x.dense.weight": base["encoder.lm_head.bias"]}),
            "encoder.classification_heads.x.dense.weight", "classification")
    refused(run(base, activation_fn="relu"), "args.activation_fn", "GELU")
    refused(run(base, no_scale_embedding=False), "args.no_scale_embedding")
    refused(run(base, max_positions=20), "encoder.sentence_encoder.embed_positions.weight", "max_positions")
    bad = {**base, "encoder.sentence_encoder.layers.1.self_attn.compress_k.weight":
           base["encoder.sentence_encoder.layers.1.self_attn.compress_k.weight"][:, :-1]}
    refused(run(bad), "encoder.sentence_encoder.layers.1.self_attn.compress_k.weight", "columns")


# --- the command line ---------------------------------------------------------------------------------
def test_python_module_command_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "linformer.convert", "--from", "tatp22", "--input",
                        str(PEERS / "tatp22" / "kv.safetensors"), "--out", str(tmp_path / "c")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    _, tokens, logits = expected("tatp22", "kv")
    assert_logits_match(tmp_path / "c", tokens, logits)
    r = subprocess.run([sys.executable, "-m", "linformer.convert", "--from", "lucidrains", "--input",
                        str(PEERS / "lucidrains" / "headwise.safetensors"), "--out", str(tmp_path / "d")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "heads" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_cli_convert_from_end_to_end(tmp_path, cli):
    env = {**os.environ, "LINFORMER_PYTHON": sys.executable}
    r = subprocess.run([cli, "convert", "--from", "fairseq", "--input",
                        str(PEERS / "fairseq" / "shared_kv_pre_ln.safetensors"), "--out", str(tmp_path / "c"),
                        "--heads", "4"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr  # the rest of fairseq's layout is read from the state dict
    _, tokens, logits = expected("fairseq", "shared_kv_pre_ln")
    assert_logits_match(tmp_path / "c", tokens, logits)
    r = subprocess.run([cli, "convert", "--from", "lucidrains", "--input",
                        str(PEERS / "lucidrains" / "share_kv_one_kv_head.safetensors"), "--out", str(tmp_path / "l"),
                        "--heads", "4"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    _, tokens, logits = expected("lucidrains", "share_kv_one_kv_head")
    assert_logits_match(tmp_path / "l", tokens, logits)
    r = subprocess.run([cli, "info", "--checkpoint", str(tmp_path / "l")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
