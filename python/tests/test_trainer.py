"""linformer.Trainer and linformer.Data: training from Python on the engine's step-level trainer, the
same steps as `linformer train`, checkpoints the CLI reads, and Ctrl-C between steps."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import linformer
from conftest import tiny_config

OPTIONS = {"batch_size": 8, "seq_len": 32, "steps": 40, "warmup_steps": 4, "lr": 3e-3, "seed": 2,
           "short_seq_prob": 0.1}  # the CLI's default (the library's is 0)


def test_training_learns_and_the_model_sees_every_step(corpus):
    model = linformer.Model(tiny_config(), seed=1, threads=1)
    data = linformer.Data(str(corpus), task="mlm")
    seen = []
    trainer = linformer.Trainer(model, data, OPTIONS, callback=seen.append)
    tokens = linformer.encode("The quick brown fox")
    before = model.forward(tokens)
    first = trainer.evaluate()
    assert set(first) == {"loss", "bits_per_byte", "accuracy", "count"} and first["count"] > 0
    last = trainer.train()
    assert trainer.steps_done == 40 and last["step"] == 40 and [r["step"] for r in seen] == list(range(1, 41))
    assert set(seen[0]) == {"step", "loss", "grad_norm", "lr"}
    after = trainer.evaluate()
    assert after["loss"] < 0.6 * first["loss"], (first, after)
    # The model object is trained in place.
    assert np.abs(model.forward(tokens) - before).max() > 1e-2
    assert trainer.options["batch_size"] == 8 and trainer.options["steps"] == 40
    # train(steps) goes on past options['steps'].
    trainer.train(steps=2)
    assert trainer.steps_done == 42


def test_steps_match_the_cli(corpus, cli, tmp_path):
    """The same configuration and options give the CLI's weights after the same steps (same threads)."""
    config = tiny_config()
    (tmp_path / "config.json").write_text(json.dumps({"model": config}))
    steps = 6
    subprocess.run([cli, "train", "--config", str(tmp_path / "config.json"), "--data", str(corpus),
                    "--out", str(tmp_path / "cli"), "--batch-size", "8", "--seq-len", "32", "--steps", str(steps),
                    "--warmup", "4", "--lr", "3e-3", "--seed", "2", "--eval-batches", "1"],
                   check=True, capture_output=True, env={"LINFORMER_NUM_THREADS": "1"})
    # The CLI fills in its own recipe's defaults (docs/cli.md): train the configuration it ran.
    theirs_model = linformer.Model.from_checkpoint(str(tmp_path / "cli"), threads=1)
    ours = linformer.Model(theirs_model.config, seed=2, threads=1)  # the CLI initialises from the training seed
    trainer = linformer.Trainer(ours, linformer.Data(str(corpus)), dict(OPTIONS, steps=steps))
    trainer.train()
    theirs = theirs_model.state_dict()
    for name, value in ours.state_dict().items():
        np.testing.assert_allclose(value, theirs[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_step_on_caller_batches():
    model = linformer.Model(tiny_config(task="clm", kind="full"), seed=1, threads=1)
    trainer = linformer.Trainer(model, None, {"steps": 20, "warmup_steps": 0, "lr": 1e-2})
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 256, (4, 16))
    targets = np.roll(tokens, -1, axis=1)
    targets[:, -1] = linformer.IGNORE_INDEX
    losses = [trainer.step(tokens, targets)["loss"] for _ in range(20)]
    assert losses[-1] < 0.5 * losses[0]
    with pytest.raises(ValueError, match=r"`targets` must be \(4, 16\)"):
        trainer.step(tokens, targets[:, :5])
    with pytest.raises(linformer.InvalidArgument, match="needs `targets`"):
        trainer.step(tokens)
    with pytest.raises(linformer.InvalidArgument, match="no data"):
        trainer.step()
    with pytest.raises(linformer.InvalidArgument, match="no data"):
        trainer.evaluate()


def test_classifier_steps_take_class_ids():
    model = linformer.Model(tiny_config(task="classify", n_classes=3), seed=1, threads=1)
    trainer = linformer.Trainer(model, None, {"steps": 5, "warmup_steps": 0})
    tokens = np.arange(32).reshape(4, 8)
    trainer.step(tokens, np.array([0, 1, 2, 1]))
    with pytest.raises(ValueError, match=r"\(4,\) class ids"):
        trainer.step(tokens, np.zeros((4, 8), dtype=np.int64))
    assert model.forward(tokens).shape == (4, 3)


def test_bad_options_and_data(corpus, tmp_path):
    model = linformer.Model(tiny_config(), threads=1)
    with pytest.raises(linformer.InvalidArgument, match="unknown training option 'batchsize'"):
        linformer.Trainer(model, None, {"batchsize": 3})
    with pytest.raises(linformer.InvalidArgument, match="run_dir"):
        linformer.Trainer(model, None, {"run_dir": "x"})
    with pytest.raises(linformer.InvalidArgument, match="warmup_steps"):
        linformer.Trainer(model, None, {"steps": 10})  # the default warm-up (100) exceeds it
    with pytest.raises(linformer.IoError):
        linformer.Data(str(tmp_path / "missing.txt"))
    with pytest.raises(linformer.InvalidArgument, match="task 'clm'"):
        linformer.Trainer(model, linformer.Data(str(corpus), task="clm"), {"steps": 10, "warmup_steps": 1})
    with pytest.raises(TypeError, match="linformer.Model"):
        linformer.Trainer("model", None)
    trainer = linformer.Trainer(model, linformer.Data(str(corpus)), {"steps": 10, "warmup_steps": 1})
    with pytest.raises(linformer.InvalidArgument, match="split"):
        trainer.evaluate(split="dev")


def test_save_writes_a_checkpoint_the_cli_resumes(corpus, cli, tmp_path):
    """Saved after 4 of 8 steps and resumed by `linformer train --resume`: the weights the CLI ends with are
    those of 8 steps in Python (weights and optimizer state saved whole)."""
    model = linformer.Model(tiny_config(), seed=2, threads=1)
    trainer = linformer.Trainer(model, linformer.Data(str(corpus)), dict(OPTIONS, steps=8))
    trainer.train(steps=4)
    path = trainer.save(str(tmp_path / "run"))
    assert path.endswith("step-00000004")
    loaded = linformer.Model.from_checkpoint(str(tmp_path / "run"), threads=1)
    tokens = np.arange(16)[None]
    np.testing.assert_array_equal(loaded.forward(tokens), model.forward(tokens))
    out = subprocess.run([cli, "train", "--resume", "--out", str(tmp_path / "run"), "--data", str(corpus)],
                         capture_output=True, text=True, env={"LINFORMER_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    trainer.train()
    resumed = linformer.Model.from_checkpoint(str(tmp_path / "run"), threads=1).state_dict()
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value, resumed[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_ctrl_c_stops_between_steps(corpus, tmp_path):
    """SIGINT during train() raises KeyboardInterrupt after the step under way; the trainer then saves
    a checkpoint whose step count is the steps done."""
    script = textwrap.dedent(f"""
        import sys, linformer
        model = linformer.Model({tiny_config(max_len=128)!r}, seed=1, threads=1)
        trainer = linformer.Trainer(model, linformer.Data({str(corpus)!r}),
                                    {{"batch_size": 16, "seq_len": 128, "steps": 100000, "warmup_steps": 1}},
                                    callback=lambda r: print("step", r["step"], flush=True))
        try:
            trainer.train()
        except KeyboardInterrupt:
            path = trainer.save({str(tmp_path / "run")!r})
            print("interrupted", trainer.steps_done, path, flush=True)
            sys.exit(3)
        """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, LINFORMER_NUM_THREADS="1"))
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("step 3"):
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, (lines, rest)
    final = rest.strip().splitlines()[-1].split()
    assert final[0] == "interrupted"
    done = int(final[1])
    assert done >= 3 and final[2].endswith(f"step-{done:08d}")
    assert linformer.Model.from_checkpoint(final[2]).config["max_len"] == 128
