#!/usr/bin/env python3
"""Tests of scripts/study.py and scripts/quality_report.py (docs/study.md), registered in ctest.

Standard library only (no PyTorch, no matplotlib: the report is written with --no-plots). The
resumability tests train real tiny models with the `linformer` executable named by $LINFORMER_CLI
(set by CMake; default build/linformer) on a small generated text, a few seconds in all; without an
executable they are skipped.
"""
import contextlib
import copy
import csv
import io
import json
import math
import os
import random
import shutil
import sys
import tempfile
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import quality_report  # noqa: E402
import study  # noqa: E402

LINFORMER = os.environ.get("LINFORMER_CLI", os.path.join(REPO, "build", "linformer"))
HAVE_CLI = os.access(LINFORMER, os.X_OK)


def load(path):
    with open(path) as f:
        return json.load(f)


def read(path):
    with open(path) as f:
        return f.read()


def call(argv):
    """study.main(argv) -> (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = study.main(argv)
    return rc, out.getvalue(), err.getvalue()


def tiny_grid(data_path):
    """Two equal-step runs, one equal-time run of a 1-layer d = 16 model at n = 32, 4 steps, and one run
    continuing the flash run's checkpoint converted to Linformer for 2 steps."""
    return {
        "description": "test grid",
        "tokens_per_step": 128,
        "test_batches": 2,
        "probe_steps": 4,
        "base": {
            "model": {"task": "mlm", "d_model": 16, "n_layers": 1, "n_heads": 2, "d_ff": 32, "dropout_embedding": 0.0,
                      "dropout_attention": 0.0, "dropout_ffn": 0.0},
            "train": {"data_path": data_path, "steps": 4, "warmup_steps": 1, "lr": 2e-3, "log_every": 1, "eval_every": 2,
                      "eval_batches": 1, "save_every": 2, "keep_checkpoints": 2, "seed": 3},
        },
        "panels": {"a": {"title": "panel a", "x": "step"}, "time": {"title": "equal time", "x": "seconds"}},
        "runs": [
            {"name": "flash", "panels": ["a"], "seq_len": 32, "attention": {"kind": "flash"}},
            {"name": "lin_k8", "panels": ["a"], "seq_len": 32, "attention": {"kind": "linformer", "options": {"k": 8}}},
            {"name": "timed_k8", "panels": ["time"], "seq_len": 16, "time_budget_s": 0.05, "train": {"eval_every": 0, "save_every": 0},
             "attention": {"kind": "linformer", "options": {"k": 8}}},
            {"name": "from_flash", "panels": ["a"], "seq_len": 32, "attention": {"kind": "linformer", "options": {"k": 8}},
             "from": {"run": "flash", "convert": ["--attention", "linformer", "--k", "8"]},
             "train": {"steps": 2, "eval_every": 1, "lr": 1e-3}},
        ],
    }


def write_grids(path, grids):
    with open(path, "w") as f:
        json.dump({"grids": grids}, f)


