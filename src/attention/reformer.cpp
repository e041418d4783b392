// `reformer` (Kitaev et al. 2020): LSH attention with shared QK. The layer:
//   U = x W_qkᵀ (+ b_qk), V = x W_vᵀ (+ b_v); per head, queries q_t = U_t and keys kn_t = U_t/‖U_t‖;
//   n_hashes rounds of random-rotation hashing, sort by bucket, attention within chunks (cpu/reformer.h
//   has the exact definition); Y = O W_oᵀ + b_o.
// Time O(B·n·(n_hashes·(2·bucket_size + n_buckets/2)·d + d²)), memory O(B·n·d + n_hashes·B·h·n):
// never an n×n buffer (a chunk's scores, 64 queries × 2·bucket_size keys, per thread).
#include <algorithm>
#include <cmath>
#include <map>

#include "attention/kind_rules.h"
#include "attention/options.h"
#include "linformer/attention.h"
#include "linformer/error.h"
#include "linformer/tensor.h"
#include "ops/elementwise.h"
#include "ops/linear.h"
#include "ops/parallelism.h"
#include "ops/reformer.h"

namespace lf {
namespace {

// Keys are U/max(‖U‖, kNormFloor) per head.
constexpr double kNormFloor = 1e-12;

struct ReformerOptions {
  int64_t n_hashes = 2;
  int64_t bucket_size = 64;
  int64_t n_buckets = 0;  // 0: derived from max_len
  bool bucket_chunks = false;
  bool across_buckets = true;         // global chunking: the chunks' keys of other buckets visible
  bool dedup = true;                  // the paper's duplicate correction
  bool rotations_per_step = true;     // training draws the rotations from the step's seed
  int64_t full_attn_thres = 0;        // exact attention when max_len ≤ this
  uint64_t seed = 0;
  bool qkv_bias = false;
};

ReformerOptions parse_reformer(const AttentionDims& dims, const json& options, json* resolved) {
  OptionReader r("reformer", options);
  ReformerOptions o;
  o.n_hashes = r.get_int("n_hashes", 2);
  LF_REQUIRE(o.n_hashes >= 1 && o.n_hashes <= 64, r.where("n_hashes"), " must be in [1, 64], got ", o.n_hashes);
  o.bucket_size = r.get_int("bucket_size", std::min<int64_t>(64, dims.max_len));
  LF_REQUIRE(o.bucket_size >= 1, r.where("bucket_size"), " (the chunk length) must be positive, got ", o.bucket_size);
  LF_REQUIRE(o.bucket_size <= dims.max_len, r.where("bucket_size"), " (", o.bucket_size,
             ") must not exceed max_len (", dims.max_len, ")");
  o.n_buckets = r.get_int("n_buckets", 0);
  LF_REQUIRE(o.n_buckets == 0 || (o.n_buckets >= 2 && o.n_buckets % 2 == 0 && o.n_buckets <= (int64_t(1) << 24)),
             r.where("n_buckets"), " must be 0 (derived from the length) or an even number in [2, 2^24], got ",
             o.n_buckets);
  const std::string chunking = r.get_choice("chunking", dims.causal ? "bucket" : "global", {"global", "bucket"});
  o.bucket_chunks = chunking == "bucket";
  LF_REQUIRE(!dims.causal || o.bucket_chunks, r.where("chunking"),
             " must be 'bucket' with causal masking: with 'global' chunking the keys a query sees depend on the "
             "buckets of later positions, so the future would leak");
  o.across_buckets = r.get_bool("attend_across_buckets", !o.bucket_chunks);
  LF_REQUIRE(!o.bucket_chunks || !o.across_buckets, r.where("attend_across_buckets"),
             " must be false with 'bucket' chunking: its chunks never cross a bucket border");
  o.dedup = !r.get_bool("allow_duplicate_attention", false);
  o.rotations_per_step = r.get_choice("rotations", "per_step", {"per_step", "fixed"}) == "per_step";
  o.full_attn_thres = r.get_int("full_attn_thres", 0);
  LF_REQUIRE(o.full_attn_thres >= 0, r.where("full_attn_thres"), " must be non-negative, got ", o.full_attn_thres);
  const int64_t seed = r.get_int("seed", 0);
  LF_REQUIRE(seed >= 0, r.where("seed"), " must be non-negative, got ", seed);
  o.seed = uint64_t(seed);
  o.qkv_bias = r.get_bool("qkv_bias", false);
  r.finish(resolved);
  return o;
}

const AttentionKindInfo& reformer_info() {
  static const AttentionKindInfo info{
      "reformer",
      "LSH attention (Reformer): shared QK, n_hashes rounds of random-rotation hashing, attention within "
      "chunks of the bucket-sorted sequence, O(n·bucket_size) per round",
      AttentionSupport{/*causal=*/true, /*key_padding_mask=*/true, /*variable_length=*/true, /*cross_attention=*/false,
                       /*padding_invariant=*/true}};  // padded positions sort last and join no chunk
  return info;
}

template <class T>
class ReformerAttention final : public Attention<T> {
 public:
  ReformerAttention(const AttentionSpec& spec, const ReformerOptions& options, ParamArena<T>& arena)
      : arena_(arena), dims_(spec.dims), o_(options),
        stream_(ops::reformer_rotation_stream(spec.prefix)),
        step_stream_(ops::reformer_step_rotation_stream(spec.prefix, options.seed)) {
    const int64_t d = dims_.d_model;
    const Init w = Init::uniform(1.0 / std::sqrt(double(d)));  // nn.Linear's default bound
    wqk_ = arena.declare(spec.prefix + "to_qk.weight", {d, d}, w);
    wv_ = arena.declare(spec.prefix + "to_v.weight", {d, d}, w);
    if (o_.qkv_bias) {
      bqk_ = arena.declare(spec.prefix + "to_qk.bias", {d}, w);
      bv_ = arena.declare(spec.prefix + "to_v.bias", {d}, w);
    }
    wo_ = arena.declare(spec.prefix + "to_out.weight", {d, d}, w);
    bo_ = arena.declare(spec.prefix + "to_out.bias", {d}, w);
  }

