"""linformer: Linformer and the efficient-attention family on a C++ CPU engine (docs/python.md).

    import linformer
    model = linformer.Model.from_checkpoint("runs/gcide-mlm")     # a run directory: its newest checkpoint
    model.predict_masked("The q_ick br_wn fox")
    logits = model.forward(linformer.encode("The quick brown fox"))   # (n, vocab) float32

The checkpoint converters are the submodule linformer.convert (`from linformer import convert`; not
imported here, so that `python -m linformer.convert` runs it fresh).
"""
import os as _os

# libgomp reads this once, when the extension loads it: a short spin before a waiting thread sleeps, as
# the `linformer` CLI sets for itself (bench/notes.md: with the default spin an idle thread holds a core
# that the thread it waits for needs, which on a busy 2-core machine made a small step 30x slower).
_os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import numpy as _np

from ._core import Data, Error, InvalidArgument, IoError, Model, Trainer

# The byte vocabulary (include/linformer/tokens.h): ids 0..255 are the bytes, four special ids follow.
PAD, MASK, BOS, EOS = 256, 257, 258, 259
VOCAB_SIZE = 260
IGNORE_INDEX = -100  # a target that is not scored


def encode(text):
    """The token ids of `text` (str, as UTF-8, or bytes): one int32 per byte."""
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return _np.frombuffer(data, dtype=_np.uint8).astype(_np.int32)


def decode(ids):
    """The text of byte ids (specials and ids outside 0..255 are dropped), invalid UTF-8 as U+FFFD."""
    ids = _np.asarray(ids).reshape(-1)
    return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")


__all__ = ["Data", "Error", "InvalidArgument", "IoError", "Model", "Trainer", "encode", "decode",
           "PAD", "MASK", "BOS", "EOS", "VOCAB_SIZE", "IGNORE_INDEX"]
__version__ = "0.1.0"
