#!/usr/bin/env python3
"""The quality study of issue 13 (docs/study.md): trains and evaluates a grid of runs with `linformer`.

A grid (scripts/study/grids.json) is a base recipe, a `linformer train --config` file, plus runs that
each set the sequence length, the attention kind and any other override. Every run gets its own run
directory STUDY_DIR/runs/NAME and is trained with equal tokens per step (batch size = tokens_per_step /
(seq_len * grad_accum)), then evaluated on the held-out test split. Everything is resumable: a run that
finished (final summary in log.jsonl and test_eval.json saved) is skipped, an interrupted one continues
from its last checkpoint with `linformer train --resume` (bit-identical with the same thread count, so
the thread count is recorded at the first start and reused). STUDY_DIR/study.json records the grid's
name, its definition and its hash; a study directory made by another grid or by a changed definition
is refused.

Runs with a time budget (equal wall-clock time) first measure seconds per step with a short probe of
the same configuration and then train budget / (seconds per step) steps, so that the LR schedule knows
its length (a trainer that stops on a clock would cut the cosine decay short at a different point for
each kind). The probe's figures and the step count are recorded in the run's run.json.

Python 3 standard library only. Usage:
  python3 scripts/study.py run --grid fig3 --dir studies/fig3 [--only NAME,...] [--dry-run]
  python3 scripts/study.py status --dir studies/fig3
"""
import argparse
import copy
import csv
import datetime
import errno
import fcntl
import glob
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_GRIDS = os.path.join(REPO, "scripts", "study", "grids.json")
DEFAULT_LINFORMER = os.path.join(REPO, "build", "linformer")

GRID_KEYS = {"description", "tokens_per_step", "test_batches", "probe_steps", "base", "panels", "targets", "runs"}
RUN_KEYS = {"name", "panels", "seq_len", "attention", "model", "train", "args", "time_budget_s", "label", "from"}
# `linformer train` flags of the training options a run that starts from another run's checkpoint
# passes to `linformer convert` (its own "train" merged over the grid's base).
TRAIN_FLAGS = {"data_path": "--data", "max_bytes": "--max-bytes", "valid_fraction": "--valid-fraction",
               "test_fraction": "--test-fraction", "batch_size": "--batch-size", "seq_len": "--seq-len",
               "grad_accum": "--grad-accum", "steps": "--steps", "warmup_steps": "--warmup", "lr": "--lr",
               "min_lr_ratio": "--min-lr-ratio", "weight_decay": "--weight-decay", "clip_norm": "--clip-norm",
               "mask_prob": "--mask-prob", "mask_span": "--mask-span", "short_seq_prob": "--short-seq-prob",
               "log_every": "--log-every", "eval_every": "--eval-every", "eval_batches": "--eval-batches",
               "save_every": "--save-every", "keep_checkpoints": "--keep-checkpoints", "seed": "--seed"}
# What only the report reads: changing it changes no run, so it is left out of the hashes.
GRID_REPORT_KEYS = {"description", "panels", "targets"}
RUN_REPORT_KEYS = {"panels", "label"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class StudyError(Exception):
    """A problem with the study's state or a run (exit status 1)."""


class UsageError(StudyError):
    """A bad command line or grid file (exit status 2)."""


# ---------------------------------------------------------------------------------------------------
# Small file helpers


def write_json_atomic(path, obj):
    """Writes obj as JSON through a temporary file and a rename, so a kill leaves the old or the new file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StudyError(f"'{path}' is not valid JSON ({e}): delete it to start that part again")


def canonical_hash(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def deep_merge(base, over):
    """base with over's keys set; nested objects merge key by key."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# ---------------------------------------------------------------------------------------------------
# Grids


def load_grids_file(path):
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"grid file '{path}' not found")
    except json.JSONDecodeError as e:
        raise UsageError(f"grid file '{path}' is not valid JSON: {e}")
    if not isinstance(doc, dict) or not isinstance(doc.get("grids"), dict):
        raise UsageError(f"grid file '{path}' must hold an object with a \"grids\" object (name -> grid)")
    return doc["grids"]


def load_grid(path, name):
    grids = load_grids_file(path)
    if name not in grids:
        raise UsageError(f"no grid '{name}' in '{path}' (it has: {', '.join(sorted(grids))})")
    validate_grid(name, grids[name])
    return grids[name]


