#!/usr/bin/env python3
"""Tests of the per-CPU benchmark report (scripts/bench_report.py, scripts/machine.py; issue 15 item 7),
registered in ctest. Standard library only, no PyTorch, no measurement: CPU folders of made-up CSVs
in the formats `linformer bench`, peer_bench.py, precision_bench.py, flash_vs_sdpa.py and
gemm_backends.sh write, and /proc/cpuinfo texts of an AMD and an Intel machine.
"""
import csv
import os
import re
import subprocess
import sys
import tempfile
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import bench_report as br  # noqa: E402
import machine  # noqa: E402

BENCH_COLUMNS = ["impl", "kind", "what", "n", "k", "d_model", "heads", "batch", "threads", "time_ms",
                 "peak_mem_bytes", "repeats", "heap_peak_bytes", "gflops", "note"]
MIB = 1 << 20

AMD_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse avx2 fma avx512f avx512bw avx512vl avx512_bf16 avx512_vnni

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: something else
"""
INTEL_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8488C @ 2.40GHz
flags\t\t: fpu avx2 fma avx512f avx512_bf16 avx512_fp16 amx_tile amx_bf16 amx_int8
"""


def write_csv(path, columns, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in columns})


def bench_row(impl, kind, what, n, k, ms, mib, gflops="", threads=2):
    return {"impl": impl, "kind": kind, "what": what, "n": n, "k": k, "d_model": 512, "heads": 8, "batch": 1,
            "threads": threads, "time_ms": ms, "peak_mem_bytes": int(mib * MIB), "repeats": 3, "gflops": gflops}


def make_cpu(root, slug, cpu, scale, precisions="fp32 bf16", with_bf16=True, threads=2):
    """A CPU folder with a targets/ run, precision.csv, flash_vs_sdpa.csv and gemm_backends.csv. Every
    time is `scale` times a base, so each CPU's figures are recognisable (111.x against 999.x)."""
    folder = os.path.join(root, slug)
    run = os.path.join(folder, "targets")
    os.makedirs(run)
    with open(os.path.join(run, "machine.txt"), "w") as fh:
        fh.write(f"date: 2026-12-08 10:00:00 UTC\ncpu: {cpu}\nprecisions: {precisions} (those ...)\n"
                 "build: build, CMAKE_BUILD_TYPE=Release, LINFORMER_GEMM=dnnl\ngit: abc1234\n"
                 "load average at start: 0.10\n")
    with open(os.path.join(run, "ours_commands.txt"), "w") as fh:
        fh.write(f"build/linformer bench --csv {run}/ours_layers.csv\n")
    write_csv(os.path.join(run, "ours_layers.csv"), BENCH_COLUMNS, [
        bench_row("linformer-cpp", "sgemm", "gemm_peak", 2048, 0, 80, 70, 200),
        bench_row("linformer-cpp", "linformer", "layer_forward", 4096, 256, 11.1 * scale, 60, 190),
        bench_row("linformer-cpp", "linformer", "layer_forward_backward", 4096, 256, 33.3 * scale, 100, 160),
        bench_row("linformer-cpp", "flash", "layer_forward", 4096, 0, 55.5 * scale, 60),
        bench_row("linformer-cpp", "flash", "layer_forward", 16384, 0, 555.5 * scale, 200),
        bench_row("linformer-cpp", "flash", "layer_forward_backward", 4096, 0, 166.6 * scale, 110),
        bench_row("linformer-cpp", "flash", "layer_forward_backward", 16384, 0, 1666.6 * scale, 500),  # > 4× : not linear
    ])
    write_csv(os.path.join(run, "peer_layers.csv"), BENCH_COLUMNS, [
        bench_row("pytorch", "linformer", "forward", 4096, 256, 44.4 * scale, 150, threads=threads),
        bench_row("pytorch", "linformer", "forward_backward", 4096, 256, 77.7 * scale, 270, threads=threads),
        bench_row("pytorch", "sdpa", "forward", 4096, 0, 66.6 * scale, 100, threads=threads),
        bench_row("pytorch", "sdpa", "forward_backward", 4096, 0, 222.2 * scale, 200, threads=threads),
    ])
    rows = []
    sides = [("fp32", 1.0)] + ([("bf16", 0.5)] if with_bf16 else [])
    for rnd in (1, 2, 3):
        for precision, f in sides:
            for what, ours_ms, torch_ms in (("train_step", 1111.1, 2222.2), ("inference", 333.3, 888.8)):
                rows.append({"round": rnd, "side": "ours", "precision": precision, "what": what, "n": 4096, "k": 256,
                             "threads": 2, "time_ms": ours_ms * f * scale + rnd, "peak_mem_bytes": 500 * MIB})
                rows.append({"round": rnd, "side": "pytorch", "precision": precision, "what": what, "n": 4096,
                             "k": 256, "threads": 2, "time_ms": torch_ms * scale + rnd, "peak_mem_bytes": 1000 * MIB})
    write_csv(os.path.join(folder, "precision.csv"), ["round", "side", "precision", "what", "n", "k", "threads",
                                                      "time_ms", "peak_mem_bytes"], rows)
    with open(os.path.join(folder, "precision.md"), "w") as fh:
        fh.write(f"CPU: {cpu}, the precision table of this CPU\n")
    rows = []
    for rnd in range(3):
        for impl, f in (("ours", 1.0), ("torch", 1.1), ("before", 5.0)):
            for what in ("forward", "forward_backward"):
                for n in (1024, 4096):
                    rows.append({"label": "", "round": rnd, "impl": impl, "what": what, "n": n, "threads": 2,
                                 "time_ms": n / 100 * f * scale, "load1": 0.1})
    write_csv(os.path.join(folder, "flash_vs_sdpa.csv"), ["label", "round", "impl", "what", "n", "threads",
                                                          "time_ms", "load1"], rows)
    rows = []
    for rnd in (1, 2, 3):
        for backend, f in (("dnnl", 1.0), ("openblas", 0.95)):
            rows.append({"round": rnd, "backend": backend, "shape": "sgemm_2048", "M": 2048, "N": 2048, "K": 2048,
                         "tA": 0, "tB": 0, "gflops": 210 * f, "ms": 80, "iterations": 5})
            rows.append({"round": rnd, "backend": backend, "shape": "proj_dE", "M": 256, "N": 4096, "K": 512,
                         "tA": 0, "tB": 1, "gflops": 160 / f ** 4, "ms": 1, "iterations": 5})
    write_csv(os.path.join(folder, "gemm_backends.csv"), ["round", "backend", "shape", "M", "N", "K", "tA", "tB",
                                                          "gflops", "ms", "iterations"], rows)
    return folder


