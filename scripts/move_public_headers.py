#!/usr/bin/env python3
"""Moves the public headers from src/ to include/linformer/ (git mv) and rewrites every include of
them. Idempotent: rerun it on a merged tree to move what is still in src/ and to rewrite the includes
that new code added with the old paths. Only `#include "..."` lines change. Run from anywhere:
    python3 scripts/move_public_headers.py
"""
import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent

# src/<old> -> include/linformer/<new>: the API a host program needs (docs/architecture.md).
PUBLIC = {
    "core/error.h": "error.h",
    "core/arena.h": "arena.h",
    "core/rng.h": "rng.h",
    "core/tokens.h": "tokens.h",
    "core/allocator.h": "allocator.h",
    "cpu/threading.h": "runtime.h",
    "attention/attention.h": "attention.h",
    "model/config.h": "config.h",
    "model/model.h": "model.h",
    "model/memory.h": "memory.h",
    "data/tokenizer.h": "tokenizer.h",
    "data/corpus.h": "corpus.h",
    "data/batches.h": "batches.h",
    "train/schedule.h": "schedule.h",
    "train/checkpoint.h": "checkpoint.h",
    "train/trainer.h": "trainer.h",
}
FOLDERS = ["src", "include", "cli", "tests", "bench", "fuzz", "examples"]

def main():
    (ROOT / "include" / "linformer").mkdir(parents=True, exist_ok=True)
    for old, new in PUBLIC.items():
        if (ROOT / "src" / old).exists():
            subprocess.run(["git", "mv", f"src/{old}", f"include/linformer/{new}"], cwd=ROOT, check=True)
    include = re.compile(r'^(\s*#\s*include\s*")([^"]+)(".*)$', re.M)
    def rewrite(m):
        path = m.group(2)
        return f"{m.group(1)}linformer/{PUBLIC[path]}{m.group(3)}" if path in PUBLIC else m.group(0)
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in (".h", ".cpp") or not path.is_file():
                continue
            text = path.read_text()
            new = include.sub(rewrite, text)
            if new != text:
                path.write_text(new)

if __name__ == "__main__":
    main()
