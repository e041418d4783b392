// `linformer info`: what this build knows. Without options: version, GEMM backend, threads and the
// attention kinds. --list-attention: the registered kinds, one name per line (--verbose adds the
// summary and what each supports). --kind NAME with the layer's sizes: validates the spec through the
// registry and prints the resolved options, the parameter count (declared, never allocated) and the
// forward FLOPs for one sequence of length n.
#include <CLI/CLI.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>

#include "attention/kind_rules.h"
#include "cli/common.h"
#include "linformer/arena.h"
#include "linformer/attention.h"
#include "linformer/checkpoint.h"
#include "linformer/error.h"
#include "linformer/memory.h"
#include "linformer/model.h"
#include "linformer/runtime.h"
#include "ops/parallelism.h"
#include "train/run_log.h"

namespace lf::cli {
namespace {

struct InfoOptions {
  bool list_attention = false;
  bool verbose = false;
  std::string kind;
  int64_t d_model = 512;
  int64_t heads = 8;
  int64_t max_len = 4096;
  int64_t n = 0;  // 0: max_len
  bool causal = false;
  double dropout = 0;
  std::string options = "{}";
  std::string model_config, checkpoint;  // describe a whole model
  int64_t batch = 1;
};

std::string supports_str(const AttentionSupport& s) {
  std::string out;
  auto add = [&](bool on, const char* what) {
    if (on) out += (out.empty() ? "" : ", ") + std::string(what);
  };
  add(s.causal, "causal");
  add(s.key_padding_mask, "key padding mask");
  add(s.variable_length, "variable length");
  add(s.cross_attention, "cross-attention");
  return out.empty() ? "-" : out;
}

void list_attention(bool verbose) {
  const AttentionRegistry& registry = AttentionRegistry::instance();
  for (const std::string& name : registry.names()) {
    if (!verbose) {
      std::printf("%s\n", name.c_str());
      continue;
    }
    const AttentionKindInfo& info = registry.get(name).info;
    std::printf("%s\n  %s\n  supports: %s\n", name.c_str(), info.summary.c_str(),
                supports_str(info.support).c_str());
    for (const std::string& rule : attention_kind_rules(info)) std::printf("  rule: %s\n", rule.c_str());
  }
}

json parse_options(const std::string& text) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw InvalidArgument(str_cat("--options is not valid JSON (", e.what(), "): ", text));
  }
}

int describe_kind(const InfoOptions& o) {
  AttentionSpec spec{o.kind, {o.d_model, o.heads, o.max_len, o.causal, o.dropout}, parse_options(o.options), ""};
  const json resolved = validate_attention(spec);
  const AttentionKindInfo& info = AttentionRegistry::instance().get(o.kind).info;
  const int64_t n = o.n > 0 ? o.n : o.max_len;
  LF_REQUIRE(o.n >= 0, "--n must be positive, got ", o.n);
  LF_REQUIRE(n <= o.max_len, "--n (", n, ") exceeds --max-len (", o.max_len, ")");
  LF_REQUIRE(info.support.variable_length || n == o.max_len, "attention kind '", o.kind,
             "' needs sequences of exactly --max-len (", o.max_len, ") positions, got --n ", n);

  ParamArena<float> arena;  // declared only: counting needs no memory
  const std::unique_ptr<Attention<float>> layer = make_attention(spec, arena);
  int64_t fixed = 0;
  for (const ParamInfo& p : arena.params())
    if (!p.trainable) fixed += p.numel;
  const double flops = layer->forward_flops(1, n, n);

  std::printf("kind: %s\n", o.kind.c_str());
  std::printf("summary: %s\n", info.summary.c_str());
  std::printf("supports: %s\n", supports_str(info.support).c_str());
  // d_head: d/h, unless the kind takes another head width (linformer's dim_head).
  std::printf("dims: d_model=%lld heads=%lld d_head=%lld max_len=%lld causal=%s dropout=%g\n",
              (long long)o.d_model, (long long)o.heads, (long long)resolved.value("dim_head", o.d_model / o.heads), (long long)o.max_len,
              o.causal ? "true" : "false", o.dropout);
  std::printf("options: %s\n", resolved.dump().c_str());
  std::printf("parameters: %lld (%lld trainable, %lld fixed) in %d tensors\n", (long long)arena.numel(),
              (long long)(arena.numel() - fixed), (long long)fixed, arena.count());
  if (o.verbose)
    for (const ParamInfo& p : arena.params())
      std::printf("  %s %s%s\n", p.name.c_str(), shape_str(p.shape).c_str(), p.trainable ? "" : " (fixed)");
  std::printf("forward FLOPs (B=1, n=%lld): %.4g (%.3f GFLOP)\n", (long long)n, flops, flops * 1e-9);
  return 0;
}

