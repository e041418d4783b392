// `sinkhorn`: Sparse Sinkhorn Attention (Tay et al. 2020). The sequence is cut into n_b = ⌈n/b⌉
// blocks of b positions; a small network scores every pair of blocks, Sinkhorn normalisation turns
// the scores into a soft permutation P (n_b × n_b) per head, and each query block attends to its own
// block and to its sorted partner block, the P-weighted mixture of all blocks:
//   Q = x W_qᵀ, K = x W_kᵀ, V = x W_vᵀ (padded and internally padded positions of K and V set to 0)
//   s_i = mean of x over the valid positions of block i (causal: over the blocks before i)
//   R = sort_net(s) (n_b × h·N_b, N_b = ⌈max_len/b⌉; head i uses columns i·N_b + j, j < n_b)
//   P = exp(L), L = iters rounds of row then column log-normalisation of R/τ (Sinkhorn)
//   K̃_i = Σ_j P_ij K_j, Ṽ_i = Σ_j P_ij V_j            (blocks as b × d_h matrices, per head)
//   O_t = softmax(Q_t [K_i; K̃_i]ᵀ/√d_h + masks) [V_i; Ṽ_i] for t in block i,  Y = O W_oᵀ + b_o
// Causal (leak-free by construction): only partners j < i exist (row 0 has none), a round divides
// entry (i, j) by the mean of column j over rows j < k ≤ i only, then normalises the rows; s_i
// summarises the blocks before i; the own block is causal inside. Masks: an own-block key is hidden
// when it is padding (or, causal, later than the query); row r of the partner is hidden when row r
// is padding in every block that can be mixed into it.
// Ragged batches: a sample sorts the ⌈L/b⌉ blocks of its real length L (its last unpadded position + 1),
// its fully padded blocks outside the balancing, so that its real outputs are those it has alone.
// Time O(B·n·d·(b + n/b)), memory O(B·(n·d + h·n·b + h·n_b²)); never n×n.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "attention/options.h"
#include "attention/projections.h"
#include "linformer/attention.h"
#include "linformer/error.h"
#include "linformer/rng.h"
#include "ops/elementwise.h"
#include "ops/linear.h"
#include "ops/matmul.h"
#include "ops/sinkhorn.h"

namespace lf {

// ---- the layer ------------------------------------------------------------------------------------

namespace {

enum class SortNet { Mlp, Linear };

struct SinkhornOptions {
  int64_t block = 64;
  int64_t iters = 8;
  double temperature = 0.75;
  SortNet sort_net = SortNet::Mlp;
  bool qkv_bias = false;
  bool gumbel_noise = false;  // Gumbel noise on the scores in training (Gumbel-Sinkhorn)
  bool non_permutative = false;  // a row softmax instead of the balancing
  // The rounds the sort runs: 0 for the row softmax alone (ops::sinkhorn_sort_forward).
  int64_t sort_iters() const { return non_permutative ? 0 : iters; }
};

// 64 positions, or max_len/4 for short models so that there are at least four blocks to sort.
int64_t default_block(int64_t max_len) { return std::clamp<int64_t>(max_len / 4, 1, 64); }

SinkhornOptions parse_sinkhorn(const AttentionDims& dims, const json& options, json* resolved) {
  OptionReader r("sinkhorn", options);
  SinkhornOptions o;
  o.block = r.get_int("block", default_block(dims.max_len));
  LF_REQUIRE(o.block > 0, r.where("block"), " must be positive, got ", o.block);
  LF_REQUIRE(o.block <= dims.max_len, r.where("block"), " (", o.block, ") must not exceed max_len (", dims.max_len, ")");
  o.iters = r.get_int("sinkhorn_iters", 8);
  LF_REQUIRE(o.iters >= 1 && o.iters <= 100, r.where("sinkhorn_iters"), " must be in [1, 100], got ", o.iters);
  o.temperature = r.get_double("temperature", 0.75);
  LF_REQUIRE(std::isfinite(o.temperature) && o.temperature > 0, r.where("temperature"),
             " must be a positive number, got ", o.temperature);
  o.sort_net = r.get_choice("sort_net", "mlp", {"mlp", "linear"}) == "mlp" ? SortNet::Mlp : SortNet::Linear;
  o.gumbel_noise = r.get_bool("gumbel_noise", false);
  o.non_permutative = r.get_bool("non_permutative", false);
  o.qkv_bias = r.get_bool("qkv_bias", false);
  r.finish(resolved);
  return o;
}

const AttentionKindInfo& sinkhorn_info() {
  static const AttentionKindInfo info{
      "sinkhorn",
      "sparse Sinkhorn attention: blocks attend to themselves and a learned soft-sorted partner, O(n·(b + n/b))",
      AttentionSupport{/*causal=*/true, /*key_padding_mask=*/true, /*variable_length=*/true, /*cross_attention=*/false,
                       /*padding_invariant=*/true}};
  return info;
}

template <class T>
class SinkhornAttention final : public Attention<T> {
 public:
  SinkhornAttention(const AttentionSpec& spec, const SinkhornOptions& options, ParamArena<T>& arena)
      : dims_(spec.dims),
        opt_(options),
        maps_(arena, spec.prefix, spec.dims.d_model, opt_.qkv_bias),
        arena_(arena) {
    const int64_t d = dims_.d_model;
    nb_max_ = (dims_.max_len + opt_.block - 1) / opt_.block;
    const int64_t out = dims_.n_heads * nb_max_;
    if (opt_.sort_net == SortNet::Mlp) {
      w1_ = arena.declare(spec.prefix + "sort_net.hidden.weight", {d, d}, Init::uniform(1.0 / std::sqrt(double(d))));
      b1_ = arena.declare(spec.prefix + "sort_net.hidden.bias", {d}, Init::uniform(1.0 / std::sqrt(double(d))));
    }
    w2_ = arena.declare(spec.prefix + "sort_net.out.weight", {out, d}, Init::uniform(1.0 / std::sqrt(double(d))));
    b2_ = arena.declare(spec.prefix + "sort_net.out.bias", {out}, Init::uniform(1.0 / std::sqrt(double(d))));
  }