def validate_grid(name, g):
    def bad(msg):
        raise UsageError(f"grid '{name}': {msg}")

    if not isinstance(g, dict):
        bad("must be a JSON object")
    unknown = set(g) - GRID_KEYS
    if unknown:
        bad(f"unknown key(s) {sorted(unknown)} (expected {sorted(GRID_KEYS)})")
    for key in ("tokens_per_step", "base", "runs"):
        if key not in g:
            bad(f"missing \"{key}\"")
    if not isinstance(g["tokens_per_step"], int) or g["tokens_per_step"] <= 0:
        bad("tokens_per_step must be a positive integer")
    for key in ("test_batches", "probe_steps"):
        if key in g and (not isinstance(g[key], int) or g[key] < (2 if key == "probe_steps" else 1)):
            bad(f"{key} must be an integer >= {2 if key == 'probe_steps' else 1}")
    base = g["base"]
    if not isinstance(base, dict) or set(base) - {"model", "train"}:
        bad("base must be a `linformer train --config` object: {\"model\": {...}, \"train\": {...}}")
    targets = g.get("targets", {})
    known = {"single", "single_gap", "sharing", "sharing_gap", "k_order", "time", "gaps", "title"}
    if not isinstance(targets, dict) or set(targets) - known:
        bad(f"targets must be an object with keys among {sorted(known)} (scripts/quality_report.py, DEFAULT_TARGETS)")
    panels = g.get("panels", {})
    if not isinstance(panels, dict):
        bad("panels must be an object (id -> {\"title\": ..., \"x\": \"step\" | \"seconds\"})")
    if not isinstance(g["runs"], list) or not g["runs"]:
        bad("runs must be a non-empty list")
    seen = set()
    for i, r in enumerate(g["runs"]):
        if not isinstance(r, dict) or "name" not in r:
            bad(f"run #{i + 1} must be an object with a \"name\"")
        rn = r["name"]
        if not isinstance(rn, str) or not NAME_RE.match(rn):
            bad(f"run name {rn!r}: use letters, digits, '_', '.', '-' (it names a directory)")
        if rn in seen:
            bad(f"run '{rn}' appears twice")
        seen.add(rn)
        unknown = set(r) - RUN_KEYS
        if unknown:
            bad(f"run '{rn}': unknown key(s) {sorted(unknown)} (expected {sorted(RUN_KEYS)})")
        if not isinstance(r.get("seq_len"), int) or r["seq_len"] <= 0:
            bad(f"run '{rn}': seq_len must be a positive integer")
        if not isinstance(r.get("attention"), dict) or not isinstance(r["attention"].get("kind"), str):
            bad(f"run '{rn}': attention must be an object with a \"kind\" (and optional \"options\")")
        for key in ("model", "train"):
            if key in r and not isinstance(r[key], dict):
                bad(f"run '{rn}': {key} must be an object")
        if "batch_size" in r.get("train", {}):
            bad(f"run '{rn}': batch_size comes from tokens_per_step / seq_len; do not set it")
        if "args" in r and (not isinstance(r["args"], list) or not all(isinstance(a, str) for a in r["args"])):
            bad(f"run '{rn}': args must be a list of strings (extra `linformer train` flags)")
        tb = r.get("time_budget_s")
        if tb is not None and (not isinstance(tb, (int, float)) or tb <= 0):
            bad(f"run '{rn}': time_budget_s must be a positive number of seconds")
        for p in r.get("panels", []):
            if p not in panels:
                bad(f"run '{rn}': panel '{p}' is not defined in the grid's panels")
        if "from" in r:
            f = r["from"]
            if (not isinstance(f, dict) or set(f) - {"run", "convert"} or f.get("run") not in seen - {rn}
                    or not isinstance(f.get("convert", []), list) or not all(isinstance(a, str) for a in f.get("convert", []))):
                bad(f"run '{rn}': from must be {{\"run\": an earlier run's name, \"convert\": [`linformer convert` flags]}}")
            if tb is not None:
                bad(f"run '{rn}': a run that starts from another run's checkpoint has no time budget")
            unknown = set(r.get("train", {})) - set(TRAIN_FLAGS)
            if unknown:
                bad(f"run '{rn}': train option(s) {sorted(unknown)} cannot be passed to `linformer convert`")


def expand_run(g, r):
    """One run of the grid as everything needed to train it: the `linformer train --config` object,
    extra flags, and the study-level settings. Deterministic, so its hash identifies the run."""
    cfg = deep_merge({"model": {}, "train": {}}, g["base"])
    cfg = deep_merge(cfg, {"model": r.get("model", {}), "train": r.get("train", {})})
    cfg["model"]["attention"] = copy.deepcopy(r["attention"])
    n = r["seq_len"]
    cfg["model"].setdefault("max_len", n)
    cfg["train"]["seq_len"] = n
    accum = cfg["train"].get("grad_accum", 1)
    tokens = g["tokens_per_step"]
    if tokens % (n * accum) != 0:
        raise UsageError(f"run '{r['name']}': tokens_per_step {tokens} is not a multiple of seq_len {n} x grad_accum {accum}: "
                         "the runs must see equal tokens per step")
    cfg["train"]["batch_size"] = tokens // (n * accum)
    cfg["train"].pop("run_dir", None)  # the study chooses the directory
    run = {
        "name": r["name"],
        "label": r.get("label", r["name"]),
        "panels": list(r.get("panels", [])),
        "seq_len": n,
        "tokens_per_step": tokens,
        "batch_size": cfg["train"]["batch_size"],
        "time_budget_s": r.get("time_budget_s"),
        "probe_steps": g.get("probe_steps", 6),
        "test_batches": g.get("test_batches", 50),
        "config": cfg,
        "args": list(r.get("args", [])),
        # Start from another run's final checkpoint, converted (`linformer convert`), instead of from scratch.
        "from": copy.deepcopy(r.get("from")),
    }
    run["hash"] = canonical_hash({k: v for k, v in run.items() if k not in RUN_REPORT_KEYS})[:16]
    return run


