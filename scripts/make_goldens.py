#!/usr/bin/env python3
"""Writes the PyTorch golden files of tests/data/golden/ (see docs/goldens.md).

Each golden is one safetensors file, all float64, holding one attention layer's parameters, an
input, the output, a random upstream gradient and the gradients of sum(output * grad_output) with
respect to the input and every parameter, in the C++ engine's parameter names and layouts. The
"spec" metadata entry (a JSON string) says how to build the same layer in C++. The C++ test
tests/attention/test_golden_parity.cpp loads every file and compares.

  kind "linformer": lucidrains' `linformer` package (LinformerSelfAttention) itself.
  kind "full":      the plain multi-head softmax attention below, checked in this script against
                    torch.nn.functional.scaled_dot_product_attention.

Run from anywhere (the venv from scripts/requirements-golden.txt):
  python scripts/make_goldens.py [--out tests/data/golden]
"""
import argparse
import json
import math
import pathlib

import torch
import torch.nn.functional as F
from linformer import LinformerSelfAttention
from safetensors.torch import save_file

D_MODEL, N_HEADS, BATCH, MAX_LEN, K = 32, 4, 2, 16, 8
D_HEAD = D_MODEL // N_HEADS

REPO = pathlib.Path(__file__).resolve().parent.parent


# --- the full-attention reference ------------------------------------------------------------------
class FullAttentionRef(torch.nn.Module):
    """softmax(Q Kᵀ/√d_h + masks) V per head, then the output linear map (with bias)."""

    def __init__(self, d, h, qkv_bias):
        super().__init__()
        self.h, self.d_h = h, d // h
        self.to_q = torch.nn.Linear(d, d, bias=qkv_bias)
        self.to_k = torch.nn.Linear(d, d, bias=qkv_bias)
        self.to_v = torch.nn.Linear(d, d, bias=qkv_bias)
        self.to_out = torch.nn.Linear(d, d)

    def heads(self, x, t):  # (B, n, d) -> (B, h, n, d_h)
        b, n, _ = x.shape
        return t(x).reshape(b, n, self.h, self.d_h).transpose(1, 2)

    def forward(self, x, causal=False, key_padding_mask=None, check_sdpa=True):
        b, n, d = x.shape
        q, k, v = self.heads(x, self.to_q), self.heads(x, self.to_k), self.heads(x, self.to_v)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_h)
        if causal:
            future = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
            scores = scores.masked_fill(future, float("-inf"))
        if key_padding_mask is not None:  # (B, m), True = padding
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        o = scores.softmax(dim=-1) @ v
        if check_sdpa:  # the reference itself, against PyTorch's fused implementation
            allowed = torch.ones(b, 1, n, n, dtype=torch.bool)
            if causal:
                allowed = allowed & ~future
            if key_padding_mask is not None:
                allowed = allowed & ~key_padding_mask[:, None, None, :]
            o_sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
            torch.testing.assert_close(o, o_sdpa, rtol=1e-12, atol=1e-12)
        return self.to_out(o.transpose(1, 2).reshape(b, n, d))


# --- parameters in the C++ engine's naming and layout ----------------------------------------------
def linformer_params(m):
    """name -> tensor (a view of the module's parameter, so .grad can be mapped the same way)."""
    p = {
        "to_q.weight": (m.to_q.weight, False),
        "to_k.weight": (m.to_k.weight, False),
        "to_out.weight": (m.to_out.weight, False),
        "to_out.bias": (m.to_out.bias, False),
        # lucidrains stores proj_k as (seq_len, k); ours is E itself, (k, max_len)
        "proj_k": (m.proj_k, True),
    }
    if not m.share_kv:  # share_kv: values reuse to_k and proj_k
        p["to_v.weight"] = (m.to_v.weight, False)
        p["proj_v"] = (m.proj_v, True)
    return p


def full_params(m):
    p = {}
    for name in ("to_q", "to_k", "to_v", "to_out"):
        lin = getattr(m, name)
        p[f"{name}.weight"] = (lin.weight, False)
        if lin.bias is not None:
            p[f"{name}.bias"] = (lin.bias, False)
    return p


