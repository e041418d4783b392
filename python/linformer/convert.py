"""Checkpoint converters: the state dicts of lucidrains' `linformer`, tatp22's `linformer-pytorch` and
fairseq's `linformer_roberta` into a linformer checkpoint directory (config.json + model.safetensors,
our names, (out, in) layouts, F32), and a linformer checkpoint back out to a lucidrains `LinformerLM`
state dict. docs/convert.md says what each maps and what it refuses.

This module needs only numpy (and `safetensors` to read or write .safetensors files; torch only to
read a .pt/.bin file or to return torch tensors). It does not import the compiled extension, so
scripts/make_goldens.py can load it by path beside lucidrains' package, which is also named
`linformer`.

    python -m linformer.convert --from lucidrains --input model.pt --out ckpt/ [--heads 8] [...]
"""
import argparse
import json
import os
import pathlib
import sys

import numpy as np

PEERS = ("lucidrains", "tatp22", "fairseq")
CONFIG_VERSION = 2  # src/model/config.cpp's kConfigVersion


class ConversionError(ValueError):
    """A state dict that cannot be converted; `key` names the offending entry (None when no single
    key is at fault)."""

    def __init__(self, message, key=None):
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


# --- reading a peer's state dict -------------------------------------------------------------------
def _to_numpy(key, value):
    """A floating tensor or array as a numpy array (its dtype kept), refusing anything else."""
    if type(value).__module__.startswith("torch"):
        import torch
        if not isinstance(value, torch.Tensor):
            raise ConversionError(f"expected a tensor, got {type(value).__name__}", key)
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
            value = value.float()
        value = value.numpy()
    if not isinstance(value, np.ndarray):
        raise ConversionError(f"expected a tensor or numpy array, got {type(value).__name__}", key)
    return value


