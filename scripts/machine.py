#!/usr/bin/env python3
"""The CPU this runs on, named once for every benchmark script (issue 15: results from different CPUs
are never compared, so each CPU kind has its own folder bench/results/<slug>/).

  python3 scripts/machine.py            the slug, e.g. amd-epyc-f25-m17
  python3 scripts/machine.py dir        bench/results/<slug> (relative to the repository root)
  python3 scripts/machine.py describe   'AMD EPYC (family 25, model 17)'
  python3 scripts/machine.py flags      the vector flags of note, space-separated

The slug is /proc/cpuinfo's model name (trademark marks and the clock dropped, the vendor put in front
when the name does not start with it), then its family and model numbers: the same model name can hide
different cores (a cloud VM's "AMD EPYC" is Zen 4 at family 25 model 17, Zen 5 at family 26), and the
numbers alone do not say whose. Standard library only.
"""
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join("bench", "results")

# The flags that decide which kernels run (and which precisions exist), in the order printed.
FLAGS = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
         "amx_tile", "amx_bf16", "amx_int8"]
VENDORS = {"AuthenticAMD": "AMD", "GenuineIntel": "Intel"}


def cpu_info(text=None):
    """{'vendor', 'model_name', 'family', 'model', 'flags', 'slug'} of the first processor in a
    /proc/cpuinfo text (default: this machine's); missing fields are 'unknown' / '?'."""
    if text is None:
        try:
            with open("/proc/cpuinfo") as fh:
                text = fh.read()
        except OSError:
            text = ""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep:
            if fields:  # the blank line after the first processor
                break
            continue
        fields.setdefault(key, value.strip())
    have = set(fields.get("flags", "").split())
    info = {"vendor": fields.get("vendor_id", "unknown"), "model_name": fields.get("model name", "unknown"),
            "family": fields.get("cpu family", "?"), "model": fields.get("model", "?"),
            "flags": [f for f in FLAGS if f in have]}
    info["slug"] = slug(info)
    return info


def slug(info):
    """'amd-epyc-f25-m17' from the fields of cpu_info()."""
    name = re.sub(r"\((r|tm)\)", " ", info["model_name"], flags=re.I)
    name = re.sub(r"@.*$", "", name)  # "@ 2.10GHz": the clock is not the kind of core
    vendor = VENDORS.get(info["vendor"], "")
    if vendor and not name.strip().lower().startswith(vendor.lower()):
        name = f"{vendor} {name}"
    words = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown-cpu"
    number = lambda v: v if v.isdigit() else "x"
    return f"{words}-f{number(info['family'])}-m{number(info['model'])}"


def describe(info):
    return f"{info['model_name']} (family {info['family']}, model {info['model']})"


def results_dir(info=None, root=RESULTS):
    """The folder of this CPU's results: <root>/<slug>."""
    return os.path.join(root, (info or cpu_info())["slug"])


def main(argv):
    what = argv[1] if len(argv) > 1 else "slug"
    info = cpu_info()
    out = {"slug": info["slug"], "dir": results_dir(info), "describe": describe(info),
           "flags": " ".join(info["flags"])}
    if what not in out:
        sys.exit(f"machine.py: unknown request '{what}' (slug, dir, describe, flags)")
    print(out[what])


if __name__ == "__main__":
    main(sys.argv)