def expand_grid(g):
    return [expand_run(g, r) for r in g["runs"]]


def grid_hash(g):
    """The hash of what the runs of a grid depend on (not titles, panels, targets)."""
    return canonical_hash({k: v for k, v in g.items() if k not in GRID_REPORT_KEYS} |
                          {"runs": [{k: v for k, v in r.items() if k not in RUN_REPORT_KEYS} for r in g["runs"]]})


def describe_changes(old, new):
    """Human-readable differences between two grid definitions."""
    out = []
    for key in sorted(GRID_KEYS - GRID_REPORT_KEYS - {"runs"}):
        if old.get(key) != new.get(key):
            out.append(f"'{key}' changed")
    old_runs = {r["name"]: r for r in expand_grid(old)}
    new_runs = {r["name"]: r for r in expand_grid(new)}
    for name in new_runs:
        if name not in old_runs:
            out.append(f"run '{name}' added")
        elif old_runs[name]["hash"] != new_runs[name]["hash"]:
            out.append(f"run '{name}' changed")
    out += [f"run '{name}' removed" for name in old_runs if name not in new_runs]
    return out


# ---------------------------------------------------------------------------------------------------
# The state of a run directory (also read by scripts/quality_report.py)


def read_log(path):
    """log.jsonl's records by type; a torn last line (a killed run) is skipped."""
    recs = {"train": [], "eval": [], "summary": []}
    try:
        with open(path, errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict) and rec.get("type") in recs:
                    recs[rec["type"]].append(rec)
    except FileNotFoundError:
        pass
    return recs


def checkpoint_step(path):
    m = re.search(r"step-(\d+)/?$", path or "")
    return int(m.group(1)) if m else None


def latest_checkpoint(run_dir):
    """The latest checkpoint's directory and step, or (None, None). Like the trainer, a checkpoint being
    replaced counts through its .old-* copy; .tmp-* (a save in progress) and .del-* never count."""
    best = (None, None)
    try:
        entries = os.listdir(os.path.join(run_dir, "checkpoints"))
    except OSError:
        return best
    for e in entries:
        m = re.match(r"^step-(\d+)(\.old-.*)?$", e)
        path = os.path.join(run_dir, "checkpoints", e)
        if not m or not os.path.isfile(os.path.join(path, "config.json")):
            continue
        step = int(m.group(1))
        if best[1] is None or step > best[1]:
            best = (os.path.join(run_dir, "checkpoints", f"step-{m.group(1)}"), step)
    return best


def last_json(out):
    """The last line of a command's output that is a JSON object, or None."""
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                return obj
    return None


def convert_train_flags(train, steps):
    """A run's training options as `linformer convert` flags (the converted run trains with these)."""
    out = []
    for key, value in sorted(dict(train, steps=steps).items()):
        if key not in TRAIN_FLAGS:
            raise UsageError(f"training option '{key}' cannot be passed to `linformer convert` (study.py TRAIN_FLAGS)")
        if value is not None:
            out += [TRAIN_FLAGS[key], str(value)]
    return out


def run_state(run_dir, target_steps=None):
    """What a run directory holds: its metadata, log, latest checkpoint, test evaluation and a state name:
    'not started', 'training' (a checkpoint or log, not finished), 'trained' (summary at the target step,
    no test evaluation yet) or 'done'."""
    meta = read_json(os.path.join(run_dir, "run.json"), {}) or {}
    if target_steps is None:
        target_steps = meta.get("steps")
    log = read_log(os.path.join(run_dir, "log.jsonl"))
    ckpt, ckpt_step = latest_checkpoint(run_dir)
    test = read_json(os.path.join(run_dir, "test_eval.json"))
    summary = log["summary"][-1] if log["summary"] else None
    trained = summary is not None and target_steps is not None and summary.get("steps") == target_steps
    step = max([0] + [r.get("step", 0) for r in log["train"]])
    if trained and test is not None and test.get("step") == target_steps:
        state = "done"
    elif trained:
        state = "trained"
    elif ckpt or step > 0 or meta.get("attempts"):
        state = "training"
    else:
        state = "not started"
    attempts = meta.get("attempts", [])
    last_fail = attempts[-1] if attempts and attempts[-1].get("rc") != 0 else None
    try:
        ck_state = read_json(os.path.join(ckpt, "trainer_state.json"), {}) if ckpt else {}
    except StudyError:
        ck_state = {}
    return {
        "dir": run_dir, "meta": meta, "log": log, "checkpoint": ckpt, "checkpoint_step": ckpt_step,
        "test": test, "summary": summary, "state": state, "step": step, "target_steps": target_steps,
        # Training time: the trainer's own clock, cumulative over resumes, without work lost to a kill.
        "train_seconds": (ck_state or {}).get("elapsed_s"),
        "machine_seconds": sum(a.get("wall_s", 0) for a in meta.get("attempts", [])),
        "failed": last_fail,
    }