def _load_file(path):
    path = pathlib.Path(path)
    if not path.exists():
        raise ConversionError(f"no such file: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise ConversionError("reading .safetensors needs the `safetensors` package (pip install safetensors)")
        try:
            return load_file(str(path))
        except Exception as e:  # a torch-only dtype (bfloat16) or a corrupt file
            raise ConversionError(f"{path}: cannot read as safetensors with numpy: {e}")
    try:
        import torch
    except ImportError:
        raise ConversionError(f"{path}: reading a torch checkpoint (.pt/.bin/.pth) needs torch; "
                              "install it, or convert the file to .safetensors where torch is installed")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConversionError(
            f"{path}: torch.load(weights_only=True) failed ({e.__class__.__name__}: {str(e).splitlines()[0]}). "
            "A checkpoint that pickles Python objects (fairseq's args) is only loaded by code that trusts it: "
            "load it yourself with torch.load(path, weights_only=False) and pass the dict")


def _peer_args(obj):
    """A saved args object (argparse.Namespace, a dict, an omegaconf config) as a plain dict."""
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return dict(obj)
    if hasattr(obj, "items"):
        return {k: v for k, v in obj.items()}
    return dict(vars(obj))


def read_state_dict(source):
    """(name -> numpy array, the peer's saved args as a dict) from a path (.safetensors, or a torch
    file) or an in-memory dict (numpy arrays or torch tensors). A fairseq checkpoint dict
    ({"model": ..., "args" or "cfg": ...}) gives its model's tensors and its args."""
    if isinstance(source, (str, os.PathLike)):
        source = _load_file(source)
    if not isinstance(source, dict):
        raise ConversionError(f"expected a path or a state dict, got {type(source).__name__}")
    args = {}
    if isinstance(source.get("model"), dict):  # a fairseq checkpoint
        args = _peer_args(source.get("args"))
        cfg = source.get("cfg")
        if not args and cfg is not None:
            args = _peer_args(_peer_args(cfg).get("model"))
        source = source["model"]
    return {k: _to_numpy(k, v) for k, v in source.items()}, args


# --- the checkpoint we write -----------------------------------------------------------------------
def model_config(**fields):
    """A config.json dict in ModelConfig::to_json's order, defaults filled (include/linformer/config.h)."""
    c = {"format": "linformer-model", "version": CONFIG_VERSION, "task": "mlm", "vocab_size": 260, "d_model": 128,
         "n_layers": 4, "n_heads": 4, "d_ff": 512, "max_len": 512, "pre_ln": True, "dropout_embedding": 0.0,
         "dropout_attention": 0.0, "dropout_ffn": 0.0, "ln_eps": 1e-5, "position": "learned", "conv_kernel": 0,
         "scale_tied_output": False, "final_norm": True, "embedding_norm": True, "output_head": "default",
         "attention": []}
    unknown = set(fields) - set(c)
    assert not unknown, f"model_config: unknown fields {sorted(unknown)}"
    c.update(fields)
    if c["embedding_norm"]:  # to_json writes it only when off
        del c["embedding_norm"]
    return c


def _attention_entries(options):
    """One {"kind": "linformer", "options": ...} per layer (one entry when every layer is the same)."""
    entries = [{"kind": "linformer", "options": o} for o in options]
    return entries[:1] if all(e == entries[0] for e in entries) else entries


def write_checkpoint(out, config, tensors, overwrite=False):
    """Writes config.json and model.safetensors (F32, C order) into directory `out`."""
    try:
        from safetensors.numpy import save_file
    except ImportError:
        raise ConversionError("writing a checkpoint needs the `safetensors` package (pip install safetensors)")
    out = pathlib.Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConversionError(f"{out} exists and is not empty (overwrite=True / --force replaces it)")
    out.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    save_file(arrays, str(out / "model.safetensors"), metadata={"format": "linformer", "version": "1"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


class _Keys:
    """The peer's tensors, taken one by one: take() checks presence, shape and dtype and names the key
    in every refusal; finish() refuses whatever was not taken (unknown keys)."""

    def __init__(self, sd, peer, ignore=()):
        self.sd, self.peer, self.used = sd, peer, set()
        self.ignore = tuple(ignore)

    def has(self, key):
        return key in self.sd

    def take(self, key, shape=None, ndim=None):
        if key not in self.sd:
            raise ConversionError(f"missing from the {self.peer} state dict", key)
        a = self.sd[key]
        if not np.issubdtype(a.dtype, np.floating):
            raise ConversionError(f"dtype {a.dtype}, expected a floating-point tensor", key)
        if ndim is not None and a.ndim != ndim:
            raise ConversionError(f"shape {tuple(a.shape)}, expected {ndim} dimensions", key)
        if shape is not None and tuple(a.shape) != tuple(shape):
            raise ConversionError(f"shape {tuple(a.shape)}, expected {tuple(shape)}", key)
        self.used.add(key)
        return a.astype(np.float64)  # folds (fairseq's value bias) in double, stored as F32

    def same(self, key, ref, why):
        """A key that must hold the same tensor as `ref` (a duplicated shared parameter)."""
        a = self.take(key, shape=ref.shape)
        if not np.array_equal(a, ref):
            raise ConversionError(f"differs from the tensor it should share ({why})", key)
        return a

    def finish(self):
        left = sorted(k for k in self.sd if k not in self.used and not k.startswith(self.ignore))
        if left:
            raise ConversionError(f"unknown key{'s' if len(left) > 1 else ''} in the {self.peer} state dict "
                                  f"(not a layout this converter maps): {', '.join(left[:8])}"
                                  f"{' ...' if len(left) > 8 else ''}", left[0])


def _count_layers(sd, prefix):
    """How many consecutive layer indices appear as `prefix{i}.`."""
    n = 0
    while any(k.startswith(f"{prefix}{n}.") for k in sd):
        n += 1
    return n


def _require(cond, message, key=None):
    if not cond:
        raise ConversionError(message, key)


# --- lucidrains' linformer -------------------------------------------------------------------------
def lucidrains_names(n_layers, share_kv):
    """our name -> (lucidrains' LinformerLM key, transposed) for an n_layers LinformerLM; proj_k and
    proj_v are (seq_len, k) there and (k, max_len) (E itself) here (docs/model.md)."""
    m = {"embeddings.token.weight": ("token_emb.weight", False),
         "embeddings.position.weight": ("pos_emb.weight", False),
         "lm_head.weight": ("to_logits.weight", False),
         "lm_head.bias": ("to_logits.bias", False)}
    for i in range(n_layers):
        ours, theirs = f"layers.{i}.", f"linformer.net.layers.{i}."
        attn = theirs + "0.fn."
        m[ours + "attn_norm.weight"] = (theirs + "0.norm.weight", False)
        m[ours + "attn_norm.bias"] = (theirs + "0.norm.bias", False)
        names = ["to_q.weight", "to_k.weight", "to_out.weight", "to_out.bias"] + ([] if share_kv else ["to_v.weight"])
        for name in names:
            m[ours + "attn." + name] = (attn + name, False)
        m[ours + "attn.proj_k"] = (attn + "proj_k", True)
        if not share_kv:  # share_kv: values reuse to_k and proj_k
            m[ours + "attn.proj_v"] = (attn + "proj_v", True)
        m[ours + "ffn_norm.weight"] = (theirs + "1.norm.weight", False)
        m[ours + "ffn_norm.bias"] = (theirs + "1.norm.bias", False)
        for name in ("weight", "bias"):
            m[ours + f"ffn.fc1.{name}"] = (theirs + f"1.fn.w1.{name}", False)
            m[ours + f"ffn.fc2.{name}"] = (theirs + f"1.fn.w2.{name}", False)
    return m


def _lucidrains_map(sd, heads, dropout=0.0):
    if any(k.startswith("linformer.net.blocks.") for k in sd):
        key = next(k for k in sd if k.startswith("linformer.net.blocks."))
        raise ConversionError("reversible=True (ReversibleSequence) is not supported: the engine has no reversible "
                              "residual blocks", key)
    if "token_emb.weight" not in sd:
        key = min(sd) if sd else None
        if key is not None and (key.startswith("net.layers.") or key.startswith("to_q.")):
            raise ConversionError("a Linformer or LinformerSelfAttention state dict has no token embedding or "
                                  "to_logits: a checkpoint needs a whole LinformerLM (lucidrains_layer_tensors() "
                                  "maps the layers' tensors to our names)", key)
        raise ConversionError("missing from the lucidrains state dict (not a LinformerLM)", "token_emb.weight")
    keys = _Keys(sd, "lucidrains")
    V, d = keys.take("token_emb.weight", ndim=2).shape
    L = _count_layers(sd, "linformer.net.layers.")
    _require(L > 0, "no layers (linformer.net.layers.0.* missing)", "linformer.net.layers.0.0.fn.to_q.weight")
    _require(heads is not None, "the state dict does not say how many heads the model has: pass heads= "
             "(--heads), the `heads` LinformerLM was built with")
    share_kv = "linformer.net.layers.0.0.fn.to_v.weight" not in sd
    seq_len, k = keys.take("linformer.net.layers.0.0.fn.proj_k", ndim=2).shape
    q_rows = keys.take("linformer.net.layers.0.0.fn.to_q.weight", ndim=2).shape[0]
    _require(q_rows % heads == 0, f"{q_rows} rows do not split into heads={heads}",
             "linformer.net.layers.0.0.fn.to_q.weight")
    dim_head = q_rows // heads
    kv_rows = keys.take("linformer.net.layers.0.0.fn.to_k.weight", ndim=2).shape[0]
    _require(kv_rows in (dim_head, q_rows), f"{kv_rows} rows: neither one kv head ({dim_head}) nor heads·dim_head "
             f"({q_rows})", "linformer.net.layers.0.0.fn.to_k.weight")
    one_kv_head = kv_rows == dim_head and heads > 1
    d_ff = keys.take("linformer.net.layers.0.1.fn.w1.weight", ndim=2).shape[0]
    _require(d_ff == 4 * d, f"{d_ff} rows: LinformerLM's FeedForward is 4·dim ({4 * d}) wide (glu is not mapped)",
             "linformer.net.layers.0.1.fn.w1.weight")
    shapes = {"to_q.weight": (q_rows, d), "to_k.weight": (kv_rows, d), "to_v.weight": (kv_rows, d),
              "to_out.weight": (d, q_rows), "to_out.bias": (d,), "proj_k": (seq_len, k), "proj_v": (seq_len, k),
              "norm.weight": (d,), "norm.bias": (d,), "w1.weight": (d_ff, d), "w1.bias": (d_ff,),
              "w2.weight": (d, d_ff), "w2.bias": (d,)}
    shapes_top = {"token_emb.weight": (V, d), "pos_emb.weight": (seq_len, d), "to_logits.weight": (V, d),
                  "to_logits.bias": (V,)}
    tensors = {}
    for ours, (theirs, tr) in lucidrains_names(L, share_kv).items():
        shape = shapes_top.get(theirs) or shapes[theirs.split(".fn.")[-1] if ".fn." in theirs
                                                 else ".".join(theirs.split(".")[-2:])]
        a = keys.take(theirs, shape=shape)
        tensors[ours] = a.T if tr else a
    keys.finish()
    options = {"k": int(k), "dim_head": int(dim_head), "sharing": "kv" if share_kv else "headwise",
               "one_kv_head": bool(one_kv_head), "share_kv_linear": bool(share_kv), "qkv_bias": False,
               "projection": "learned", "init": "uniform"}
    config = model_config(vocab_size=int(V), d_model=int(d), n_layers=L, n_heads=int(heads), d_ff=int(d_ff),
                          max_len=int(seq_len), dropout_embedding=dropout, dropout_attention=dropout,
                          dropout_ffn=dropout, final_norm=False, output_head="linear",
                          attention=_attention_entries([options] * L))
    return config, tensors


def lucidrains_layer_tensors(state_dict, prefix=""):
    """A lucidrains `Linformer` (net.layers.*) or `LinformerSelfAttention` (to_q.weight, ...) state dict
    in our names: layers.{i}.* for a Linformer, the attention's own names (to_q.weight, proj_k ...)
    for a LinformerSelfAttention; proj_k/proj_v transposed to (k, seq_len). For users who build the
    rest of a model themselves: a checkpoint needs a whole LinformerLM (from_lucidrains)."""
    sd, _ = read_state_dict(state_dict)
    sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    if any(k.startswith("net.layers.") for k in sd):
        L = _count_layers(sd, "net.layers.")
        share_kv = "net.layers.0.0.fn.to_v.weight" not in sd
        names = {o: (t[len("linformer."):], tr) for o, (t, tr) in lucidrains_names(L, share_kv).items()
                 if o.startswith("layers.")}
    else:
        names = {n: (n, n.startswith("proj_")) for n in ("to_q.weight", "to_k.weight", "to_v.weight", "to_out.weight",
                                                         "to_out.bias", "proj_k", "proj_v") if n in sd}
    keys = _Keys(sd, "lucidrains")
    out = {}
    for ours, (theirs, tr) in names.items():
        a = keys.take(theirs)
        out[ours] = a.T if tr else a
    keys.finish()
    return out


def from_lucidrains(source, out, heads=None, dropout=0.0, overwrite=False):
    """lucidrains' `LinformerLM` state dict (path or dict) -> checkpoint directory `out`. `heads` is
    required (the state dict cannot tell it). Returns the config written."""
    sd, _ = read_state_dict(source)
    config, tensors = _lucidrains_map(sd, heads, dropout)
    write_checkpoint(out, config, tensors, overwrite)
    return config


def _read_checkpoint(checkpoint_dir):
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise ConversionError("reading a checkpoint needs the `safetensors` package (pip install safetensors)")
    d = pathlib.Path(checkpoint_dir)
    if not (d / "config.json").exists():
        raise ConversionError(f"{d}: not a linformer checkpoint directory (no config.json)")
    return json.loads((d / "config.json").read_text()), load_file(str(d / "model.safetensors"))


def lucidrains_kwargs(checkpoint_dir):
    """The LinformerLM(...) arguments of the model to_lucidrains() maps out; refuses (naming the config
    field) a checkpoint that LinformerLM cannot express."""
    c, _ = _read_checkpoint(checkpoint_dir)
    layers = c.get("attention", [])
    if isinstance(layers, dict):
        layers = [layers]
    want = {"task": ("mlm", "clm"), "pre_ln": (True,), "final_norm": (False,), "output_head": ("linear",),
            "position": ("learned",), "conv_kernel": (0,), "ln_eps": (1e-5,)}
    for field, allowed in want.items():
        _require(c.get(field) in allowed, f"{c.get(field)!r}: lucidrains' LinformerLM needs {' or '.join(map(repr, allowed))}",
                 f"config.{field}")
    _require(c["d_ff"] == 4 * c["d_model"], f"{c['d_ff']}: LinformerLM's FeedForward is 4·d_model wide",
             "config.d_ff")
    opts = [dict(l.get("options", {})) for l in layers]
    _require(all(l.get("kind") == "linformer" for l in layers), "every layer must be linformer", "config.attention")
    _require(all(o == opts[0] for o in opts), "every layer must have the same options", "config.attention")
    o = opts[0]
    share = o.get("sharing", "headwise")
    _require((share, bool(o.get("share_kv_linear", False))) in (("headwise", False), ("kv", True)),
             f"sharing {share!r} with share_kv_linear {o.get('share_kv_linear', False)}: LinformerLM has per-layer "
             "E and F (headwise), or share_kv (sharing kv + share_kv_linear)", "config.attention.sharing")
    _require(o.get("projection", "learned") == "learned", "LinformerLM's E and F are learned",
             "config.attention.projection")
    _require(not o.get("qkv_bias", False), "LinformerLM's Q/K/V maps have no bias", "config.attention.qkv_bias")
    _require("k" in o, "the checkpoint does not give k", "config.attention.k")
    dim_head = o.get("dim_head", c["d_model"] // c["n_heads"])
    return {"num_tokens": c["vocab_size"], "dim": c["d_model"], "seq_len": c["max_len"], "depth": c["n_layers"],
            "k": o["k"], "heads": c["n_heads"], "dim_head": dim_head, "one_kv_head": bool(o.get("one_kv_head", False)),
            "share_kv": share == "kv"}


def to_lucidrains(checkpoint_dir, as_torch=None):
    """Our checkpoint -> a lucidrains `LinformerLM` state dict, loadable with load_state_dict into
    LinformerLM(**lucidrains_kwargs(checkpoint_dir)). Numpy arrays, or torch tensors when as_torch
    (default: when torch is installed)."""
    kw = lucidrains_kwargs(checkpoint_dir)
    _, tensors = _read_checkpoint(checkpoint_dir)
    names = lucidrains_names(kw["depth"], kw["share_kv"])
    missing = sorted(set(names) - set(tensors))
    _require(not missing, "missing from model.safetensors", missing[0] if missing else None)
    extra = sorted(set(tensors) - set(names))
    _require(not extra, "in model.safetensors but not in a LinformerLM", extra[0] if extra else None)
    sd = {theirs: np.ascontiguousarray(tensors[ours].T if tr else tensors[ours]) for ours, (theirs, tr) in names.items()}
    if as_torch is not False:
        try:
            import torch
        except ImportError:
            if as_torch:
                raise ConversionError("as_torch=True needs torch")
            return sd
        sd = {k: torch.from_numpy(v) for k, v in sd.items()}
    return sd


# --- tatp22's linformer-pytorch --------------------------------------------------------------------
def _tatp22_map(sd, input_size=None, parameter_sharing=None, dropout=0.0, causal=False, full_attention=False,
                activation="gelu"):
    # Options that leave no trace in a state dict come from the caller; refuse the ones we lack.
    _require(not causal, "causal=True: tatp22's causal mask over the k compressed keys has no counterpart in the "
             "engine (its causal_linformer is a different construction)")
    _require(not full_attention, "full_attention=True: convert it as a full-attention model instead")
    _require(activation == "gelu", f"activation {activation!r}: the engine's FFN is GELU")
    for k in sd:
        for part, why in ((".resample.", "ff_intermediate (a resampling residual)"),
                          ("linformer.project_in.", "emb_dim != channels (ProjectInOut)"),
                          (".w_o_1.", "w_o_intermediate_dim")):
            if part in k:
                raise ConversionError(f"{why} is not supported", k)
    keys = _Keys(sd, "tatp22")
    V, d = keys.take("to_token_emb.weight", ndim=2).shape
    n_seq = _count_layers(sd, "linformer.seq.")
    _require(n_seq > 0 and n_seq % 2 == 0 and any(f"linformer.seq.{n_seq - 1}.fn.w_1.weight" == k for k in sd),
             "expected attention and feed-forward layers in turn (include_ff=False is not supported)",
             f"linformer.seq.{n_seq - 1}.fn.w_1.weight")
    L = n_seq // 2
    H = _count_layers(sd, "linformer.seq.0.fn.to_q.")
    _require(H > 0, "missing", "linformer.seq.0.fn.to_q.0.weight")
    dh = keys.take("linformer.seq.0.fn.to_q.0.weight", ndim=2).shape[0]
    e0 = keys.take("linformer.seq.0.fn.heads.0.E.weight")
    conv = e0.ndim == 3  # method="convolution": nn.Conv1d(d_h, d_h, w, stride=w) per E/F
    inv = keys.take("pos_emb.inv_freq", shape=((d + 1) // 2,))
    _require(d % 2 == 0, "odd channels: the sinusoid's sin/cos halves do not fill the width", "pos_emb.inv_freq")

    def EF(i, h, which):
        return f"linformer.seq.{2 * i}.fn.heads.{h}.{which}."

    # The sharing: given, or read from which E/F tensors are equal (tatp22 saves shared modules once per use).
    def eq(a, b):
        return a in sd and b in sd and np.array_equal(sd[a], sd[b])

    if parameter_sharing is None:
        w = lambda i, h, x: EF(i, h, x) + "weight"
        if all(eq(w(0, 0, "E"), w(i, h, x)) for i in range(L) for h in range(H) for x in "EF"):
            parameter_sharing = "layerwise"
        elif all(eq(w(i, 0, "E"), w(i, h, x)) for i in range(L) for h in range(H) for x in "EF"):
            parameter_sharing = "kv"
        elif all(eq(w(i, 0, x), w(i, h, x)) for i in range(L) for h in range(H) for x in "EF"):
            parameter_sharing = "headwise"
        else:
            parameter_sharing = "none"
    _require(parameter_sharing in ("none", "headwise", "kv", "layerwise"),
             f"parameter_sharing {parameter_sharing!r} is not one of tatp22's")
    tensors = {"embeddings.token.weight": keys.take("to_token_emb.weight")}
    options = []
    shared = None
    for i in range(L):
        a, f = f"linformer.seq.{2 * i}.", f"linformer.seq.{2 * i + 1}."
        p = f"layers.{i}."
        for x, ours in (("q", "to_q"), ("k", "to_k"), ("v", "to_v")):
            tensors[p + f"attn.{ours}.weight"] = np.concatenate(
                [keys.take(a + f"fn.to_{x}.{h}.weight", shape=(dh, d)) for h in range(H)])
        tensors[p + "attn.to_out.weight"] = keys.take(a + "fn.w_o.weight", shape=(d, H * dh))
        tensors[p + "attn.to_out.bias"] = keys.take(a + "fn.w_o.bias", shape=(d,))
        tensors[p + "attn_norm.weight"] = keys.take(a + "norm.weight", shape=(d,))
        tensors[p + "attn_norm.bias"] = keys.take(a + "norm.bias", shape=(d,))
        d_ff = keys.take(f + "fn.w_1.weight", ndim=2).shape[0]
        tensors[p + "ffn.fc1.weight"] = keys.take(f + "fn.w_1.weight", shape=(d_ff, d))
        tensors[p + "ffn.fc1.bias"] = keys.take(f + "fn.w_1.bias", shape=(d_ff,))
        tensors[p + "ffn.fc2.weight"] = keys.take(f + "fn.w_2.weight", shape=(d, d_ff))
        tensors[p + "ffn.fc2.bias"] = keys.take(f + "fn.w_2.bias", shape=(d,))
        tensors[p + "ffn_norm.weight"] = keys.take(f + "norm.weight", shape=(d,))
        tensors[p + "ffn_norm.bias"] = keys.take(f + "norm.bias", shape=(d,))
        # E and F of every head, each checked against the one it shares with.
        per_head = {}
        for h in range(H):
            for x in "EF":
                wk, bk = EF(i, h, x) + "weight", EF(i, h, x) + "bias"
                if parameter_sharing == "layerwise":
                    owner = EF(0, 0, "E")
                elif parameter_sharing == "kv":
                    owner = EF(i, 0, "E")
                elif parameter_sharing == "headwise":
                    owner = EF(i, 0, x)
                else:
                    owner = EF(i, h, x)
                wt = keys.take(wk, ndim=3 if conv else 2)
                if owner + "weight" != wk:
                    keys.same(wk, sd[owner + "weight"].astype(np.float64), f"parameter_sharing {parameter_sharing}")
                bias = keys.take(bk) if bk in sd else None
                if bias is not None and owner + "bias" != bk:
                    keys.same(bk, sd[owner + "bias"].astype(np.float64), f"parameter_sharing {parameter_sharing}")
                if not conv and bias is not None and np.any(bias != 0):
                    raise ConversionError("a nonzero bias on the sequence projection (tatp22's E/F are nn.Linear "
                                          "with bias): the engine's learned E/F have none, and a per-slot bias "
                                          "changes the scores; only zero biases convert", bk)
                per_head[h, x] = (wt, bias)
        k_i = per_head[0, "E"][0].shape[0] if not conv else None
        if conv:
            w_taps = per_head[0, "E"][0].shape[2]
            _require(per_head[0, "E"][0].shape[:2] == (dh, dh), "expected nn.Conv1d(d_h, d_h, w) weights",
                     EF(i, 0, "E") + "weight")
        o = {"dim_head": int(dh), "qkv_bias": False, "one_kv_head": False, "share_kv_linear": False}
        if conv:
            # tatp22's per-head convolution: our conv_full with sharing none, each query head its own
            # (d_h, d_h, w) conv over its kv head; shared ones are repeated (they untie on fine-tuning).
            for x, name in (("E", "proj_k_conv"), ("F", "proj_v_conv")):
                tensors[p + f"attn.{name}.weight"] = np.concatenate([per_head[h, x][0] for h in range(H)])
                tensors[p + f"attn.{name}.bias"] = np.concatenate([per_head[h, x][1] for h in range(H)])
            _require(input_size is not None, "the convolution does not tell the sequence length: pass input_size= "
                     "(--input-size), the LinformerLM's input_size")
            _require(input_size % w_taps == 0, f"input_size {input_size} is not a multiple of the convolution's "
                     f"window {w_taps} (tatp22 then drops the tail; the engine's windows tile max_len)",
                     EF(i, 0, "E") + "weight")
            o.update(projection="conv_full", sharing="none", k=int(input_size // w_taps))
        elif parameter_sharing == "none":
            tensors[p + "attn.proj_k"] = np.stack([per_head[h, "E"][0] for h in range(H)])
            tensors[p + "attn.proj_v"] = np.stack([per_head[h, "F"][0] for h in range(H)])
            o.update(sharing="none", k=int(k_i))
        elif parameter_sharing == "headwise":
            tensors[p + "attn.proj_k"] = per_head[0, "E"][0]
            tensors[p + "attn.proj_v"] = per_head[0, "F"][0]
            o.update(sharing="headwise", k=int(k_i))
        elif parameter_sharing == "kv":
            tensors[p + "attn.proj_k"] = per_head[0, "E"][0]
            o.update(sharing="kv", k=int(k_i))
        else:
            shared = per_head[0, "E"][0]
            o.update(sharing="layerwise", k=int(k_i))
        options.append(o)
    if conv:
        max_len = int(input_size)
    else:
        max_len = (shared if shared is not None else tensors["layers.0.attn.proj_k"]).shape[-1]
        _require(input_size is None or input_size == max_len, f"input_size {input_size}, but E has {max_len} columns",
                 EF(0, 0, "E") + "weight")
    if shared is not None:
        tensors["shared_proj"] = shared
    tensors["lm_head.weight"] = keys.take("to_logits.weight", shape=(V, d))
    tensors["lm_head.bias"] = keys.take("to_logits.bias", shape=(V,))
    keys.finish()
    # tatp22's positions: fixed sin/cos halves at base 100000, not the engine's interleaved base 10000;
    # stored as a learned table computed as torch does (float32 angles).
    t = np.arange(max_len, dtype=np.float32)[:, None] * inv.astype(np.float32)[None, :]
    tensors["embeddings.position.weight"] = np.concatenate([np.sin(t), np.cos(t)], axis=1)
    config = model_config(vocab_size=int(V), d_model=int(d), n_layers=L, n_heads=H, d_ff=int(d_ff),
                          max_len=int(max_len), pre_ln=False, embedding_norm=False, output_head="linear",
                          dropout_embedding=dropout, dropout_attention=dropout, dropout_ffn=dropout,
                          attention=_attention_entries(options))
    return config, tensors


def from_tatp22(source, out, input_size=None, parameter_sharing=None, dropout=0.0, causal=False,
                full_attention=False, activation="gelu", overwrite=False):
    """tatp22's `LinformerLM` state dict (path or dict) -> checkpoint directory `out`. The sharing is
    read from which E/F tensors are equal unless parameter_sharing says it; causal, full_attention
    and activation leave no trace in a state dict and must be passed when not the defaults (the
    non-default ones are refused). input_size is needed with method="convolution" only."""
    sd, _ = read_state_dict(source)
    config, tensors = _tatp22_map(sd, input_size, parameter_sharing, dropout, causal, full_attention, activation)
    write_checkpoint(out, config, tensors, overwrite)
    return config


# --- fairseq's linformer_roberta -------------------------------------------------------------------
FAIRSEQ_DEFAULTS = {"compressed": 4, "shared_kv_compressed": 0, "shared_layer_kv_compressed": 0,
                    "encoder_normalize_before": False, "activation_fn": "gelu", "no_scale_embedding": True,
                    "layernorm_embedding": True, "padding_idx": 1}


def _fairseq_map(sd, args, dropout=0.0):
    a = {**FAIRSEQ_DEFAULTS, **{k: v for k, v in args.items() if v is not None}}
    _require(a["activation_fn"] == "gelu", f"{a['activation_fn']!r}: the engine's FFN and LM head use GELU",
             "args.activation_fn")
    _require(a.get("encoder_attention_heads") is not None, "the number of heads: pass encoder_attention_heads= "
             "(--heads) or a checkpoint that carries its args", "args.encoder_attention_heads")
    _require(bool(a["no_scale_embedding"]), "embeddings scaled by sqrt(d): the engine's token table is also the "
             "LM head's output matrix and is not scaled", "args.no_scale_embedding")
    H = int(a["encoder_attention_heads"])
    enc = "encoder.sentence_encoder."
    head = "encoder.lm_head."
    # Buffers fairseq keeps for its own upgrades, and the shared compress layer's bias, which its
    # attention never reads (F.linear with compress_k.weight only).
    keys = _Keys(sd, "fairseq", ignore=(enc + "version", enc + "compress_layer.bias"))
    for k in sd:
        if k.endswith(".version"):
            keys.used.add(k)
        if k.startswith("encoder.classification_heads."):
            raise ConversionError("classification heads are not mapped (convert the masked-LM model)", k)
    V, d = keys.take(enc + "embed_tokens.weight", ndim=2).shape
    _require(d % H == 0, f"width {d} does not split into {H} heads", enc + "embed_tokens.weight")
    pos = keys.take(enc + "embed_positions.weight", ndim=2)
    pad = int(a["padding_idx"])
    max_len = pos.shape[0] - pad - 1  # LearnedPositionalEmbedding: max_positions + padding_idx + 1 rows
    _require(max_len > 0, f"{pos.shape[0]} rows leave no positions after padding_idx {pad}", enc + "embed_positions.weight")
    if a.get("max_positions") is not None:
        _require(int(a["max_positions"]) == max_len, f"{pos.shape[0]} rows, but max_positions {a['max_positions']} + "
                 f"padding_idx {pad} + 1 = {int(a['max_positions']) + pad + 1}", enc + "embed_positions.weight")
    pre_ln = bool(a["encoder_normalize_before"]) or keys.has(enc + "layer_norm.weight")
    L = _count_layers(sd, enc + "layers.")
    _require(L > 0, "missing", enc + "layers.0.self_attn.q_proj.weight")
    tensors = {"embeddings.token.weight": keys.take(enc + "embed_tokens.weight"),
               # fairseq's position of token t (no padding before it) is padding_idx + 1 + t
               "embeddings.position.weight": pos[pad + 1:]}
    emb_norm = keys.has(enc + "layernorm_embedding.weight")
    if emb_norm:
        _require(not pre_ln, "an embedding LayerNorm in a pre-LN model: the engine's pre-LN stack has none",
                 enc + "layernorm_embedding.weight")
        tensors["embeddings.norm.weight"] = keys.take(enc + "layernorm_embedding.weight", shape=(d,))
        tensors["embeddings.norm.bias"] = keys.take(enc + "layernorm_embedding.bias", shape=(d,))
    layerwise = keys.has(enc + "compress_layer.weight")
    shared = keys.take(enc + "compress_layer.weight", ndim=2) if layerwise else None
    options = []
    for i in range(L):
        f, p = f"{enc}layers.{i}.", f"layers.{i}."
        at = f + "self_attn."
        tensors[p + "attn.to_q.weight"] = keys.take(at + "q_proj.weight", shape=(d, d))
        tensors[p + "attn.to_k.weight"] = keys.take(at + "k_proj.weight", shape=(d, d))
        tensors[p + "attn.to_v.weight"] = keys.take(at + "v_proj.weight", shape=(d, d))
        w_out = keys.take(at + "out_proj.weight", shape=(d, d))
        tensors[p + "attn.to_out.weight"] = w_out
        bias = keys.has(at + "q_proj.bias")
        b_out = keys.take(at + "out_proj.bias", shape=(d,)) if keys.has(at + "out_proj.bias") else np.zeros(d)
        if bias:
            # fairseq adds the K and V biases after the compression: every compressed key gets the same
            # b_k, which adds q·b_k to every score of a query and leaves the softmax unchanged (dropped);
            # every compressed value gets b_v, and the probabilities sum to 1, so each head's output
            # gains b_v: folded into the output bias through out_proj (exact at inference; under
            # attention dropout the kept probabilities no longer sum to 1).
            tensors[p + "attn.to_q.bias"] = keys.take(at + "q_proj.bias", shape=(d,))
            keys.take(at + "k_proj.bias", shape=(d,))
            b_out = b_out + w_out @ keys.take(at + "v_proj.bias", shape=(d,))
            tensors[p + "attn.to_k.bias"] = np.zeros(d)
            tensors[p + "attn.to_v.bias"] = np.zeros(d)
        tensors[p + "attn.to_out.bias"] = b_out
        ck = keys.take(at + "compress_k.weight", ndim=2)
        _require(ck.shape[1] == max_len, f"{ck.shape[1]} columns, but {max_len} positions", at + "compress_k.weight")
        has_v = keys.has(at + "compress_v.weight")
        if layerwise:
            keys.same(at + "compress_k.weight", shared, "shared_layer_kv_compressed")
            if has_v:
                keys.same(at + "compress_v.weight", shared, "shared_layer_kv_compressed")
            for unused in ("compress_k.bias", "compress_v.bias"):  # the shared layer's bias, never read
                if keys.has(at + unused):
                    keys.used.add(at + unused)
            sharing = "layerwise"
        elif has_v:
            tensors[p + "attn.proj_k"] = ck
            tensors[p + "attn.proj_v"] = keys.take(at + "compress_v.weight", shape=ck.shape)
            sharing = "headwise"
        else:  # shared_kv_compressed: one compression for K and V
            tensors[p + "attn.proj_k"] = ck
            sharing = "kv"
        options.append({"k": int(ck.shape[0]), "sharing": sharing, "qkv_bias": bool(bias),
                        "order": "compress_first", "init": "xavier"})
        for ours, theirs in (("attn_norm", "self_attn_layer_norm"), ("ffn_norm", "final_layer_norm")):
            tensors[p + ours + ".weight"] = keys.take(f + theirs + ".weight", shape=(d,))
            tensors[p + ours + ".bias"] = keys.take(f + theirs + ".bias", shape=(d,))
        d_ff = keys.take(f + "fc1.weight", ndim=2).shape[0]
        tensors[p + "ffn.fc1.weight"] = keys.take(f + "fc1.weight", shape=(d_ff, d))
        tensors[p + "ffn.fc1.bias"] = keys.take(f + "fc1.bias", shape=(d_ff,))
        tensors[p + "ffn.fc2.weight"] = keys.take(f + "fc2.weight", shape=(d, d_ff))
        tensors[p + "ffn.fc2.bias"] = keys.take(f + "fc2.bias", shape=(d,))
    if shared is not None:
        tensors["shared_proj"] = shared
    if pre_ln:
        tensors["final_norm.weight"] = keys.take(enc + "layer_norm.weight", shape=(d,))
        tensors["final_norm.bias"] = keys.take(enc + "layer_norm.bias", shape=(d,))
    # RoBERTa's LM head is the engine's mlm head: dense, GELU, LayerNorm, the tied token table, a bias.
    keys.same(head + "weight", tensors["embeddings.token.weight"], "RoBERTa ties the LM head to embed_tokens")
    tensors["mlm_head.dense.weight"] = keys.take(head + "dense.weight", shape=(d, d))
    tensors["mlm_head.dense.bias"] = keys.take(head + "dense.bias", shape=(d,))
    tensors["mlm_head.norm.weight"] = keys.take(head + "layer_norm.weight", shape=(d,))
    tensors["mlm_head.norm.bias"] = keys.take(head + "layer_norm.bias", shape=(d,))
    tensors["mlm_head.bias"] = keys.take(head + "bias", shape=(V,))
    keys.finish()
    config = model_config(vocab_size=int(V), d_model=int(d), n_layers=L, n_heads=H, d_ff=int(d_ff),
                          max_len=int(max_len), pre_ln=pre_ln, embedding_norm=emb_norm or pre_ln,
                          dropout_embedding=dropout, dropout_attention=dropout, dropout_ffn=dropout,
                          attention=_attention_entries(options))
    return config, tensors


def from_fairseq(source, out, dropout=0.0, overwrite=False, **args):
    """fairseq's `linformer_roberta` checkpoint (path, or a dict: the checkpoint {"model", "args"/"cfg"}
    or its model state dict) -> checkpoint directory `out`. The model's args come from the checkpoint;
    keyword arguments (encoder_attention_heads, padding_idx, ...) fill in or override them."""
    sd, saved = read_state_dict(source)
    config, tensors = _fairseq_map(sd, {**saved, **args}, dropout)
    write_checkpoint(out, config, tensors, overwrite)
    return config


# --- the command line (python -m linformer.convert; `linformer convert --from` runs it) -------------
def main(argv=None):
    ap = argparse.ArgumentParser(prog="linformer convert --from", description="Converts a peer's Linformer "
                                 "checkpoint into a linformer checkpoint directory (docs/convert.md).")
    ap.add_argument("--from", dest="peer", required=True, choices=PEERS)
    ap.add_argument("--input", required=True, help="the peer's state dict: .safetensors, or .pt/.bin (needs torch)")
    ap.add_argument("--out", required=True, help="the checkpoint directory to write")
    ap.add_argument("--heads", type=int, help="lucidrains: the model's heads; fairseq: encoder_attention_heads "
                    "when the checkpoint has no args")
    ap.add_argument("--input-size", type=int, help="tatp22 with method=convolution: its input_size")
    ap.add_argument("--sharing", choices=("none", "headwise", "kv", "layerwise"),
                    help="tatp22: its parameter_sharing (default: read from which E/F are equal)")
    ap.add_argument("--padding-idx", type=int, help="fairseq: the dictionary's padding index (default 1)")
    ap.add_argument("--dropout", type=float, default=0.0, help="the converted model's dropout rates (default 0)")
    ap.add_argument("--force", action="store_true", help="replace a non-empty --out")
    a = ap.parse_args(argv)
    try:
        if a.peer == "lucidrains":
            config = from_lucidrains(a.input, a.out, heads=a.heads, dropout=a.dropout, overwrite=a.force)
        elif a.peer == "tatp22":
            config = from_tatp22(a.input, a.out, input_size=a.input_size, parameter_sharing=a.sharing,
                                 dropout=a.dropout, overwrite=a.force)
        else:
            extra = {k: v for k, v in (("encoder_attention_heads", a.heads), ("padding_idx", a.padding_idx))
                     if v is not None}
            config = from_fairseq(a.input, a.out, dropout=a.dropout, overwrite=a.force, **extra)
    except ConversionError as e:
        print(f"linformer convert: {e}", file=sys.stderr)
        return 1
    print(f"wrote {a.out}: {a.peer} -> {config['n_layers']} layers, d_model {config['d_model']}, "
          f"{config['n_heads']} heads, vocab {config['vocab_size']}, max_len {config['max_len']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
