#!/usr/bin/env python3
"""Writes the small peer checkpoints of tests/data/peers/ that python/tests/test_convert.py converts
(docs/convert.md). Each case is made by the peer's own code, with dropout 0 and LayerNorm weights
and zero-initialised biases perturbed so that no tensor is trivially equal to its initial value:

  tests/data/peers/<peer>/<case>.safetensors          the peer's state dict, its own key names
  tests/data/peers/<peer>/<case>.expected.safetensors tokens (int32, B x n) and the peer's logits
                                                      (float32, B x n x V) on them; metadata "spec"
                                                      (the constructor arguments, JSON) and versions
  tests/data/peers/lucidrains/headwise.pt             the same state dict as a torch file (the .pt path)
  tests/data/peers/tatp22/layerwise_with_proj_bias.safetensors   tatp22's default, E/F biases as
                                                      initialised (nonzero): the refusal test
  tests/data/peers/fairseq/roberta_post_ln.args.json  that case's args, as a fairseq checkpoint carries them

Peers: lucidrains' `linformer` (LinformerLM), tatp22's `linformer-pytorch` (LinformerLM), fairseq's
`linformer_roberta`: its MultiheadLinearAttention (examples/linformer) imported from a fairseq
checkout given by --fairseq with stubs for the three fairseq helpers it imports (fairseq itself
does not install on Python 3.11); the RoBERTa encoder around it (learned positions offset by
padding_idx + 1, post- or pre-LN TransformerEncoderLayer, the tied LM head) is written below after
fairseq's TransformerEncoder, with fairseq's state-dict names. No fairseq code is stored in the repo.

Requirements: scripts/requirements-peers.txt. Run from anywhere:
  python scripts/make_peer_checkpoints.py --fairseq /path/to/fairseq [--out tests/data/peers]
(--fairseq may be a checkout or a bare git directory; the file read is
examples/linformer/linformer_src/modules/multihead_linear_attention.py.)
"""
import argparse
import importlib.metadata
import importlib.util
import json
import math
import pathlib
import platform
import subprocess
import sys
import tempfile
import types

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

REPO = pathlib.Path(__file__).resolve().parent.parent
FAIRSEQ_FILE = "examples/linformer/linformer_src/modules/multihead_linear_attention.py"


