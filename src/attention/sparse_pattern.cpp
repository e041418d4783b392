// The sparse-pattern kinds' shared parts (see sparse_pattern.h): the building blocks of their patterns
// and the layer around ops::sparse_attention_forward / backward.
#include "attention/sparse_pattern.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <utility>

#include "attention/kv_cache.h"
#include "attention/projections.h"
#include "linformer/error.h"
#include "ops/sparse_attention.h"

namespace lf {

void append_window(int64_t t, int64_t n, int64_t window, int64_t dilation, bool causal, std::vector<int32_t>& keys) {
  if (causal) {
    for (int64_t k = std::min(window, t / dilation); k >= 0; --k) keys.push_back(int32_t(t - k * dilation));
  } else {
    const int64_t half = window / 2;
    const int64_t below = std::min(half, t / dilation), above = std::min(half, (n - 1 - t) / dilation);
    for (int64_t k = -below; k <= above; ++k) keys.push_back(int32_t(t + k * dilation));
  }
}

std::vector<int64_t> read_global_positions(OptionReader& r, const AttentionDims& dims, int64_t default_tokens) {
  const std::vector<int64_t> indices = r.get_int_list("global_indices", {});
  const int64_t g = r.get_int("global_tokens", indices.empty() ? default_tokens : 0);
  LF_REQUIRE(g >= 0 && g <= dims.max_len, r.where("global_tokens"), " must be in [0, max_len = ", dims.max_len,
             "], got ", g);
  for (int64_t i : indices)
    LF_REQUIRE(i >= 0 && i < dims.max_len, r.where("global_indices"), " must list positions in [0, max_len = ",
               dims.max_len, "), got ", i);
  std::vector<int64_t> positions(static_cast<size_t>(g));
  std::iota(positions.begin(), positions.end(), int64_t(0));
  positions.insert(positions.end(), indices.begin(), indices.end());
  std::sort(positions.begin(), positions.end());
  positions.erase(std::unique(positions.begin(), positions.end()), positions.end());
  return positions;
}

RowKeys global_rows(int64_t n, const std::vector<int64_t>& global_positions,
                    std::function<void(int64_t t, std::vector<int32_t>& keys)> local_keys) {
  auto is_global = std::make_shared<std::vector<uint8_t>>(size_t(n), uint8_t(0));
  auto globals = std::make_shared<std::vector<int32_t>>();
  for (int64_t g : global_positions)
    if (g < n) {
      (*is_global)[size_t(g)] = 1;
      globals->push_back(int32_t(g));
    }
  return [n, is_global, globals, local_keys = std::move(local_keys)](int64_t t, std::vector<int32_t>& keys) {
    if ((*is_global)[size_t(t)]) {
      for (int64_t j = 0; j < n; ++j) keys.push_back(int32_t(j));
      return;
    }
    keys.insert(keys.end(), globals->begin(), globals->end());
    local_keys(t, keys);
  };
}

// ---- the layer -----------------------------------------------------------------------------------------

namespace {

// Patterns shared by layers with the same kind, options and causality: one per (key, length), alive as
// long as a layer holds it. A request for the transpose replaces a cached pattern that lacks it.
std::shared_ptr<const SparsePattern> shared_pattern(const std::string& key, int64_t n, bool causal,
                                                    const PatternFamily& family, bool with_transpose) {
  static std::mutex mutex;
  static std::map<std::pair<std::string, int64_t>, std::weak_ptr<const SparsePattern>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  const auto slot = std::make_pair(key, n);
  if (auto it = cache.find(slot); it != cache.end())
    if (auto p = it->second.lock(); p && (!with_transpose || p->has_transpose())) return p;
  std::erase_if(cache, [](const auto& entry) { return entry.second.expired(); });
  auto p = std::make_shared<const SparsePattern>(ops::build_sparse_pattern(n, n, causal, family(n), with_transpose));
  cache[slot] = p;
  return p;
}

// What register_sparse_pattern_kind's parser hands the layer: the kind's pattern configuration, its
// options with the defaults filled in (the key of the shared pattern cache) and the kind's info.
struct SparseKindOptions {
  SparseKindConfig config;
  json resolved;
  AttentionKindInfo info;
};

template <class T>
class SparsePatternAttention final : public Attention<T> {
 public:
  SparsePatternAttention(const AttentionSpec& spec, const SparseKindOptions& options, ParamArena<T>& arena)
      : info_(options.info),
        dims_(spec.dims),
        family_(options.config.layer_family ? options.config.layer_family(spec.prefix) : options.config.family),
        decode_window_(options.config.decode_window),
        length_dependent_(options.config.length_dependent),
        maps_(arena, spec.prefix, spec.dims.d_model, options.config.qkv_bias),
        pattern_key_(str_cat(info_.name, spec.dims.causal ? " causal " : " ", options.resolved.dump(),
                             options.config.layer_family ? " layer " + spec.prefix : std::string())) {}