class GridTest(unittest.TestCase):
    def test_the_issue_grid_expands_with_equal_tokens_per_step(self):
        grid = study.load_grid(study.DEFAULT_GRIDS, "fig3")
        runs = study.expand_grid(grid)
        names = [r["name"] for r in runs]
        self.assertEqual(len(names), len(set(names)))
        by = {r["name"]: r for r in runs}
        tokens = grid["tokens_per_step"]
        for r in runs:
            cfg = r["config"]
            self.assertEqual(r["batch_size"] * r["seq_len"] * cfg["train"].get("grad_accum", 1), tokens, r["name"])
            self.assertEqual(cfg["train"]["batch_size"], tokens // r["seq_len"])
            self.assertEqual(cfg["train"]["seq_len"], r["seq_len"])
            self.assertEqual(cfg["model"]["max_len"], r["seq_len"])
            self.assertEqual(cfg["train"]["data_path"], "/usr/share/dictd/gcide.dict.dz")
            self.assertNotIn("run_dir", cfg["train"])
        # Fig. 3(a, b): flash and k = 32 ... 256 at n = 512 and 1024.
        for n, panel in ((512, "3a"), (1024, "3b")):
            self.assertIn(panel, by[f"n{n}_flash"]["panels"])
            self.assertEqual(by[f"n{n}_flash"]["config"]["model"]["attention"], {"kind": "flash"})
            for k in (32, 64, 128, 256):
                r = by[f"n{n}_linformer_k{k}"]
                self.assertIn(panel, r["panels"])
                self.assertEqual(r["config"]["model"]["attention"]["options"]["k"], k)
        self.assertEqual(by["n512_flash"]["batch_size"], 8)  # 4096 tokens per step
        self.assertEqual(by["n1024_flash"]["batch_size"], 4)
        # Fig. 3(c): the four sharing modes at n = 512, k = 128.
        modes = sorted(r["config"]["model"]["attention"]["options"]["sharing"] for r in runs
                       if "3c" in r["panels"] and r["config"]["model"]["attention"]["kind"] == "linformer")
        self.assertEqual(modes, ["headwise", "kv", "layerwise", "none"])
        # Fig. 3(d): one k, n = 512 ... 4096.
        d = [r for r in runs if "3d" in r["panels"]]
        self.assertEqual(sorted(r["seq_len"] for r in d), [512, 1024, 2048, 4096])
        self.assertEqual(len({r["config"]["model"]["attention"]["options"]["k"] for r in d}), 1)
        self.assertEqual(by["n4096_linformer_k256"]["batch_size"], 1)
        # Context kinds at n = 1024, and the equal-time pairs at 2048 and 4096.
        ctx = {r["config"]["model"]["attention"]["kind"] for r in runs if "context" in r["panels"]}
        self.assertTrue({"local", "longformer", "performer", "aft_local", "flash", "linformer"} <= ctx)
        timed = sorted((r["seq_len"], r["config"]["model"]["attention"]["kind"]) for r in runs if r["time_budget_s"])
        self.assertEqual(timed, [(2048, "flash"), (2048, "linformer"), (4096, "flash"), (4096, "linformer"), (4096, "linformer")])
        # The hash identifies the definition: a changed base changes every run's hash.
        g2 = copy.deepcopy(grid)
        g2["base"]["train"]["seed"] = 2
        self.assertTrue(all(a["hash"] != b["hash"] for a, b in zip(runs, study.expand_grid(g2))))
        self.assertNotEqual(study.grid_hash(grid), study.grid_hash(g2))
        g3 = copy.deepcopy(grid)
        g3["panels"]["3a"]["title"] = "another title"
        g3["runs"][0]["panels"] = []
        self.assertEqual(study.grid_hash(grid), study.grid_hash(g3))
        self.assertEqual([r["hash"] for r in runs], [r["hash"] for r in study.expand_grid(copy.deepcopy(grid))])

    def test_the_smoke_grid_is_valid(self):
        runs = study.expand_grid(study.load_grid(study.DEFAULT_GRIDS, "smoke"))
        self.assertTrue(all(r["batch_size"] * r["seq_len"] == 1024 for r in runs))

    def test_bad_grids_are_refused(self):
        good = tiny_grid("/dev/null")
        cases = [
            (lambda g: g.update(tokens_per_step=100), "not a multiple of seq_len"),
            (lambda g: g["runs"].append(copy.deepcopy(g["runs"][0])), "appears twice"),
            (lambda g: g["runs"][0].update(colour="red"), "unknown key"),
            (lambda g: g["runs"][0].update(panels=["zz"]), "panel 'zz' is not defined"),
            (lambda g: g["runs"][0].update(train={"batch_size": 4}), "batch_size comes from tokens_per_step"),
            (lambda g: g["runs"][0].update(name="../x"), "names a directory"),
            (lambda g: g["runs"][0].pop("attention"), "attention must be an object"),
            (lambda g: g.update(probe_steps=1), "probe_steps"),
            (lambda g: g["runs"][3]["from"].update(run="nosuch"), "an earlier run's name"),
            (lambda g: g["runs"][0].update({"from": {"run": "from_flash"}}), "an earlier run's name"),  # a later run
            (lambda g: g["runs"][3]["from"].update(convert="--k 8"), "from must be"),
            (lambda g: g["runs"][3].update(time_budget_s=5), "no time budget"),
            (lambda g: g["runs"][3]["train"].update(checkpoint_activations=True), "cannot be passed"),
        ]
        for mutate, message in cases:
            g = copy.deepcopy(good)
            mutate(g)
            with self.assertRaises(study.UsageError) as ctx:
                study.validate_grid("t", g)
                study.expand_grid(g)
            self.assertIn(message, str(ctx.exception))

    def test_study_py_uses_the_standard_library_only(self):
        import ast
        tree = ast.parse(read(os.path.join(REPO, "scripts", "study.py")))
        mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        if hasattr(sys, "stdlib_module_names"):
            self.assertEqual(mods - set(sys.stdlib_module_names), set())


class StudyDirTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="study-test-")
        self.grids = os.path.join(self.tmp, "grids.json")
        g = tiny_grid("/nonexistent")
        other = copy.deepcopy(g)
        other["description"] = "another grid"
        write_grids(self.grids, {"tiny": g, "other": other})
        self.dir = os.path.join(self.tmp, "study")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_a_study_dir_of_another_grid_or_a_changed_definition_is_refused(self):
        grid = study.load_grid(self.grids, "tiny")
        study.open_study(self.dir, "tiny", grid, self.grids, False, False)
        s = load(os.path.join(self.dir, "study.json"))
        self.assertEqual((s["grid"], s["hash"]), ("tiny", study.grid_hash(grid)))
        rc, _, err = call(["run", "--grid", "other", "--dir", self.dir, "--grids", self.grids, "--dry-run"])
        self.assertEqual(rc, 1)
        self.assertIn("holds a study of grid 'tiny', not 'other'", err)
        # What only the report reads (titles, panels, targets) may change: the definition is updated.
        g = load(self.grids)
        g["grids"]["tiny"]["panels"]["a"]["title"] = "renamed"
        g["grids"]["tiny"]["runs"][0]["label"] = "exact"
        write_grids(self.grids, g["grids"])
        rc, _, err = call(["run", "--grid", "tiny", "--dir", self.dir, "--grids", self.grids, "--only", "zz"])
        self.assertEqual(rc, 2)  # a usage error comes before the study directory is touched
        study.open_study(self.dir, "tiny", study.load_grid(self.grids, "tiny"), self.grids, False, False)
        self.assertEqual(load(os.path.join(self.dir, "study.json"))["definition"]["panels"]["a"]["title"], "renamed")
        # The same grid, changed: refused, naming the change.
        g["grids"]["tiny"]["base"]["train"]["lr"] = 1e-3
        write_grids(self.grids, g["grids"])
        rc, _, err = call(["run", "--grid", "tiny", "--dir", self.dir, "--grids", self.grids, "--dry-run"])
        self.assertEqual(rc, 1)
        self.assertIn("changed since", err)
        self.assertIn("'base' changed", err)
        # --accept-changes takes it while no changed run has started ...
        grid2 = study.load_grid(self.grids, "tiny")
        with contextlib.redirect_stdout(io.StringIO()):
            study.open_study(self.dir, "tiny", grid2, self.grids, True, False)
        self.assertEqual(load(os.path.join(self.dir, "study.json"))["hash"], study.grid_hash(grid2))
        # ... but not once a changed run has a directory.
        os.makedirs(os.path.join(self.dir, "runs", "flash"))
        g["grids"]["tiny"]["base"]["train"]["lr"] = 5e-4
        write_grids(self.grids, g["grids"])
        rc, _, err = call(["run", "--grid", "tiny", "--dir", self.dir, "--grids", self.grids, "--accept-changes",
                           "--dry-run"])
        self.assertEqual(rc, 1)
        self.assertIn("run 'flash' changed and has already started", err)
        # A run added: accepted with --accept-changes, the started run kept.
        g["grids"]["tiny"]["base"]["train"]["lr"] = 1e-3
        g["grids"]["tiny"]["runs"].append({"name": "extra", "seq_len": 32, "attention": {"kind": "full"}})
        write_grids(self.grids, g["grids"])
        rc, out, err = call(["run", "--grid", "tiny", "--dir", self.dir, "--grids", self.grids, "--accept-changes",
                             "--dry-run", "--linformer", "/bin/true"])
        self.assertEqual(rc, 0, err)
        self.assertIn("run 'extra' added", out)

    def test_a_directory_that_is_not_a_study_is_refused(self):
        os.makedirs(self.dir)
        open(os.path.join(self.dir, "x"), "w").close()
        rc, _, err = call(["run", "--grid", "tiny", "--dir", self.dir, "--grids", self.grids, "--dry-run"])
        self.assertEqual(rc, 1)
        self.assertIn("not a study directory", err)
        rc, _, err = call(["status", "--dir", self.dir])
        self.assertEqual(rc, 1)
        self.assertIn("no study.json", err)

    def test_usage_errors(self):
        rc, _, err = call(["run", "--grid", "nope", "--dir", self.dir, "--grids", self.grids])
        self.assertEqual(rc, 2)
        self.assertIn("no grid 'nope'", err)
        rc, _, err = call(["run", "--grid", "tiny", "--dir", self.dir, "--grids", self.grids, "--only", "flash,zz"])
        self.assertEqual(rc, 2)
        self.assertIn("no run named zz", err)
        rc, _, err = call(["run", "--grid", "tiny", "--dir", self.dir, "--grids", self.grids, "--linformer",
                           os.path.join(self.tmp, "missing")])
        self.assertEqual(rc, 2)
        self.assertIn("is not an executable", err)
        self.assertFalse(os.path.exists(self.dir))  # nothing written on a usage error
        with open(self.grids, "w") as f:
            f.write("{not json")
        rc, _, err = call(["run", "--grid", "tiny", "--dir", self.dir, "--grids", self.grids])
        self.assertEqual(rc, 2)
        self.assertIn("is not valid JSON", err)

    def test_one_runner_per_study_directory(self):
        grid = study.load_grid(self.grids, "tiny")
        study.open_study(self.dir, "tiny", grid, self.grids, False, False)
        fd = study.lock_study(self.dir)
        try:
            rc, _, err = call(["run", "--grid", "tiny", "--dir", self.dir, "--grids", self.grids, "--linformer",
                               sys.executable])
        finally:
            os.close(fd)
        self.assertEqual(rc, 1)
        self.assertIn("another study.py run is working on", err)

    def test_a_failing_run_is_reported_and_the_others_go_on(self):
        fake = os.path.join(self.tmp, "fake-linformer")
        with open(fake, "w") as f:
            f.write("#!/bin/sh\necho 'linformer: error: something broke' >&2\nexit 1\n")
        os.chmod(fake, 0o755)
        rc, out, err = call(["run", "--grid", "tiny", "--dir", self.dir, "--grids", self.grids, "--linformer", fake,
                             "--only", "flash,lin_k8"])
        self.assertEqual(rc, 1)
        self.assertIn("run 'flash': linformer train failed (exit 1)", err)
        self.assertIn("run 'lin_k8': linformer train failed (exit 1)", err)
        self.assertIn("2 run(s) failed: flash, lin_k8", err)
        log = read(os.path.join(self.dir, "runs", "flash", "output.log"))
        self.assertIn("linformer: error: something broke", log)
        rc, out, _ = call(["status", "--dir", self.dir])
        self.assertIn("training (last train exit 1)", out)
        # A run that continues another's checkpoint waits for that run to be done.
        rc, out, err = call(["run", "--grid", "tiny", "--dir", self.dir, "--grids", self.grids, "--linformer", fake,
                             "--only", "from_flash"])
        self.assertEqual(rc, 1)
        self.assertIn("run 'from_flash' starts from run 'flash', which is training: run that first", err)


