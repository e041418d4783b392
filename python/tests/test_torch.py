"""linformer.torch: the drop-in modules against lucidrains' module and a torch reference.

Outputs and every gradient equal the peers' with the same weights (1e-5 in float32, 1e-10 in
float64), gradcheck passes in double, the module trains inside a torch model exactly as his does, and
bad input raises a clear exception. Skipped, with the reason, where torch is absent (CI).
"""

import copy
import math
import os
import sys

import pytest

torch = pytest.importorskip("torch", reason="linformer.torch's tests need PyTorch (pip install '.[torch]')")
import torch.nn.functional as F  # noqa: E402
from torch.func import functional_call  # noqa: E402

import linformer  # noqa: E402
from linformer import _core  # noqa: E402
from linformer.torch import LinformerSelfAttention, SelfAttention  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import lucidrains  # noqa: E402

LUCID, LUCID_MISSING = lucidrains.load()
needs_lucid = pytest.mark.skipif(LUCID is None, reason=LUCID_MISSING or "")

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
DTYPES = [torch.float32, torch.float64]


def close(a, b, dtype, what):
    """Max abs difference within TOL × the reference's largest entry (at least 1)."""
    scale = max(1.0, b.abs().max().item())
    err = (a - b).abs().max().item()
    assert err <= TOL[dtype] * scale, f"{what}: max |ours - ref| = {err:.3g} > {TOL[dtype]:.0e} × {scale:.3g}"


def pair(dtype, **kw):
    """His module and ours with his weights."""
    torch.manual_seed(kw.pop("seed", 0))
    ref = LUCID.LinformerSelfAttention(**kw).to(dtype)
    ours = LinformerSelfAttention(**kw).to(dtype)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def compare_forward_backward(ref, ours, x, dtype, what, n_uses=1):
    xr, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    yr, yo = xr, xo
    for _ in range(n_uses):  # n_uses > 1: the module twice in one graph (backward recomputes a forward)
        yr, yo = ref(yr), ours(yo)
    close(yo, yr, dtype, f"{what}: output")
    g = torch.randn_like(yr)
    yr.backward(g)
    yo.backward(g)
    close(xo.grad, xr.grad, dtype, f"{what}: dx")
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        close(p.grad, ref_params[name].grad, dtype, f"{what}: d{name}")


LUCID_CASES = {
    # name: (constructor kwargs, batch, n)
    "default": (dict(dim=64, seq_len=32, k=8, heads=4), 3, 32),
    "shorter_seq": (dict(dim=64, seq_len=32, k=8, heads=4), 2, 19),
    "one_kv_head": (dict(dim=48, seq_len=24, k=6, heads=3, one_kv_head=True), 2, 24),
    "share_kv": (dict(dim=32, seq_len=16, k=4, heads=2, share_kv=True), 2, 16),
    "one_kv_head_share_kv": (dict(dim=32, seq_len=20, k=5, heads=4, one_kv_head=True, share_kv=True), 3, 13),
    "dim_head": (dict(dim=40, seq_len=16, k=8, heads=2, dim_head=24), 2, 16),
    "k_equals_seq_len": (dict(dim=16, seq_len=8, k=8, heads=1), 1, 8),
    "wider": (dict(dim=128, seq_len=64, k=16, heads=8), 2, 64),
}


@needs_lucid
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", list(LUCID_CASES))
def test_linformer_matches_lucidrains(case, dtype):
    kw, B, n = LUCID_CASES[case]
    ref, ours = pair(dtype, **kw)
    compare_forward_backward(ref, ours, torch.randn(B, n, kw["dim"], dtype=dtype), dtype, case)


@needs_lucid
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_linformer_used_twice_in_one_graph_matches_lucidrains(dtype):
    ref, ours = pair(dtype, dim=32, seq_len=16, k=4, heads=2)
    compare_forward_backward(ref, ours, torch.randn(2, 16, 32, dtype=dtype), dtype, "twice", n_uses=2)