  void forward(const AttentionInput<T>& in, T* out, bool training, uint64_t seed) override {
    validate_input(in, dims_, sinkhorn_info());
    in_ = in;
    kept_ = in.keep_for_backward;
    dropout_ = training ? dims_.dropout : 0.0;
    seed_ = seed;
    const int64_t B = in.B, n = in.n, d = dims_.d_model, h = dims_.n_heads, blk = opt_.block;
    nb_ = (n + blk - 1) / blk;
    const int64_t nb = nb_, np = nb * blk;

    // Validity: position t < n and not padding. Partner row r of block i: valid in some block j that
    // can be mixed into it (every j; causal: j < i).
    valid_.assign(size_t(B * np), 0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < n; ++t)
        valid_[size_t(b * np + t)] = !(in.key_padding_mask && in.key_padding_mask[b * n + t]);
    // A sample's blocks: those of its real length (its last unpadded position + 1), so that its fully
    // padded blocks take no part in the sorting and it sorts as it would alone.
    sample_blocks_.assign(in.key_padding_mask ? size_t(B) : 0, nb);
    for (size_t b = 0; b < sample_blocks_.size(); ++b) {
      int64_t len = n;
      while (len > 1 && in.key_padding_mask[int64_t(b) * n + len - 1]) --len;
      sample_blocks_[b] = (len + blk - 1) / blk;
    }
    partner_valid_.assign(size_t(B * nb * blk), 0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t r = 0; r < blk; ++r) {
        uint8_t any = 0;  // over the blocks before i (causal), or over all blocks
        if (!dims_.causal)
          for (int64_t j = 0; j < nb; ++j) any |= valid_[size_t(b * np + j * blk + r)];
        const int64_t own = sample_blocks_.empty() ? nb : sample_blocks_[size_t(b)];
        for (int64_t i = 0; i < nb; ++i) {
          partner_valid_[size_t((b * nb + i) * blk + r)] = i < own && any;  // a padded block has no partner
          if (dims_.causal) any |= valid_[size_t(b * np + i * blk + r)];
        }
      }

    // Q (B, n, d); K, V head-major (B, h, n_p, d_h) with invalid positions zero.
    {
      Buffer<T> k, v;
      maps_.project_in(in, q_, k, v);
      kh_.resize(B * np * d);
      vh_.resize(B * np * d);
      ops::sinkhorn_split_heads(activation(k), valid(), head_major(kh_));
      ops::sinkhorn_split_heads(activation(v), valid(), head_major(vh_));
    }

    // The sort network on the block summaries, then one soft permutation per (sample, head).
    const int64_t rows = B * nb, out_w = h * nb_max_;
    summ_.resize(rows * d);
    ops::sinkhorn_block_means_forward(activation(in.x), valid(), dims_.causal, per_block(summ_, d));
    scores_.resize(rows * out_w);
    const auto b2 = vector_view(arena_.value(b2_), out_w);
    if (opt_.sort_net == SortNet::Mlp) {
      hidden_.resize(rows * d);
      ops::linear_forward(per_block(summ_, d), weight(w1_, d), vector_view(arena_.value(b1_), d), per_block(hidden_, d));
      ops::relu_forward<T>(per_block(hidden_, d), per_block(hidden_, d));  // in place
      ops::linear_forward(per_block(hidden_, d), weight(w2_, out_w), b2, per_block(scores_, out_w));
    } else {
      ops::linear_forward(per_block(summ_, d), weight(w2_, out_w), b2, per_block(scores_, out_w));
    }
    if (training && opt_.gumbel_noise) add_gumbel_noise(seed);
    perm_.resize(B * h * nb * nb);
    ops::sinkhorn_sort_forward(per_block(scores_, out_w), opt_.sort_iters(), opt_.temperature, dims_.causal,
                               permutations(perm_), sample_blocks());

    // Sorted blocks K̃ = P K, Ṽ = P V per (sample, head): (n_b × n_b) · (n_b × b·d_h).
    ks_.resize(kh_.size());
    vs_.resize(vh_.size());
    ops::matmul(perm_matrices(perm_), block_rows(kh_), block_rows(ks_));
    ops::matmul(perm_matrices(perm_), block_rows(vh_), block_rows(vs_));

    o_.resize(B * n * d);
    probs_.resize(kept_ ? B * h * np * 2 * blk : 0);
    ops::sinkhorn_block_attention_forward(masks(), activation(q_), head_major(kh_), head_major(vh_), head_major(ks_),
                                          head_major(vs_), kept_ ? probs_.view({B, h, np, 2 * blk}) : TensorView<T>(),
                                          activation(o_));
    maps_.project_out(o_.data(), out, B * n);
    if (!kept_) release();
  }