  void forward(const AttentionInput<T>& in, T* out, bool training, uint64_t seed) override {
    validate_input(in, dims_, info_);
    in_ = in;
    kept_ = false;
    const int64_t B = in.B, n = in.n, d = dims_.d_model;
    const bool keep = in.keep_for_backward;
    if (!pattern_ || pattern_->n != n || (keep && !pattern_->has_transpose()))
      pattern_ = shared_pattern(pattern_key_, n, dims_.causal, family_, keep);
    choose_sample_patterns(in, keep);
    maps_.project_in(in, q_, k_, v_);
    o_.resize(B * n * d);
    probs_.resize(keep ? dims_.n_heads * probs_at_.back() : 0);
    shape_ = SparseShape{B, n, n, dims_.n_heads, d / dims_.n_heads, 1.0 / std::sqrt(double(d / dims_.n_heads)),
                         dims_.causal, in.key_padding_mask, training ? dims_.dropout : 0.0, seed};
    for_each_call([&](const SparseShape& s, const SparsePattern& p, int64_t b0, int64_t probs_at) {
      ops::sparse_attention_forward(s, p, heads(q_, b0, s.B), heads(k_, b0, s.B), heads(v_, b0, s.B),
                                    keep ? probs_view(probs_at, s.B, p) : TensorView<T>(), heads(o_, b0, s.B));
    });
    maps_.project_out(o_.data(), out, B * n);
    kept_ = keep;
    if (!keep) {
      release_buffers(q_, k_, v_, o_, probs_);
      maps_.release();
    }
  }

  void backward(const T* dout, T* dx, T* dcontext) override {
    require_kept_for_backward(kept_, info_.name);
    const int64_t size = in_.B * in_.n * dims_.d_model;
    Buffer<T> d_o(size), dq(size), dk(size), dv(size);
    maps_.backward_out(o_.data(), dout, d_o.data(), in_.B * in_.n);
    for_each_call([&](const SparseShape& s, const SparsePattern& p, int64_t b0, int64_t probs_at) {
      ops::sparse_attention_backward(s, p, heads(q_, b0, s.B), heads(k_, b0, s.B), heads(v_, b0, s.B),
                                     heads(o_, b0, s.B), probs_view(probs_at, s.B, p), heads(d_o, b0, s.B),
                                     heads(dq, b0, s.B), heads(dk, b0, s.B), heads(dv, b0, s.B));
    });
    maps_.backward_in(in_, dq.data(), dk.data(), dv.data(), dx, dcontext, info_.name);
    release_buffers(q_, k_, v_, o_, probs_);  // one backward per forward, as in PyTorch
    kept_ = false;
  }

  double forward_flops(int64_t B, int64_t n, int64_t m) const override {
    // Per entry and head: q·k (2·d_h) and p·v (2·d_h).
    return maps_.flops(B, n, n) + 4.0 * double(B) * double(nnz(n)) * double(dims_.d_model);
  }

  // Decoding: a KV cache of the positions a new query may still see (all of them, or the last
  // decode_window), and for a step's queries a pattern of their rows only (rows at positions
  // [t0, t0 + n_new) of the pattern at max_len, which a causal row does not depend on), over the
  // cached rows; O(|S(t)|·d) work per token beside the projections.
  DecodeMechanism decode_mechanism() const override {
    return decode_window_ >= 0 ? DecodeMechanism::kWindow : DecodeMechanism::kKvCache;
  }

  std::unique_ptr<DecodeState<T>> begin_decode(int64_t B, int64_t d_model) override {
    check_begin_decode(info_.name, B, d_model, dims_);
    return std::make_unique<KvCacheState<T>>(B, d_model, decode_window_ >= 0 ? decode_window_ : KvCache<T>::kWhole);
  }