@needs_lucid
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("m", [16, 11])
def test_linformer_cross_attention_matches_lucidrains(dtype, m):
    ref, ours = pair(dtype, dim=32, seq_len=16, k=4, heads=4)
    x, c = torch.randn(2, 9, 32, dtype=dtype), torch.randn(2, m, 32, dtype=dtype)
    xr, cr = x.clone().requires_grad_(), c.clone().requires_grad_()
    xo, co = x.clone().requires_grad_(), c.clone().requires_grad_()
    yr, yo = ref(xr, context=cr), ours(xo, context=co)
    close(yo, yr, dtype, "cross: output")
    g = torch.randn_like(yr)
    yr.backward(g)
    yo.backward(g)
    close(xo.grad, xr.grad, dtype, "cross: dx")
    close(co.grad, cr.grad, dtype, "cross: dcontext")
    close(ours.proj_v.grad, ref.proj_v.grad, dtype, "cross: dproj_v")


@needs_lucid
@pytest.mark.parametrize("kw", [LUCID_CASES[c][0] for c in ("default", "one_kv_head", "share_kv", "dim_head")])
def test_state_dict_is_lucidrains(kw):
    ref, ours = pair(torch.float32, **kw)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    # and back: his module loads ours
    ref2 = LUCID.LinformerSelfAttention(**kw)
    ref2.load_state_dict(ours.state_dict())
    x = torch.randn(2, kw["seq_len"], kw["dim"])
    close(ours(x), ref2(x), torch.float32, "his module with our state dict")


def test_linformer_key_padding_mask_equals_the_unpadded_sequence():
    torch.manual_seed(1)
    ours = LinformerSelfAttention(dim=32, seq_len=16, k=8, heads=4).double()
    x = torch.randn(2, 16, 32, dtype=torch.float64)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[1, 11:] = True
    x[1, 11:] = float("nan")  # garbage in the padding must not reach real positions
    y = ours(x, key_padding_mask=mask)
    close(y[0], ours(x[:1])[0], torch.float64, "unpadded sample")
    close(y[1, :11], ours(x[1:2, :11])[0], torch.float64, "padded sample")