  void backward(const T* dout, T* dx, T* dcontext) override {
    require_kept_for_backward(kept_, "sinkhorn");
    (void)dcontext;  // no cross-attention
    const int64_t B = in_.B, n = in_.n, d = dims_.d_model, h = dims_.n_heads, blk = opt_.block;
    const int64_t nb = nb_, np = nb * blk, rows = B * nb, out_w = h * nb_max_;

    Buffer<T> d_o(B * n * d), dq(B * n * d);
    Buffer<T> dkh(kh_.size()), dvh(vh_.size()), dks(ks_.size()), dvs(vs_.size());
    maps_.backward_out(o_.data(), dout, d_o.data(), B * n);
    release_buffers(o_);
    ops::sinkhorn_block_attention_backward(masks(), activation(q_), head_major(kh_), head_major(vh_), head_major(ks_),
                                           head_major(vs_), probs_.view({B, h, np, 2 * blk}), activation(d_o),
                                           activation(dq), head_major(dkh), head_major(dvh), head_major(dks),
                                           head_major(dvs));
    release_buffers(d_o, probs_, q_, ks_, vs_);  // what the rest of the backward does not need

    // Through the sorting: dP = dK̃ Kᵀ + dṼ Vᵀ, dK += Pᵀ dK̃, dV += Pᵀ dṼ (per sample and head).
    Buffer<T> dperm(perm_.size());
    const TensorView<T> P = perm_matrices(perm_), dP = perm_matrices(dperm);
    ops::matmul(block_rows(dks), block_rows(kh_).t(), dP);
    ops::matmul(block_rows(dvs), block_rows(vh_).t(), dP, 1, 1);
    ops::matmul(P.t(), block_rows(dks), block_rows(dkh), 1, 1);
    ops::matmul(P.t(), block_rows(dvs), block_rows(dvh), 1, 1);
    release_buffers(dks, dvs);
    Buffer<T> dk(B * n * d), dv(B * n * d);
    ops::sinkhorn_merge_heads(head_major(dkh), valid(), activation(dk));
    ops::sinkhorn_merge_heads(head_major(dvh), valid(), activation(dv));
    release_buffers(dkh, dvh);

    // Through the Sinkhorn iterations (recomputed per (sample, head)) to the scores.
    Buffer<T> dscores;
    dscores.assign(scores_.size(), T(0));
    ops::sinkhorn_sort_backward(per_block(scores_, out_w), permutations(perm_), permutations(dperm), opt_.sort_iters(),
                                opt_.temperature, dims_.causal, per_block(dscores, out_w), sample_blocks());

    // Through the sort network to the summaries.
    Buffer<T> dsumm(rows * d);
    const auto db2 = vector_view(arena_.grad(b2_), out_w);
    if (opt_.sort_net == SortNet::Mlp) {
      Buffer<T> dhidden_data(rows * d);
      const TensorView<T> dhidden = per_block(dhidden_data, d);
      ops::linear_backward<T>(per_block(hidden_, d), weight(w2_, out_w), per_block(dscores, out_w), dhidden,
                              grad(w2_, out_w), db2);
      ops::relu_backward<T>(per_block(hidden_, d), dhidden, dhidden);
      ops::linear_backward<T>(per_block(summ_, d), weight(w1_, d), dhidden, per_block(dsumm, d), grad(w1_, d),
                              vector_view(arena_.grad(b1_), d));
    } else {
      ops::linear_backward<T>(per_block(summ_, d), weight(w2_, out_w), per_block(dscores, out_w), per_block(dsumm, d),
                              grad(w2_, out_w), db2);
    }

    maps_.backward_in(in_, dq.data(), dk.data(), dv.data(), dx, nullptr, "sinkhorn");
    ops::sinkhorn_block_means_backward(per_block(dsumm, d), valid(), dims_.causal, activation(dx));
    release();  // one backward per forward, as in PyTorch
    kept_ = false;
  }