@unittest.skipUnless(HAVE_CLI, f"no linformer executable at {LINFORMER} (set LINFORMER_CLI)")
class RealRunTest(unittest.TestCase):
    """Trains the tiny grid for real: skipping finished runs and resuming interrupted ones."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="study-real-")
        rng = random.Random(7)
        words = ["the", "of", "a", "word", "dictionary", "meaning", "noun", "verb", "to", "in", "is", "that",
                 "which", "or", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "definition", "see"]
        data = os.path.join(cls.tmp, "text.txt")
        with open(data, "w") as f:
            f.write(" ".join(rng.choice(words) for _ in range(40000)))
        cls.grids = os.path.join(cls.tmp, "grids.json")
        write_grids(cls.grids, {"tiny": tiny_grid(data)})
        cls.dir = os.path.join(cls.tmp, "study")
        cls.argv = ["run", "--grid", "tiny", "--dir", cls.dir, "--grids", cls.grids, "--linformer", LINFORMER,
                    "--threads", "2"]
        cls.first = call(cls.argv)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_dir(self, name):
        return os.path.join(self.dir, "runs", name)

    def test_1_every_run_is_trained_evaluated_and_recorded(self):
        rc, out, err = self.first
        self.assertEqual(rc, 0, out + err)
        for name in ("flash", "lin_k8", "timed_k8", "from_flash"):
            st = study.run_state(self.run_dir(name))
            self.assertEqual(st["state"], "done", name)
            self.assertEqual(st["summary"]["steps"], st["target_steps"])
            t = st["test"]
            self.assertEqual(t["split"], "test")
            self.assertEqual(t["step"], st["target_steps"])
            self.assertGreater(t["bits_per_byte"], 0)
            self.assertGreater(st["train_seconds"], 0)
            meta = st["meta"]
            self.assertEqual(meta["threads"], 2)
            m = meta["attempts"][-1]["machine"]
            self.assertEqual(m["cpu"], study.cpu_model())
            self.assertEqual(m["threads"], 2)
            self.assertTrue(m["commit"])
            self.assertEqual(load(os.path.join(self.run_dir(name), "train_config.json"))["train"]["steps"],
                             st["target_steps"])
        self.assertEqual(study.run_state(self.run_dir("flash"))["target_steps"], 4)
        # The equal-time run: steps = budget / probed seconds per step, recorded.
        meta = study.run_state(self.run_dir("timed_k8"))["meta"]
        p = meta["probe"]
        self.assertGreater(p["seconds_per_step"], 0)
        self.assertEqual(meta["steps"], max(1, math.floor(0.05 / p["seconds_per_step"])))
        self.assertEqual([a["action"] for a in meta["attempts"]], ["probe", "train", "eval"])
        self.assertFalse(os.path.exists(os.path.join(self.run_dir("timed_k8"), "probe")))
        rc, out, _ = call(["status", "--dir", self.dir])
        self.assertEqual(rc, 0)
        self.assertIn("4 of 4 runs done", out)
        with open(os.path.join(self.dir, "results.csv"), newline="") as f:  # rewritten after each run
            self.assertEqual(sorted(r["run"] for r in csv.DictReader(f)), ["flash", "from_flash", "lin_k8", "timed_k8"])
        # The converted run: converted from flash's final checkpoint, evaluated before fine-tuning, then
        # trained 2 steps on from step 0 with its own options.
        meta = study.run_state(self.run_dir("from_flash"))["meta"]
        self.assertEqual([a["action"] for a in meta["attempts"]], ["convert", "eval", "resume", "eval"])
        convert = meta["attempts"][0]["command"]
        self.assertIn("step-00000004", " ".join(convert))
        for flag, value in (("--attention", "linformer"), ("--k", "8"), ("--steps", "2"), ("--lr", "0.001")):
            self.assertEqual(convert[convert.index(flag) + 1], value, convert)
        before = load(os.path.join(self.run_dir("from_flash"), "converted_eval.json"))
        self.assertEqual((before["source"], before["source_step"], before["split"]), ("flash", 4, "valid"))
        self.assertGreater(before["bits_per_byte"], 0)
        log = study.read_log(os.path.join(self.run_dir("from_flash"), "log.jsonl"))
        self.assertEqual([e["step"] for e in log["eval"]], [1, 2])

    def test_2_finished_runs_are_skipped(self):
        before = {n: len(study.run_state(self.run_dir(n))["meta"]["attempts"])
                  for n in ("flash", "lin_k8", "timed_k8", "from_flash")}
        rc, out, err = call(self.argv)
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(out.count("skipped"), 4, out)
        after = {n: len(study.run_state(self.run_dir(n))["meta"]["attempts"]) for n in before}
        self.assertEqual(before, after)

    def interrupt(self, name, keep_step):
        """Makes `name` look killed after step keep_step + 1: later checkpoints, the log after that step,
        the summary and the test result gone."""
        d = self.run_dir(name)
        for e in os.listdir(os.path.join(d, "checkpoints")):
            m = study.checkpoint_step(e)
            if m is not None and m > keep_step:
                shutil.rmtree(os.path.join(d, "checkpoints", e))
        os.remove(os.path.join(d, "test_eval.json"))
        with open(os.path.join(d, "log.jsonl")) as f:
            lines = [ln for ln in f if json.loads(ln).get("type") != "summary" and json.loads(ln)["step"] <= keep_step + 1]
        with open(os.path.join(d, "log.jsonl"), "w") as f:
            f.writelines(lines)
            f.write('{"type": "train", "st')  # a torn line

    def test_3_an_interrupted_run_resumes_to_the_same_result(self):
        for name, keep in (("lin_k8", 2), ("flash", 0)):
            with self.subTest(name=name):
                d = self.run_dir(name)
                want_test = load(os.path.join(d, "test_eval.json"))
                want_evals = study.read_log(os.path.join(d, "log.jsonl"))["eval"]
                self.interrupt(name, keep)
                self.assertEqual(study.run_state(d)["state"], "training")
                rc, out, err = call(self.argv + ["--only", name])
                self.assertEqual(rc, 0, out + err)
                # keep = 0: no checkpoint was left, so the run starts again from scratch.
                self.assertIn("resuming from step 2 of 4" if keep else "training 4 steps", out)
                got_test = load(os.path.join(d, "test_eval.json"))
                self.assertEqual(got_test["bits_per_byte"], want_test["bits_per_byte"])  # bit-identical
                self.assertEqual(got_test["count"], want_test["count"])
                self.assertEqual(study.read_log(os.path.join(d, "log.jsonl"))["eval"], want_evals)
                self.assertEqual(study.run_state(d)["state"], "done")

    def test_5_a_dry_run_checks_every_model_of_the_issue_grid(self):
        d = os.path.join(self.tmp, "dry")
        rc, out, err = call(["run", "--grid", "fig3", "--dir", d, "--dry-run", "--linformer", LINFORMER])
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.count("  parameters: "), 30)
        self.assertFalse(os.path.exists(d))
        # A bad attention option is found by the dry run, naming the run.
        g = tiny_grid("/nonexistent")
        g["runs"][1]["attention"]["options"]["bogus"] = 1
        grids = os.path.join(self.tmp, "bad_grids.json")
        write_grids(grids, {"bad": g})
        rc, out, err = call(["run", "--grid", "bad", "--dir", d, "--grids", grids, "--dry-run", "--linformer", LINFORMER])
        self.assertEqual(rc, 1)
        self.assertIn("run 'lin_k8': its model is refused by linformer info --config", err)
        self.assertIn("bogus", err)

    def test_4_the_report_reads_the_real_study(self):
        out = os.path.join(self.tmp, "docs", "quality.md")
        with contextlib.redirect_stdout(io.StringIO()):
            rc = quality_report.main(["--dir", self.dir, "--out", out, "--no-plots"])
        self.assertEqual(rc, 0)
        text = read(out)
        self.assertIn("`lin_k8`", text)
        self.assertIn("total machine time", text)
        self.assertIn("None: every run of the grid is done.", text)
        # The converted run's section: its source, its figure before fine-tuning, steps counted on.
        self.assertIn("continued from another run's checkpoint", text)
        self.assertIn("| `from_flash` | `flash` | `--attention linformer --k 8` |", text)
        self.assertIn("| 4 + 2 |", text)


class ReportTest(unittest.TestCase):
    """The report's target logic on synthetic run directories of the issue's grid."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="study-report-")
        self.dir = os.path.join(self.tmp, "study")
        self.grid = study.load_grid(study.DEFAULT_GRIDS, "fig3")
        study.open_study(self.dir, "fig3", self.grid, study.DEFAULT_GRIDS, False, False)
        self.runs = {r["name"]: r for r in study.expand_grid(self.grid)}

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def fake(self, name, test_bpb, steps=600, seconds=100.0, done=True):
        """A run directory as study.py leaves it, with a made-up learning curve ending near test_bpb."""
        r = self.runs[name]
        d = os.path.join(self.dir, "runs", name)
        os.makedirs(os.path.join(d, "checkpoints", f"step-{steps:08d}"))
        with open(os.path.join(d, "checkpoints", f"step-{steps:08d}", "config.json"), "w") as f:
            f.write("{}")
        with open(os.path.join(d, "checkpoints", f"step-{steps:08d}", "trainer_state.json"), "w") as f:
            json.dump({"step": steps, "elapsed_s": seconds}, f)
        machine = {"cpu": "Test CPU", "threads": 2, "commit": "0123456789abcdef", "host": "h"}
        meta = {"name": name, "hash": r["hash"], "steps": steps, "threads": 2,
                "attempts": [{"action": "train", "wall_s": seconds + 5, "rc": 0, "machine": machine}]}
        if r["time_budget_s"]:
            meta["probe"] = {"seconds_per_step": seconds / steps, "budget_s": r["time_budget_s"]}
        with open(os.path.join(d, "run.json"), "w") as f:
            json.dump(meta, f)
        with open(os.path.join(d, "log.jsonl"), "w") as f:
            for s in range(100, steps + 1, 100):
                f.write(json.dumps({"type": "train", "step": s, "loss": 3.0, "elapsed_s": seconds * s / steps}) + "\n")
                f.write(json.dumps({"type": "eval", "step": s, "bits_per_byte": test_bpb + (steps - s) / 1000}) + "\n")
            if done:
                f.write(json.dumps({"type": "summary", "steps": steps}) + "\n")
        if done:
            with open(os.path.join(d, "test_eval.json"), "w") as f:
                json.dump({"bits_per_byte": test_bpb, "count": 1000, "step": steps, "split": "test"}, f)

    def targets(self):
        runs, _, _ = quality_report.load_runs([self.dir])
        return {t["id"]: t for t in quality_report.evaluate_targets(runs)}

    def test_targets_from_measured_numbers(self):
        self.fake("n512_flash", 2.00)
        self.fake("n512_linformer_k32", 2.30)
        self.fake("n512_linformer_k64", 2.10)
        self.fake("n512_linformer_k128", 2.03)   # +1.5 %: within 2 %
        self.fake("n512_linformer_k256", 2.01)
        self.fake("n1024_flash", 1.90)
        self.fake("n1024_linformer_k32", 2.20)
        self.fake("n1024_linformer_k64", 2.00)
        self.fake("n1024_linformer_k128", 1.95)
        self.fake("n1024_linformer_k256", 1.96)  # +3.2 %: not within 2 %, and k = 256 worse than 128
        self.fake("n512_linformer_k128_none", 2.02)
        self.fake("n512_linformer_k128_kv", 2.05)
        # layerwise not run: the sharing target is not measured yet.
        self.fake("n2048_linformer_k256", 1.93)
        self.fake("n4096_linformer_k256", 1.97)  # worse than n = 2048: Fig. 3(d)'s ordering not met
        self.fake("time_n4096_flash", 2.20, steps=200)
        self.fake("time_n4096_linformer_k256", 2.00, steps=700)
        self.fake("time_n4096_linformer_k256_mean", 2.40, steps=800)  # the best Linformer run decides
        self.fake("time_n2048_flash", 2.00, steps=300, done=False)  # interrupted
        by = self.targets()
        self.assertEqual(by["k128_n512"]["status"], "met")
        self.assertIn("+1.50 %", by["k128_n512"]["measured"])
        self.assertEqual(by["k256_n1024"]["status"], "not met")
        self.assertIn("+3.16 %", by["k256_n1024"]["measured"])
        self.assertEqual(by["sharing"]["status"], "not measured")
        self.assertIn("n512_linformer_k128_layerwise", by["sharing"]["missing"])
        self.assertEqual(by["k_order"]["status"], "not met")
        self.assertEqual(by["n_order"]["status"], "not met")
        self.assertEqual(by["time_n4096"]["status"], "met")
        self.assertIn("time_n4096_linformer_k256 2.0000", by["time_n4096"]["measured"])
        self.assertEqual(by["time_n2048"]["status"], "not measured")
        self.assertEqual(by["time_n2048"]["missing"], ["time_n2048_flash", "time_n2048_linformer_k256"])
        # Fixing the failing numbers turns the targets to met.
        self.fake("n512_linformer_k128_layerwise", 2.04)
        shutil.rmtree(os.path.join(self.dir, "runs", "n1024_linformer_k256"))
        self.fake("n1024_linformer_k256", 1.93)
        shutil.rmtree(os.path.join(self.dir, "runs", "n4096_linformer_k256"))
        self.fake("n4096_linformer_k256", 1.92)
        by = self.targets()
        for key in ("k128_n512", "k256_n1024", "sharing", "k_order", "n_order", "time_n4096"):
            self.assertEqual(by[key]["status"], "met", (key, by[key]))
        # The sharing gaps: none +1 %, headwise +1.5 %, kv +2.5 %, layerwise +2 %; kv above 3 % fails.
        shutil.rmtree(os.path.join(self.dir, "runs", "n512_linformer_k128_kv"))
        self.fake("n512_linformer_k128_kv", 2.07)
        by = self.targets()
        self.assertEqual(by["sharing"]["status"], "not met")
        self.assertIn("kv +3.50 %", by["sharing"]["measured"])

    def test_several_study_directories_are_merged(self):
        self.fake("n512_flash", 2.0, done=False)
        other = os.path.join(self.tmp, "study2")
        study.open_study(other, "fig3", self.grid, study.DEFAULT_GRIDS, False, False)
        self.dir, first = other, self.dir
        self.fake("n512_flash", 2.1)
        self.fake("n512_linformer_k32", 2.2)
        runs, _, studies = quality_report.load_runs([first, other])
        by = {r["name"]: r for r in runs}
        self.assertEqual(len(runs), 30)
        self.assertEqual(len(studies), 2)
        self.assertEqual((by["n512_flash"]["state"], by["n512_flash"]["test_bpb"]), ("done", 2.1))
        self.assertEqual(by["n512_flash"]["machine_seconds"], 210)  # both directories' attempts
        self.assertEqual(by["n512_linformer_k32"]["machine_seconds"], 105)

    def test_a_grid_sets_its_own_targets(self):
        self.fake("n512_flash", 2.00)
        self.fake("n512_linformer_k64", 2.09)
        runs, _, _ = quality_report.load_runs([self.dir])
        by = {t["id"]: t for t in quality_report.evaluate_targets(runs, {"single": [{"k": 64, "n": 512}],
                                                                         "single_gap": 0.05})}
        self.assertEqual(by["k64_n512"]["status"], "met")
        self.assertIn("within 5%", by["k64_n512"]["target"])
        self.assertNotIn("k128_n512", by)
        by = {t["id"]: t for t in quality_report.evaluate_targets(runs, {"single": [{"k": 64, "n": 512}]})}
        self.assertEqual(by["k64_n512"]["status"], "not met")  # +4.5 % against the issue's 2 %

    def test_a_partial_study_is_reported(self):
        self.fake("n512_flash", 2.00)
        self.fake("n512_linformer_k128", 2.10)  # +5 %: not met
        self.fake("n1024_flash", 1.9, done=False)
        out = os.path.join(self.tmp, "docs", "quality.md")
        spectrum = os.path.join(self.tmp, "spectrum")
        os.makedirs(spectrum)
        with open(os.path.join(spectrum, "cumulative.png"), "wb") as f:
            f.write(b"\x89PNG not really")
        with contextlib.redirect_stdout(io.StringIO()):
            rc = quality_report.main(["--dir", self.dir, "--out", out, "--no-plots", "--spectrum", spectrum])
        self.assertEqual(rc, 0)
        text = read(out)
        self.assertIn("![cumulative.png](img/quality/spectrum/cumulative.png)", text)  # copied beside the report
        self.assertTrue(os.path.isfile(os.path.join(self.tmp, "docs", "img", "quality", "spectrum", "cumulative.png")))
        self.assertIn("2 of 30 runs are done", text)
        self.assertIn("| **not met** |", text)
        self.assertIn("Reason found: _(to be filled in", text)
        self.assertIn("| `n1024_linformer_k32` | not run |", text)
        self.assertIn("| `n1024_flash` | training | 600/600 |", text)
        self.assertIn("+5.00 %", text)
        self.assertIn("Test CPU, 2 threads", text)
        self.assertIn("total machine time: 0:05:15", text)  # 105 s for each of the 3 runs
        self.assertIn("Fig. 3(a)", text)
        self.assertIn("Not measured yet", text)
        # findings.md in the study directory explains what was not met, and the report includes it.
        with open(os.path.join(self.dir, "findings.md"), "w") as f:
            f.write("- k = 128 misses by 3 points: one seed.\n")
        with contextlib.redirect_stdout(io.StringIO()):
            rc = quality_report.main(["--dir", self.dir, "--out", out, "--no-plots"])
        self.assertEqual(rc, 0)
        text = read(out)
        self.assertNotIn("Reason found: _(to be filled in", text)
        self.assertIn("Reason found: see 'What was found' below", text)
        self.assertIn("### What was found\n\n- k = 128 misses by 3 points: one seed.", text)


