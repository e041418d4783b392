"""Shared fixtures of the Python suite: tiny models, a small corpus, a trained checkpoint, the CLI."""
import os
import pathlib
import shutil

import numpy as np
import pytest

import linformer

REPO = pathlib.Path(__file__).resolve().parents[2]

# A sentence set small enough to learn in a few dozen steps, varied enough that masks need context.
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A dictionary defines words and gives their meanings.",
    "Linear attention compresses keys and values along the sequence.",
    "Every model here trains on a CPU with two cores.",
]


def tiny_config(kind="linformer", task="mlm", max_len=32, **extra):
    options = {"k": 8} if kind == "linformer" else {}
    config = {"task": task, "d_model": 32, "n_layers": 2, "n_heads": 4, "d_ff": 64, "max_len": max_len,
              "dropout_embedding": 0.0, "dropout_attention": 0.0, "dropout_ffn": 0.0,
              "attention": {"kind": kind, "options": options}}
    config.update(extra)
    return config


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    rng = np.random.default_rng(0)
    lines = [SENTENCES[i] for i in rng.integers(0, len(SENTENCES), 600)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def trained_mlm(corpus, tmp_path_factory):
    """A masked LM trained for 60 steps through linformer.Trainer: (run directory, checkpoint)."""
    model = linformer.Model(tiny_config(), seed=1, threads=1)
    data = linformer.Data(str(corpus), task="mlm")
    trainer = linformer.Trainer(model, data, {"batch_size": 8, "seq_len": 32, "steps": 60, "warmup_steps": 5,
                                              "lr": 3e-3, "seed": 2})
    trainer.train()
    run = tmp_path_factory.mktemp("run") / "mlm"
    return run, trainer.save(str(run))


@pytest.fixture(scope="session")
def cli():
    """The `linformer` CLI of the C++ build ($LINFORMER_CLI, else build/linformer), or skip."""
    path = os.environ.get("LINFORMER_CLI") or str(REPO / "build" / "linformer")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.skip(f"no linformer CLI at {path} (build the C++ project, or set LINFORMER_CLI)")
    return path