  void decode(DecodeState<T>& base, const T* x, int64_t n_new, T* out) override {
    KvCacheState<T>& state = decode_state_as<KvCacheState<T>>(base, info_.name, n_new, dims_);
    const int64_t B = state.B, d = dims_.d_model, h = dims_.n_heads, t0 = state.length;
    in_ = AttentionInput<T>();
    in_.x = x;
    in_.B = B;
    in_.n = n_new;
    in_.keep_for_backward = false;
    kept_ = false;
    maps_.project_in(in_, q_, k_, v_);
    state.cache.append(k_.data(), v_.data(), n_new);
    if (!decode_rows_) decode_rows_ = family_(dims_.max_len);
    const int64_t first = state.cache.first(), m = state.cache.rows();
    // Rows build in parallel for a long step: each keeps its own scratch. A causal row's keys are never
    // older than `first` (the cache keeps decode_window positions back); the future is dropped.
    const RowKeys step_rows = [&](int64_t r, std::vector<int32_t>& keys) {
      const int64_t t = t0 + r;
      std::vector<int32_t> row;
      decode_rows_(t, row);
      for (const int32_t j : row)
        if (j <= t && j >= first) keys.push_back(int32_t(j - first));
    };
    const SparsePattern pattern = ops::build_sparse_pattern(n_new, m, /*causal=*/false, step_rows, false);
    const SparseShape s{1, n_new, m, h, d / h, 1.0 / std::sqrt(double(d / h)), false, nullptr, 0.0, 0};
    o_.resize(B * n_new * d);
    for (int64_t b = 0; b < B; ++b)
      ops::sparse_attention_forward<T>(s, pattern, TensorView<const T>(q_.data() + b * n_new * d, {1, n_new, d}),
                                       TensorView<const T>(state.cache.keys(b), {1, m, d}),
                                       TensorView<const T>(state.cache.values(b), {1, m, d}), TensorView<T>(),
                                       TensorView<T>(o_.data() + b * n_new * d, {1, n_new, d}));
    maps_.project_out(o_.data(), out, B * n_new);
    release_buffers(q_, k_, v_, o_);
    maps_.release();
    state.length = t0 + n_new;
  }

  double activation_bytes(int64_t B, int64_t n, int64_t m, bool training) const override {
    const double e = double(nnz(n)), bnd = double(B) * double(n) * double(dims_.d_model), h = double(dims_.n_heads);
    const double tiles = ops::sparse_attention_workspace_bytes<T>(n, dims_.d_model / dims_.n_heads);
    if (!training) return pattern_bytes(n, n, int64_t(e), false) + tiles + sizeof(T) * 4.0 * bnd;  // q, k, v, o
    // Kept: q, k, v, o and the B·h·nnz probabilities; backward: dO, dq, dk, dv and D (B·h·n).
    return pattern_bytes(n, n, int64_t(e), true) + tiles +
           sizeof(T) * (8.0 * bnd + double(B) * h * e + double(B) * h * n);
  }

 private:
  // A (B, n, h·d_h) activation of this layer, or its samples [b0, b0 + count).
  TensorView<T> heads(Buffer<T>& x) const { return x.view({in_.B, in_.n, dims_.d_model}); }
  TensorView<T> heads(Buffer<T>& x, int64_t b0, int64_t count) const {
    return TensorView<T>(x.data() + b0 * in_.n * dims_.d_model, {count, in_.n, dims_.d_model});
  }
  // The probabilities of `count` samples over pattern p, from element h·probs_at of probs_.
  TensorView<T> probs_view(int64_t probs_at, int64_t count, const SparsePattern& p) {
    return TensorView<T>(probs_.data() + dims_.n_heads * probs_at, {count, dims_.n_heads, p.nnz()});
  }