class ClmGridTest(unittest.TestCase):
    """Issue 17's causal-LM grid clm1024: its runs, its one target (the causal Linformer within 3 % of
    flash), the study's results.csv and the hand-written sections a new report keeps."""

    fake = ReportTest.fake

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="study-clm-")
        self.dir = os.path.join(self.tmp, "study")
        self.grid = study.load_grid(study.DEFAULT_GRIDS, "clm1024")
        study.open_study(self.dir, "clm1024", self.grid, study.DEFAULT_GRIDS, False, False)
        self.runs = {r["name"]: r for r in study.expand_grid(self.grid)}

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_the_grid_trains_every_kind_as_a_causal_lm_at_n_1024(self):
        kinds = [quality_report.attention_of(r)[0] for r in self.runs.values()]
        self.assertEqual(sorted(set(kinds)), ["aft_local", "causal_linformer", "flash", "linear", "local", "performer"])
        for r in self.runs.values():
            m = r["config"]["model"]
            self.assertEqual((m["task"], m["max_len"], r["seq_len"], r["batch_size"]), ("clm", 1024, 1024, 8), r["name"])
            self.assertEqual(r["config"]["train"]["steps"], 600)

    def gap_target(self):
        runs, _, _ = quality_report.load_runs([self.dir])
        targets = quality_report.evaluate_targets(runs, self.grid["targets"])
        self.assertEqual([t["id"] for t in targets], ["causal_linformer_n1024"])  # none of issue 13's
        return targets[0]

    def test_the_causal_linformer_within_3_percent_of_exact_attention(self):
        self.assertEqual(self.gap_target()["status"], "not measured")
        self.fake("clm_n1024_flash", 2.00)
        self.fake("clm_n1024_causal_linformer", 2.08, done=False)
        t = self.gap_target()
        self.assertEqual((t["status"], t["missing"]), ("not measured", ["clm_n1024_causal_linformer"]))
        shutil.rmtree(os.path.join(self.dir, "runs", "clm_n1024_causal_linformer"))
        self.fake("clm_n1024_causal_linformer", 2.07)  # +3.5 %
        t = self.gap_target()
        self.assertEqual(t["status"], "not met")
        self.assertIn("+3.50 %", t["measured"])
        shutil.rmtree(os.path.join(self.dir, "runs", "clm_n1024_causal_linformer"))
        self.fake("clm_n1024_causal_linformer", 2.05)  # +2.5 %
        self.assertEqual(self.gap_target()["status"], "met")

    def test_results_csv_has_one_row_per_finished_run_in_the_grids_order(self):
        self.fake("clm_n1024_local", 2.30, seconds=50.0)
        self.fake("clm_n1024_flash", 2.00)
        self.fake("clm_n1024_linear", 2.50, done=False)
        study.write_results(self.dir, study.expand_grid(self.grid))
        with open(os.path.join(self.dir, "results.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        self.assertEqual([r["run"] for r in rows], ["clm_n1024_flash", "clm_n1024_local"])
        self.assertEqual((rows[1]["kind"], rows[1]["options"], rows[1]["steps"]), ("local", '{"window":256}', "600"))
        self.assertEqual((rows[1]["test_bits_per_byte"], rows[1]["train_seconds"]), ("2.300000", "50.0"))
        self.assertEqual((rows[1]["cpu"], rows[1]["threads"], rows[1]["commit"]), ("Test CPU", "2", "0123456789abcdef"))

    def test_the_report_keeps_the_hand_written_sections_after_the_marker(self):
        self.fake("clm_n1024_flash", 2.00)
        self.fake("clm_n1024_causal_linformer", 2.01)
        out = os.path.join(self.tmp, "docs", "quality.md")
        os.makedirs(os.path.dirname(out))
        with open(out, "w") as f:
            f.write("# an old report\n\n" + quality_report.KEEP_MARKER + "\n\n## A hand-written section\n")
        for _ in range(2):  # written twice: the kept part appears once
            with contextlib.redirect_stdout(io.StringIO()):
                self.assertEqual(quality_report.main(["--dir", self.dir, "--out", out, "--no-plots"]), 0)
        text = read(out)
        self.assertNotIn("# an old report", text)
        self.assertEqual(text.count("## A hand-written section"), 1)
        self.assertEqual(text.count(quality_report.KEEP_MARKER), 1)
        self.assertIn("GCIDE byte-level causal LM", text)
        self.assertIn("causal-LM cross-entropy on every predicted byte", text)
        self.assertIn("## Targets of issue 17", text)
        self.assertIn("| causal_linformer at n = 1024 within 3% of exact attention (equal steps) | 2.0100 vs 2.0000", text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