# --- exact attention: full and flash against a torch reference on scaled_dot_product_attention -------
def sdpa_reference(m, x, causal, mask=None):
    """Multi-head exact attention with m's weights, through torch's scaled_dot_product_attention."""
    B, n, d = x.shape
    h = m.heads

    def lin(name, t):
        mod = getattr(m, name)
        return F.linear(t, mod.weight, getattr(mod, "bias", None))

    q, k, v = (lin(name, x).reshape(B, n, h, d // h).transpose(1, 2) for name in ("to_q", "to_k", "to_v"))
    allowed = torch.ones(B, 1, n, n, dtype=torch.bool)
    if causal:
        allowed = allowed & torch.ones(n, n, dtype=torch.bool).tril()
    if mask is not None:
        allowed = allowed & ~mask[:, None, None, :]
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    return lin("to_out", o.transpose(1, 2).reshape(B, n, d))


EXACT_CASES = {
    "plain": (dict(dim=32, heads=4), 2, 16, None),
    "causal": (dict(dim=32, heads=2, causal=True), 2, 13, None),
    "padding_mask": (dict(dim=24, heads=3), 3, 12, [12, 7, 1]),
    "qkv_bias_causal_mask": (dict(dim=32, heads=4, causal=True, qkv_bias=True), 2, 10, [10, 6]),
    "long": (dict(dim=64, heads=8), 1, 130, None),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("kind", ["full", "flash"])
@pytest.mark.parametrize("case", list(EXACT_CASES))
def test_exact_attention_matches_sdpa_reference(case, kind, dtype):
    kw, B, n, lengths = EXACT_CASES[case]
    torch.manual_seed(2)
    ours = SelfAttention(kind=kind, **kw).to(dtype)
    mask = None
    if lengths is not None:
        mask = torch.arange(n)[None, :] >= torch.tensor(lengths)[:, None]
    x = torch.randn(B, n, kw["dim"], dtype=dtype)
    xo, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    yo = ours(xo, key_padding_mask=mask)
    ref = copy.deepcopy(ours)  # the same parameters, as plain torch tensors read by the reference
    yr = sdpa_reference(ref, xr, kw.get("causal", False), mask)
    close(yo, yr, dtype, f"{kind} {case}: output")
    g = torch.randn_like(yr)
    yo.backward(g)
    yr.backward(g)
    close(xo.grad, xr.grad, dtype, f"{kind} {case}: dx")
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        close(p.grad, ref_params[name].grad, dtype, f"{kind} {case}: d{name}")


def test_selfattention_names_and_kinds():
    m = SelfAttention(32, heads=4, kind="flash", qkv_bias=True)
    assert set(m.state_dict()) == {"to_q.weight", "to_k.weight", "to_v.weight", "to_q.bias", "to_k.bias",
                                   "to_v.bias", "to_out.weight", "to_out.bias"}
    assert tuple(m.to_q.weight.shape) == (32, 32)
    # any registered kind, with its own parameter names
    lin = SelfAttention(32, heads=4, kind="linformer", max_len=16, options={"k": 4})
    assert tuple(lin.proj_k.shape) == (4, 16)
    assert lin(torch.randn(1, 16, 32)).shape == (1, 16, 32)


# --- gradcheck -------------------------------------------------------------------------------------
def gradcheck_module(m, x, **kw):
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in m.named_parameters()]

    def f(x, *ps):
        return functional_call(m, dict(zip(names, ps)), (x,), kw)

    assert torch.autograd.gradcheck(f, (x.requires_grad_(), *params), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("variant", [dict(), dict(one_kv_head=True), dict(share_kv=True), dict(dim_head=6)])
def test_gradcheck_linformer(variant):
    torch.manual_seed(3)
    m = LinformerSelfAttention(dim=8, seq_len=6, k=3, heads=2, **variant).double()
    gradcheck_module(m, torch.randn(2, 5, 8, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["full", "flash"])
def test_gradcheck_exact(kind):
    torch.manual_seed(4)
    m = SelfAttention(8, heads=2, causal=True, kind=kind, qkv_bias=True).double()
    mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    gradcheck_module(m, torch.randn(2, 5, 8, dtype=torch.float64), key_padding_mask=mask)


# --- training inside a torch model -----------------------------------------------------------------
class TinyClassifier(torch.nn.Module):
    """Embedding -> pre-LN attention block -> mean pool -> class logits."""

    def __init__(self, attn, vocab=11, dim=16, classes=3):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, dim)
        self.norm = torch.nn.LayerNorm(dim)
        self.attn = attn
        self.head = torch.nn.Linear(dim, classes)

    def forward(self, tokens):
        h = self.emb(tokens)
        h = h + self.attn(self.norm(h))
        return self.head(h.mean(dim=1))


def train(model, steps, data):
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    losses = []
    for s in range(steps):
        tokens, labels = data[s % len(data)]
        loss = F.cross_entropy(model(tokens), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def tiny_task(seq_len=12, batches=4, B=8):
    g = torch.Generator().manual_seed(5)
    data = []
    for _ in range(batches):
        tokens = torch.randint(0, 11, (B, seq_len), generator=g)
        labels = tokens[:, 0] % 3  # the class is written in the first token: attention must find it
        data.append((tokens, labels))
    return data


@needs_lucid
def test_trains_in_a_torch_model_like_lucidrains():
    torch.manual_seed(6)
    ref = TinyClassifier(LUCID.LinformerSelfAttention(16, 12, k=4, heads=2)).double()
    ours = TinyClassifier(LinformerSelfAttention(16, 12, k=4, heads=2)).double()
    ours.load_state_dict(ref.state_dict())
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    data = tiny_task()
    lr, lo = train(ref, 30, data), train(ours, 30, data)
    assert sum(lo[-4:]) < 0.7 * sum(lo[:4]), f"loss did not decrease: {lo}"
    for k, v in ours.state_dict().items():
        assert not torch.equal(v, before[k]), f"{k} did not change"
        close(v, ref.state_dict()[k], torch.float64, f"after 30 steps: {k}")
    assert max(abs(a - b) for a, b in zip(lr, lo)) < 1e-9


def test_exact_attention_trains():
    torch.manual_seed(7)
    model = TinyClassifier(SelfAttention(16, heads=2, kind="flash"))
    losses = train(model, 30, tiny_task())
    assert sum(losses[-4:]) < 0.7 * sum(losses[:4]), losses


# --- dropout ---------------------------------------------------------------------------------------
def test_dropout_is_seeded_by_torch_and_off_in_eval():
    torch.manual_seed(8)
    m = LinformerSelfAttention(dim=16, seq_len=8, k=4, heads=2, dropout=0.5)
    x = torch.randn(2, 8, 16)
    torch.manual_seed(9)
    a = m(x)
    torch.manual_seed(9)
    b = m(x)
    c = m(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    m.eval()
    plain = LinformerSelfAttention(dim=16, seq_len=8, k=4, heads=2)
    plain.load_state_dict(m.state_dict())
    assert torch.equal(m(x), plain(x)) and not torch.equal(a, m(x))


# --- bad input -------------------------------------------------------------------------------------
def test_module_bad_input():
    m = LinformerSelfAttention(dim=16, seq_len=8, k=4, heads=2)
    with pytest.raises(TypeError, match="float64.*float32"):
        m(torch.randn(1, 8, 16, dtype=torch.float64))
    with pytest.raises(TypeError, match="float32 or float64"):
        m.half()(torch.randn(1, 8, 16).half())
    m.float()
    with pytest.raises(ValueError, match=r"shape \(batch, seq, 16\)"):
        m(torch.randn(1, 8, 12))
    with pytest.raises(ValueError, match="at most 8"):
        m(torch.randn(1, 9, 16))
    with pytest.raises(TypeError, match="bool or uint8"):
        m(torch.randn(1, 8, 16), key_padding_mask=torch.zeros(1, 8))
    with pytest.raises(ValueError, match="key_padding_mask must have shape"):
        m(torch.randn(1, 8, 16), key_padding_mask=torch.zeros(1, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="k must be in"):
        LinformerSelfAttention(dim=16, seq_len=8, k=9)
    with pytest.raises(ValueError, match="divisible"):
        LinformerSelfAttention(dim=15, seq_len=8, k=4, heads=2)
    # a non-contiguous input is fine for the module (as for torch's), and gives the contiguous answer
    x = torch.randn(1, 16, 8).transpose(1, 2)
    assert torch.equal(m(x), m(x.contiguous()))


def test_binding_bad_input():
    import numpy as np

    layer = _core.AttentionLayer("full", 8, 2, 16, dtype="float64")
    x = np.zeros((2, 4, 8))
    with pytest.raises(TypeError, match="`x` must be float64, got .*float32"):
        layer.forward(x.astype(np.float32))
    with pytest.raises(TypeError, match="`x` must be float64, got .*float32"):
        layer.forward(torch.zeros(2, 4, 8))  # torch through DLPack, checked the same way
    with pytest.raises(ValueError, match=r"`x` must have shape \(\*, \*, 8\), got \(2, 4, 6\)"):
        layer.forward(np.zeros((2, 4, 6)))
    with pytest.raises(ValueError, match="C-contiguous"):
        layer.forward(np.zeros((2, 8, 4)).transpose(0, 2, 1))
    with pytest.raises(ValueError, match="C-contiguous"):
        layer.forward(torch.zeros(2, 8, 4, dtype=torch.float64).transpose(1, 2))
    with pytest.raises(ValueError, match="at most 16"):
        layer.forward(np.zeros((1, 17, 8)))
    with pytest.raises(TypeError, match="bool or integer"):
        layer.forward(x, key_padding_mask=np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"key_padding_mask` must have .*\(2, 4\), got \(2, 5\)"):
        layer.forward(x, key_padding_mask=np.zeros((2, 5), dtype=bool))
    with pytest.raises(ValueError, match="needs a forward"):
        layer.backward(x)
    layer.forward(x, keep_for_backward=False)
    with pytest.raises(ValueError, match="needs a forward"):
        layer.backward(x)
    layer.forward(x)
    with pytest.raises(ValueError, match=r"`dout` must have shape \(2, 4, 8\)"):
        layer.backward(np.zeros((2, 3, 8)))
    with pytest.raises(KeyError, match="no parameter 'proj_k'.*to_q.weight"):
        layer.set_parameter("proj_k", np.zeros((4, 16)))
    with pytest.raises(ValueError, match=r"must have shape \(8, 8\)"):
        layer.set_parameter("to_q.weight", np.zeros((8, 4)))
    with pytest.raises(ValueError, match="dtype"):
        _core.AttentionLayer("full", 8, 2, 16, dtype="float16")
    with pytest.raises(ValueError, match="unknown|no attention kind|nosuch"):
        _core.AttentionLayer("nosuch", 8, 2, 16)
    with pytest.raises(ValueError, match="'k'"):
        _core.AttentionLayer("linformer", 8, 2, 16, options={"k": 17})
    with pytest.raises(ValueError, match="bogus"):
        _core.AttentionLayer("full", 8, 2, 16, options={"bogus": 1})
    with pytest.raises(ValueError, match="causal"):
        _core.AttentionLayer("linformer", 8, 2, 16, causal=True)


def test_binding_reads_arrays_in_place_and_returns_gradients():
    import numpy as np

    layer = _core.AttentionLayer("linformer", 8, 2, 6, options={"k": 3}, dtype="float64", seed=3)
    names = [n for n, _, _ in layer.parameters()]
    assert names == ["to_q.weight", "to_k.weight", "to_v.weight", "to_out.weight", "to_out.bias", "proj_k", "proj_v"]
    w = np.arange(64, dtype=np.float64).reshape(8, 8) / 64
    layer.set_parameter("to_q.weight", w)
    assert np.array_equal(layer.get_parameter("to_q.weight"), w)
    x = np.random.default_rng(0).standard_normal((2, 6, 8))
    x.setflags(write=False)  # read-only input is fine: the layer only reads it
    y = layer.forward(x)
    dx, grads, dcontext = layer.backward(np.ones_like(y))
    assert dx.shape == x.shape and set(grads) == set(names) and dcontext is None
    # the gradient of sum(out) w.r.t. to_out.bias is B·n per entry
    assert np.allclose(grads["to_out.bias"], 12.0)


def test_binding_calls_from_several_threads():
    """The GIL is released inside and the layer's lock taken without it: threads sharing one layer neither
    deadlock nor mix their calls."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    layer = _core.AttentionLayer("linformer", 32, 4, 64, options={"k": 16}, threads=1, seed=1)
    xs = [np.random.default_rng(i).standard_normal((2, 64, 32)).astype(np.float32) for i in range(8)]
    expected = [layer.forward(x, keep_for_backward=False) for x in xs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda x: layer.forward(x, keep_for_backward=False), xs))
    for e, g in zip(expected, got):
        assert np.array_equal(e, g)


def test_module_follows_its_dtype_and_copies():
    torch.manual_seed(10)
    m = LinformerSelfAttention(dim=16, seq_len=8, k=4, heads=2)
    x = torch.randn(2, 8, 16)
    y32 = m(x)
    m.double()  # a second C++ layer, in double, fed the converted parameters
    y64 = m(x.double())
    assert y64.dtype == torch.float64
    close(y32.double(), y64, torch.float32, "float32 against float64")
    twin = copy.deepcopy(m)  # the copy builds its own C++ layers from its own parameters
    with torch.no_grad():
        twin.to_out.bias.add_(1.0)
    close(twin(x.double()), y64 + 1.0, torch.float64, "a deep copy with its bias moved")
    close(m(x.double()), y64, torch.float64, "the original, unchanged")
    mask = torch.zeros(2, 8, dtype=torch.uint8)
    mask[0, 6:] = 1
    assert torch.equal(m(x.double(), key_padding_mask=mask), m(x.double(), key_padding_mask=mask.bool()))