def perturb(model, seed):
    """LayerNorm weights off 1 and every bias off 0: a mapping that swaps or drops one of them then
    shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def versions(packages):
    meta = {"torch_version": torch.__version__, "python_version": platform.python_version()}
    for pkg in packages:
        meta[f"{pkg}_version"] = importlib.metadata.version(pkg)
    return meta


def save_sorted(tensors, path, metadata):
    """make_goldens.py's save (metadata in sorted order, so that regenerating gives the same bytes)."""
    spec = importlib.util.spec_from_file_location("make_goldens", REPO / "scripts" / "make_goldens.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.save(tensors, path, metadata)


def write_case(out, peer, case, state_dict, tokens, logits, spec, meta):
    d = out / peer
    d.mkdir(parents=True, exist_ok=True)
    # shared parameters appear under every name that uses them (tatp22, fairseq): saved as copies
    sd = {k: v.detach().clone().contiguous() for k, v in state_dict.items()}
    save_file(sd, str(d / f"{case}.safetensors"))
    meta = {"spec": json.dumps(spec, sort_keys=True), **meta}
    save_sorted({"tokens": tokens.to(torch.int32).contiguous(), "logits": logits.detach().float().contiguous()},
                d / f"{case}.expected.safetensors", meta)
    print(f"{peer}/{case}: {sum(v.numel() for v in sd.values())} values, logits {tuple(logits.shape)}, {spec}")
    return sd


# --- lucidrains ------------------------------------------------------------------------------------
def lucidrains_cases(out):
    from linformer import LinformerLM
    cases = {
        "headwise": {"num_tokens": 20, "dim": 16, "seq_len": 16, "depth": 2, "k": 4, "heads": 2},
        "share_kv_one_kv_head": {"num_tokens": 24, "dim": 12, "seq_len": 12, "depth": 2, "k": 6, "heads": 4,
                                 "dim_head": 5, "one_kv_head": True, "share_kv": True},
    }
    for i, (case, kw) in enumerate(cases.items()):
        torch.manual_seed(10 + i)
        model = LinformerLM(**kw, dropout=0.0).eval()
        perturb(model, 20 + i)
        n = kw["seq_len"] - (0 if i == 0 else 3)  # the second is shorter than seq_len: E's first columns
        tokens = torch.randint(0, kw["num_tokens"], (2, n))
        with torch.no_grad():
            logits = model(tokens)
        sd = write_case(out, "lucidrains", case, model.state_dict(), tokens, logits, kw,
                        versions(["linformer", "safetensors"]))
        if case == "headwise":  # the torch-file path: a plain state dict, loadable with weights_only
            torch.save(sd, out / "lucidrains" / "headwise.pt")


# --- tatp22 ----------------------------------------------------------------------------------------
def tatp22_cases(out):
    from linformer_pytorch import LinformerLM
    base = {"num_tokens": 20, "input_size": 16, "channels": 16, "dim_k": 4, "dim_ff": 24, "nhead": 2, "depth": 2,
            "dropout": 0.0, "dropout_ff": 0.0, "dropout_tokens": 0.0}
    cases = {
        # learnable E/F (nn.Linear with bias): the engine's have no bias, so these zero it (the
        # converter refuses a nonzero one, tested on the raw default in test_convert.py)
        "layerwise": {**base, "parameter_sharing": "layerwise"},
        "none": {**base, "parameter_sharing": "none", "dim_d": 6},
        "kv": {**base, "parameter_sharing": "kv", "nhead": 4},
        # the convolution method keeps its real biases
        "convolution_headwise": {**base, "parameter_sharing": "headwise", "method": "convolution"},
    }
    for i, (case, kw) in enumerate(cases.items()):
        torch.manual_seed(30 + i)
        model = LinformerLM(**kw).eval()
        perturb(model, 40 + i)
        if kw.get("method", "learnable") == "learnable":
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name.endswith(".E.bias") or name.endswith(".F.bias"):
                        p.zero_()
        tokens = torch.randint(0, kw["num_tokens"], (2, kw["input_size"]))  # tatp22 takes input_size only
        with torch.no_grad():
            logits = model(tokens)
        sd = model.state_dict()
        if case == "layerwise":  # also the raw default, E/F biases as initialised, for the refusal test
            raw = LinformerLM(**kw).eval()
            save_file({k: v.detach().clone().contiguous() for k, v in raw.state_dict().items()},
                      str(out / "tatp22" / "layerwise_with_proj_bias.safetensors"))
        write_case(out, "tatp22", case, sd, tokens, logits, kw, versions(["linformer-pytorch", "safetensors"]))


# --- fairseq ---------------------------------------------------------------------------------------
def import_fairseq_attention(fairseq):
    """fairseq's MultiheadLinearAttention, its three fairseq imports stubbed as fairseq defines them
    for what this file uses (quant_noise with p = 0 is the module itself)."""
    src = pathlib.Path(fairseq)
    if (src / FAIRSEQ_FILE).exists():
        text = (src / FAIRSEQ_FILE).read_text()
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    else:  # a bare git directory
        text = subprocess.run(["git", f"--git-dir={src}", "show", f"HEAD:{FAIRSEQ_FILE}"], capture_output=True,
                              text=True, check=True).stdout
        commit = subprocess.run(["git", f"--git-dir={src}", "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    fs = types.ModuleType("fairseq")
    utils = types.ModuleType("fairseq.utils")
    utils.softmax = lambda x, dim, onnx_trace=False: F.softmax(x.float(), dim=dim, dtype=torch.float32)
    inc = types.ModuleType("fairseq.incremental_decoding_utils")
    inc.with_incremental_state = lambda cls: cls
    mods = types.ModuleType("fairseq.modules")
    qn = types.ModuleType("fairseq.modules.quant_noise")

    def quant_noise(module, p, block_size):
        assert p <= 0, "the peer cases use no quantisation noise"
        return module

    qn.quant_noise = quant_noise
    fs.utils, fs.incremental_decoding_utils, fs.modules, mods.quant_noise = utils, inc, mods, qn
    for name, m in (("fairseq", fs), ("fairseq.utils", utils), ("fairseq.incremental_decoding_utils", inc),
                    ("fairseq.modules", mods), ("fairseq.modules.quant_noise", qn)):
        sys.modules[name] = m
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "multihead_linear_attention.py"
        path.write_text(text)
        spec = importlib.util.spec_from_file_location("fairseq_mla", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    return mod.MultiheadLinearAttention, commit.strip()


def fairseq_model(MLA, a):
    """RoBERTa's encoder and LM head around MultiheadLinearAttention, after fairseq's
    TransformerEncoder/TransformerEncoderLayer/RobertaLMHead and LinformerTransformerEncoder, with
    their state-dict names (encoder.sentence_encoder.*, encoder.lm_head.*)."""

    class Layer(nn.Module):
        def __init__(self, compress_layer):
            super().__init__()
            d = a["encoder_embed_dim"]
            self.self_attn = MLA(d, a["encoder_attention_heads"], dropout=0.0, self_attention=True,
                                 compressed=a["compressed"], max_seq_len=a["max_positions"],
                                 shared_kv_compressed=a["shared_kv_compressed"],
                                 shared_compress_layer=compress_layer, freeze_compress=0)
            self.self_attn_layer_norm = nn.LayerNorm(d)
            self.fc1 = nn.Linear(d, a["encoder_ffn_embed_dim"])
            self.fc2 = nn.Linear(a["encoder_ffn_embed_dim"], d)
            self.final_layer_norm = nn.LayerNorm(d)
            self.register_buffer("version", torch.tensor(2))

        def forward(self, x):  # (T, B, C)
            pre = a["encoder_normalize_before"]
            r = x
            if pre:
                x = self.self_attn_layer_norm(x)
            x, _ = self.self_attn(query=x, key=x, value=x, need_weights=False)
            x = r + x
            if not pre:
                x = self.self_attn_layer_norm(x)
            r = x
            if pre:
                x = self.final_layer_norm(x)
            x = self.fc2(F.gelu(self.fc1(x)))
            x = r + x
            if not pre:
                x = self.final_layer_norm(x)
            return x

    class SentenceEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            d, V, pad = a["encoder_embed_dim"], a["vocab_size"], a["padding_idx"]
            self.embed_tokens = nn.Embedding(V, d, padding_idx=pad)
            nn.init.normal_(self.embed_tokens.weight, mean=0, std=d ** -0.5)
            self.embed_positions = nn.Embedding(a["max_positions"] + pad + 1, d, padding_idx=pad)
            nn.init.normal_(self.embed_positions.weight, mean=0, std=d ** -0.5)
            self.layernorm_embedding = nn.LayerNorm(d) if a["layernorm_embedding"] else None
            self.compress_layer = None
            if a["shared_layer_kv_compressed"]:
                self.compress_layer = nn.Linear(a["max_positions"], a["max_positions"] // a["compressed"])
                nn.init.xavier_uniform_(self.compress_layer.weight, gain=1 / math.sqrt(2))
            self.layers = nn.ModuleList([Layer(self.compress_layer) for _ in range(a["encoder_layers"])])
            self.layer_norm = nn.LayerNorm(d) if a["encoder_normalize_before"] else None
            self.register_buffer("version", torch.Tensor([3]))

        def forward(self, tokens):
            pad = a["padding_idx"]
            mask = tokens.ne(pad).int()
            positions = (torch.cumsum(mask, dim=1) * mask).long() + pad  # fairseq's make_positions
            x = self.embed_tokens(tokens) + self.embed_positions(positions)
            if self.layernorm_embedding is not None:
                x = self.layernorm_embedding(x)
            x = x.transpose(0, 1)
            for layer in self.layers:
                x = layer(x)
            if self.layer_norm is not None:
                x = self.layer_norm(x)
            return x.transpose(0, 1)

    class LMHead(nn.Module):
        def __init__(self, weight):
            super().__init__()
            d = a["encoder_embed_dim"]
            self.dense = nn.Linear(d, d)
            self.layer_norm = nn.LayerNorm(d)
            self.weight = weight
            self.bias = nn.Parameter(torch.zeros(a["vocab_size"]))

        def forward(self, x):
            return F.linear(self.layer_norm(F.gelu(self.dense(x))), self.weight) + self.bias

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.sentence_encoder = SentenceEncoder()
            self.lm_head = LMHead(self.sentence_encoder.embed_tokens.weight)

    class Roberta(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = Encoder()

        def forward(self, tokens):
            return self.encoder.lm_head(self.encoder.sentence_encoder(tokens))

    return Roberta()


def fairseq_cases(out, fairseq):
    MLA, commit = import_fairseq_attention(fairseq)
    base = {"vocab_size": 24, "encoder_embed_dim": 16, "encoder_attention_heads": 2, "encoder_ffn_embed_dim": 32,
            "encoder_layers": 2, "max_positions": 16, "compressed": 4, "shared_kv_compressed": 0,
            "shared_layer_kv_compressed": 0, "encoder_normalize_before": False, "layernorm_embedding": True,
            "padding_idx": 1, "activation_fn": "gelu", "no_scale_embedding": True}
    cases = {
        "roberta_post_ln": base,
        "shared_kv_pre_ln": {**base, "shared_kv_compressed": 1, "encoder_normalize_before": True,
                             "layernorm_embedding": False, "encoder_attention_heads": 4, "compressed": 2},
        "layerwise": {**base, "shared_layer_kv_compressed": 1, "max_positions": 12, "compressed": 3},
    }
    for i, (case, a) in enumerate(cases.items()):
        torch.manual_seed(50 + i)
        model = fairseq_model(MLA, a).eval()
        perturb(model, 60 + i)
        n = a["max_positions"] - (0 if i != 1 else 4)  # one shorter than max_positions
        body = torch.randint(4, a["vocab_size"], (2, n - 2))  # <s> ... </s>, no padding (id 1)
        tokens = torch.cat([torch.zeros(2, 1, dtype=torch.long), body, torch.full((2, 1), 2)], dim=1)
        with torch.no_grad():
            logits = model(tokens)
        write_case(out, "fairseq", case, model.state_dict(), tokens, logits, a,
                   {**versions(["safetensors"]), "fairseq_commit": commit, "fairseq_file": FAIRSEQ_FILE})
        if case == "roberta_post_ln":  # the args as fairseq checkpoints carry them, for the dict path
            (out / "fairseq" / f"{case}.args.json").write_text(json.dumps(a, indent=2, sort_keys=True) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=pathlib.Path, default=REPO / "tests" / "data" / "peers")
    ap.add_argument("--fairseq", required=True, help="a fairseq checkout or bare git directory")
    args = ap.parse_args()
    torch.set_num_threads(1)
    (args.out / "tatp22").mkdir(parents=True, exist_ok=True)
    lucidrains_cases(args.out)
    tatp22_cases(args.out)
    fairseq_cases(args.out, args.fairseq)


if __name__ == "__main__":
    main()
