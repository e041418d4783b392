#!/usr/bin/env python3
"""Writes the PyTorch golden files of tests/data/golden/ (see docs/goldens.md).

Each attention golden is one safetensors file, all float64, holding one attention layer's
parameters, an input (and key padding mask), the output, a random upstream gradient and the
gradients of sum(output * grad_output) with respect to the input and every parameter, in the C++
engine's parameter names and layouts. The "spec" metadata entry (a JSON string) says how to build
the same layer in C++; "reference" says what computed it, and torch_version, python_version and
<package>_version (for every package in "packages") say with what. The C++ test
tests/attention/test_golden_parity.cpp loads every file and compares.

  kind "linformer": lucidrains' `linformer` package (LinformerSelfAttention) itself.
  every other kind: a short plain-torch reference below, written from the kind's formula in
                    docs/attention.md (full and flash: checked here against
                    torch.nn.functional.scaled_dot_product_attention). The random parts (BigBird's
                    random blocks, Reformer's rotations) are the engine's counter-based Philox draws,
                    reproduced below; Performer's features are a fixed parameter the golden holds.

tests/data/golden/model/linformer_lm.safetensors is the model-level golden: lucidrains'
`LinformerLM` (weights, tokens, targets, logits, loss, every gradient, and the parameters after ten
torch.optim.AdamW steps), checked by tests/model/test_linformer_lm_parity.cpp.

Run from anywhere (the venv from scripts/requirements-golden.txt):
  python scripts/make_goldens.py [--out tests/data/golden]
"""
import argparse
import importlib.metadata
import importlib.util
import json
import math
import pathlib
import platform

import torch
import torch.nn.functional as F
from linformer import LinformerLM, LinformerSelfAttention
from safetensors.torch import save_file

# The first shape (every kind); SHAPE2 is the second one (other width, heads, batch and max_len).
SHAPE1 = {"d_model": 32, "n_heads": 4, "B": 2, "max_len": 16}
SHAPE2 = {"d_model": 24, "n_heads": 2, "B": 3, "max_len": 12}
K = 8  # Linformer's projected length

REPO = pathlib.Path(__file__).resolve().parent.parent


# --- the engine's counter-based random numbers (src/core/rng.h), for BigBird and Reformer -----------
M32 = 0xFFFFFFFF


def philox(key, c):
    """Philox4x32-10: four 32-bit words for the counter c (4 words) under the 64-bit key."""
    k0, k1 = key & M32, (key >> 32) & M32
    c = list(c)
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k0, p1 & M32, (p0 >> 32) ^ c[3] ^ k1, p0 & M32]
        k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
    return c


def uniform01_f64(seed, stream, i):
    c = philox(seed, [i & M32, (i >> 32) & M32, stream & M32, (stream >> 32) & M32])
    bits = ((c[0] << 21) ^ c[1]) & ((1 << 53) - 1)
    return bits * (1.0 / 9007199254740992.0)


def normal_f64(seed, stream, i):
    u1 = 1.0 - uniform01_f64(seed, stream, 2 * i)
    u2 = uniform01_f64(seed, stream, 2 * i + 1)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(6.283185307179586 * u2)


