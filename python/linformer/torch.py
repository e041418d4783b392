"""Drop-in PyTorch modules that run linformer's C++ attention layers.

``LinformerSelfAttention`` takes the constructor arguments and has the state-dict names and layouts of
lucidrains' ``linformer.LinformerSelfAttention`` (so ``load_state_dict`` of his module's state works
both ways); ``SelfAttention`` is multi-head self-attention of any registered kind (``full``, ``flash``,
...) with the parameter names of lucidrains' modules and of linformer's own checkpoints
(``to_q.weight``, ``to_k.weight``, ``to_v.weight``, ``to_out.weight``, ``to_out.bias``).

The torch parameters are the modules' state: each call copies them into the C++ layer's arena (one
pass over the weights, small beside the attention itself) and the C++ forward and backward run inside a
``torch.autograd.Function``; the input, the output and the gradients cross without copies. CPU only; float32 or float64, the module's dtype. Dropout
draws its seed from torch's default generator, so ``torch.manual_seed`` makes it reproducible (the
masks are linformer's counter RNG's, not torch's). The C++ layer runs on ``torch.get_num_threads()``
threads, read at each call.

Example::

    import torch
    from linformer.torch import LinformerSelfAttention
    attn = LinformerSelfAttention(dim=512, seq_len=4096, k=256, heads=8)
    y = attn(torch.randn(2, 4096, 512))   # (2, 4096, 512); y.sum().backward() fills attn's grads
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import _core

__all__ = ["LinformerSelfAttention", "SelfAttention"]

_DTYPES = {torch.float32: "float32", torch.float64: "float64"}


class _CoreAttentionFunction(torch.autograd.Function):
    """out = layer(x, context; params). Parameters are inputs of the function so autograd routes their gradients."""

    @staticmethod
    def forward(ctx, module, x, context, mask, training, seed, *params):
        core = module._core_for(x.dtype)
        module._load(core, params)
        out = core.forward(_as_array(x), _as_array(mask), training, seed, keep_for_backward=True,
                           context=_as_array(context))
        ctx.module, ctx.core, ctx.training, ctx.seed = module, core, training, seed
        # Which forward the layer keeps: a later forward of the same module (a second use in one graph,
        # gradcheck's probes) replaces it, and backward then recomputes this one first.
        ctx.token = module._kept[core.dtype] = object()
        ctx.save_for_backward(x, context, mask, *params)
        return torch.from_numpy(out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        module, core = ctx.module, ctx.core
        x, context, mask, *params = ctx.saved_tensors
        if module._kept.get(core.dtype) is not ctx.token:
            module._load(core, params)
            core.forward(_as_array(x), _as_array(mask), ctx.training, ctx.seed, keep_for_backward=True,
                         context=_as_array(context))
        module._kept[core.dtype] = None
        module._sync_threads(core)
        dx, grads, dcontext = core.backward(_as_array(dout.contiguous()))
        dparams = []
        for p, (name, transpose) in zip(params, module._core_names()):
            g = None
            if p.requires_grad:
                g = torch.from_numpy(grads[name])
                g = g.reshape(p.shape[::-1]).t() if transpose else g.reshape(p.shape)
            dparams.append(g)
        dcontext = None if dcontext is None else torch.from_numpy(dcontext)
        return (None, torch.from_numpy(dx), dcontext, None, None, None, *dparams)


def _as_array(t):
    """A tensor as the C++ layer reads it: detached (DLPack exports no tensor that requires grad), CPU."""
    if t is None:
        return None
    return t.detach()


class _CoreAttention(nn.Module):
    """The shared machinery: a C++ layer per dtype, built on first use, fed the module's parameters.

    A subclass defines ``_core_spec()`` -> (kind, d_model, n_heads, max_len, causal, dropout, options)
    and ``_param_map()`` -> [(torch tensor, core name, transpose)] in one fixed order.
    """

    def __init__(self):
        super().__init__()
        self._cores = {}
        self._kept = {}
        self._core_shapes = {}

    # -- the C++ layer -------------------------------------------------------------------------------
    def _core_for(self, dtype):
        if dtype not in _DTYPES:
            raise TypeError(f"{type(self).__name__} runs in float32 or float64, got {dtype}")
        name = _DTYPES[dtype]
        core = self._cores.get(name)
        if core is None:
            kind, d, h, max_len, causal, dropout, options = self._core_spec()
            core = _core.AttentionLayer(kind, d, h, max_len, causal=causal, dropout=dropout, options=options,
                                        dtype=name)
            self._cores[name] = core
            self._core_shapes[name] = {n: shape for n, shape, _ in core.parameters()}
        self._sync_threads(core)
        return core

    @staticmethod
    def _sync_threads(core):
        threads = torch.get_num_threads()
        if core.threads != threads:
            core.threads = threads

    def _core_names(self):
        return [(name, transpose) for _, name, transpose in self._param_map()]

    def _load(self, core, params):
        """Copies the parameters into the core's arena, every call: a change through .data (optimizers of
        old, gradcheck's probes) bumps no version counter, so there is no safe way to skip an unchanged one."""
        for p, (name, transpose) in zip(params, self._core_names()):
            src = p.detach()
            src = src.t() if transpose else src
            # reshape: the C++ layer may carry a unit axis his layout lacks (linformer's headwise E at h = 1)
            core.set_parameter(name, src.contiguous().reshape(self._core_shapes[core.dtype][name]))

    def _check_input(self, x, context, mask):
        params = [p for p, _, _ in self._param_map()]
        for name, t in (("x", x), ("context", context)):
            if t is None and name == "context":
                continue
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.device.type != "cpu":
                raise ValueError(f"linformer's C++ layers run on the CPU; {name} is on {t.device}")
            if t.dtype != params[0].dtype:
                raise TypeError(f"{name} is {t.dtype} but the module's parameters are {params[0].dtype}; "
                                f"convert one (module.to({t.dtype}) or {name}.to({params[0].dtype}))")
            if t.dim() != 3 or t.shape[-1] != self._dim or t.shape[0] != x.shape[0]:
                raise ValueError(f"{name} must have shape (batch, seq, {self._dim}), got {tuple(t.shape)}")
            if t.shape[1] > self._max_len:
                raise ValueError(f"the sequence length must be at most {self._max_len} (seq_len), got {t.shape[1]}")
        kv = x if context is None else context
        if mask is not None:
            if not isinstance(mask, torch.Tensor) or mask.dtype not in (torch.bool, torch.uint8):
                raise TypeError("key_padding_mask must be a bool or uint8 torch.Tensor (True = padding)")
            if tuple(mask.shape) != tuple(kv.shape[:2]):
                raise ValueError(f"key_padding_mask must have shape {tuple(kv.shape[:2])}, got {tuple(mask.shape)}")

    def _run(self, x, context=None, key_padding_mask=None):
        self._check_input(x, context, key_padding_mask)
        # A module takes any layout, as torch's do; the binding itself refuses strided input.
        x = x.contiguous()
        context = None if context is None else context.contiguous()
        mask = None if key_padding_mask is None else key_padding_mask.contiguous()
        params = [p for p, _, _ in self._param_map()]
        training = self.training and self._dropout > 0
        # A seed for the C++ dropout from torch's generator: torch.manual_seed reproduces it.
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64).item()) if training else 0
        inputs = [x] + ([] if context is None else [context])
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in inputs + params)
        if not needs_grad:  # inference: the layer keeps nothing for a backward
            core = self._core_for(x.dtype)
            self._load(core, params)
            return torch.from_numpy(core.forward(_as_array(x), _as_array(mask), training, seed,
                                                 keep_for_backward=False, context=_as_array(context)))
        return _CoreAttentionFunction.apply(self, x, context, mask, training, seed, *params)

    def __getstate__(self):  # copy.deepcopy, pickle: the C++ layers are rebuilt on first use
        state = dict(super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__)
        state.update(_cores={}, _kept={}, _core_shapes={})
        return state


