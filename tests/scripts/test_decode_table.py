#!/usr/bin/env python3
"""scripts/decode_table.py (the generation benchmark's table, scripts/bench_decode.sh) on made-up
Google Benchmark JSON and peer CSV files: medians over rounds, the PyTorch peer each kind is compared
with, speed-ups, skipped configurations. Standard library only."""
import csv
import json
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import decode_table  # noqa: E402

MIB = 1 << 20


def bench(name, ms=None, label="kv_cache", cache=0, error=None):
    b = {"name": name + "/iterations:8/real_time", "label": label, "time_unit": "ms"}
    if error:
        b.update(error_occurred=True, error_message=error)
    else:
        b.update(real_time=ms, cache_bytes=cache, prefill_ms=12.5)
    return b


class DecodeTableTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="decode-table-")
        self.write_ours(1, 4096, [bench("BM_Decode/full/t:4096", 1.0, cache=16 * MIB),
                                  bench("BM_Decode/linear/t:4096", label="recompute", error="skipped: decodes by recompute")])
        self.write_ours(2, 4096, [bench("BM_Decode/full/t:4096", 3.0, cache=16 * MIB),
                                  bench("BM_Decode/linear/t:4096", label="recompute", error="skipped: decodes by recompute")])
        self.write_ours(3, 4096, [bench("BM_Decode/full/t:4096", 2.0, cache=16 * MIB)])
        self.write_ours(1, 1024, [bench("BM_Decode/local/t:1024", 0.5, label="window", cache=MIB),
                                  bench("BM_Decode/performer/t:1024", 0.25, label="recurrent", cache=MIB // 2),
                                  bench("BM_Decode/causal_linformer/capped/t:1024", 0.4, label="compressed", cache=MIB)])
        self.peer = os.path.join(self.tmp, "peer.csv")
        with open(self.peer, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["impl", "kind", "context", "round", "ms_per_token", "prefill_ms",
                                               "cache_bytes", "steps", "note"])
            w.writeheader()
            for rnd, ms in ((1, 5.0), (2, 4.0), (3, 9.0)):
                w.writerow({"impl": "pytorch", "kind": "full", "context": 4096, "round": rnd, "ms_per_token": ms,
                            "prefill_ms": 30, "cache_bytes": 17 * MIB, "steps": 8, "note": ""})
            w.writerow({"impl": "pytorch", "kind": "sdpa", "context": 4096, "round": 1, "ms_per_token": 6.0,
                        "prefill_ms": 30, "cache_bytes": 17 * MIB, "steps": 8, "note": ""})
            w.writerow({"impl": "pytorch", "kind": "local", "context": 1024, "round": 1, "ms_per_token": 2.0,
                        "prefill_ms": 30, "cache_bytes": 4 * MIB, "steps": 8, "note": "window 256"})

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def write_ours(self, rnd, t, benchmarks):
        with open(os.path.join(self.tmp, f"ours_r{rnd}_t{t}.json"), "w") as fh:
            json.dump({"context": {}, "benchmarks": benchmarks}, fh)

    def run_table(self):
        out_csv, out_md = os.path.join(self.tmp, "decode.csv"), os.path.join(self.tmp, "decode.md")
        self.assertEqual(decode_table.main(["--ours", self.tmp, "--peer", self.peer, "--csv", out_csv, "--md", out_md]), 0)
        with open(out_csv, newline="") as fh:
            rows = list(csv.DictReader(fh))
        with open(out_md) as fh:
            lines = {line.split(" | ")[0].lstrip("| ") + "@" + line.split(" | ")[2]: line for line in fh if line.startswith("| ")}
        return rows, lines

    def test_medians_peers_and_speed_ups(self):
        rows, lines = self.run_table()
        self.assertEqual(len(rows), 8 + 5)  # every measurement of both sides, skipped ones included
        # full at 4096: ours median 2.0 ms, PyTorch's plain loop median 5.0 ms: 2.50×; SDPA beside it.
        self.assertEqual(lines["full@4096"], "| full | kv_cache | 4096 | 2.000 | 5.000 | 2.50× | 6.000 | 16.00 | 17.00 |  |\n")
        # local against lucidrains' LocalMHA; the causal Linformer variant and performer have no peer.
        self.assertIn("| local | window | 1024 | 0.500 | 2.000 | 4.00× | – | 1.00 | 4.00 |", lines["local@1024"])
        self.assertIn("| – | – | – | 0.50 | – | no cached PyTorch peer |", lines["performer@1024"])
        self.assertIn("| causal_linformer/capped | compressed | 1024 | 0.400 | – |", lines["causal_linformer/capped@1024"])
        # A skipped configuration: no figure, its reason.
        self.assertIn("| linear | recompute | 4096 | – | – | – | – | – | – | skipped: decodes by recompute; no cached",
                      lines["linear@4096"])

    def test_no_results_is_an_error(self):
        empty = tempfile.mkdtemp(dir=self.tmp)
        self.assertEqual(decode_table.main(["--ours", empty, "--csv", os.path.join(empty, "a.csv"),
                                            "--md", os.path.join(empty, "a.md")]), 1)


if __name__ == "__main__":
    unittest.main(verbosity=2)