  void forward(const AttentionInput<T>& in, T* out, bool training, uint64_t seed) override {
    validate_input(in, dims_, reformer_info());
    in_ = in;
    const int64_t B = in.B, n = in.n, d = dims_.d_model, h = dims_.n_heads, d_h = d / h;
    u_.resize(B * n * d);
    v_.resize(B * n * d);
    const auto x = rows(in.x);
    ops::linear_forward<T>(x, weight(wqk_), bias_or_empty(bqk_), rows(u_.data()));
    ops::linear_forward<T>(x, weight(wv_), bias_or_empty(bv_), rows(v_.data()));
    // Keys: each head's slice of U scaled to unit length.
    kn_.resize(u_.size());
    norm_.resize(B * n * h);
    ops::l2_normalize_rows<T>(u_.view({B * n * h, d_h}), kn_.view({B * n * h, d_h}), norm_.view({B * n * h}),
                              kNormFloor);
    // Padded keys are never attended, but a zero probability times a NaN key or value is still NaN in
    // the tile products: replace those rows by zeros (a select; their gradients are zero anyway).
    const TensorView<const uint8_t> mask(in.key_padding_mask, {B * n});
    ops::zero_masked_rows<T>(mask, rows(kn_.data()));
    ops::zero_masked_rows<T>(mask, rows(v_.data()));
    shape_ = ReformerShape{};
    shape_.B = B, shape_.n = n, shape_.h = h, shape_.d_h = d_h;
    shape_.n_hashes = o_.n_hashes, shape_.n_buckets = buckets_for(), shape_.chunk = o_.bucket_size;
    shape_.bucket_chunks = o_.bucket_chunks, shape_.across_buckets = o_.across_buckets, shape_.dedup = o_.dedup;
    shape_.causal = dims_.causal, shape_.scale = 1.0 / std::sqrt(double(d_h));
    shape_.key_mask = in.key_padding_mask, shape_.dropout = training ? dims_.dropout : 0.0, shape_.seed = seed;
    const bool full = full_attention(n);
    if (full) {  // one round, one bucket, one chunk of every position: exact (shared-QK) attention
      shape_.n_hashes = 1, shape_.n_buckets = 2, shape_.chunk = n;
      shape_.bucket_chunks = false, shape_.across_buckets = true;
    }
    buckets_.resize(shape_.n_hashes * B * h * n);
    perm_.resize(buckets_.size());
    if (full)
      ops::lsh_single_bucket(shape_, lists(buckets_.data()));
    else
      ops::lsh_hash<T>(shape_, sequence(kn_.data()), rotations(shape_.n_buckets, training, seed), lists(buckets_.data()));
    ops::lsh_sort(shape_, lists(buckets_.data()), lists(perm_.data()));
    o_buf_.resize(u_.size());
    stats_.resize(2 * B * h * n);
    ops::lsh_attention_forward<T>(shape_, sequence(u_.data()), sequence(kn_.data()), sequence(v_.data()),
                                  lists(buckets_.data()), lists(perm_.data()), sequence(o_buf_.data()),
                                  stats(stats_.data()));
    ops::linear_forward<T>(rows(o_buf_.data()), weight(wo_), bias_or_empty(bo_), rows(out));
    kept_ = in.keep_for_backward;
    if (!kept_) release_buffers(u_, v_, kn_, norm_, o_buf_, stats_, buckets_, perm_);
  }