  double forward_flops(int64_t B, int64_t n, int64_t m) const override {
    (void)m;
    const double d = double(dims_.d_model), h = double(dims_.n_heads), blk = double(opt_.block);
    const double nb = std::ceil(double(n) / blk), np = nb * blk;
    const double net = 2.0 * B * nb * d * (h * nb_max_ + (opt_.sort_net == SortNet::Mlp ? d : 0.0));
    // A few operations per entry and half step (non-permutative: one row softmax).
    const double sinkhorn = 6.0 * B * h * nb * nb * double(std::max<int64_t>(opt_.sort_iters(), 1));
    const double sort = 2.0 * 2.0 * B * nb * np * d;            // K̃ and Ṽ
    const double core = 2.0 * 2.0 * B * double(n) * 2.0 * blk * d;  // scores and P·V over 2b keys
    return maps_.flops(B, n, n) + net + sinkhorn + sort + core;
  }

  double activation_bytes(int64_t B, int64_t n, int64_t m, bool training) const override {
    (void)m;
    const double d = double(dims_.d_model), h = double(dims_.n_heads), blk = double(opt_.block);
    const double nb = std::ceil(double(n) / blk), np = nb * blk, nd = double(B) * n * d, npd = double(B) * np * d;
    const double perm = double(B) * h * nb * nb, net = double(B) * nb * (2.0 * d + h * nb_max_);
    // Forward: q, k, v, o; K, V, K̃, Ṽ head-major; P; summaries, hidden, scores; per thread two blocks.
    const double fwd = 4.0 * nd + 4.0 * npd + perm + net + ops::sinkhorn_forward_scratch(blk);
    if (!training) return sizeof(T) * fwd;
    // Kept probabilities (B, h, n_p, 2b); backward: dO, dq, dk, dv, the four head-major gradients,
    // dP, the scores' gradients, and per thread the recomputed Sinkhorn states.
    const double bwd = 4.0 * nd + 4.0 * npd + perm + net + ops::sinkhorn_backward_scratch(nb, opt_.sort_iters());
    return sizeof(T) * (fwd + double(B) * h * np * 2.0 * blk + bwd);
  }