// A whole model: parameters, FLOPs per token and an activation-memory estimate for B sequences of n.
int describe_model(const InfoOptions& o) {
  ModelConfig config;
  if (!o.checkpoint.empty()) {
    config = read_checkpoint_config(o.checkpoint);
  } else {
    const json file = read_json_file(o.model_config);
    config = ModelConfig::from_json(file.is_object() && file.contains("model") ? file["model"] : file);
  }
  LF_REQUIRE(o.n >= 0, "--n must be positive, got ", o.n);
  const int64_t n = o.n > 0 ? o.n : config.max_len;
  LF_REQUIRE(n <= config.max_len, "--n (", n, ") exceeds the model's max_len (", config.max_len, ")");
  LF_REQUIRE(o.batch > 0, "--batch must be positive, got ", o.batch);
  ParamArena<float> arena;  // declared only
  Model<float> model(config, arena);
  int64_t fixed = 0;
  for (const ParamInfo& p : arena.params())
    if (!p.trainable) fixed += p.numel;
  const double flops = model.forward_flops(n);
  const MemoryEstimate need = estimate_memory(config, Workload::Training, o.batch, n);  // in double: no overflow
  std::printf("model: %s\n", config.to_json().dump().c_str());
  std::printf("parameters: %lld (%lld trainable, %lld fixed) in %d tensors, %s\n", (long long)arena.numel(),
              (long long)(arena.numel() - fixed), (long long)fixed, arena.count(),
              format_bytes(double(arena.numel()) * sizeof(float)).c_str());
  std::printf("forward FLOPs per token at n=%lld: %.4g (training step: about 3x)\n", (long long)n, flops / double(n));
  std::printf("activation memory (training, B=%lld, n=%lld): about %s\n", (long long)o.batch, (long long)n,
              format_bytes(need.activations).c_str());
  std::printf("training memory (weights, gradients, AdamW moments, activations): about %s\n",
              format_bytes(need.total()).c_str());
  return 0;
}

int summary() {
  std::printf("linformer: GEMM backend %s, %d threads, %s products\n", ops::matmul_backend(), num_threads(),
              precision_name(current_precision()));
  const std::string no_bf16 = precision_unsupported_reason(Precision::bf16);
  const char* spin = std::getenv("GOMP_SPINCOUNT");
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  std::printf("OpenMP spin-wait: GOMP_SPINCOUNT=%s, OMP_WAIT_POLICY=%s\n", spin ? spin : "(unset)",
              policy ? policy : "(unset)");
  std::printf("bf16: %s\n", no_bf16.empty() ? "available (--precision bf16)" : ("not available: " + no_bf16).c_str());
  const std::string no_int8 = precision_unsupported_reason(Precision::int8);
  std::printf("int8: %s\n", no_int8.empty() ? "available for inference (--precision int8)"
                                            : ("not available: " + no_int8).c_str());
  std::printf("attention kinds:\n");
  for (const std::string& name : AttentionRegistry::instance().names())
    std::printf("  %-12s %s\n", name.c_str(), AttentionRegistry::instance().get(name).info.summary.c_str());
  return 0;
}

}  // namespace

CLI::App* add_info_command(CLI::App& app, std::function<int()>& run) {
  auto o = std::make_shared<InfoOptions>();
  CLI::App* sub = app.add_subcommand("info", "Show the build, the attention kinds, one attention layer's sizes, or a model's sizes");
  CLI::Option* list = sub->add_flag("--list-attention", o->list_attention, "List the attention kinds, one per line");
  sub->add_flag("--verbose", o->verbose, "With --list-attention: summaries and supports; with --kind: every parameter");
  CLI::Option* kind = sub->add_option("--kind", o->kind, "Describe one attention layer of this kind");
  sub->add_option("--d-model", o->d_model, "Model width d")->capture_default_str();
  sub->add_option("--heads", o->heads, "Number of heads h")->capture_default_str();
  sub->add_option("--max-len", o->max_len, "Longest sequence the layer accepts")->capture_default_str();
  sub->add_option("--n", o->n, "Sequence length for the FLOP count (default: --max-len)");
  sub->add_flag("--causal", o->causal, "Causal masking");
  sub->add_option("--dropout", o->dropout, "Attention dropout")->capture_default_str();
  sub->add_option("--options", o->options, "The kind's options as a JSON object, e.g. '{\"k\": 256}'")
      ->capture_default_str();
  CLI::Option* cfg = sub->add_option("--config", o->model_config, "Describe the model of this JSON config ({\"model\": {...}} or the model object)");
  CLI::Option* ckpt = sub->add_option("--checkpoint", o->checkpoint, "Describe the model of this checkpoint directory");
  sub->add_option("--batch", o->batch, "With --config/--checkpoint: batch size for the memory estimate (default 1)");
  list->excludes(kind);
  cfg->excludes(kind)->excludes(ckpt)->excludes(list);
  run = [o] {
    if (o->list_attention) {
      list_attention(o->verbose);
      return 0;
    }
    if (!o->kind.empty()) return describe_kind(*o);
    if (!o->model_config.empty() || !o->checkpoint.empty()) return describe_model(*o);
    return summary();
  };
  return sub;
}

}  // namespace lf::cli