  // A length-dependent kind under a padding mask whose samples' real lengths are not all n: one
  // pattern per sample, that of its real length on its real rows (and of n on its padded ones, whose
  // outputs nobody reads), in sample_patterns_. Otherwise that vector is empty and pattern_ serves all.
  // probs_at_[b]: where sample b's probabilities start, in units of h (its last entry: the total).
  void choose_sample_patterns(const AttentionInput<T>& in, bool keep) {
    const int64_t B = in.B, n = in.n;
    sample_patterns_.clear();
    std::vector<int64_t> lengths(size_t(B), n);
    bool ragged = false;
    if (length_dependent_ && in.key_padding_mask)
      for (int64_t b = 0; b < B; ++b) {
        int64_t len = n;
        while (len > 1 && in.key_padding_mask[b * n + len - 1]) --len;
        lengths[size_t(b)] = len;
        ragged = ragged || len < n;
      }
    probs_at_.assign(size_t(B + 1), 0);
    for (int64_t b = 0; b < B; ++b) {
      if (ragged) {
        const int64_t len = lengths[size_t(b)];
        const PatternFamily padded = [family = family_, len](int64_t all) -> RowKeys {
          RowKeys real = family(len), rest = family(all);
          return [real, rest, len](int64_t t, std::vector<int32_t>& keys) { (t < len ? real : rest)(t, keys); };
        };
        sample_patterns_.push_back(
            len == n ? pattern_ : shared_pattern(str_cat(pattern_key_, " real length ", len), n, dims_.causal, padded, keep));
      }
      probs_at_[size_t(b + 1)] = probs_at_[size_t(b)] + (ragged ? sample_patterns_.back() : pattern_)->nnz();
    }
  }

  // Runs f(shape, pattern, first sample, probs_at) over the call: once for the whole batch, or once per
  // sample with its own pattern (and the batch's dropout draws, through batch_offset).
  template <class F>
  void for_each_call(const F& f) {
    if (sample_patterns_.empty()) return f(shape_, *pattern_, int64_t(0), int64_t(0));
    for (int64_t b = 0; b < in_.B; ++b) {
      SparseShape s = shape_;
      s.B = 1;
      s.batch_offset = b;
      s.key_mask = shape_.key_mask + b * in_.n;
      f(s, *sample_patterns_[size_t(b)], b, probs_at_[size_t(b)]);
    }
  }

  int64_t nnz(int64_t n) const {
    if (pattern_ && pattern_->n == n) return pattern_->nnz();
    return ops::count_pattern_entries(n, n, dims_.causal, family_(n));
  }

  AttentionKindInfo info_;
  AttentionDims dims_;
  PatternFamily family_;
  int64_t decode_window_;
  bool length_dependent_;
  RowKeys decode_rows_;  // the rows at max_len, made on the first decode()
  QkvoProjections<T> maps_;
  std::string pattern_key_;
  std::shared_ptr<const SparsePattern> pattern_;  // of the last call's length
  std::vector<std::shared_ptr<const SparsePattern>> sample_patterns_;  // per sample, or empty
  std::vector<int64_t> probs_at_;
  // Kept from the last forward for the backward: the caller keeps in_.x alive.
  AttentionInput<T> in_;
  bool kept_ = false;
  SparseShape shape_;
  Buffer<T> q_, k_, v_, o_, probs_;
};

// The parsers of the registered sparse-pattern kinds, by name (for sparse_kind_pattern).
std::map<std::string, SparseKindParser>& sparse_kind_parsers() {
  static std::map<std::string, SparseKindParser> parsers;
  return parsers;
}

}  // namespace

SparsePattern sparse_kind_pattern(const std::string& kind, const AttentionDims& dims, const json& options, int64_t n) {
  AttentionRegistry::instance();  // registers the built-in kinds
  const auto it = sparse_kind_parsers().find(kind);
  LF_REQUIRE(it != sparse_kind_parsers().end(), "attention kind '", kind, "' is not a sparse-pattern kind");
  const SparseKindConfig c = it->second(dims, options, nullptr);
  return ops::build_sparse_pattern(n, n, dims.causal, c.family(n), true);
}

void register_sparse_pattern_kind(AttentionRegistry& registry, const AttentionKindInfo& info, SparseKindParser parse) {
  sparse_kind_parsers()[info.name] = parse;
  register_kind<SparsePatternAttention>(registry, info, [parse, info](const AttentionDims& dims, const json& options,
                                                                       json* resolved) {
    SparseKindOptions o{SparseKindConfig(), json(), info};
    o.config = parse(dims, options, &o.resolved);
    if (resolved) *resolved = o.resolved;
    return o;
  });
}

}  // namespace lf
