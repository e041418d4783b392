#include "linformer/config.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <tuple>

#include "core/join.h"
#include "core/json_value.h"
#include "linformer/error.h"
#include "model/head.h"

namespace lf {

// Version 2 (2026-12-07): Linformer's unset k is max_len / 4 within [16, 256] (version 1: min(256, max_len)).
constexpr int64_t kConfigVersion = 2;

namespace {
std::string linear_output_heads() {  // "mlm, clm": the heads output_head "linear" may replace
  std::vector<std::string> names;
  for (const std::string& name : HeadRegistry::instance().names())
    if (head_info(name).linear_output_head) names.push_back(name);
  return join(names);
}
}  // namespace

AttentionSpec ModelConfig::attention_spec(int64_t layer) const {
  const LayerAttention& a = attention.size() == 1 ? attention[0] : attention[size_t(layer)];
  AttentionSpec s;
  s.kind = a.kind;
  s.dims = AttentionDims{d_model, n_heads, max_len, head_info(task).causal, dropout_attention};
  s.options = a.options;
  s.prefix = "layers." + std::to_string(layer) + ".attn.";
  return s;
}

void ModelConfig::validate() const {
  const HeadFactory& head = HeadRegistry::instance().get(task);  // "`task` must be one of ..."
  LF_REQUIRE(vocab_size > 0, "vocab_size must be positive, got ", vocab_size);
  LF_REQUIRE(d_model > 0, "d_model must be positive, got ", d_model);
  LF_REQUIRE(n_layers > 0, "n_layers must be positive, got ", n_layers);
  LF_REQUIRE(n_heads > 0, "n_heads must be positive, got ", n_heads);
  LF_REQUIRE(d_model % n_heads == 0, "d_model (", d_model, ") must be divisible by n_heads (", n_heads, ")");
  LF_REQUIRE(d_ff > 0, "d_ff must be positive, got ", d_ff);
  LF_REQUIRE(max_len > 0, "max_len must be positive, got ", max_len);
  // Upper bounds far beyond any model that fits in memory, so that size arithmetic (parameter counts,
  // B·h·n·m buffer sizes) stays inside int64 and a huge n_layers cannot stall validation.
  for (const auto& [name, value, limit] :
       {std::tuple{"vocab_size", vocab_size, kMaxVocabSize}, std::tuple{"d_model", d_model, kMaxWidth},
        std::tuple{"d_ff", d_ff, kMaxWidth}, std::tuple{"max_len", max_len, kMaxLen},
        std::tuple{"n_layers", n_layers, kMaxLayers}})
    LF_REQUIRE(value <= limit, name, " is ", value, ", above the limit of ", limit);
  for (double p : {dropout_embedding, dropout_attention, dropout_ffn})
    LF_REQUIRE(std::isfinite(p) && p >= 0 && p < 1, "dropout rates must be in [0, 1), got ", p);
  LF_REQUIRE(std::isfinite(ln_eps) && ln_eps > 0, "ln_eps must be positive, got ", ln_eps);
  LF_REQUIRE(position == "learned" || position == "sinusoidal" || position == "none",
             "position must be learned, sinusoidal or none, got '", position, "'");
  LF_REQUIRE(conv_kernel >= 0 && conv_kernel <= kMaxConvKernel, "conv_kernel must be in [0, ", kMaxConvKernel,
             "] (0 = no convolution), got ", conv_kernel);
  LF_REQUIRE(conv_kernel % 2 == 1 || conv_kernel == 0 || head.info.causal, "conv_kernel (", conv_kernel,
             ") must be odd: the convolution is centred on each position (only a causal LM's may be even)");
  LF_REQUIRE(attention.size() == 1 || int64_t(attention.size()) == n_layers, "attention lists ", attention.size(),
             " layers but n_layers is ", n_layers, " (give one entry for all layers, or one per layer)");
  LF_REQUIRE(output_head == "default" || output_head == "linear", "output_head must be default or linear, got '",
             output_head, "'");
  LF_REQUIRE(output_head == "default" || head.info.linear_output_head, "output_head 'linear' replaces an LM head ",
             "(", linear_output_heads(), "); the `task` ", task, " has its own");
  LF_REQUIRE(output_head == "default" || !scale_tied_output,
             "scale_tied_output scales the input of the tied output matrix; output_head 'linear' is untied");
  LF_REQUIRE(final_norm || pre_ln, "final_norm: false drops the final LayerNorm of a pre-LN model; a post-LN model "
             "has none");
  LF_REQUIRE(embedding_norm || !pre_ln, "embedding_norm: false drops the embedding LayerNorm of a post-LN model; "
             "a pre-LN model has none");
  if (head.info.targets == HeadTargets::kClasses) {
    LF_REQUIRE(n_classes >= 2, "a classifier needs n_classes >= 2, got ", n_classes);
    LF_REQUIRE(n_classes <= kMaxVocabSize, "n_classes is ", n_classes, ", above the limit of ", kMaxVocabSize);
    LF_REQUIRE(class_names.empty() || int64_t(class_names.size()) == n_classes, "class_names lists ",
               class_names.size(), " labels but n_classes is ", n_classes, " (give one name per class, or none)");
    const std::set<std::string> distinct(class_names.begin(), class_names.end());
    LF_REQUIRE(distinct.size() == class_names.size(), "class_names repeats a label: each class needs its own name");
    LF_REQUIRE(!distinct.contains(""), "class_names holds an empty label");
  } else {
    LF_REQUIRE(class_names.empty(), "class_names is for a classifier; the `task` ", task, " has no classes");
  }
  if (head.validate) head.validate(*this);
  for (int64_t i = 0; i < n_layers; ++i) {
    const AttentionSpec s = attention_spec(i);
    if (head.info.causal) {
      const AttentionFactory& f = AttentionRegistry::instance().get(s.kind);
      LF_REQUIRE(f.info.support.causal, "a causal LM needs causal attention, but kind '", s.kind, "' (layer ", i,
                 ") does not support it; use ",
                 AttentionRegistry::instance().has("causal_" + s.kind) ? "'causal_" + s.kind + "', its causal form"
                                                                        : std::string("e.g. 'full'"));
    }
    try {
      validate_attention(s);
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(str_cat("layer ", i, ": ", e.what()));
    }
  }
}

json ModelConfig::to_json() const {
  json layers = json::array();
  for (const LayerAttention& a : attention) layers.push_back({{"kind", a.kind}, {"options", a.options}});
  json j = {{"format", "linformer-model"}, {"version", kConfigVersion},
            {"task", task}, {"vocab_size", vocab_size}, {"d_model", d_model},
            {"n_layers", n_layers}, {"n_heads", n_heads}, {"d_ff", d_ff}, {"max_len", max_len},
            {"pre_ln", pre_ln}, {"dropout_embedding", dropout_embedding}, {"dropout_attention", dropout_attention},
            {"dropout_ffn", dropout_ffn}, {"ln_eps", ln_eps}, {"position", position},
            {"conv_kernel", conv_kernel}, {"scale_tied_output", scale_tied_output}, {"final_norm", final_norm},
            {"output_head", output_head}, {"attention", layers}};
  // Written only when off, so the config.json of every model with the norm reads as before it existed.
  if (!embedding_norm) j["embedding_norm"] = false;
  if (head_info(task).targets == HeadTargets::kClasses) {
    j["n_classes"] = n_classes;
    j["pooling"] = pooling;
    if (!class_names.empty()) j["class_names"] = class_names;
  }
  return j;
}

std::string ModelConfig::class_name(int64_t k) const {
  return k >= 0 && k < int64_t(class_names.size()) ? class_names[size_t(k)] : std::to_string(k);
}

std::vector<std::string> ModelConfig::class_map() const {
  std::vector<std::string> names;
  for (int64_t k = 0; k < n_classes; ++k) names.push_back(class_name(k));
  return names;
}

namespace {

template <class V>
V field(const json& j, const char* key, V fallback) {
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  V value = fallback;
  if (!json_value_to(*it, value))
    throw InvalidArgument(str_cat("model config: '", key, "' has the wrong type or is out of range: ", it->dump()));
  return value;
}

LayerAttention parse_layer(const json& j) {
  LF_REQUIRE(j.is_object(), "model config: an attention entry must be an object, got ", j.dump());
  for (const auto& [k, v] : j.items())
    LF_REQUIRE(k == "kind" || k == "options", "model config: unknown key '", k, "' in an attention entry");
  LayerAttention a;
  a.kind = field<std::string>(j, "kind", a.kind);
  a.options = j.value("options", json::object());
  LF_REQUIRE(a.options.is_object(), "model config: attention options must be an object");
  return a;
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& j) {
  LF_REQUIRE(j.is_object(), "model config must be a JSON object");
  static const std::set<std::string> known = {
      "format", "version", "task", "vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_len", "pre_ln",
      "dropout_embedding", "dropout_attention", "dropout_ffn", "ln_eps", "position", "conv_kernel",
      "scale_tied_output", "final_norm", "embedding_norm", "output_head", "attention", "n_classes", "pooling", "class_names"};
  for (const auto& [k, v] : j.items()) LF_REQUIRE(known.count(k), "model config: unknown key '", k, "'");
  const int64_t version = field<int64_t>(j, "version", kConfigVersion);
  LF_REQUIRE(version >= 1 && version <= kConfigVersion, "model config: unsupported version ", j.at("version").dump(),
             " (this build reads versions 1 to ", kConfigVersion, ")");
  ModelConfig c;
  c.task = field<std::string>(j, "task", c.task);  // validate() checks it against the head registry
  c.vocab_size = field(j, "vocab_size", c.vocab_size);
  c.d_model = field(j, "d_model", c.d_model);
  c.n_layers = field(j, "n_layers", c.n_layers);
  c.n_heads = field(j, "n_heads", c.n_heads);
  c.d_ff = field(j, "d_ff", c.d_ff);
  c.max_len = field(j, "max_len", c.max_len);
  c.pre_ln = field(j, "pre_ln", c.pre_ln);
  c.dropout_embedding = field(j, "dropout_embedding", c.dropout_embedding);
  c.dropout_attention = field(j, "dropout_attention", c.dropout_attention);
  c.dropout_ffn = field(j, "dropout_ffn", c.dropout_ffn);
  c.ln_eps = field(j, "ln_eps", c.ln_eps);
  // Missing in files written before these options existed: their defaults are what those models did.
  c.position = field<std::string>(j, "position", c.position);
  c.conv_kernel = field(j, "conv_kernel", c.conv_kernel);
  c.scale_tied_output = field(j, "scale_tied_output", c.scale_tied_output);
  c.final_norm = field(j, "final_norm", c.final_norm);
  c.embedding_norm = field(j, "embedding_norm", c.embedding_norm);
  c.output_head = field<std::string>(j, "output_head", c.output_head);
  c.n_classes = field(j, "n_classes", c.n_classes);
  c.pooling = field<std::string>(j, "pooling", c.pooling);
  if (auto it = j.find("class_names"); it != j.end()) {
    LF_REQUIRE(it->is_array(), "model config: 'class_names' must be an array of strings, got ", it->dump());
    for (const json& name : *it) {
      LF_REQUIRE(name.is_string(), "model config: 'class_names' must be an array of strings, got ", name.dump());
      c.class_names.push_back(name.get<std::string>());
    }
  }
  if (auto it = j.find("attention"); it != j.end()) {
    c.attention.clear();
    if (it->is_array()) {
      for (const json& a : *it) c.attention.push_back(parse_layer(a));
    } else {
      c.attention.push_back(parse_layer(*it));
    }
    LF_REQUIRE(!c.attention.empty(), "model config: 'attention' is empty");
  }
  // A checkpoint's config of version 1 was written when Linformer's unset k meant min(256, max_len):
  // its E and F were made with that k, so it keeps it (a hand-written config has no "format").
  if (version == 1 && j.contains("format"))
    for (LayerAttention& a : c.attention)
      if (a.kind == "linformer" && !a.options.contains("k")) a.options["k"] = std::min<int64_t>(256, c.max_len);
  c.validate();
  return c;
}

}  // namespace lf