def report(results, notes=None):
    """The report of a results folder, written by the script's own main() as bench_all.sh runs it."""
    out = os.path.join(results, "out", "benchmarks.md")
    cmd = [sys.executable, os.path.join(REPO, "scripts", "bench_report.py"), "--results", results, "--out", out,
           "--img-dir", os.path.join(results, "out", "img"), "--no-plots", "--command", "bash scripts/bench_all.sh"]
    if notes:
        cmd += ["--notes", notes]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"bench_report.py failed:\n{proc.stderr}")
    with open(out) as fh:
        return fh.read(), proc.stdout


def sections(text):
    """{H2 title: its text} of the document."""
    parts = re.split(r"^## ", text, flags=re.M)
    return {p.split("\n", 1)[0]: p for p in parts[1:]}


def target_rows(section):
    """{target: (measured, from, status)} of a CPU section's target table."""
    table = section.split("### Targets of issue 15", 1)[1].split("\n### ", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("target", "---"):
            rows[cells[0]] = (cells[1], cells[2], cells[3].strip("*"))
    return rows


class SlugTest(unittest.TestCase):
    def test_amd(self):
        info = machine.cpu_info(AMD_CPUINFO)
        self.assertEqual(info["slug"], "amd-epyc-f25-m17")  # the folder the AMD results live in
        self.assertEqual(info["flags"], ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                                         "avx512_bf16"])
        self.assertEqual(machine.describe(info), "AMD EPYC (family 25, model 17)")

    def test_intel(self):
        info = machine.cpu_info(INTEL_CPUINFO)
        self.assertEqual(info["slug"], "intel-xeon-platinum-8488c-f6-m143")  # no (R), no clock
        self.assertIn("amx_int8", info["flags"])

    def test_vendor_in_front_and_unknown(self):
        qemu = INTEL_CPUINFO.replace("Intel(R) Xeon(R) Platinum 8488C @ 2.40GHz", "QEMU Virtual CPU version 2.5+")
        self.assertEqual(machine.cpu_info(qemu)["slug"], "intel-qemu-virtual-cpu-version-2-5-f6-m143")
        self.assertEqual(machine.cpu_info("")["slug"], "unknown-fx-mx")

    def test_this_machine(self):
        slug = machine.cpu_info()["slug"]
        self.assertRegex(slug, r"^[a-z0-9-]+-f(\d+|x)-m(\d+|x)$")
        self.assertEqual(machine.results_dir(), os.path.join("bench", "results", slug))


class ReportTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.results = os.path.join(self.tmp.name, "results")
        # Zen 4 ("A") meets the fp32 model targets; the Xeon ("B") is 9× slower on our side... in these
        # made-up files only, and has no bf16 rows.
        make_cpu(self.results, "amd-epyc-f25-m17", "AMD EPYC (family 25, model 17)", 1.0)
        make_cpu(self.results, "intel-xeon-f6-m143", "Intel Xeon (family 6, model 143)", 9.0, precisions="fp32",
                 with_bf16=False)
        os.makedirs(os.path.join(self.results, "not-a-cpu"))  # no run in it: not a section
        self.notes = os.path.join(self.tmp.name, "notes.md")
        with open(self.notes, "w") as fh:
            fh.write("## Hand-written notes\n\nThe last line of the notes.\n")
        self.text, self.stdout = report(self.results, self.notes)
        self.cpus = sections(self.text)

    def tearDown(self):
        self.tmp.cleanup()

    def test_one_section_per_cpu(self):
        titles = [t for t in self.cpus if t != "Hand-written notes"]
        self.assertEqual(titles, ["AMD EPYC (family 25, model 17)", "Intel Xeon (family 6, model 143)"])
        self.assertEqual(self.text.count("### Targets of issue 15"), 2)
        self.assertIn("](#amd-epyc-family-25-model-17)", self.text)  # the list of CPUs links each section

    def test_no_table_mixes_cpus(self):
        amd, intel = self.cpus["AMD EPYC (family 25, model 17)"], self.cpus["Intel Xeon (family 6, model 143)"]
        # The Linformer layer's forward: 11.1 ms on A, 99.9 ms on B; PyTorch 44.4 and 399.6.
        self.assertIn("| 4096 | 256 | 11.1 | 44.4 |", amd)
        self.assertIn("| 4096 | 256 | 99.9 | 399.6 |", intel)
        for figure in ("99.9", "399.6", "intel-xeon"):
            self.assertNotIn(figure, amd)
        for figure in ("| 11.1 |", "44.4 ms", "amd-epyc"):
            self.assertNotIn(figure, intel)

    def test_targets_computed_per_cpu(self):
        amd = target_rows(self.cpus["AMD EPYC (family 25, model 17)"])
        intel = target_rows(self.cpus["Intel Xeon (family 6, model 143)"])
        layer = "Linformer layer: forward (inference) ≥ 3× faster than PyTorch"
        self.assertEqual(amd[layer], ("4.00× (PyTorch 44.4 ms / ours 11.1 ms)", "`targets/`", "met"))
        self.assertEqual(intel[layer][2], "met")  # the same ratio from B's own figures
        self.assertIn("399.6 ms", intel[layer][0])
        # The model: the median over rounds (+2 ms), from precision.csv, which wins over the runs.
        train = "Model fp32: training step ≥ 1.5× faster than PyTorch"
        self.assertEqual(amd[train], ("2.00× (PyTorch fp32 2224 ms / ours fp32 1113 ms)", "`precision.csv`", "met"))
        self.assertEqual(amd["Model: our bf16 training step ≥ 1.6× faster than our fp32 one"][2], "met")
        mem = "Model fp32: training step peak memory ≤ 0.6× PyTorch's"
        self.assertEqual(amd[mem][2], "met")
        flash_fb = "flash: forward + backward memory linear in n"
        self.assertEqual(amd[flash_fb][2], "not met")  # 110 -> 500 MiB for 4× the n
        self.assertEqual(amd["flash: forward (inference) memory linear in n"][2], "met")
        flash_time = "flash: forward (inference) time ≤ 1× PyTorch SDPA's, at every n measured"
        self.assertEqual(amd[flash_time][1], "`flash_vs_sdpa.csv`")  # the interleaved run, not targets/
        self.assertIn("n=1024: 0.91×", amd[flash_time][0])  # ours / torch = 1 / 1.1; 'before' left out
        gemm = "GEMM: every model shape ≥ 90 % of the best library's rate"
        self.assertEqual(amd[gemm][2], "not met")  # openblas wins proj_dE by 1/0.95^4
        self.assertIn("proj_dE", amd[gemm][0])
        peak = "Linformer layer: forward (inference) ≥ 75 % of the best sgemm's GFLOP/s"
        self.assertEqual(amd[peak], ("90 % (190 of 210 GFLOP/s, dnnl's sgemm_2048)",
                                     "`gemm_backends.csv`, `targets/`", "met"))

    def test_missing_target_says_not_measured(self):
        intel = target_rows(self.cpus["Intel Xeon (family 6, model 143)"])
        bf16 = intel["Model bf16: training step ≥ 1.5× faster than PyTorch under autocast bf16"]
        self.assertEqual(bf16[2], "not measured on this CPU")
        self.assertIn("no bf16 here", bf16[0])  # machine.txt's precisions say why
        int8 = target_rows(self.cpus["AMD EPYC (family 25, model 17)"])["Model int8: inference ≥ 2× faster than "
                                                                         "PyTorch in int8"]
        self.assertEqual(int8[2], "not measured on this CPU")
        self.assertIn("no int8 here", int8[0])
        self.assertIn("2 not measured", self.stdout.splitlines()[0])  # A: int8 speed and memory

    def test_notes_once_at_the_end(self):
        self.assertEqual(self.text.count("## Hand-written notes"), 1)
        self.assertTrue(self.text.rstrip("\n").endswith("The last line of the notes."))

    def test_script_tables_embedded(self):
        amd = self.cpus["AMD EPYC (family 25, model 17)"]
        self.assertIn("CPU: AMD EPYC (family 25, model 17), the precision table of this CPU", amd)


class SourcesTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.results = os.path.join(self.tmp.name, "results")

    def tearDown(self):
        self.tmp.cleanup()

    def test_threads_must_match(self):
        make_cpu(self.results, "cpu-f1-m1", "CPU one", 1.0, threads=4)  # PyTorch's layer rows on 4 threads
        rows = target_rows(sections(report(self.results)[0])["CPU one"])
        self.assertEqual(rows["Linformer layer: forward (inference) ≥ 3× faster than PyTorch"][2],
                         "not measured on this CPU")

    def test_precision_rows(self):
        path = os.path.join(self.tmp.name, "precision.csv")
        # int8 rows, and a file from before the script recorded n, k and threads.
        write_csv(path, ["round", "side", "precision", "what", "time_ms", "peak_mem_bytes"], [
            {"round": 1, "side": "ours", "precision": "int8", "what": "inference", "time_ms": 10, "peak_mem_bytes": 1},
            {"round": 2, "side": "ours", "precision": "int8", "what": "inference", "time_ms": 30, "peak_mem_bytes": 3},
            {"round": 3, "side": "ours", "precision": "int8", "what": "inference", "time_ms": 20, "peak_mem_bytes": 2},
            {"round": 1, "side": "pytorch", "precision": "int8", "what": "inference", "time_ms": 50,
             "peak_mem_bytes": 9}])
        data = br.Data([(path, br.precision_rows(path))])
        ours = data.get("linformer-cpp-int8", "linformer", "model_inference", 4096, 256)
        self.assertEqual((ours["time_ms"], ours["peak_mem_bytes"]), (20, 2))  # medians of the rounds
        self.assertEqual(data.get("pytorch-int8", "linformer_model", "inference", 4096, 256)["time_ms"], 50)

    def test_a_folder_with_one_file(self):
        make_cpu(self.results, "cpu-f1-m1", "CPU one", 1.0)
        folder = os.path.join(self.results, "cpu-f1-m1")
        for name in ("targets", "precision.csv", "precision.md", "flash_vs_sdpa.csv"):
            path = os.path.join(folder, name)
            subprocess.run(["rm", "-r", path], check=True)
        text, _ = report(self.results)
        rows = target_rows(sections(text)["cpu-f1-m1"])  # no machine.txt: the slug names it
        measured = [t for t, r in rows.items() if r[2] != "not measured on this CPU"]
        self.assertEqual(measured, ["GEMM: every model shape ≥ 90 % of the best library's rate"])
        self.assertIn("not recorded (no run of bench_all.sh in this folder)", text)

    def test_gemm_needs_another_library(self):
        make_cpu(self.results, "cpu-f1-m1", "CPU one", 1.0)
        path = os.path.join(self.results, "cpu-f1-m1", "gemm_backends.csv")
        with open(path) as fh:
            rows = [r for r in csv.DictReader(fh) if r["backend"] == "dnnl"]  # as --quick measures
        write_csv(path, list(rows[0]), rows)
        gemm = target_rows(sections(report(self.results)[0])["CPU one"])[
            "GEMM: every model shape ≥ 90 % of the best library's rate"]
        self.assertEqual(gemm[2], "not measured on this CPU")
        self.assertIn("no other library", gemm[0])


class BenchAllTest(unittest.TestCase):
    """The one command's argument handling (nothing is built or measured)."""

    def run_script(self, *args):
        return subprocess.run(["bash", os.path.join(REPO, "scripts", "bench_all.sh"), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)

    def test_help(self):
        proc = self.run_script("--help")
        self.assertEqual(proc.returncode, 0)
        self.assertIn("--targets", proc.stdout)
        self.assertIn("--report-only", proc.stdout)

    def test_unknown_step(self):
        proc = self.run_script("--steps", "ours,bogus")
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("unknown step 'bogus'", proc.stderr)


if __name__ == "__main__":
    unittest.main()