  void backward(const T* dout, T* dx, T* dcontext) override {
    require_kept_for_backward(kept_, "reformer");
    (void)dcontext;  // self-attention only
    const int64_t B = in_.B, n = in_.n, d = dims_.d_model, h = dims_.n_heads, d_h = d / h;
    Buffer<T> d_o(B * n * d), du(B * n * d), dkn(B * n * d), dv(B * n * d);
    ops::linear_backward<T>(rows(o_buf_.data()), weight(wo_), rows(dout), rows(d_o.data()), weight_grad(wo_),
                            bias_grad_or_empty(bo_));
    ops::lsh_attention_backward<T>(shape_, sequence(u_.data()), sequence(kn_.data()), sequence(v_.data()),
                                   lists(buckets_.data()), lists(perm_.data()), sequence(o_buf_.data()),
                                   stats(stats_.data()), sequence(d_o.data()), sequence(du.data()),
                                   sequence(dkn.data()), sequence(dv.data()));
    // U is the query and, normalised, the key: dU += the gradient through the normalisation.
    ops::l2_normalize_rows_backward<T>(kn_.view({B * n * h, d_h}), norm_.view({B * n * h}),
                                       dkn.view({B * n * h, d_h}), du.view({B * n * h, d_h}), kNormFloor);
    const auto x = rows(in_.x);
    ops::linear_backward<T>(x, weight(wqk_), rows(du.data()), rows(dx), weight_grad(wqk_), bias_grad_or_empty(bqk_));
    ops::linear_backward<T>(x, weight(wv_), rows(dv.data()), rows(dx), weight_grad(wv_), bias_grad_or_empty(bv_),
                            /*accumulate_dx=*/true);
    release_buffers(u_, v_, kn_, norm_, o_buf_, stats_, buckets_, perm_);  // one backward per forward
    kept_ = false;
  }

  double forward_flops(int64_t B, int64_t n, int64_t m) const override {
    (void)m;
    const double d = double(dims_.d_model), R = double(o_.n_hashes);
    const bool full = full_attention(n);
    const double keys = full ? double(n) : double(std::min(n, 2 * o_.bucket_size));  // per query and round
    if (full) return 2.0 * B * n * d * d * 3 + 2.0 * 2.0 * B * n * keys * d;
    return 2.0 * B * n * d * d * 3                                 // to_qk, to_v, to_out
           + 2.0 * B * n * R * d * double(buckets_for() / 2)       // hashing
           + 2.0 * 2.0 * B * R * n * keys * d;                     // scores and P̃ V
  }

  double activation_bytes(int64_t B, int64_t n, int64_t m, bool training) const override {
    (void)m;
    const bool full = full_attention(n);
    const double f = sizeof(T), d = double(dims_.d_model), h = double(dims_.n_heads), R = full ? 1.0 : double(o_.n_hashes);
    const double L = full ? double(n) : double(o_.bucket_size), d_h = d / h, nb = double(buckets_for());
    // Kept: U, V, Kn, O (B·n·d each), M, log ℓ and the norms (B·h·n), buckets and sort (int32, R·B·h·n).
    const double kept = f * (4.0 * B * n * d + 3.0 * B * h * n) + 8.0 * R * B * h * n;
    // The rotations, one round's chunk list, per-thread tiles (keys 2L × d_h, scores 64 × 2L, hashing).
    const double threads = double(ops::workers());
    const double chunks = 48.0 * B * h * (n / L + nb + 1);
    const double tiles = threads * f * (6.0 * 2 * L * d_h + 4.0 * kReformerQueryBlock * 2 * L + kReformerHashBlock * nb / 2);
    const double fixed = f * R * h * d_h * nb / 2 + chunks + tiles;
    // The backward adds dO, dU, dKn, dV and D.
    return kept + fixed + (training ? f * (4.0 * B * n * d + B * h * n) : 0.0);
  }