def stream_id(name):
    """FNV-1a, 64 bits."""
    h = 1469598103934665603
    for ch in name.encode():
        h = ((h ^ ch) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


# --- helpers ---------------------------------------------------------------------------------------
def split_heads(t, h):  # (B, n, h·e) -> (B, h, n, e)
    b, n, _ = t.shape
    return t.reshape(b, n, h, -1).transpose(1, 2)


def merge_heads(t):  # (B, h, n, e) -> (B, n, h·e)
    b, h, n, e = t.shape
    return t.transpose(1, 2).reshape(b, n, h * e)


def masked_softmax(scores, allowed):
    """softmax over the last axis of the allowed entries; a row with none gives zeros (not NaN)."""
    any_row = allowed.any(dim=-1, keepdim=True)
    scores = scores.masked_fill(~allowed, float("-inf")).masked_fill(~any_row, 0.0)
    return scores.softmax(dim=-1) * any_row


def key_allowed(B, n, m, mask, causal):
    """(B, 1, n, m) bool: padded keys and (causal) later keys hidden."""
    allowed = torch.ones(B, 1, n, m, dtype=torch.bool)
    if causal:
        allowed = allowed & ~torch.triu(torch.ones(n, m, dtype=torch.bool), diagonal=1)
    if mask is not None:
        allowed = allowed & ~mask[:, None, None, :]
    return allowed


def zero_rows(t, mask):  # rows of (B, n, ·) at padded positions replaced by zeros
    return t if mask is None else t.masked_fill(mask[..., None], 0.0)


class Ref(torch.nn.Module):
    """A reference layer whose parameters carry the C++ names and layouts (docs/attention.md)."""

    def __init__(self, dims, options):
        super().__init__()
        self.d, self.h, self.L = dims["d_model"], dims["n_heads"], dims["max_len"]
        self.d_h = self.d // self.h
        self.causal = dims.get("causal", False)
        self.opt = options
        self.named = {}

    def p(self, name, shape, scale, normal=False, trainable=True):
        t = torch.randn(shape, dtype=torch.float64) if normal else torch.rand(shape, dtype=torch.float64) * 2 - 1
        param = torch.nn.Parameter(t * scale, requires_grad=trainable)
        self.register_parameter(name.replace(".", "__"), param)
        self.named[name] = param
        return param

    def __getitem__(self, name):
        return self.named.get(name)

    def golden_params(self):
        return {name: (param, False) for name, param in self.named.items()}

    def maps(self, q_out=None, k_out=None, v_out=None, bias=False, names=("to_q", "to_k", "to_v")):
        """The Q/K/V maps (nn.Linear's U(±1/√d)) and to_out (with bias)."""
        s = 1 / math.sqrt(self.d)
        for name, out in zip(names, (q_out, k_out, v_out)):
            if out is None:
                continue
            self.p(f"{name}.weight", (out, self.d), s)
            if bias:
                self.p(f"{name}.bias", (out,), s)
        self.p("to_out.weight", (self.d, self.d), s)
        self.p("to_out.bias", (self.d,), s)

    def lin(self, x, name):
        return F.linear(x, self[f"{name}.weight"], self[f"{name}.bias"])


# --- full (and flash): exact softmax attention -----------------------------------------------------
class FullAttentionRef(torch.nn.Module):
    """softmax(Q Kᵀ/√d_h + masks) V per head, then the output linear map (with bias). With kv_heads
    < n_heads, K and V have kv_heads heads, query head i reading K/V head i // (n_heads / kv_heads)
    (grouped-query attention: PyTorch SDPA's enable_gqa)."""

    def __init__(self, dims, options):
        super().__init__()
        d, h, qkv_bias = dims["d_model"], dims["n_heads"], options.get("qkv_bias", False)
        self.h, self.d_h, self.causal = h, d // h, dims.get("causal", False)
        self.hk = options.get("kv_heads", h)
        self.to_q = torch.nn.Linear(d, d, bias=qkv_bias)
        self.to_k = torch.nn.Linear(d, self.hk * self.d_h, bias=qkv_bias)
        self.to_v = torch.nn.Linear(d, self.hk * self.d_h, bias=qkv_bias)
        self.to_out = torch.nn.Linear(d, d)

    def golden_params(self):
        p = {}
        for name in ("to_q", "to_k", "to_v", "to_out"):
            lin = getattr(self, name)
            p[f"{name}.weight"] = (lin.weight, False)
            if lin.bias is not None:
                p[f"{name}.bias"] = (lin.bias, False)
        return p

    def forward(self, x, key_padding_mask=None):
        b, n, d = x.shape
        causal = self.causal
        q = split_heads(self.to_q(x), self.h)
        k_g, v_g = (split_heads(t(x), self.hk) for t in (self.to_k, self.to_v))
        # Each K/V head repeated for its group of h / hk consecutive query heads.
        k, v = (t.repeat_interleave(self.h // self.hk, dim=1) for t in (k_g, v_g))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_h)
        if causal:
            future = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
            scores = scores.masked_fill(future, float("-inf"))
        if key_padding_mask is not None:  # (B, m), True = padding
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        o = scores.softmax(dim=-1) @ v
        # The reference itself, against PyTorch's fused implementation.
        allowed = key_allowed(b, n, n, key_padding_mask, causal)
        if self.hk == self.h:
            o_sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        else:  # SDPA's own grouping of the unrepeated K/V heads
            o_sdpa = F.scaled_dot_product_attention(q, k_g, v_g, attn_mask=allowed, enable_gqa=True)
        torch.testing.assert_close(o, o_sdpa, rtol=1e-12, atol=1e-12)
        return self.to_out(merge_heads(o))


# --- linformer: lucidrains' package ----------------------------------------------------------------
class LinformerRef(torch.nn.Module):
    def __init__(self, dims, options):
        super().__init__()
        self.m = LinformerSelfAttention(dims["d_model"], dims["max_len"], k=options["k"], heads=dims["n_heads"],
                                        one_kv_head=options["one_kv_head"], share_kv=options["share_kv_linear"],
                                        dropout=0.0)

    def golden_params(self):
        m = self.m
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

    def forward(self, x, key_padding_mask=None):
        assert key_padding_mask is None, "lucidrains' layer takes no padding mask"
        return self.m(x)


# --- the sparse-pattern kinds: softmax attention restricted to a pattern ---------------------------
class SparseRef(Ref):
    """full attention where query t sees only the keys of pattern(n)[t] (then causality, padding)."""

    def __init__(self, dims, options):
        super().__init__(dims, options)
        self.maps(self.d, self.d, self.d, bias=options.get("qkv_bias", False))

    def forward(self, x, key_padding_mask=None):
        B, n, _ = x.shape
        q, k, v = (split_heads(self.lin(x, t), self.h) for t in ("to_q", "to_k", "to_v"))
        allowed = key_allowed(B, n, n, key_padding_mask, self.causal) & self.pattern(n)[None, None]
        p = masked_softmax(q @ k.transpose(-1, -2) / math.sqrt(self.d_h), allowed)
        return self.lin(merge_heads(p @ v), "to_out")

    def window(self, n, w, dilation=1):
        """local's window: |t − j| ≤ ⌊w/2⌋ (on the dilation grid), causal t − w·δ ≤ j ≤ t (on it)."""
        t = torch.arange(n)[:, None]
        j = torch.arange(n)[None, :]
        gap = t - j
        on_grid = gap % dilation == 0
        if self.causal:
            return on_grid & (gap >= 0) & (gap <= w * dilation)
        return on_grid & (gap.abs() <= (w // 2) * dilation)

    def globals_(self, n, default_tokens):
        g = self.opt.get("global_tokens", 0 if "global_indices" in self.opt else default_tokens)
        is_global = torch.zeros(n, dtype=torch.bool)
        is_global[: min(g, n)] = True
        for i in self.opt.get("global_indices", []):
            if i < n:
                is_global[i] = True
        return is_global

    def with_globals(self, own, is_global):
        # global rows see every key, every row sees the global keys
        return own | is_global[:, None] | is_global[None, :]


class LocalRef(SparseRef):
    def pattern(self, n):
        return self.window(n, self.opt["window"])


class StridedRef(SparseRef):
    def pattern(self, n):
        s = self.opt["stride"]
        t, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
        strided = (t - j) % s == 0
        l = self.opt.get("local_window", s)
        return strided | self.window(n, l) if l > 0 else strided


class GlobalRef(SparseRef):
    def pattern(self, n):
        return self.with_globals(self.window(n, self.opt.get("window", 0)), self.globals_(n, None))


class LongformerRef(SparseRef):
    def pattern(self, n):
        own = self.window(n, self.opt["window"], self.opt.get("dilation", 1))
        return self.with_globals(own, self.globals_(n, 1))


class BigBirdRef(SparseRef):
    def forward(self, x, key_padding_mask=None):
        """Each sample with the pattern of its real length (its last unpadded position + 1)."""
        B, n, _ = x.shape
        q, k, v = (split_heads(self.lin(x, t), self.h) for t in ("to_q", "to_k", "to_v"))
        allowed = key_allowed(B, n, n, key_padding_mask, self.causal).clone()
        for s in range(B):
            real = n
            while key_padding_mask is not None and real > 1 and bool(key_padding_mask[s, real - 1]):
                real -= 1
            pattern = self.pattern(n).clone()
            pattern[:real, :real] = self.pattern(real)
            allowed[s] &= pattern[None]
        p = masked_softmax(q @ k.transpose(-1, -2) / math.sqrt(self.d_h), allowed)
        return self.lin(merge_heads(p @ v), "to_out")

    def pattern(self, n):
        o = self.opt
        b, w, g, r, seed = o["block"], o["window_blocks"], o["global_blocks"], o["random_blocks"], o.get("seed", 0)
        nb = -(-n // b)
        stream = stream_id("bigbird.random_blocks")
        # global blocks: the first ⌈g/2⌉ and the last ⌊g/2⌋ ("ends", bidirectional), else the first g
        head = (g + 1) // 2 if o.get("global_placement", "ends") == "ends" and not self.causal else g
        glob = set(range(min(head, nb))) | set(range(max(nb - (g - head), 0), nb))
        blocks = torch.zeros(nb, nb, dtype=torch.bool)
        for qb in range(nb):
            last = qb if self.causal else nb - 1
            if qb in glob:  # a global query block sees every (earlier) block
                blocks[qb, : last + 1] = True
                continue
            seen = set(glob)
            lo, hi = (qb - (w - 1), qb) if self.causal else (qb - w // 2, qb + w // 2)
            seen |= set(range(max(lo, 0), min(hi, nb - 1) + 1))
            # r random blocks among the others: a partial Fisher-Yates shuffle on Philox draws (qb, k)
            cand = [kb for kb in range(last + 1) if kb not in seen]
            for k in range(min(r, len(cand))):
                u = uniform01_f64(seed, stream, (qb << 32) | k)
                pick = k + min(int(u * (len(cand) - k)), len(cand) - k - 1)
                cand[k], cand[pick] = cand[pick], cand[k]
                seen.add(cand[k])
            blocks[qb, sorted(seen)] = True
        pos_block = torch.arange(n) // b
        return blocks[pos_block][:, pos_block]


# --- linear and performer: kernelised attention ----------------------------------------------------
def kernel_attention(phi_q, phi_k, v, mask, causal, eps):
    """O_t = φq_t Σ_s φk_sᵀ v_s / (φq_t · Σ_s φk_s + eps), s over the visible keys; (B, h, n, ·)."""
    if mask is not None:  # padded keys select to zero
        keep = ~mask[:, None, :, None]
        phi_k, v = phi_k * keep, v * keep
    a = phi_q @ phi_k.transpose(-1, -2)  # (B, h, n, m)
    if causal:
        a = torch.tril(a)
    return (a @ v) / (a.sum(dim=-1, keepdim=True) + eps)


class LinearRef(Ref):
    def __init__(self, dims, options):
        super().__init__(dims, options)
        self.maps(self.d, self.d, self.d, bias=options.get("qkv_bias", False))

    def forward(self, x, key_padding_mask=None):
        q, k, v = (split_heads(self.lin(x, t), self.h) for t in ("to_q", "to_k", "to_v"))
        o = kernel_attention(F.elu(q) + 1, F.elu(k) + 1, v, key_padding_mask, self.causal, 1e-6)
        return self.lin(merge_heads(o), "to_out")


class PerformerRef(Ref):
    def __init__(self, dims, options):
        super().__init__(dims, options)
        self.maps(self.d, self.d, self.d, bias=options.get("qkv_bias", False))
        # W (m_f, d_h): a fixed parameter the golden holds, so the engine's draw is not needed
        self.p("features", (options["features"], self.d_h), 1.0, normal=True, trainable=False)

    def forward(self, x, key_padding_mask=None):
        m_f = self.opt["features"]
        W = self["features"]
        q, k, v = (split_heads(self.lin(x, t), self.h) for t in ("to_q", "to_k", "to_v"))
        xq, xk = q / self.d_h ** 0.25, k / self.d_h ** 0.25
        wq, wk = xq @ W.t(), xk @ W.t()  # (B, h, n, m_f)
        # φ(x)_j = exp(w_jᵀx − ‖x‖²/2 − stabiliser)/√m_f. The stabilisers are constants (they cancel
        # between numerator and denominator): per query row its max of w_jᵀx (with ‖x‖²/2), for the
        # keys the max over every visible key and feature of the (sample, head).
        phi_q = torch.exp(wq - wq.amax(dim=-1, keepdim=True).detach()) / math.sqrt(m_f)
        ek = wk - (xk * xk).sum(dim=-1, keepdim=True) / 2
        valid = ek if key_padding_mask is None else ek.masked_fill(key_padding_mask[:, None, :, None], -math.inf)
        stab_k = valid.amax(dim=(-1, -2), keepdim=True).detach()
        phi_k = torch.exp(ek - stab_k) / math.sqrt(m_f)
        o = kernel_attention(phi_q, phi_k, v, key_padding_mask, self.causal, 1e-20)
        return self.lin(merge_heads(o), "to_out")


# --- synthesizer -----------------------------------------------------------------------------------
class SynthesizerRef(Ref):
    def __init__(self, dims, options):
        super().__init__(dims, options)
        d, h, L = self.d, self.h, self.L
        s = 1 / math.sqrt(d)
        self.p("to_v.weight", (d, d), s)
        if options.get("v_bias", False):
            self.p("to_v.bias", (d,), s)
        self.p("to_out.weight", (d, d), s)
        self.p("to_out.bias", (d,), s)
        mode = options.get("mode", "dense")
        if mode == "dense":
            hid = options.get("hidden", self.d_h)
            self.p("synth.hidden.weight", (h * hid, d), s)
            self.p("synth.hidden.bias", (h * hid,), s)
            so = 1 / math.sqrt(hid)
            if options.get("factorized", False):
                a = options["factor_a"]
                b = -(-L // a)
                self.p("synth.out_a.weight", (h, a, hid), so)
                self.p("synth.out_a.bias", (h, a), so)
                self.p("synth.out_b.weight", (h, b, hid), so)
                self.p("synth.out_b.bias", (h, b), so)
            else:
                self.p("synth.out.weight", (h, L, hid), so)
                self.p("synth.out.bias", (h, L), so)
        else:
            trainable = not options.get("fixed", False)
            r = options.get("rank", 0)
            if r == 0:
                self.p("synth.random", (h, L, L), 1.0, normal=True, trainable=trainable)
            else:
                self.p("synth.random_a", (h, L, r), r ** -0.25, normal=True, trainable=trainable)
                self.p("synth.random_b", (h, L, r), r ** -0.25, normal=True, trainable=trainable)

    def scores(self, x, n):  # (B or 1, h, n, n)
        h = self.h
        if self["synth.random"] is not None:
            return self["synth.random"][None, :, :n, :n]
        if self["synth.random_a"] is not None:
            return (self["synth.random_a"][:, :n] @ self["synth.random_b"][:, :n].transpose(-1, -2))[None]
        B = x.shape[0]
        u = torch.relu(self.lin(x, "synth.hidden"))  # (B, n, h·hidden)
        u = split_heads(u, h)  # (B, h, n, hidden)
        if self["synth.out.weight"] is not None:
            return u @ self["synth.out.weight"][None, :, :n].transpose(-1, -2) + self["synth.out.bias"][None, :, None, :n]
        a = u @ self["synth.out_a.weight"][None].transpose(-1, -2) + self["synth.out_a.bias"][None, :, None, :]
        bb = u @ self["synth.out_b.weight"][None].transpose(-1, -2) + self["synth.out_b.bias"][None, :, None, :]
        nb = bb.shape[-1]
        j = torch.arange(n)
        return a[..., j // nb] * bb[..., j % nb]  # S_t[j] = a_t[⌊j/b⌋]·b_t[j mod b]

    def forward(self, x, key_padding_mask=None):
        B, n, _ = x.shape
        v = zero_rows(self.lin(zero_rows(x, key_padding_mask), "to_v"), key_padding_mask)
        allowed = key_allowed(B, n, n, key_padding_mask, self.causal)
        p = masked_softmax(self.scores(x, n).expand(B, -1, -1, -1), allowed)
        return self.lin(merge_heads(p @ split_heads(v, self.h)), "to_out")


# --- the Attention Free Transformer kinds ----------------------------------------------------------
def aft_mix(q, k, v, bias, allowed):
    """Y_tc = σ(Q_tc) Σ_t' softmax_t'(K_t'c + bias_tt'c) V_t'c over the allowed t'; no key: Y = 0.
    q, k, v (B, n, c); bias (n, n', c) or broadcastable to it; allowed (B, n, n')."""
    logits = (k[:, None, :, :] + bias).transpose(-1, -2)  # (B, n, c, n')
    w = masked_softmax(logits, allowed[:, :, None, :].expand_as(logits))
    return torch.sigmoid(q) * torch.einsum("btcs,bsc->btc", w, v)


class AftRef(Ref):
    def __init__(self, dims, options, k_out=None):
        super().__init__(dims, options)
        self.maps(self.d, k_out or self.d, self.d, bias=options.get("qkv_bias", False))

    def allowed(self, B, n, mask):
        return key_allowed(B, n, n, mask, self.causal)[:, 0]  # (B, n, n')


class AftSimpleRef(AftRef):
    def forward(self, x, key_padding_mask=None):
        B, n, _ = x.shape
        q, k, v = (self.lin(x, t) for t in ("to_q", "to_k", "to_v"))
        y = aft_mix(q, k, v, torch.zeros(n, n, 1, dtype=x.dtype), self.allowed(B, n, key_padding_mask))
        return self.lin(y, "to_out")


class AftFullRef(AftRef):
    def __init__(self, dims, options):
        super().__init__(dims, options)
        r = options["bias_rank"]
        if r > 0:
            self.p("pos_bias.u", (self.L, r), 1 / math.sqrt(r))
            self.p("pos_bias.v", (self.L, r), 1 / math.sqrt(r))
        else:
            self.p("pos_bias.w", (self.L, self.L), 1.0)

    def bias(self, n):
        if self["pos_bias.w"] is not None:
            return self["pos_bias.w"][:n, :n]
        return self["pos_bias.u"][:n] @ self["pos_bias.v"][:n].t()

    def forward(self, x, key_padding_mask=None):
        B, n, _ = x.shape
        q, k, v = (self.lin(x, t) for t in ("to_q", "to_k", "to_v"))
        y = aft_mix(q, k, v, self.bias(n)[..., None], self.allowed(B, n, key_padding_mask))
        return self.lin(y, "to_out")


class AftLocalRef(AftFullRef):
    def __init__(self, dims, options):
        AftRef.__init__(self, dims, options)
        r, s = options["bias_rank"], options["window"]
        if r > 0:
            self.p("pos_bias.u", (self.L, r), 1 / math.sqrt(r))
            self.p("pos_bias.v", (self.L, r), 1 / math.sqrt(r))
        else:  # only the band: [t, j] = w_{t, t+j−s+1}
            self.p("pos_bias.band", (self.L, s if self.causal else 2 * s - 1), 1.0)

    def bias(self, n):
        s = self.opt["window"]
        t, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
        inside = (t - j).abs() < s
        if self["pos_bias.band"] is not None:
            col = (j - t + s - 1).clamp(0, self["pos_bias.band"].shape[1] - 1)
            w = self["pos_bias.band"][:n][torch.arange(n)[:, None], col]
        else:
            w = self["pos_bias.u"][:n] @ self["pos_bias.v"][:n].t()
        return torch.where(inside, w, torch.zeros_like(w))  # 0 (not −∞) outside the window


class AftConvRef(AftRef):
    def __init__(self, dims, options):
        super().__init__(dims, options, k_out=dims["n_heads"])
        s = options["window"]
        self.p("kernel.weight", (self.h, s), 1.0)
        self.p("kernel.gamma", (self.h,), 1.5)  # nonzero (the engine starts at 0) so the kernel matters
        self.p("kernel.beta", (self.h,), 1.0)

    def forward(self, x, key_padding_mask=None):
        B, n, _ = x.shape
        s, h = self.opt["window"], self.h
        q, k, v = (self.lin(x, t) for t in ("to_q", "to_k", "to_v"))
        w = self["kernel.weight"]
        mean = w.mean(dim=1, keepdim=True)
        var = ((w - mean) ** 2).mean(dim=1, keepdim=True)  # population variance
        w_hat = self["kernel.gamma"][:, None] * (w - mean) / torch.sqrt(var + 1e-5) + self["kernel.beta"][:, None]
        # κ_j e + e = exp(ŵ_j) e inside the window: an AFT bias ŵ_j at tap j, 0 outside
        t, tp = torch.arange(n)[:, None], torch.arange(n)[None, :]
        tap = tp - t + (s - 1 if self.causal else s // 2)  # key t' = t + o_j
        inside = (tap >= 0) & (tap < s)
        bias = torch.where(inside[None], w_hat[:, tap.clamp(0, s - 1)], torch.zeros(h, n, n, dtype=x.dtype))
        bias = bias.repeat_interleave(self.d_h, dim=0).permute(1, 2, 0)  # (n, n', d): head of each channel
        k_ch = k.repeat_interleave(self.d_h, dim=-1)  # one K channel per head
        y = aft_mix(q, k_ch, v, bias, self.allowed(B, n, key_padding_mask))
        return self.lin(y, "to_out")


# --- mixer -----------------------------------------------------------------------------------------
class MixerRef(Ref):
    def __init__(self, dims, options):
        super().__init__(dims, options)
        G, L, H = self.h, self.L, options.get("hidden", 0)
        if H == 0:
            self.p("mix.weight", (G, L, L), 1 / math.sqrt(L))
            self.p("mix.bias", (G, L), 1 / math.sqrt(L))
        else:
            self.p("mix1.weight", (G, H, L), 1 / math.sqrt(L))
            self.p("mix1.bias", (G, H), 1 / math.sqrt(L))
            self.p("mix2.weight", (G, L, H), 1 / math.sqrt(H))
            self.p("mix2.bias", (G, L), 1 / math.sqrt(H))
        if options.get("out_proj", False):
            self.p("to_out.weight", (self.d, self.d), 1 / math.sqrt(self.d))
            self.p("to_out.bias", (self.d,), 1 / math.sqrt(self.d))

    def forward(self, x, key_padding_mask=None):
        B, n, _ = x.shape
        xg = split_heads(zero_rows(x, key_padding_mask), self.h)  # (B, G, n, d_h)
        if self["mix.weight"] is not None:
            W = self["mix.weight"][:, :n, :n]
            if self.causal:
                W = torch.tril(W)
            y = W[None] @ xg + self["mix.bias"][None, :, :n, None]
        else:
            hid = self["mix1.weight"][None, :, :, :n] @ xg + self["mix1.bias"][None, :, :, None]
            y = self["mix2.weight"][None, :, :n] @ F.gelu(hid) + self["mix2.bias"][None, :, :n, None]
        y = merge_heads(y)
        return self.lin(y, "to_out") if self.opt.get("out_proj", False) else y


# --- sinkhorn --------------------------------------------------------------------------------------
class SinkhornRef(Ref):
    def __init__(self, dims, options):
        super().__init__(dims, options)
        d, b = self.d, options["block"]
        self.maps(d, d, d, bias=options.get("qkv_bias", False))
        self.N_b = -(-self.L // b)
        s = 1 / math.sqrt(d)
        if options.get("sort_net", "mlp") == "mlp":
            self.p("sort_net.hidden.weight", (d, d), s)
            self.p("sort_net.hidden.bias", (d,), s)
        self.p("sort_net.out.weight", (self.h * self.N_b, d), 3 * s)  # wide scores: P far from uniform
        self.p("sort_net.out.bias", (self.h * self.N_b,), s)

    def permutation(self, R):
        """P = exp(L) after the Sinkhorn rounds on L = R/τ, (B, h, n_b, n_b)."""
        L = R / self.opt.get("temperature", 0.75)
        nb = L.shape[-1]
        iters = self.opt.get("sinkhorn_iters", 8)
        if not self.causal:
            for _ in range(iters):
                L = L - L.logsumexp(dim=-1, keepdim=True)
                L = L - L.logsumexp(dim=-2, keepdim=True)
            return L.exp()
        # Causal: entries j < i only. A round divides (i, j) by the mean of column j over the rows
        # j < k ≤ i, then normalises the rows.
        i, j = torch.arange(nb)[:, None], torch.arange(nb)[None, :]
        exists = j < i
        L = L.masked_fill(~exists, float("-inf"))
        count = (i - j).clamp(min=1).to(L.dtype)
        for _ in range(iters):
            running = torch.logcumsumexp(L, dim=-2)  # lse over rows k ≤ i (absent rows are −∞)
            L = torch.where(exists, L - running + torch.log(count), L)
            row = torch.where(exists.any(-1, keepdim=True), L.logsumexp(dim=-1, keepdim=True), torch.zeros_like(L))
            L = torch.where(exists, L - row, L)
        return torch.where(exists, L.exp(), torch.zeros_like(L))

    def forward(self, x, key_padding_mask=None):
        B, n, d = x.shape
        h, d_h, b = self.h, self.d_h, self.opt["block"]
        nb = -(-n // b)
        npad = nb * b
        valid = torch.ones(B, n, dtype=torch.bool) if key_padding_mask is None else ~key_padding_mask
        valid = F.pad(valid, (0, npad - n))  # (B, n_p): the internal padding is invalid
        q, k, v = (self.lin(x, t) for t in ("to_q", "to_k", "to_v"))
        q = F.pad(q, (0, 0, 0, npad - n))
        k, v = (F.pad(t, (0, 0, 0, npad - n)) * valid[..., None] for t in (k, v))
        # block summaries: the mean of x over the valid positions of the block (causal: the blocks before)
        xs = F.pad(x, (0, 0, 0, npad - n)) * valid[..., None]
        sums, cnt = xs.reshape(B, nb, b, d).sum(2), valid.reshape(B, nb, b).sum(2).to(x.dtype)
        if self.causal:
            sums, cnt = sums.cumsum(1) - sums, cnt.cumsum(1) - cnt
        summ = sums / cnt.clamp(min=1)[..., None]
        if self["sort_net.hidden.weight"] is not None:
            summ = torch.relu(self.lin(summ, "sort_net.hidden"))
        R = self.lin(summ, "sort_net.out").reshape(B, nb, h, self.N_b)[..., :nb].permute(0, 2, 1, 3)
        # A sample sorts the blocks of its real length (its last unpadded position + 1) only.
        own_blocks = []
        for s in range(B):
            real = n
            while key_padding_mask is not None and real > 1 and bool(key_padding_mask[s, real - 1]):
                real -= 1
            own_blocks.append(-(-real // b))
        P = torch.zeros(B, h, nb, nb, dtype=R.dtype)
        for s in range(B):
            o = own_blocks[s]
            P[s, :, :o, :o] = self.permutation(R[s, :, :o, :o])
        kb = split_heads(k, h).reshape(B, h, nb, b * d_h)
        vb = split_heads(v, h).reshape(B, h, nb, b * d_h)
        ks, vs = (P @ kb).reshape(B, h, nb, b, d_h), (P @ vb).reshape(B, h, nb, b, d_h)
        kb, vb = kb.reshape(B, h, nb, b, d_h), vb.reshape(B, h, nb, b, d_h)
        qb = split_heads(q, h).reshape(B, h, nb, b, d_h)
        keys, vals = torch.cat([kb, ks], dim=3), torch.cat([vb, vs], dim=3)  # (B, h, n_b, 2b, d_h)
        # masks: own-block keys that are invalid (or later, causal); partner row r hidden when row r is
        # invalid in every block that can be mixed into it (every block; causal: the earlier ones)
        vr = valid.reshape(B, nb, b)
        own = vr[:, :, None, :].expand(B, nb, b, b)
        if self.causal:
            own = own & torch.tril(torch.ones(b, b, dtype=torch.bool))
            partner = (torch.cumsum(vr.to(torch.int64), 1) - vr.to(torch.int64)) > 0
        else:
            partner = vr.any(1, keepdim=True).expand(B, nb, b)
        # a block past the sample's own has no partner
        partner = partner & (torch.arange(nb)[None, :, None] < torch.tensor(own_blocks)[:, None, None])
        allowed = torch.cat([own, partner[:, :, None, :].expand(B, nb, b, b)], dim=-1)[:, None]
        p = masked_softmax(qb @ keys.transpose(-1, -2) / math.sqrt(d_h), allowed)
        o = (p @ vals).reshape(B, h, npad, d_h)[:, :, :n]
        return self.lin(merge_heads(o), "to_out")


# --- reformer --------------------------------------------------------------------------------------
class ReformerRef(Ref):
    def __init__(self, dims, options):
        super().__init__(dims, options)
        self.maps(self.d, None, self.d, bias=options.get("qkv_bias", False), names=("to_qk", None, "to_v"))

    def rotations(self, n_buckets):
        """R (n_hashes, h, d_h, n_buckets/2): the engine's Philox normals, stream of prefix "" ."""
        o, h, d_h = self.opt, self.h, self.d_h
        half = n_buckets // 2
        stream = stream_id("lsh_rotations")
        rows = o["n_hashes"] * h * d_h
        R = [[normal_f64(o.get("seed", 0), stream, (row << 24) + j) for j in range(half)] for row in range(rows)]
        return torch.tensor(R, dtype=torch.float64).reshape(o["n_hashes"], h, d_h, half)

    def visible(self, buckets, n, padded):
        """(n, n) bool for one (round, sample, head): key j in the query's chunk or the one before.
        Padded positions (bucket n_buckets, sorted last) are in no chunk; global chunks are cut from
        the real positions alone."""
        L = self.opt["bucket_size"]
        order = [t for t in sorted(range(n), key=lambda t: (buckets[t], t)) if not padded[t]]
        chunk = [None] * n
        prev = {}
        if self.opt.get("chunking", "bucket" if self.causal else "global") == "global":
            n_chunks = -(-len(order) // L)
            for p, t in enumerate(order):
                chunk[t] = p // L
            prev = {c: (c - 1) % n_chunks if n_chunks > 1 else None for c in range(n_chunks)}
        else:  # chunks restart at every bucket; no wrap-around
            seen = {}
            for t in order:
                k = seen.get(buckets[t], 0)
                seen[buckets[t]] = k + 1
                chunk[t] = (buckets[t], k // L)
                prev[chunk[t]] = (buckets[t], k // L - 1)
        across = self.opt.get("attend_across_buckets", self.opt.get("chunking", "bucket" if self.causal else "global") == "global")
        vis = torch.zeros(n, n, dtype=torch.bool)
        for t in order:
            for j in order:
                vis[t, j] = (chunk[j] == chunk[t] or chunk[j] == prev[chunk[t]]) and (across or buckets[j] == buckets[t])
        return vis

    def forward(self, x, key_padding_mask=None):
        B, n, _ = x.shape
        o, h, d_h = self.opt, self.h, self.d_h
        u = split_heads(self.lin(x, "to_qk"), h)  # (B, h, n, d_h)
        v = split_heads(self.lin(x, "to_v"), h)
        kn = u / u.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        L = o["bucket_size"]
        nbk = o.get("n_buckets", 0)
        if nbk == 0:  # from max_len, never from the call's length
            chunks = -(-self.L // L)
            nbk = max(2, chunks + chunks % 2)
        R = self.rotations(nbk)
        base = key_allowed(B, n, n, key_padding_mask, self.causal)[:, 0]  # (B, n, n)
        eye = torch.eye(n, dtype=torch.bool)
        raw = u @ kn.transpose(-1, -2) / math.sqrt(d_h)  # (B, h, n, n)
        padded = key_padding_mask if key_padding_mask is not None else torch.zeros(B, n, dtype=torch.bool)
        vis = []
        for r in range(o["n_hashes"]):
            proj = kn.detach() @ R[r][None]  # (B, h, n, n_b/2)
            bk = torch.cat([proj, -proj], dim=-1).argmax(dim=-1)
            bk = torch.where(padded[:, None, :], nbk, bk)
            vis.append(torch.stack([torch.stack([self.visible(bk[b, i].tolist(), n, padded[b].tolist())
                                                 for i in range(h)]) for b in range(B)]))
        # the paper's duplicate correction: − log of the rounds in which the pair is visible
        if not o.get("allow_duplicate_attention", False):
            count = torch.stack(vis).sum(dim=0).to(torch.float64).clamp(min=1)
            raw = raw - torch.log(count)
        raw = torch.where(eye, torch.full_like(raw, -1e5), raw)  # the query's own key: −1e5
        scores, values = [], []
        for r in range(o["n_hashes"]):
            allowed = vis[r] & base[:, None]
            scores.append(raw.masked_fill(~allowed, float("-inf")))
            values.append(v)
        # one softmax over every (round, key) pair; a padded query (no key) gives 0
        s = torch.cat(scores, dim=-1)
        p = masked_softmax(s, torch.isfinite(s))
        return self.lin(merge_heads(p @ torch.cat(values, dim=-2)), "to_out")


# --- one golden ------------------------------------------------------------------------------------
REFERENCES = {
    "full": (FullAttentionRef, "plain torch softmax attention (make_goldens.py), checked against F.scaled_dot_product_attention"),
    "flash": (FullAttentionRef, "plain torch softmax attention (make_goldens.py): flash computes exact attention"),
    "linformer": (LinformerRef, "lucidrains linformer.LinformerSelfAttention"),
    "local": (LocalRef, "make_goldens.py LocalRef: softmax attention on the window pattern"),
    "strided": (StridedRef, "make_goldens.py StridedRef: softmax attention on the strided pattern"),
    "global": (GlobalRef, "make_goldens.py GlobalRef: softmax attention on the global pattern"),
    "longformer": (LongformerRef, "make_goldens.py LongformerRef: softmax attention on the Longformer pattern"),
    "bigbird": (BigBirdRef, "make_goldens.py BigBirdRef: softmax attention on the BigBird block pattern (Philox draws)"),
    "linear": (LinearRef, "make_goldens.py LinearRef: elu+1 kernel attention"),
    "performer": (PerformerRef, "make_goldens.py PerformerRef: FAVOR+ with the stored features"),
    "synthesizer": (SynthesizerRef, "make_goldens.py SynthesizerRef"),
    "aft_full": (AftFullRef, "make_goldens.py AftFullRef"),
    "aft_local": (AftLocalRef, "make_goldens.py AftLocalRef"),
    "aft_simple": (AftSimpleRef, "make_goldens.py AftSimpleRef"),
    "aft_conv": (AftConvRef, "make_goldens.py AftConvRef"),
    "mixer": (MixerRef, "make_goldens.py MixerRef"),
    "sinkhorn": (SinkhornRef, "make_goldens.py SinkhornRef"),
    "reformer": (ReformerRef, "make_goldens.py ReformerRef: LSH attention with the engine's Philox rotations"),
}


def save(tensors, path, metadata):
    """save_file, then the __metadata__ keys in sorted order: safetensors writes them in hash order,
    which changes from run to run; sorted, regenerating gives the same bytes."""
    save_file(tensors, str(path), metadata=metadata)
    raw = pathlib.Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(text) <= n, "the sorted header is longer than the original"
    text += b" " * (n - len(text))  # the same length: the data offsets stay valid
    pathlib.Path(path).write_bytes(raw[:8] + text + raw[8 + n:])


def versions(packages):
    meta = {"torch_version": torch.__version__, "python_version": platform.python_version(),
            "packages": json.dumps(sorted(packages))}
    for pkg in packages:
        meta[f"{pkg}_version"] = torch.__version__ if pkg == "torch" else importlib.metadata.version(pkg)
    return meta


def make_golden(path, seed, kind, options, n, shape=SHAPE1, causal=False, pad_last=0):
    torch.manual_seed(seed)
    ref_class, reference = REFERENCES[kind]
    dims = {"d_model": shape["d_model"], "n_heads": shape["n_heads"], "max_len": shape["max_len"], "causal": causal}
    B, d = shape["B"], shape["d_model"]
    module = ref_class(dims, options).double()
    x = torch.randn(B, n, d, dtype=torch.float64, requires_grad=True)
    mask = None
    if pad_last:  # the last sample's last `pad_last` positions are padding
        mask = torch.zeros(B, n, dtype=torch.bool)
        mask[-1, n - pad_last:] = True
    out = module(x, key_padding_mask=mask)
    grad_output = torch.randn(B, n, d, dtype=torch.float64)
    (out * grad_output).sum().backward()

    tensors = {"input.x": x.detach(), "output": out.detach(), "grad_output": grad_output, "grad.input.x": x.grad}
    if mask is not None:
        tensors["input.key_padding_mask"] = mask.to(torch.uint8)
    for name, (param, transpose) in module.golden_params().items():
        value = param.detach()
        if param.requires_grad:
            grad = param.grad
            assert grad is not None, f"{path.name}: no gradient reached {name}"
        else:  # a fixed (non-trainable) parameter: the engine leaves its gradient at zero
            grad = torch.zeros_like(value)
        if transpose:
            value, grad = value.t(), grad.t()
        tensors[f"param.{name}"] = value
        tensors[f"grad.param.{name}"] = grad
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    for k, v in tensors.items():
        assert v.dtype in (torch.float64, torch.uint8), f"{k} is {v.dtype}"
        assert torch.isfinite(v.double()).all(), f"{k} is not finite"

    spec = {"kind": kind, "dims": dims, "options": options, "B": B, "n": n}
    packages = ["torch", "numpy", "safetensors"] + (["linformer"] if kind == "linformer" else [])
    meta = {"spec": json.dumps(spec, sort_keys=True), "reference": reference, **versions(packages)}
    save(tensors, path, meta)
    return spec


def linformer_options(one_kv_head, share_kv):
    return {"k": K, "sharing": "kv" if share_kv else "headwise", "share_kv_linear": share_kv,
            "one_kv_head": one_kv_head, "qkv_bias": False}


S2 = SHAPE2
# name: (seed, kind, options, n, shape, causal, padded positions of the last sample)
CASES = {
    "linformer_base": (101, "linformer", linformer_options(False, False), 16, SHAPE1, False, 0),
    "linformer_share_kv": (102, "linformer", linformer_options(False, True), 16, SHAPE1, False, 0),
    "linformer_one_kv_head": (103, "linformer", linformer_options(True, False), 16, SHAPE1, False, 0),
    "linformer_short": (104, "linformer", linformer_options(False, False), 11, SHAPE1, False, 0),
    "linformer_one_kv_head_share_kv": (105, "linformer", linformer_options(True, True), 13, SHAPE1, False, 0),
    "linformer_shape2": (106, "linformer", {**linformer_options(False, False), "k": 5}, 12, S2, False, 0),
    "full_plain": (201, "full", {"qkv_bias": False}, 16, SHAPE1, False, 0),
    "full_causal": (202, "full", {"qkv_bias": False}, 16, SHAPE1, True, 0),
    "full_key_padding_mask": (203, "full", {"qkv_bias": False}, 16, SHAPE1, False, 5),
    "full_qkv_bias": (204, "full", {"qkv_bias": True}, 16, SHAPE1, False, 0),
    "full_short": (205, "full", {"qkv_bias": False}, 9, SHAPE1, False, 0),
    "full_shape2_causal_mask": (206, "full", {"qkv_bias": True}, 10, S2, True, 3),
    "flash_plain": (301, "flash", {}, 16, SHAPE1, False, 0),
    "flash_causal_mask": (302, "flash", {"qkv_bias": True}, 13, SHAPE1, True, 4),
    "flash_shape2": (303, "flash", {}, 12, S2, False, 5),
    # Grouped- and multi-query attention (kv_heads), checked against SDPA's enable_gqa.
    "full_gqa_kv2_causal_mask": (207, "full", {"kv_heads": 2, "qkv_bias": True}, 13, SHAPE1, True, 4),
    "flash_mqa_mask": (304, "flash", {"kv_heads": 1}, 16, SHAPE1, False, 5),
    "local_plain": (401, "local", {"window": 4}, 16, SHAPE1, False, 0),
    "local_causal_mask": (402, "local", {"window": 3, "qkv_bias": True}, 16, SHAPE1, True, 5),
    "local_shape2_short": (403, "local", {"window": 5}, 9, S2, False, 2),
    "strided_plain": (501, "strided", {"stride": 4}, 16, SHAPE1, False, 0),
    "strided_causal_mask": (502, "strided", {"stride": 3, "local_window": 2}, 16, SHAPE1, True, 4),
    "strided_shape2_no_band": (503, "strided", {"stride": 3, "local_window": 0}, 11, S2, False, 0),
    "global_plain": (601, "global", {"global_tokens": 2, "window": 2}, 16, SHAPE1, False, 0),
    "global_causal_mask": (602, "global", {"global_tokens": 1, "global_indices": [7, 12], "window": 3}, 16,
                           SHAPE1, True, 5),
    "global_shape2_indices": (603, "global", {"global_indices": [3, 10], "window": 0}, 11, S2, False, 2),
    "longformer_plain": (701, "longformer", {"window": 4, "global_tokens": 1}, 16, SHAPE1, False, 0),
    "longformer_dilated_mask": (702, "longformer", {"window": 4, "dilation": 2, "global_indices": [9]}, 16, SHAPE1,
                                False, 4),
    "longformer_causal_shape2": (703, "longformer", {"window": 3, "dilation": 2, "global_tokens": 0}, 12, S2, True,
                                 0),
    "bigbird_plain": (801, "bigbird", {"block": 2, "window_blocks": 3, "global_blocks": 1, "random_blocks": 2,
                                       "seed": 3}, 16, SHAPE1, False, 0),
    "bigbird_causal_mask": (802, "bigbird", {"block": 2, "window_blocks": 2, "global_blocks": 1, "random_blocks": 1,
                                             "seed": 5}, 15, SHAPE1, True, 4),
    "bigbird_shape2": (803, "bigbird", {"block": 3, "window_blocks": 1, "global_blocks": 1, "random_blocks": 1,
                                        "seed": 0}, 11, S2, False, 2),
    "linear_plain": (901, "linear", {}, 16, SHAPE1, False, 0),
    "linear_causal_mask": (902, "linear", {"qkv_bias": True, "chunk": 4}, 16, SHAPE1, True, 5),
    "linear_shape2_short": (903, "linear", {"chunk": 3}, 10, S2, False, 3),
    "performer_plain": (1001, "performer", {"features": 12}, 16, SHAPE1, False, 0),
    "performer_causal_mask": (1002, "performer", {"features": 10, "chunk": 4, "qkv_bias": True}, 16, SHAPE1, True, 5),
    "performer_shape2": (1003, "performer", {"features": 16}, 11, S2, False, 3),
    "synthesizer_dense": (1101, "synthesizer", {"mode": "dense", "hidden": 6}, 16, SHAPE1, False, 0),
    "synthesizer_dense_causal_mask": (1102, "synthesizer", {"mode": "dense", "v_bias": True}, 13, SHAPE1, True, 4),
    "synthesizer_factorized": (1103, "synthesizer", {"mode": "dense", "factorized": True, "factor_a": 3}, 16, SHAPE1,
                               False, 3),
    "synthesizer_random_shape2": (1104, "synthesizer", {"mode": "random"}, 10, S2, False, 3),
    "synthesizer_random_rank_causal": (1105, "synthesizer", {"mode": "random", "rank": 3}, 16, SHAPE1, True, 0),
    "synthesizer_random_fixed": (1106, "synthesizer", {"mode": "random", "fixed": True}, 12, S2, False, 0),
    "aft_full_plain": (1201, "aft_full", {"bias_rank": 4}, 16, SHAPE1, False, 0),
    "aft_full_causal_mask": (1202, "aft_full", {"bias_rank": 0, "qkv_bias": True}, 14, SHAPE1, True, 4),
    "aft_full_shape2": (1203, "aft_full", {"bias_rank": 3}, 10, S2, False, 2),
    "aft_local_plain": (1301, "aft_local", {"window": 3, "bias_rank": 4}, 16, SHAPE1, False, 0),
    "aft_local_band_causal_mask": (1302, "aft_local", {"window": 4, "bias_rank": 0}, 16, SHAPE1, True, 5),
    "aft_local_band_shape2": (1303, "aft_local", {"window": 3, "bias_rank": 0, "qkv_bias": True}, 11, S2, False,
                               2),
    "aft_simple_plain": (1401, "aft_simple", {}, 16, SHAPE1, False, 0),
    "aft_simple_causal_mask": (1402, "aft_simple", {"qkv_bias": True}, 16, SHAPE1, True, 5),
    "aft_simple_shape2": (1403, "aft_simple", {}, 9, S2, False, 2),
    "aft_conv_plain": (1501, "aft_conv", {"window": 5}, 16, SHAPE1, False, 0),
    "aft_conv_causal_mask": (1502, "aft_conv", {"window": 4, "qkv_bias": True}, 16, SHAPE1, True, 5),
    "aft_conv_shape2": (1503, "aft_conv", {"window": 3}, 10, S2, False, 2),
    "mixer_plain": (1601, "mixer", {}, 16, SHAPE1, False, 0),
    "mixer_causal_out_proj": (1602, "mixer", {"out_proj": True}, 13, SHAPE1, True, 4),
    "mixer_hidden_shape2": (1603, "mixer", {"hidden": 5}, 10, S2, False, 3),
    "sinkhorn_mlp": (1701, "sinkhorn", {"block": 4, "sinkhorn_iters": 4}, 16, SHAPE1, False, 0),
    "sinkhorn_causal_mask": (1702, "sinkhorn", {"block": 3, "sinkhorn_iters": 3, "temperature": 0.5}, 16, SHAPE1,
                             True, 4),
    "sinkhorn_linear_shape2": (1703, "sinkhorn", {"block": 3, "sort_net": "linear", "qkv_bias": True}, 11, S2,
                               False, 3),
    "reformer_plain": (1801, "reformer", {"n_hashes": 2, "bucket_size": 4}, 16, SHAPE1, False, 0),
    "reformer_causal_mask": (1802, "reformer", {"n_hashes": 2, "bucket_size": 3, "seed": 7}, 16, SHAPE1, True, 4),
    "reformer_bucket_shape2": (1803, "reformer", {"n_hashes": 3, "bucket_size": 3, "n_buckets": 4,
                                                  "chunking": "bucket", "qkv_bias": True}, 11, S2, False, 2),
    "reformer_within_buckets_mask": (1804, "reformer", {"n_hashes": 3, "bucket_size": 3,
                                                        "attend_across_buckets": False}, 14, SHAPE1, False, 3),
}


# --- the model golden: lucidrains' LinformerLM -----------------------------------------------------
LM = {"num_tokens": 20, "dim": 16, "seq_len": 12, "depth": 2, "k": 4, "heads": 2}
ADAMW = {"lr": 1e-2, "betas": (0.9, 0.98), "eps": 1e-6, "weight_decay": 0.1}
ADAMW_STEPS = 10


def load_convert():
    """python/linformer/convert.py by path: lucidrains' package, imported here, is also `linformer`."""
    spec = importlib.util.spec_from_file_location("linformer_convert", REPO / "python" / "linformer" / "convert.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def lm_params(model):
    """our name -> (torch parameter, transpose) for LinformerLM: the converter's name map (docs/convert.md)."""
    params = dict(model.named_parameters())
    names = load_convert().lucidrains_names(len(model.linformer.net.layers), share_kv=False)
    return {ours: (params[theirs], tr) for ours, (theirs, tr) in names.items()}


def make_lm_golden(path, seed=4242, B=3):
    torch.manual_seed(seed)
    model = LinformerLM(**LM, dropout=0.0).double()
    # LayerNorm starts at weight 1, bias 0: perturb them so their gradients and updates are not special
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.LayerNorm):
                mod.weight.add_(0.1 * torch.randn_like(mod.weight))
                mod.bias.add_(0.1 * torch.randn_like(mod.bias))
    params = lm_params(model)
    assert len(params) == len(list(model.parameters())), "a LinformerLM parameter has no name"
    tokens = torch.randint(0, LM["num_tokens"], (B, LM["seq_len"]))
    targets = torch.randint(0, LM["num_tokens"], (B, LM["seq_len"]))

    def loss_of(logits):  # mean cross-entropy over every position
        return F.cross_entropy(logits.reshape(-1, LM["num_tokens"]), targets.reshape(-1))

    tensors = {"input.tokens": tokens.to(torch.int32), "input.targets": targets.to(torch.int32)}
    for name, (param, tr) in params.items():
        tensors[f"param.{name}"] = (param.t() if tr else param).detach().clone()
    logits = model(tokens)
    loss = loss_of(logits)
    loss.backward()
    tensors["output.logits"] = logits.detach()
    tensors["output.loss"] = loss.detach().reshape(1)
    for name, (param, tr) in params.items():
        tensors[f"grad.param.{name}"] = param.grad.t() if tr else param.grad
    # Ten AdamW steps on the same batch. The engine's trainer decays only tensors of two or more
    # dimensions (weights, embeddings, E and F), not biases and LayerNorm: two param groups.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": ADAMW["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"])
    losses = []
    for _ in range(ADAMW_STEPS):
        opt.zero_grad()
        loss = loss_of(model(tokens))
        losses.append(loss.item())
        loss.backward()
        opt.step()
    tensors["output.step_losses"] = torch.tensor(losses, dtype=torch.float64)
    for name, (param, tr) in params.items():
        tensors[f"after_adamw.{name}"] = (param.t() if tr else param).detach()
    tensors = {k: v.contiguous() for k, v in tensors.items()}

    spec = {"model": "LinformerLM", "lucidrains": {**LM, "dropout": 0.0},
            "adamw": {**ADAMW, "betas": list(ADAMW["betas"]), "steps": ADAMW_STEPS,
                      "weight_decay_on": "tensors of 2 or more dimensions"},
            "loss": "mean cross-entropy over every position", "B": B, "n": LM["seq_len"]}
    meta = {"spec": json.dumps(spec, sort_keys=True), "reference": "lucidrains linformer.LinformerLM",
            **versions(["torch", "numpy", "safetensors", "linformer"])}
    save(tensors, path, meta)
    return spec


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=pathlib.Path, default=REPO / "tests" / "data" / "golden")
    ap.add_argument("--only", help="write only the cases whose name starts with this")
    args = ap.parse_args()
    torch.set_num_threads(1)  # one summation order: regenerating gives the same bits
    args.out.mkdir(parents=True, exist_ok=True)

    def show(path, spec):
        print(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: "
              f"{path.stat().st_size} bytes, {json.dumps(spec, sort_keys=True)}")

    for name, (seed, kind, options, n, shape, causal, pad) in CASES.items():
        if args.only and not name.startswith(args.only):
            continue
        path = args.out / f"{name}.safetensors"
        show(path, make_golden(path, seed, kind, options, n, shape, causal, pad))
    if not args.only or "linformer_lm".startswith(args.only):
        (args.out / "model").mkdir(exist_ok=True)
        path = args.out / "model" / "linformer_lm.safetensors"
        show(path, make_lm_golden(path))


if __name__ == "__main__":
    main()