# ---------------------------------------------------------------------------------------------------
# The machine


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown"


def default_threads():
    """As `linformer` chooses: $LINFORMER_NUM_THREADS, else every core this process may use."""
    env = os.environ.get("LINFORMER_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def git_commit():
    try:
        head = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30)
        if head.returncode == 0:
            return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def machine_info(threads, linformer):
    try:
        version = subprocess.run([linformer, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        version = "unknown"
    return {"cpu": cpu_model(), "threads": threads, "host": socket.gethostname(), "commit": git_commit(),
            "linformer_version": version}


# ---------------------------------------------------------------------------------------------------
# Running


class Interrupted(Exception):
    pass


def _on_signal(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


class Runner:
    def __init__(self, study_dir, linformer, threads, verbose):
        self.study_dir = study_dir
        self.linformer = linformer
        self.threads = threads
        self.verbose = verbose
        self._machine = None

    def machine(self, threads):
        if self._machine is None:
            self._machine = machine_info(threads, self.linformer)
        return dict(self._machine, threads=threads)

    def attempt(self, run_dir, meta, action, cmd):
        """Runs one linformer command, its output appended to run_dir/output.log and returned, and
        records the attempt (time, exit status, machine, load) in run.json."""
        started = time.time()
        # Other work on the machine slows a run (and an equal-time probe): the 1-minute load average.
        load_before = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
        out_path = os.path.join(run_dir, "output.log")
        with open(out_path, "a") as log:
            log.write(f"=== {now_iso()} {action}: {' '.join(cmd)}\n")
            log.flush()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    errors="replace")
            lines = []
            rc = None
            try:
                for line in proc.stdout:
                    log.write(line)
                    log.flush()
                    lines.append(line)
                    if self.verbose:
                        sys.stdout.write(f"  [{os.path.basename(run_dir)}] {line}")
                        sys.stdout.flush()
                rc = proc.wait()
            finally:
                if rc is None:  # interrupted: stop the child (a killed trainer resumes from its checkpoint)
                    proc.terminate()
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                proc.stdout.close()
                meta.setdefault("attempts", []).append({
                    "action": action, "started": datetime.datetime.fromtimestamp(started, datetime.timezone.utc)
                    .strftime("%Y-%m-%dT%H:%M:%SZ"), "wall_s": round(time.time() - started, 3),
                    "rc": rc if rc is not None else "interrupted", "machine": self.machine(meta["threads"]),
                    "load_average": load_before, "command": cmd})
                write_json_atomic(os.path.join(run_dir, "run.json"), meta)
        return rc, "".join(lines)

    def probe(self, run, run_dir, meta):
        """Seconds per training step of this run's configuration: the fastest of steps 2 ... probe_steps
        of a short run of it (the first step, which allocates, is left out)."""
        pdir = os.path.join(run_dir, "probe")
        shutil.rmtree(pdir, ignore_errors=True)
        os.makedirs(pdir)
        P = run["probe_steps"]
        cfg = copy.deepcopy(run["config"])
        cfg["train"].update({"steps": P, "warmup_steps": 0, "log_every": 1, "eval_every": 0, "eval_batches": 1,
                             "save_every": 0, "keep_checkpoints": 1})
        write_json_atomic(os.path.join(pdir, "train_config.json"), cfg)
        cmd = [self.linformer, "--threads", str(meta["threads"]), "train", "--config", os.path.join(pdir, "train_config.json"),
               "--out", os.path.join(pdir, "run")] + run["args"]
        rc, out = self.attempt(run_dir, meta, "probe", cmd)
        if rc != 0:
            raise StudyError(f"run '{run['name']}': the timing probe (linformer train) failed (exit {rc}); see {run_dir}/output.log")
        recs = {r["step"]: r["elapsed_s"] for r in read_log(os.path.join(pdir, "run", "log.jsonl"))["train"]}
        if any(s not in recs for s in range(1, P + 1)):
            raise StudyError(f"run '{run['name']}': the timing probe's log lacks some of steps 1 to {P}")
        # The fastest step: the first steps also allocate and warm up (measured: step 2 of a tiny model
        # took 100 times longer than steps 3-6), and other work on the machine only ever adds time
        # (measured under a load of 10 on 2 cores: 0.14 to 6 s for one step), so the minimum is the
        # step's own cost and the same measure for every kind; a mean or median would charge one kind
        # for the load of its moment.
        deltas = [recs[s] - recs[s - 1] for s in range(2, P + 1)]
        sps = min(deltas)
        steps = max(1, int(math.floor(run["time_budget_s"] / max(sps, 1e-9))))
        base_warmup = run["config"]["train"].get("warmup_steps", 100)
        # As `linformer train` does for short runs: at most a tenth of the steps warm up.
        warmup = min(base_warmup, steps // 10)
        meta["probe"] = {"steps": P, "seconds_per_step": sps, "step_seconds": deltas,
                         "load_average": meta["attempts"][-1].get("load_average"), "budget_s": run["time_budget_s"], "steps_fit": steps,
                         "warmup_steps": warmup, "measured": now_iso(), "machine": self.machine(meta["threads"])}
        shutil.rmtree(pdir, ignore_errors=True)
        return steps, warmup

    def run(self, run, dry_run=False):
        """Brings one run as far as it goes: probe (time budget), train or resume, test evaluation.
        Returns the final state name."""
        name = run["name"]
        run_dir = os.path.join(self.study_dir, "runs", name)
        meta_path = os.path.join(run_dir, "run.json")
        meta = read_json(meta_path)
        if meta is not None and meta.get("hash") != run["hash"]:
            raise StudyError(f"run '{name}': {run_dir} was made by another definition of this run (hash {meta.get('hash')}, "
                             f"now {run['hash']}): delete that directory to run it again")
        st = run_state(run_dir, meta.get("steps") if meta else None)
        if st["state"] == "done":
            print(f"study: {name}: done (test {st['test']['bits_per_byte']:.4f} bits/byte), skipped")
            return "done"
        threads = meta["threads"] if meta else self.threads
        if meta and self.threads != meta["threads"]:
            print(f"study: {name}: using the {meta['threads']} threads it started with (resuming is bit-identical only "
                  "with the same thread count)")
        lf = [self.linformer, "--threads", str(threads)]
        if dry_run:
            self._print_plan(run, run_dir, meta, st, lf)
            return st["state"]
        if meta is None:
            os.makedirs(run_dir, exist_ok=True)
            meta = {"name": name, "hash": run["hash"], "definition": run, "threads": threads, "created": now_iso(),
                    "steps": None if run["time_budget_s"] else run["config"]["train"].get("steps"), "attempts": []}
            write_json_atomic(meta_path, meta)
        config_path = os.path.join(run_dir, "train_config.json")
        if meta["steps"] is None:  # a time-budget run: find its step count first
            print(f"study: {name}: timing probe ({run['probe_steps']} steps) for a budget of {run['time_budget_s']} s")
            steps, warmup = self.probe(run, run_dir, meta)
            meta["steps"] = steps
            write_json_atomic(meta_path, meta)
            print(f"study: {name}: {meta['probe']['seconds_per_step']:.3f} s/step -> {steps} steps (warm-up {warmup})")
        if not os.path.exists(config_path):
            cfg = copy.deepcopy(run["config"])
            cfg["train"]["steps"] = meta["steps"]
            if meta.get("probe"):
                cfg["train"]["warmup_steps"] = meta["probe"]["warmup_steps"]
            write_json_atomic(config_path, cfg)
        target = meta["steps"]
        st = run_state(run_dir, target)
        if run["from"] and not st["checkpoint"]:
            self.convert_source(run, run_dir, meta, lf)
            st = run_state(run_dir, target)
        if st["state"] in ("not started", "training"):
            if st["checkpoint"]:
                print(f"study: {name}: resuming from step {st['checkpoint_step']} of {target}")
                cmd = lf + ["train", "--out", run_dir, "--resume", "--steps", str(target)]
            else:
                print(f"study: {name}: training {target} steps at n = {run['seq_len']}, batch {run['batch_size']}")
                # --force: the run directory also holds the study's own files (run.json, output.log, ...),
                # which train leaves alone; a directory with a checkpoint is resumed above instead.
                cmd = lf + ["train", "--config", config_path, "--out", run_dir, "--force"] + run["args"]
            rc, _ = self.attempt(run_dir, meta, "resume" if st["checkpoint"] else "train", cmd)
            if rc != 0:
                raise StudyError(f"run '{name}': linformer train failed (exit {rc}); see {run_dir}/output.log")
            st = run_state(run_dir, target)
            if st["state"] != "trained":
                raise StudyError(f"run '{name}': training ended without a final summary at step {target} in log.jsonl")
        cmd = lf + ["eval", "--checkpoint", run_dir, "--split", "test", "--batches", str(run["test_batches"]), "--json"]
        rc, out = self.attempt(run_dir, meta, "eval", cmd)
        if rc != 0:
            raise StudyError(f"run '{name}': linformer eval failed (exit {rc}); see {run_dir}/output.log")
        result = last_json(out)
        if not isinstance(result, dict) or "bits_per_byte" not in result:
            raise StudyError(f"run '{name}': `linformer eval --json` printed no JSON result")
        result.update({"step": checkpoint_step(result.get("checkpoint")), "batches": run["test_batches"],
                       "evaluated": now_iso()})
        write_json_atomic(os.path.join(run_dir, "test_eval.json"), result)
        st = run_state(run_dir, target)
        print(f"study: {name}: done: test {result['bits_per_byte']:.4f} bits/byte, "
              f"{(st['train_seconds'] or 0):.0f} s of training")
        return st["state"]

    def convert_source(self, run, run_dir, meta, lf):
        """A run with "from": converts the source run's final checkpoint into run_dir (step 0, the run's
        training options) and evaluates it before any fine-tuning (converted_eval.json); training then
        resumes from it."""
        src_name = run["from"]["run"]
        src = run_state(os.path.join(self.study_dir, "runs", src_name))
        if src["state"] != "done":
            raise StudyError(f"run '{run['name']}' starts from run '{src_name}', which is {src['state']}: run that "
                             "first (it comes earlier in the grid; add it to --only)")
        print(f"study: {run['name']}: converting {src_name} (step {src['checkpoint_step']}): "
              f"{' '.join(run['from'].get('convert', []))}")
        cmd = lf + ["convert", "--checkpoint", src["checkpoint"], "--out", run_dir] + run["from"].get("convert", []) \
            + convert_train_flags(run["config"]["train"], meta["steps"]) + run["args"]
        rc, _ = self.attempt(run_dir, meta, "convert", cmd)
        if rc != 0:
            raise StudyError(f"run '{run['name']}': linformer convert failed (exit {rc}); see {run_dir}/output.log")
        batches = run["config"]["train"].get("eval_batches", 20)
        rc, out = self.attempt(run_dir, meta, "eval", lf + ["eval", "--checkpoint", run_dir, "--split", "valid",
                                                            "--batches", str(batches), "--json"])
        result = last_json(out)
        if rc != 0 or result is None:
            raise StudyError(f"run '{run['name']}': evaluating the converted checkpoint failed; see {run_dir}/output.log")
        result.update({"source": src_name, "source_step": src["checkpoint_step"], "batches": batches})
        write_json_atomic(os.path.join(run_dir, "converted_eval.json"), result)
        print(f"study: {run['name']}: converted, before fine-tuning: valid {result['bits_per_byte']:.4f} bits/byte")

    def _print_plan(self, run, run_dir, meta, st, lf):
        name = run["name"]
        print(f"study: {name}: {st['state']}; n = {run['seq_len']}, batch {run['batch_size']} "
              f"({run['tokens_per_step']} tokens/step), attention {json.dumps(run['config']['model']['attention'])}")
        if meta is None or meta.get("steps") is None:
            if run["time_budget_s"]:
                print(f"  would probe {run['probe_steps']} steps, then train {run['time_budget_s']} s / (seconds per step) steps")
            if meta is None:
                print(f"  would write {run_dir}/train_config.json:\n    {json.dumps(run['config'], sort_keys=True)}")
        if run["from"] and not st["checkpoint"]:
            print(f"  would run: {' '.join(lf + ['convert', '--checkpoint', 'runs/' + run['from']['run'], '--out', run_dir] + run['from'].get('convert', []) + convert_train_flags(run['config']['train'], run['config']['train'].get('steps')))}")
            print(f"  would run: {' '.join(lf + ['train', '--out', run_dir, '--resume', '--steps', str(run['config']['train'].get('steps'))])}")
        elif st["state"] in ("not started", "training"):
            if st["checkpoint"]:
                print(f"  would run: {' '.join(lf + ['train', '--out', run_dir, '--resume', '--steps', str((meta or {}).get('steps'))])}")
            else:
                print(f"  would run: {' '.join(lf + ['train', '--config', run_dir + '/train_config.json', '--out', run_dir] + run['args'])}")
        print(f"  would run: {' '.join(lf + ['eval', '--checkpoint', run_dir, '--split', 'test', '--batches', str(run['test_batches']), '--json'])}")
        if st["state"] == "not started" and os.access(self.linformer, os.X_OK):
            self._check_model(run)

    def _check_model(self, run):
        """`linformer info --config` on the run's model: a bad option or kind is found before hours of
        other runs, and the parameters and training memory are shown."""

        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump(run["config"], f)
            f.flush()
            p = subprocess.run([self.linformer, "info", "--config", f.name, "--n", str(run["seq_len"]),
                                "--batch", str(run["batch_size"])], capture_output=True, text=True)
        if p.returncode != 0:
            raise StudyError(f"run '{run['name']}': its model is refused by linformer info --config: "
                             f"{p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f'exit {p.returncode}'}")
        keep = [ln for ln in p.stdout.splitlines() if ln.startswith(("parameters:", "training memory"))]
        for ln in keep:
            print(f"  {ln}")


# ---------------------------------------------------------------------------------------------------
# The study directory


def open_study(study_dir, grid_name, grid, grids_file, accept_changes, dry_run):
    """Checks (and creates, or updates with accept_changes) STUDY_DIR/study.json. Refuses a directory of
    another grid, or one made by a different definition of this grid."""
    path = os.path.join(study_dir, "study.json")
    h = grid_hash(grid)
    s = read_json(path)
    if s is None:
        if os.path.isdir(study_dir) and os.listdir(study_dir):
            raise StudyError(f"'{study_dir}' is not empty and holds no study.json: not a study directory; choose another --dir")
        s = {"format": "linformer-study", "version": 1, "grid": grid_name, "hash": h, "definition": grid,
             "grids_file": os.path.relpath(grids_file, REPO) if grids_file.startswith(REPO) else grids_file,
             "created": now_iso(), "history": []}
        if not dry_run:
            os.makedirs(os.path.join(study_dir, "runs"), exist_ok=True)
            write_json_atomic(path, s)
        return s
    if s.get("format") != "linformer-study":
        raise StudyError(f"'{path}' is not a study file (no \"format\": \"linformer-study\")")
    if s.get("grid") != grid_name:
        raise StudyError(f"'{study_dir}' holds a study of grid '{s.get('grid')}', not '{grid_name}': choose another --dir "
                         f"(or run `study.py run --grid {s.get('grid')}` to continue that one)")
    if s.get("hash") != h:
        changes = describe_changes(s["definition"], grid)
        if not accept_changes:
            raise StudyError(f"the definition of grid '{grid_name}' changed since '{study_dir}' was made ("
                             f"{'; '.join(changes) or 'formatting only'}), so its runs would not be comparable: use a new "
                             "--dir, or pass --accept-changes to keep the runs that did not change (runs added or removed; "
                             "a changed run must not have started)")
        new_runs = {r["name"]: r for r in expand_grid(grid)}
        for r in expand_grid(s["definition"]):
            nr = new_runs.get(r["name"])
            rd = os.path.join(study_dir, "runs", r["name"])
            if nr is not None and nr["hash"] != r["hash"] and os.path.isdir(rd):
                raise StudyError(f"--accept-changes: run '{r['name']}' changed and has already started in '{rd}': "
                                 "delete that directory to run it again with the new definition, or use a new --dir")
        print(f"study: accepting the changed definition of grid '{grid_name}': {'; '.join(changes)}")
        if not dry_run:
            s["history"].append({"hash": s["hash"], "replaced": now_iso(), "changes": changes})
            s["hash"], s["definition"] = h, grid
            write_json_atomic(path, s)
    elif s.get("definition") != grid and not dry_run:  # titles, panels or targets: no run changes
        s["definition"] = grid
        write_json_atomic(path, s)
    return s


def load_study(study_dir):
    """study.json and its runs expanded (for status and the report)."""
    s = read_json(os.path.join(study_dir, "study.json"))
    if s is None:
        raise StudyError(f"'{study_dir}' holds no study.json: not a study directory (make one with `study.py run`)")
    if s.get("format") != "linformer-study":
        raise StudyError(f"'{study_dir}/study.json' is not a study file")
    return s, expand_grid(s["definition"])


def lock_study(study_dir):
    fd = os.open(os.path.join(study_dir, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            raise StudyError(f"another study.py run is working on '{study_dir}'; wait for it or stop it")
        raise
    return fd


def select_runs(runs, only):
    if not only:
        return runs
    names = [n.strip() for n in only.split(",") if n.strip()]
    known = {r["name"] for r in runs}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"--only: no run named {', '.join(unknown)} in this grid (see `study.py status` or the grid file)")
    return [r for r in runs if r["name"] in names]


RESULTS_COLUMNS = ["run", "kind", "options", "seq_len", "batch_size", "steps", "test_bits_per_byte", "test_bytes",
                   "last_valid_bits_per_byte", "train_seconds", "threads", "cpu", "commit", "evaluated"]


def write_results(study_dir, runs):
    """STUDY_DIR/results.csv: one row per finished run of the grid, in the grid's order, rewritten from
    the run directories after every run (so a study spread over sessions can be committed as it goes)."""
    rows = []
    for r in runs:
        run_dir = os.path.join(study_dir, "runs", r["name"])
        st = run_state(run_dir)
        if st["state"] != "done":
            continue
        meta = st["meta"]
        trains = [a for a in meta.get("attempts", []) if a.get("action") in ("train", "resume")]
        machine = (trains[-1] if trains else {}).get("machine", {})
        att = r["config"]["model"].get("attention", {})
        evals = st["log"]["eval"]
        rows.append({"run": r["name"], "kind": att.get("kind", ""),
                     "options": json.dumps(att.get("options", {}), sort_keys=True, separators=(",", ":")),
                     "seq_len": r["seq_len"], "batch_size": r["batch_size"], "steps": st["target_steps"],
                     "test_bits_per_byte": f"{st['test']['bits_per_byte']:.6f}", "test_bytes": st["test"].get("count", ""),
                     "last_valid_bits_per_byte": f"{evals[-1]['bits_per_byte']:.6f}" if evals else "",
                     "train_seconds": f"{st['train_seconds']:.1f}" if st["train_seconds"] is not None else "",
                     "threads": machine.get("threads", meta.get("threads", "")), "cpu": machine.get("cpu", ""),
                     "commit": machine.get("commit", ""), "evaluated": st["test"].get("evaluated", "")})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=RESULTS_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    path = os.path.join(study_dir, "results.csv")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(buf.getvalue())
    os.replace(tmp, path)


def cmd_run(args):
    grid = load_grid(args.grids, args.grid)
    runs = select_runs(expand_grid(grid), args.only)
    linformer = os.path.abspath(args.linformer)
    if not args.dry_run and not os.access(linformer, os.X_OK):
        raise UsageError(f"'{args.linformer}' is not an executable: build it (bash scripts/build.sh) or pass --linformer PATH")
    study_dir = os.path.abspath(args.dir)
    open_study(study_dir, args.grid, grid, os.path.abspath(args.grids), args.accept_changes, args.dry_run)
    if args.dry_run:
        print(f"study: dry run of grid '{args.grid}' in {study_dir}: {len(runs)} run(s); nothing is written")
        runner = Runner(study_dir, linformer, args.threads or default_threads(), False)
        bad = 0
        for r in runs:
            try:
                runner.run(r, dry_run=True)
            except UsageError:
                raise
            except StudyError as e:
                print(f"study: error: {e}", file=sys.stderr)
                bad += 1
        return 1 if bad else 0
    lock = lock_study(study_dir)
    runner = Runner(study_dir, linformer, args.threads or default_threads(), args.verbose)
    failed = []
    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        for i, r in enumerate(runs):
            print(f"study: [{i + 1}/{len(runs)}] {r['name']}")
            try:
                runner.run(r)
            except UsageError:
                raise
            except StudyError as e:
                print(f"study: error: {e}", file=sys.stderr)
                failed.append(r["name"])
            write_results(study_dir, expand_grid(grid))
    except (Interrupted, KeyboardInterrupt) as e:
        print(f"study: interrupted ({e or 'SIGINT'}): run the same command again to continue", file=sys.stderr)
        return 130
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        os.close(lock)
    if failed:
        print(f"study: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"study: all {len(runs)} run(s) done in {study_dir}")
    return 0


def fmt_seconds(s):
    if s is None:
        return "-"
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def cmd_status(args):
    study_dir = os.path.abspath(args.dir)
    s, runs = load_study(study_dir)
    print(f"study of grid '{s['grid']}' (hash {s['hash'][:12]}) in {study_dir}")
    rows = [("run", "state", "step", "valid b/B", "test b/B", "train time")]
    counts, machine = {}, 0.0
    for r in runs:
        st = run_state(os.path.join(study_dir, "runs", r["name"]))
        state = st["state"]
        if st["failed"] and state != "done":
            rc = st["failed"]["rc"]
            state += f" (last {st['failed']['action']} " + ("interrupted)" if rc == "interrupted" else f"exit {rc})")
        counts[st["state"]] = counts.get(st["state"], 0) + 1
        machine += st["machine_seconds"]
        evals = st["log"]["eval"]
        target = st["target_steps"]
        if target is None:  # not started: the grid's step count, or the budget of an equal-time run
            target = f"({r['time_budget_s']:g} s)" if r["time_budget_s"] else r["config"]["train"].get("steps", "?")
        rows.append((r["name"], state, f"{st['step']}/{target}",
                     f"{evals[-1]['bits_per_byte']:.4f}" if evals else "-",
                     f"{st['test']['bits_per_byte']:.4f}" if st["test"] else "-", fmt_seconds(st["train_seconds"])))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    others = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()) if k != "done")
    print(f"{counts.get('done', 0)} of {len(runs)} runs done; " + (others + "; " if others else "")
          + f"machine time so far {fmt_seconds(machine)}")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="study.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="docs/study.md describes the grid, resuming and how to add a run.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train and evaluate the grid's runs that are not done (resumable)")
    r.add_argument("--grid", required=True, help="grid name in the grid file (e.g. fig3, smoke)")
    r.add_argument("--dir", required=True, help="study directory (created; holds study.json and runs/NAME)")
    r.add_argument("--grids", default=DEFAULT_GRIDS, help="grid file (default scripts/study/grids.json)")
    r.add_argument("--only", help="comma-separated run names: run only these")
    r.add_argument("--dry-run", action="store_true", help="print what would run; write nothing")
    r.add_argument("--linformer", default=DEFAULT_LINFORMER, help="the linformer executable (default build/linformer)")
    r.add_argument("--threads", type=int, default=0,
                   help="threads for new runs (default $LINFORMER_NUM_THREADS, else all cores); a started run keeps its own")
    r.add_argument("--accept-changes", action="store_true",
                   help="continue a study whose grid definition changed (runs added or removed, or changed runs "
                        "that have not started)")
    r.add_argument("--verbose", action="store_true", help="echo linformer's output (always in runs/NAME/output.log)")
    st = sub.add_parser("status", help="the state of every run of a study directory")
    st.add_argument("--dir", required=True, help="study directory")
    args = p.parse_args(argv)
    if getattr(args, "threads", 0) < 0:
        p.error("--threads must be positive")
    try:
        return cmd_run(args) if args.command == "run" else cmd_status(args)
    except UsageError as e:
        print(f"study: error: {e}", file=sys.stderr)
        return 2
    except StudyError as e:
        print(f"study: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