class LinformerSelfAttention(_CoreAttention):
    """lucidrains' ``linformer.LinformerSelfAttention`` on linformer's C++ ``linformer`` kind.

    Same constructor arguments, same parameters (``to_q.weight``, ``to_k.weight``, ``to_v.weight``,
    ``proj_k`` (seq_len, k), ``proj_v``, ``to_out.weight``, ``to_out.bias``; ``share_kv`` drops
    ``to_v`` and ``proj_v``) with his initialisation, so a state dict moves between the two as it is.
    ``forward(x, context=None, key_padding_mask=None)``: x (B, n, dim); context (B, m, dim), as his,
    gives cross-attention (keys and values from it); n, m <= seq_len (shorter sequences use the first
    rows of proj_k/proj_v, as his does); key_padding_mask (B, m) bool, True = padding, is linformer's
    addition.
    """

    def __init__(self, dim, seq_len, k=256, heads=8, dim_head=None, one_kv_head=False, share_kv=False, dropout=0.):
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        if not 1 <= k <= seq_len:
            raise ValueError(f"k must be in [1, seq_len = {seq_len}], got {k} (linformer compresses to k <= seq_len)")
        dim_head = dim // heads if dim_head is None else dim_head
        self.seq_len, self.k, self.heads, self.dim_head = seq_len, k, heads, dim_head
        self.one_kv_head, self.share_kv = one_kv_head, share_kv
        self._dim, self._max_len, self._dropout = dim, seq_len, float(dropout)
        kv_dim = dim_head if one_kv_head else dim_head * heads
        self.to_q = nn.Linear(dim, dim_head * heads, bias=False)
        self.to_k = nn.Linear(dim, kv_dim, bias=False)
        bound = 1 / math.sqrt(k)  # his init_: U(±1/√k) over the last dimension, k
        self.proj_k = nn.Parameter(torch.empty(seq_len, k).uniform_(-bound, bound))
        if not share_kv:
            self.to_v = nn.Linear(dim, kv_dim, bias=False)
            self.proj_v = nn.Parameter(torch.empty(seq_len, k).uniform_(-bound, bound))
        self.dropout = nn.Dropout(dropout)  # holds p, as his does; the C++ layer applies it
        self.to_out = nn.Linear(dim_head * heads, dim)

    def _core_spec(self):
        options = {"k": self.k, "dim_head": self.dim_head, "one_kv_head": self.one_kv_head,
                   "sharing": "kv" if self.share_kv else "headwise", "share_kv_linear": self.share_kv,
                   "qkv_bias": False, "projection": "learned", "init": "uniform"}
        return "linformer", self._dim, self.heads, self.seq_len, False, self._dropout, options

    def _param_map(self):
        # His proj_k is (seq_len, k), applied as einsum('bnd,nk->bkd'); linformer's E is (k, max_len).
        m = [(self.to_q.weight, "to_q.weight", False), (self.to_k.weight, "to_k.weight", False),
             (self.proj_k, "proj_k", True)]
        if not self.share_kv:
            m += [(self.to_v.weight, "to_v.weight", False), (self.proj_v, "proj_v", True)]
        return m + [(self.to_out.weight, "to_out.weight", False), (self.to_out.bias, "to_out.bias", False)]

    def forward(self, x, context=None, key_padding_mask=None, **kwargs):
        return self._run(x, context, key_padding_mask)


