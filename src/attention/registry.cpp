#include <cmath>
#include <limits>

#include "linformer/attention.h"
#include "linformer/error.h"

namespace lf {

// One line per built-in kind; each is defined in its own file under src/attention/.
void register_full_attention(AttentionRegistry&);
void register_linformer_attention(AttentionRegistry&);
void register_causal_linformer_attention(AttentionRegistry&);
void register_flash_attention(AttentionRegistry&);
void register_local_attention(AttentionRegistry&);
void register_strided_attention(AttentionRegistry&);
void register_global_attention(AttentionRegistry&);
void register_longformer_attention(AttentionRegistry&);
void register_bigbird_attention(AttentionRegistry&);
void register_reformer_attention(AttentionRegistry&);
void register_sinkhorn_attention(AttentionRegistry&);
void register_linear_attention(AttentionRegistry&);
void register_performer_attention(AttentionRegistry&);
void register_synthesizer_attention(AttentionRegistry&);
void register_aft_full_attention(AttentionRegistry&);
void register_aft_local_attention(AttentionRegistry&);
void register_aft_simple_attention(AttentionRegistry&);
void register_aft_conv_attention(AttentionRegistry&);
void register_mixer_attention(AttentionRegistry&);
void register_routing_attention(AttentionRegistry&);

AttentionRegistry::AttentionRegistry()
    : Registry("attention kind", [](const AttentionFactory& f) -> const std::string& { return f.info.name; }) {}

AttentionRegistry& AttentionRegistry::instance() {
  return first_use_instance<AttentionRegistry>([](AttentionRegistry& r) {
    register_full_attention(r);
    register_linformer_attention(r);
    register_causal_linformer_attention(r);
    register_flash_attention(r);
    register_local_attention(r);
    register_strided_attention(r);
    register_global_attention(r);
    register_longformer_attention(r);
    register_bigbird_attention(r);
    register_reformer_attention(r);
    register_sinkhorn_attention(r);
    register_linear_attention(r);
    register_performer_attention(r);
    register_synthesizer_attention(r);
    register_aft_full_attention(r);
    register_aft_local_attention(r);
    register_aft_simple_attention(r);
    register_aft_conv_attention(r);
    register_mixer_attention(r);
    register_routing_attention(r);
  });
}

void validate_dims(const AttentionDims& dims) {
  LF_REQUIRE(dims.d_model > 0, "d_model must be positive, got ", dims.d_model);
  LF_REQUIRE(dims.n_heads > 0, "the number of heads must be positive, got ", dims.n_heads);
  LF_REQUIRE(dims.d_model % dims.n_heads == 0, "d_model (", dims.d_model, ") must be divisible by the number of heads (",
             dims.n_heads, ")");
  LF_REQUIRE(dims.max_len > 0, "max_len must be positive, got ", dims.max_len);
  LF_REQUIRE(std::isfinite(dims.dropout) && dims.dropout >= 0 && dims.dropout < 1,
             "attention dropout must be in [0, 1), got ", dims.dropout);
}

namespace {

// The end of a refusal of causal masking: the kind's causal form where the registry has one
// (`causal_<kind>`), else exact attention.
std::string causal_hint(const std::string& kind) {
  const std::string alt = "causal_" + kind;
  if (AttentionRegistry::instance().has(alt)) return str_cat("; use '", alt, "', its causal form");
  return "; use e.g. 'full'";
}

// The checks every kind shares; returns the spec with a null ("no") options replaced by {}.
AttentionSpec checked_spec(const AttentionSpec& spec, const AttentionFactory& f) {
  validate_dims(spec.dims);
  LF_REQUIRE(!spec.dims.causal || f.info.support.causal, "attention kind '", spec.kind,
             "' does not support causal masking", causal_hint(spec.kind));
  AttentionSpec s = spec;
  if (s.options.is_null()) s.options = json::object();
  LF_REQUIRE(s.options.is_object(), "options of attention kind '", spec.kind, "' must be a JSON object");
  return s;
}

}  // namespace

json validate_attention(const AttentionSpec& spec) {
  const AttentionFactory& f = AttentionRegistry::instance().get(spec.kind);
  const AttentionSpec s = checked_spec(spec, f);
  return f.validate(s.dims, s.options);
}

template <>
std::unique_ptr<Attention<float>> make_attention(const AttentionSpec& spec, ParamArena<float>& arena) {
  const AttentionFactory& f = AttentionRegistry::instance().get(spec.kind);
  return f.make_f32(checked_spec(spec, f), arena);
}

template <>
std::unique_ptr<Attention<double>> make_attention(const AttentionSpec& spec, ParamArena<double>& arena) {
  const AttentionFactory& f = AttentionRegistry::instance().get(spec.kind);
  return f.make_f64(checked_spec(spec, f), arena);
}

template <class T>
void validate_input(const AttentionInput<T>& in, const AttentionDims& dims, const AttentionKindInfo& info) {
  LF_REQUIRE(in.x != nullptr, info.name, " attention: input is null");
  LF_REQUIRE(in.B > 0 && in.n > 0, info.name, " attention: batch and length must be positive, got B=", in.B,
             " n=", in.n);
  const int64_t m = in.kv_len();
  LF_REQUIRE(m > 0, info.name, " attention: context length must be positive, got ", m);
  LF_REQUIRE(!in.context || info.support.cross_attention, "attention kind '", info.name,
             "' does not support cross-attention");
  LF_REQUIRE(!in.key_padding_mask || info.support.key_padding_mask, "attention kind '", info.name,
             "' does not support a key padding mask");
  LF_REQUIRE(m <= dims.max_len && in.n <= dims.max_len, info.name, " attention: sequence length ", std::max(in.n, m),
             " exceeds the maximum ", dims.max_len, " the layer was built for");
  LF_REQUIRE(info.support.variable_length || (m == dims.max_len && in.n == dims.max_len), "attention kind '",
             info.name, "' needs sequences of exactly ", dims.max_len, " positions, got ", std::max(in.n, m));
  LF_REQUIRE(!dims.causal || !in.context || in.n == m, info.name,
             " attention: causal cross-attention needs equal query and key lengths");
  if (!in.attn_mask && !in.attn_bias) return;
  LF_REQUIRE(info.support.attention_mask, "attention kind '", info.name,
             "' does not support an attention mask or bias (full and flash do)");
  LF_REQUIRE(in.mask_batch == 1 || in.mask_batch == in.B, info.name, " attention: the attention mask's batch size (",
             in.mask_batch, ") must be 1 or B (", in.B, ")");
  LF_REQUIRE(in.mask_heads == 1 || in.mask_heads == dims.n_heads, info.name,
             " attention: the attention mask's head count (", in.mask_heads, ") must be 1 or n_heads (", dims.n_heads,
             ")");
  if (in.attn_bias) {
    const int64_t size = in.mask_batch * in.mask_heads * in.n * m;
    for (int64_t e = 0; e < size; ++e)
      LF_REQUIRE(!std::isnan(in.attn_bias[e]) && in.attn_bias[e] != std::numeric_limits<T>::infinity(), info.name,
                 " attention: the attention bias must be finite or -inf, got ", in.attn_bias[e], " at element ", e);
  }
}

template void validate_input<float>(const AttentionInput<float>&, const AttentionDims&, const AttentionKindInfo&);
template void validate_input<double>(const AttentionInput<double>&, const AttentionDims&, const AttentionKindInfo&);

}  // namespace lf