 private:
  // Views of this call's tensors: activations (B, n, d); head-major (B, h, n_p, d_h) and the same as
  // (B·h, n_b, b·d_h) block rows (what the sorting multiplies); per-block rows (B, n_b, w); the
  // permutations (B, h, n_b, n_b) and as (B·h, n_b, n_b) matrices; the validity masks.
  int64_t np() const { return nb_ * opt_.block; }
  int64_t d_h() const { return dims_.d_model / dims_.n_heads; }
  template <class E>
  TensorView<E> activation(E* data) const { return TensorView<E>(data, {in_.B, in_.n, dims_.d_model}); }
  TensorView<T> activation(Buffer<T>& x) const { return x.view({in_.B, in_.n, dims_.d_model}); }
  TensorView<T> head_major(Buffer<T>& x) const { return x.view({in_.B, dims_.n_heads, np(), d_h()}); }
  TensorView<T> block_rows(Buffer<T>& x) const { return x.view({in_.B * dims_.n_heads, nb_, opt_.block * d_h()}); }
  TensorView<T> per_block(Buffer<T>& x, int64_t width) const { return x.view({in_.B, nb_, width}); }
  TensorView<T> permutations(Buffer<T>& x) const { return x.view({in_.B, dims_.n_heads, nb_, nb_}); }
  TensorView<T> perm_matrices(Buffer<T>& x) const { return x.view({in_.B * dims_.n_heads, nb_, nb_}); }
  TensorView<T> weight(int id, int64_t out) const { return matrix(arena_.value(id), out, dims_.d_model); }
  TensorView<T> grad(int id, int64_t out) const { return matrix(arena_.grad(id), out, dims_.d_model); }
  TensorView<const int64_t> sample_blocks() const {
    if (sample_blocks_.empty()) return {};
    return TensorView<const int64_t>(sample_blocks_.data(), {in_.B});
  }
  ops::Mask valid() const { return TensorView<const uint8_t>(valid_.data(), {in_.B, np()}); }
  ops::SinkhornMasks masks() const {
    return {valid(), TensorView<const uint8_t>(partner_valid_.data(), {in_.B, nb_, opt_.block}), dims_.causal,
            dropout_, seed_};
  }

  // Gumbel-Sinkhorn (Mena et al. 2018): R + ε, ε i.i.d. standard Gumbel, −log(−log u) of Philox draws
  // keyed by (the forward's seed, sample, block, column) as if every sample had N_b blocks, so a
  // sample's noise does not depend on the call's length. L = (R + ε)/τ; the noisy scores are what the
  // backward re-runs the iterations on, and ∂(R + ε)/∂R = 1.
  void add_gumbel_noise(uint64_t seed) {
    const uint64_t stream = stream_id("sinkhorn.gumbel_noise");
    const int64_t out_w = dims_.n_heads * nb_max_;
    for (int64_t b = 0; b < in_.B; ++b)
      for (int64_t i = 0; i < nb_; ++i) {
        T* row = scores_.data() + (b * nb_ + i) * out_w;
        for (int64_t c = 0; c < out_w; ++c) {
          const uint64_t at = uint64_t((b * nb_max_ + i) * out_w + c);
          const double u = std::max(uniform01_f64(seed, stream, at), 1e-300);  // log 0 would be −inf
          row[c] += T(-std::log(-std::log(u)));
        }
      }
  }

  void release() {
    release_buffers(q_, kh_, vh_, ks_, vs_, o_, probs_, perm_, scores_, summ_, hidden_, valid_, partner_valid_,
                    sample_blocks_);
  }

  AttentionDims dims_;
  SinkhornOptions opt_;
  QkvoProjections<T> maps_;
  ParamArena<T>& arena_;
  int w1_ = -1, b1_ = -1, w2_ = -1, b2_ = -1;  // the sort network (hidden layer only for `mlp`)
  int64_t nb_max_ = 0;                          // ⌈max_len / b⌉: the network's partner columns per head

  // Kept from the last forward for the backward: the caller keeps in_.x alive.
  AttentionInput<T> in_;
  bool kept_ = false;
  double dropout_ = 0;
  uint64_t seed_ = 0;
  int64_t nb_ = 0;                       // blocks of this call: ⌈n / b⌉
  // Host-side masks built from the call's padding mask (host input), as the mask itself is given.
  std::vector<uint8_t> valid_;           // (B, n_p): t < n and not padding
  std::vector<uint8_t> partner_valid_;   // (B, n_b, b): partner row r of block i is visible
  std::vector<int64_t> sample_blocks_;   // (B): the blocks of each sample's real length; empty: no mask
  Buffer<T> q_, o_;                      // (B, n, d)
  Buffer<T> kh_, vh_, ks_, vs_;          // (B, h, n_p, d_h): K, V (invalid rows 0) and K̃, Ṽ
  Buffer<T> probs_;                      // (B, h, n_p, 2b): softmax before dropout
  Buffer<T> perm_;                       // (B, h, n_b, n_b): P
  Buffer<T> summ_, hidden_;              // (B·n_b, d): block summaries, the network's hidden layer
  Buffer<T> scores_;                     // (B·n_b, h·N_b): R
};

}  // namespace

void register_sinkhorn_attention(AttentionRegistry& registry) {
  register_kind<SinkhornAttention>(registry, sinkhorn_info(), parse_sinkhorn);
}

}  // namespace lf