class SelfAttention(_CoreAttention):
    """Multi-head self-attention of a registered kind (``full``, ``flash``, or any other) in C++.

    Parameters as linformer names them, which are lucidrains' names: ``to_q.weight``, ``to_k.weight``,
    ``to_v.weight`` (d, d), ``to_out.weight`` (d, d), ``to_out.bias`` (d), plus ``to_q.bias``, ... with
    ``qkv_bias``; another kind's own parameters under the names its checkpoints use. ``options`` are the
    kind's (docs/attention.md); ``max_len`` bounds the sequence length (kinds with max_len-shaped
    parameters need it set to the length they serve). Parameters start from the C++ layer's own
    initialiser, seeded from torch's generator (nn.Linear's bound U(±1/√d) for the Q/K/V/out maps).
    ``forward(x, key_padding_mask=None)``: x (B, n, dim); key_padding_mask (B, n) bool, True = padding.
    """

    def __init__(self, dim, heads=8, causal=False, dropout=0., kind="full", max_len=65536, qkv_bias=False,
                 options=None):
        super().__init__()
        options = dict(options or {})
        if qkv_bias:
            options["qkv_bias"] = True
        self.kind, self.heads, self.causal = kind, heads, causal
        self._dim, self._max_len, self._dropout, self._options = dim, max_len, float(dropout), options
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64).item())
        probe = _core.AttentionLayer(kind, dim, heads, max_len, causal=causal, dropout=float(dropout),
                                     options=options, dtype="float32", seed=seed)
        self._slots = []  # (owning module, attribute, linformer name) per parameter, in the layer's order
        for name, shape, trainable in probe.parameters():
            *path, leaf = name.split(".")
            owner = self
            for part in path:  # nested modules, so the state dict shows the dotted names
                if not hasattr(owner, part):
                    owner.add_module(part, nn.Module())
                owner = getattr(owner, part)
            value = torch.from_numpy(probe.get_parameter(name))
            if trainable:
                owner.register_parameter(leaf, nn.Parameter(value))
            else:  # fixed tensors (e.g. random projections) are saved, not trained
                owner.register_buffer(leaf, value)
            self._slots.append((owner, leaf, name))

    def _core_spec(self):
        return self.kind, self._dim, self.heads, self._max_len, self.causal, self._dropout, self._options

    def _param_map(self):
        return [(getattr(owner, leaf), name, False) for owner, leaf, name in self._slots]

    def forward(self, x, key_padding_mask=None):
        return self._run(x, None, key_padding_mask)

    def extra_repr(self):
        return f"kind={self.kind!r}, dim={self._dim}, heads={self.heads}, causal={self.causal}"
