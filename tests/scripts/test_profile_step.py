#!/usr/bin/env python3
"""Tests of scripts/profile_step.py (docs/peer_bench.md, "Per-op profile against PyTorch"), registered
in ctest. Standard library only: PyTorch's side is a made-up tree of profiler events with the
attributes torch.profiler's FunctionEvent has; ours is a real `linformer bench --profile` of a
one-layer model at n = 64 (a few seconds) with the executable named by $LINFORMER_CLI (set by CMake;
default build/linformer), skipped without one.
"""
import argparse
import os
import sys
import subprocess
import tempfile
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import profile_step as ps  # noqa: E402

LINFORMER = os.environ.get("LINFORMER_CLI", os.path.join(REPO, "build", "linformer"))
HAVE_CLI = os.access(LINFORMER, os.X_OK)


class Ev:
    """A profiler event: name, input shapes, self time (µs), children, thread."""

    def __init__(self, name, shapes=None, self_us=0.0, children=(), thread=1):
        self.name, self.input_shapes, self.thread, self._self = name, shapes or [], thread, self_us
        self.cpu_children, self.cpu_parent = list(children), None
        for c in self.cpu_children:
            c.cpu_parent = self

    @property
    def self_cpu_time_total(self):
        return self._self

    @property
    def cpu_time_total(self):
        return self._self + sum(c.cpu_time_total for c in self.cpu_children)


def flatten(roots):
    out = []
    for r in roots:
        out.append(r)
        out += flatten(r.cpu_children)
    return out


def torch_step_events():
    """A small training step as torch.profiler records it (self times in µs)."""
    return [
        Ev("aten::linear", [[1, 4, 8], [16, 8], [16]], 1, [
            Ev("aten::t", [[16, 8]], 0.5, [Ev("aten::transpose", [[16, 8], [], []], 0.2)]),
            Ev("aten::addmm", [[16], [4, 8], [8, 16], [], []], 10, [Ev("aten::copy_", [[4, 16], [4, 16], []], 2)]),
        ]),
        Ev("aten::einsum", [[], [], []], 1, [Ev("aten::bmm", [[2, 4, 3], [2, 3, 5]], 4)]),
        Ev("aten::softmax", [[1, 4, 16], [], []], 1, [Ev("aten::_softmax", [[1, 4, 16], [], []], 3)]),
        Ev("aten::cross_entropy_loss", [[4, 16], [4]], 1, [
            Ev("aten::log_softmax", [[4, 16], [], []], 1, [Ev("aten::_log_softmax", [[4, 16], [], []], 5)]),
            Ev("aten::nll_loss", [[4, 16], [4]], 2),
        ]),
        Ev("autograd::engine::evaluate_function: AddmmBackward0", [], 1, [
            Ev("AddmmBackward0", [[4, 16]], 1, [Ev("aten::mm", [[4, 16], [16, 8]], 6)]),
            Ev("aten::sum", [[4, 16], [], [], []], 2),
        ]),
        Ev("autograd::engine::evaluate_function: NativeLayerNormBackward0", [], 1, [
            Ev("aten::native_layer_norm_backward", [[1, 4, 8]], 7)]),
        Ev("Optimizer.step#AdamW.step", [], 4, [Ev("aten::mul_", [[16, 8], []], 2), Ev("aten::addcdiv_", [[16, 8]], 3)]),
        Ev("aten::view", [[1, 4, 16], []], 0.3),
        Ev("aten::mm", [[4, 4], [4, 4]], 100, thread=2),  # another thread: not counted
    ]