# --- one golden ------------------------------------------------------------------------------------
def make_golden(path, seed, kind, module_fn, options, n, causal=False, pad_last=0):
    torch.manual_seed(seed)
    module = module_fn().double()
    x = torch.randn(BATCH, n, D_MODEL, dtype=torch.float64, requires_grad=True)
    mask = None
    if pad_last:  # the last sample's last `pad_last` positions are padding
        mask = torch.zeros(BATCH, n, dtype=torch.bool)
        mask[-1, n - pad_last:] = True

    if kind == "linformer":
        out = module(x)
        params = linformer_params(module)
    else:
        out = module(x, causal=causal, key_padding_mask=mask)
        params = full_params(module)
    grad_output = torch.randn(BATCH, n, D_MODEL, dtype=torch.float64)
    (out * grad_output).sum().backward()

    tensors = {
        "input.x": x.detach(),
        "output": out.detach(),
        "grad_output": grad_output,
        "grad.input.x": x.grad,
    }
    if mask is not None:
        tensors["input.key_padding_mask"] = mask.to(torch.uint8)
    for name, (param, transpose) in params.items():
        value, grad = param.detach(), param.grad
        assert grad is not None, f"{path.name}: no gradient reached {name}"
        if transpose:
            value, grad = value.t(), grad.t()
        tensors[f"param.{name}"] = value
        tensors[f"grad.param.{name}"] = grad
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    for k, v in tensors.items():
        assert v.dtype in (torch.float64, torch.uint8), f"{k} is {v.dtype}"

    spec = {
        "kind": kind,
        "dims": {"d_model": D_MODEL, "n_heads": N_HEADS, "max_len": MAX_LEN, "causal": causal},
        "options": options,
        "B": BATCH,
        "n": n,
    }
    save_file(tensors, str(path), metadata={"spec": json.dumps(spec, sort_keys=True)})
    return spec


def linformer_case(one_kv_head, share_kv):
    def build():
        return LinformerSelfAttention(D_MODEL, MAX_LEN, k=K, heads=N_HEADS, one_kv_head=one_kv_head,
                                      share_kv=share_kv, dropout=0.0)

    options = {"k": K, "sharing": "kv" if share_kv else "headwise", "share_kv_linear": share_kv,
               "one_kv_head": one_kv_head, "qkv_bias": False}
    return build, options


def full_case(qkv_bias):
    return (lambda: FullAttentionRef(D_MODEL, N_HEADS, qkv_bias)), {"qkv_bias": qkv_bias}


# name: (seed, kind, (module builder, options), n, causal, padded positions of the last sample)
CASES = {
    "linformer_base": (101, "linformer", linformer_case(False, False), 16, False, 0),
    "linformer_share_kv": (102, "linformer", linformer_case(False, True), 16, False, 0),
    "linformer_one_kv_head": (103, "linformer", linformer_case(True, False), 16, False, 0),
    "linformer_short": (104, "linformer", linformer_case(False, False), 11, False, 0),
    "linformer_one_kv_head_share_kv": (105, "linformer", linformer_case(True, True), 13, False, 0),
    "full_plain": (201, "full", full_case(False), 16, False, 0),
    "full_causal": (202, "full", full_case(False), 16, True, 0),
    "full_key_padding_mask": (203, "full", full_case(False), 16, False, 5),
    "full_qkv_bias": (204, "full", full_case(True), 16, False, 0),
    "full_short": (205, "full", full_case(False), 9, False, 0),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=pathlib.Path, default=REPO / "tests" / "data" / "golden")
    args = ap.parse_args()
    torch.set_num_threads(1)  # one summation order: regenerating gives the same bits
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (seed, kind, (build, options), n, causal, pad) in CASES.items():
        path = args.out / f"{name}.safetensors"
        spec = make_golden(path, seed, kind, build, options, n, causal, pad)
        print(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: "
              f"{path.stat().st_size} bytes, {json.dumps(spec, sort_keys=True)}")


if __name__ == "__main__":
    main()