 private:
  // The bucket count: n_buckets when given, else about max_len / bucket_size. Never from the call's
  // length: a position's bucket, hence the keys it sees, must depend neither on how many positions
  // follow it (a causal prefix, a decoding step) nor on how far a sample was padded.
  int64_t buckets_for() const {
    if (o_.n_buckets > 0) return o_.n_buckets;
    const int64_t chunks = (dims_.max_len + o_.bucket_size - 1) / o_.bucket_size;
    return std::max<int64_t>(2, chunks + chunks % 2);  // about bucket_size positions per bucket
  }

  // Exact attention instead of LSH (full_attn_thres), judged by max_len, never by the call's length:
  // a causal output must not change when later positions arrive, nor a padded sample's outputs with
  // the padding (the kind is padding-invariant), so the choice cannot follow n.
  bool full_attention(int64_t n) const {
    (void)n;
    return dims_.max_len <= o_.full_attn_thres;
  }

  // The rotations (n_hashes, h, d_h, nb/2) for nb buckets: at inference (or with rotations 'fixed')
  // drawn once per bucket count from the option seed; in training with 'per_step', drawn afresh
  // from the step's seed (the paper hashes anew at every step), the same for a forward and its rerun.
  TensorView<const T> rotations(int64_t nb, bool training, uint64_t step_seed) {
    const int64_t h = dims_.n_heads, d_h = dims_.d_model / h;
    if (training && o_.rotations_per_step) {
      step_rotations_.resize(o_.n_hashes * h * d_h * (nb / 2));
      const TensorView<T> view = step_rotations_.view({o_.n_hashes, h, d_h, nb / 2});
      ops::lsh_rotations<T>(step_seed, step_stream_, view);
      return view;
    }
    Buffer<T>& R = rotations_[nb];
    const bool drawn = !R.empty();
    R.resize(o_.n_hashes * h * d_h * (nb / 2));
    const TensorView<T> view = R.view({o_.n_hashes, h, d_h, nb / 2});
    if (!drawn) ops::lsh_rotations<T>(o_.seed, stream_, view);
    return view;
  }

  // Views of this call's buffers and the parameters: rows (B·n, d) of an activation, the sequences
  // (B, n, d) and lists (n_hashes, B, h, n) of ops/reformer.h, the statistics (2, B, h, n).
  template <class U>
  TensorView<U> rows(U* x) const {
    return matrix(x, in_.B * in_.n, dims_.d_model);
  }
  template <class U>
  TensorView<U> sequence(U* x) const {
    return TensorView<U>(x, {in_.B, in_.n, dims_.d_model});
  }
  template <class U>
  TensorView<U> lists(U* x) const {
    return TensorView<U>(x, {shape_.n_hashes, in_.B, dims_.n_heads, in_.n});
  }
  template <class U>
  TensorView<U> stats(U* x) const {
    return TensorView<U>(x, {2, in_.B, dims_.n_heads, in_.n});
  }
  TensorView<const T> weight(int id) const { return matrix(arena_.value(id), dims_.d_model, dims_.d_model); }
  TensorView<T> weight_grad(int id) { return matrix(arena_.grad(id), dims_.d_model, dims_.d_model); }
  TensorView<const T> bias_or_empty(int id) const {
    return id < 0 ? TensorView<const T>() : vector_view(arena_.value(id), dims_.d_model);
  }
  TensorView<T> bias_grad_or_empty(int id) { return id < 0 ? TensorView<T>() : vector_view(arena_.grad(id), dims_.d_model); }

  ParamArena<T>& arena_;
  AttentionDims dims_;
  ReformerOptions o_;
  uint64_t stream_, step_stream_;
  int wqk_ = -1, wv_ = -1, bqk_ = -1, bv_ = -1, wo_ = -1, bo_ = -1;
  std::map<int64_t, Buffer<T>> rotations_;
  Buffer<T> step_rotations_;
  // Kept from the last forward for the backward: the caller keeps in_.x (and the mask) alive.
  AttentionInput<T> in_;
  bool kept_ = false;
  ReformerShape shape_;
  Buffer<T> u_, v_, kn_, norm_, o_buf_, stats_;
  Buffer<int32_t> buckets_, perm_;  // the LSH buckets and their sort, made by ops
};

}  // namespace

void register_reformer_attention(AttentionRegistry& registry) {
  register_kind<ReformerAttention>(registry, reformer_info(), parse_reformer);
  set_attention_kind_rules("reformer", {"causal only with chunking = bucket"});
}

}  // namespace lf