class TorchSide(unittest.TestCase):
    def test_gemm_shapes_from_input_shapes(self):
        self.assertEqual(ps.gemm_shape("aten::mm", [[4, 16], [16, 8]]), (4, 8, 16, 1))
        self.assertEqual(ps.gemm_shape("aten::addmm", [[8], [4, 16], [16, 8], [], []]), (4, 8, 16, 1))
        self.assertEqual(ps.gemm_shape("aten::bmm", [[3, 4, 16], [3, 16, 8]]), (4, 8, 16, 3))
        self.assertEqual(ps.gemm_shape("aten::baddbmm", [[3, 4, 8], [3, 4, 16], [3, 16, 8]]), (4, 8, 16, 3))
        self.assertEqual(ps.gemm_shape("aten::linear", [[2, 5, 16], [8, 16], [8]]), (10, 8, 16, 1))
        self.assertEqual(ps.gemm_shape("aten::matmul", [[2, 1, 4, 16], [3, 16, 8]]), (4, 8, 16, 6))
        self.assertEqual(ps.gemm_shape("aten::mv", [[4, 16], [16]]), (4, 1, 16, 1))
        self.assertIsNone(ps.gemm_shape("aten::mm", []))
        self.assertEqual(ps.parse_gemm("dW: M=5 N=4 K=6 tA=1 tB=0 batch=2"), (5, 4, 6, 2))
        self.assertIsNone(ps.parse_gemm("[[1, 2]]"))

    def test_events_map_to_categories_and_add_up_to_the_wall_time(self):
        events = flatten(torch_step_events())
        rows = ps.torch_rows(events, 0.001, "model_train_step", 4, 2)  # a 1 ms step
        got = {(r["op"], r["category"]): r for r in rows}
        addmm = got[("aten::addmm", "gemm")]
        self.assertEqual(addmm["detail"], "M=4 N=16 K=8 batch=1")
        self.assertAlmostEqual(addmm["ms"], 0.012)  # with the bias copy inside it
        self.assertAlmostEqual(addmm["gflops"], 2 * 4 * 16 * 8 * 1e-9)
        self.assertEqual(got[("aten::bmm", "gemm")]["detail"], "M=4 N=5 K=3 batch=2")
        self.assertEqual(got[("aten::mm", "gemm")]["detail"], "M=4 N=8 K=16 batch=1")
        self.assertNotIn(("aten::copy_", "element-wise"), got, "counted inside the GEMM")
        for op, cat in (("aten::linear", "other"), ("aten::einsum", "other"), ("aten::t", "other"),
                        ("aten::view", "other"), ("AddmmBackward0", "other"), ("aten::sum", "element-wise"),
                        ("aten::_softmax", "softmax"), ("aten::_log_softmax", "cross-entropy"),
                        ("aten::nll_loss", "cross-entropy"), ("aten::native_layer_norm_backward", "layernorm"),
                        ("autograd::engine::evaluate_function: NativeLayerNormBackward0", "layernorm"),
                        ("aten::mul_", "optimizer"), ("Optimizer.step#AdamW.step", "optimizer")):
            self.assertIn((op, cat), got, f"{op} should be {cat}")
        self.assertEqual(sum(1 for r in rows if r["op"] == "aten::mm"), 1, "the other thread's mm is not counted")
        inside = sum(r["ms"] for r in rows if not r["op"].startswith("("))
        main_thread = sum(e.self_cpu_time_total for e in events if e.thread == 1) * 1e-3
        self.assertAlmostEqual(inside, main_thread)
        self.assertAlmostEqual(got[(ps.OUTSIDE, ps.OUTSIDE)]["ms"], 1.0 - inside)
        self.assertAlmostEqual(got[(ps.STEP, ps.STEP)]["ms"], 1.0)

    def test_our_ops_categories(self):
        self.assertEqual(ps.our_category("linear_backward"), "gemm")
        self.assertEqual(ps.our_category("adamw_step"), "optimizer")
        self.assertEqual(ps.our_category("(outside ops)"), "(outside ops)")
        self.assertEqual(ps.our_category("some_new_op"), "other")


@unittest.skipUnless(HAVE_CLI, f"no linformer executable at {LINFORMER}")
class Report(unittest.TestCase):
    def test_ours_beside_made_up_pytorch_rows(self):
        args = argparse.Namespace(binary=LINFORMER, threads=2, n=64, k=16, layers=1, repeats=1, warmup=1,
                                  precision="fp32")
        with tempfile.TemporaryDirectory() as tmp:
            ours, sgemm = ps.run_ours(args, "model_train_step", tmp)
            path = os.path.join(tmp, "ours.csv")
            ps.write_rows(path, ours)
            again = ps.read_rows(path)
        self.assertGreater(sgemm, 0)
        self.assertEqual(len(again), len(ours))
        ops = {r["op"]: r["category"] for r in again}
        self.assertEqual([op for op, cat in ops.items() if cat == "other"], [],
                         "every op of the Linformer model has a category in OUR_CATEGORIES")
        for special in (ps.OUTSIDE, ps.STEP, ps.MEDIAN):
            self.assertIn(special, ops)
        self.assertLessEqual(sum(r["ms"] for r in again if not r["op"].startswith("(")), ps.special(again, ps.STEP) + 1e-3)
        theirs = ps.torch_rows(flatten(torch_step_events()), 0.001, "model_train_step", 64, 16)
        meta = {"n": 64, "k": 16, "layers": 1, "threads": 2, "warmup": 1, "repeats": 1, "cpu": "Test CPU",
                "flags": "avx2", "cores": 2, "date": "today", "binary": "build/linformer", "ours_version": "x",
                "git": "abc", "sgemm": sgemm, "torch": "2.x", "capability": "AVX2", "mkl": True, "python": "3",
                "load_start": 0.1, "load_end": 0.2, "command": "python scripts/profile_step.py", "warning": ""}
        text = ps.make_report(meta, ours, theirs, ["model_train_step"])
        # "4×16×8": PyTorch's addmm, a shape no product of ours has
        for part in ("n = 64, k = 16, 1 layer\n", "## Training step", "| gemm |", "| (outside ops) |",
                     "| **all GEMMs** |", "linear_backward dW", "| 4×16×8 |"):
            self.assertIn(part, text)
        self.assertNotIn("Smoke run", text)
        self.assertIn("fp32 on both sides", text)

    def test_bf16_products_are_their_own_rows(self):
        if subprocess.run([LINFORMER, "--precision", "bf16", "info"], capture_output=True).returncode != 0:
            self.skipTest("bf16 products are not available on this machine")
        args = argparse.Namespace(binary=LINFORMER, threads=2, n=64, k=16, layers=1, repeats=1, warmup=1,
                                  precision="bf16")
        with tempfile.TemporaryDirectory() as tmp:
            ours, _ = ps.run_ours(args, "model_inference", tmp)
        gemms = [r for r in ours if r["category"] == "gemm"]
        self.assertTrue(gemms)
        for r in gemms:  # the products above gemm's size bound (src/cpu/gemm.cpp) ran in bf16; shapes parse
            M, N, K, _ = ps.parse_gemm(r["detail"])
            self.assertEqual(r["detail"].endswith(" bf16"), K >= 32 and M * N >= 2 ** 15, r["detail"])
        self.assertTrue(any(r["detail"].endswith(" bf16") for r in gemms))
        self.assertTrue(any(not r["detail"].endswith(" bf16") for r in gemms))


if __name__ == "__main__":
    unittest.main(verbosity=2)
