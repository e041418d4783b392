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
// Time O(B·n·d·(b + n/b)), memory O(B·(n·d + h·n·b + h·n_b²)); never n×n.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "linformer/attention.h"
#include "attention/flash.h"
#include "attention/options.h"
#include "attention/projections.h"
#include "attention/sdpa.h"
#include "linformer/error.h"
#include "linformer/rng.h"
#include "linformer/runtime.h"
#include "cpu/gemm.h"
#include "cpu/linear.h"
#include "cpu/vmath.h"

namespace lf {

// ---- Sinkhorn normalisation (log domain) ----------------------------------------------------------
// L is n_b × n_b with row stride n_b. Causal: only entries j < i exist; the others are never read.

namespace {

// log k for k = 0..n_b (entry 0 unused).
template <class T>
std::vector<T> log_table(int64_t nb) {
  std::vector<T> t(size_t(nb + 1), T(0));
  for (int64_t k = 1; k <= nb; ++k) t[size_t(k)] = T(std::log(double(k)));
  return t;
}

// Entries of row i that exist.
inline int64_t row_len(int64_t i, int64_t nb, bool causal) { return causal ? i : nb; }

// L_ij −= log Σ_j' exp(L_ij').
template <class T>
void row_step(T* L, int64_t nb, bool causal) {
  for (int64_t i = 0; i < nb; ++i) {
    const int64_t cols = row_len(i, nb, causal);
    if (cols == 0) continue;
    T* row = L + i * nb;
    T mx = row[0];
    for (int64_t j = 1; j < cols; ++j) mx = std::max(mx, row[j]);
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < cols; ++j) sum += exp_fast<T>(row[j] - mx);
    const T lse = mx + std::log(sum);
    for (int64_t j = 0; j < cols; ++j) row[j] -= lse;
  }
}

// Non-causal: L_ij −= log Σ_k exp(L_kj) over every row k. Causal: L_ij −= Λ_ij − log(i − j) with
// Λ_ij = log Σ_{j<k≤i} exp(L_kj), a running log-sum-exp down the column: entry (i, j) is divided by
// the mean of the column over the rows that exist up to row i, which uses no later row. (Dividing by
// the sum instead would pin every P_{i,i−1} to 1.) m, s: n_b scratch each.
template <class T>
void col_step(T* L, int64_t nb, bool causal, T* m, T* s) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  std::fill(m, m + nb, neg_inf);
  std::fill(s, s + nb, T(0));
  if (!causal) {
    for (int64_t i = 0; i < nb; ++i) {
      const T* row = L + i * nb;
      for (int64_t j = 0; j < nb; ++j) m[j] = std::max(m[j], row[j]);
    }
    for (int64_t i = 0; i < nb; ++i) {
      const T* row = L + i * nb;
#pragma omp simd
      for (int64_t j = 0; j < nb; ++j) s[j] += exp_fast<T>(row[j] - m[j]);
    }
    for (int64_t j = 0; j < nb; ++j) m[j] += std::log(s[j]);
    for (int64_t i = 0; i < nb; ++i) {
      T* row = L + i * nb;
#pragma omp simd
      for (int64_t j = 0; j < nb; ++j) row[j] -= m[j];
    }
    return;
  }
  const std::vector<T> log_count = log_table<T>(nb);
  for (int64_t i = 1; i < nb; ++i) {
    T* row = L + i * nb;
    for (int64_t j = 0; j < i; ++j) {
      const T x = row[j], mn = std::max(m[j], x);  // m = −inf before the first row: exp gives 0
      s[j] = s[j] * exp_fast<T>(m[j] - mn) + exp_fast<T>(x - mn);
      m[j] = mn;
      row[j] = x - (mn + std::log(s[j])) + log_count[size_t(i - j)];
    }
  }
}

// Backward of row_step: G (the gradient w.r.t. its output Y) becomes the gradient w.r.t. its input:
// G_ij −= exp(Y_ij) Σ_j' G_ij' (exp(Y) is the row softmax of the input).
template <class T>
void row_step_backward(const T* Y, T* G, int64_t nb, bool causal) {
  for (int64_t i = 0; i < nb; ++i) {
    const int64_t cols = row_len(i, nb, causal);
    const T* y = Y + i * nb;
    T* g = G + i * nb;
    T sum = 0;
    for (int64_t j = 0; j < cols; ++j) sum += g[j];
    for (int64_t j = 0; j < cols; ++j) g[j] -= exp_fast<T>(y[j]) * sum;
  }
}

// Backward of col_step, X its input, Y its output. Non-causal: G_kj −= exp(Y_kj) Σ_i G_ij. Causal:
// ∂Λ_ij/∂X_kj = exp(X_kj − Λ_ij) for k ≤ i, and exp(X_kj − Λ_kj) = exp(Y_kj)/(k − j), so
// G_kj −= exp(Y_kj)/(k − j) · A_kj with A_kj = Σ_{i≥k} G_ij exp(Λ_kj − Λ_ij) (Λ grows down a column:
// every factor is ≤ 1), by the recurrence A_kj = G_kj + exp(Λ_kj − Λ_{k+1,j}) A_{k+1,j}, where
// Λ = X − Y + log(i − j). a, c: n_b scratch each.
template <class T>
void col_step_backward(const T* X, const T* Y, T* G, int64_t nb, bool causal, T* a, T* c) {
  std::fill(a, a + nb, T(0));
  if (!causal) {
    for (int64_t i = 0; i < nb; ++i) {
      const T* g = G + i * nb;
      for (int64_t j = 0; j < nb; ++j) a[j] += g[j];
    }
    for (int64_t i = 0; i < nb; ++i) {
      const T* y = Y + i * nb;
      T* g = G + i * nb;
#pragma omp simd
      for (int64_t j = 0; j < nb; ++j) g[j] -= exp_fast<T>(y[j]) * a[j];
    }
    return;
  }
  std::fill(c, c + nb, std::numeric_limits<T>::infinity());  // Λ of the row below: none yet
  const std::vector<T> log_count = log_table<T>(nb);
  for (int64_t i = nb - 1; i >= 1; --i) {
    const T* x = X + i * nb;
    const T* y = Y + i * nb;
    T* g = G + i * nb;
    for (int64_t j = 0; j < i; ++j) {
      const T lam = x[j] - y[j] + log_count[size_t(i - j)];
      a[j] = g[j] + exp_fast<T>(lam - c[j]) * a[j];
      c[j] = lam;
      g[j] -= exp_fast<T>(y[j]) / T(i - j) * a[j];
    }
  }
}

// L (n_b × n_b) = R/τ on the existing entries (R: row i at R + i·ld_r).
template <class T>
void load_scores(const T* R, int64_t ld_r, int64_t nb, double temperature, bool causal, T* L) {
  const T inv_tau = T(1.0 / temperature);
  for (int64_t i = 0; i < nb; ++i) {
    const int64_t cols = row_len(i, nb, causal);
    for (int64_t j = 0; j < cols; ++j) L[i * nb + j] = R[i * ld_r + j] * inv_tau;
    std::fill(L + i * nb + cols, L + (i + 1) * nb, T(0));  // absent (causal): never read
  }
}

}  // namespace

// P (n_b × n_b) = the soft permutation of the block scores R (row i at R + i·ld_r, columns 0..n_b):
// exp of L after `iters` rounds of log-domain normalisation of L = R/τ. Non-causal: each round
// normalises the rows, then the columns (every column of P sums to 1, the rows to 1 in the limit).
// Causal: P_ij = 0 for j ≥ i, each round divides by the running column mean (col_step), then
// normalises the rows (every row i ≥ 1 of P sums to 1; row 0 is empty); row i of P depends on rows
// ≤ i of R only. states: null, or (2·iters + 1)·n_b² elements receiving L before and after every
// half step (what the backward needs).
template <class T>
void sinkhorn_permutation(const T* R, int64_t ld_r, int64_t nb, int64_t iters, double temperature, bool causal, T* P,
                          T* states) {
  std::vector<T> m(static_cast<size_t>(nb)), s(static_cast<size_t>(nb));
  const int64_t nn = nb * nb;
  load_scores(R, ld_r, nb, temperature, causal, P);  // P is the working L until the end
  if (states) std::copy(P, P + nn, states);
  for (int64_t it = 0; it < iters; ++it) {
    if (causal)
      col_step(P, nb, causal, m.data(), s.data());
    else
      row_step(P, nb, causal);
    if (states) std::copy(P, P + nn, states + (2 * it + 1) * nn);
    if (causal)
      row_step(P, nb, causal);
    else
      col_step(P, nb, causal, m.data(), s.data());
    if (states) std::copy(P, P + nn, states + (2 * it + 2) * nn);
  }
  for (int64_t i = 0; i < nb; ++i) {
    const int64_t cols = row_len(i, nb, causal);
    T* row = P + i * nb;
    for (int64_t j = 0; j < cols; ++j) row[j] = exp_fast<T>(row[j]);
    std::fill(row + cols, row + nb, T(0));
  }
}

// From dP (n_b × n_b) and the P of sinkhorn_permutation: dR_ij = ∂loss/∂R_ij on the existing
// entries (row i at dR + i·ld_dr, overwritten; the others are left untouched). The half steps are
// recomputed into `states` ((2·iters + 1)·n_b² scratch); G is n_b² scratch.
template <class T>
void sinkhorn_permutation_backward(const T* R, int64_t ld_r, int64_t nb, int64_t iters, double temperature,
                                   bool causal, const T* P, const T* dP, T* dR, int64_t ld_dr, T* states, T* G) {
  const int64_t nn = nb * nb;
  std::vector<T> a(static_cast<size_t>(nb)), c(static_cast<size_t>(nb)), L(static_cast<size_t>(nn));
  sinkhorn_permutation(R, ld_r, nb, iters, temperature, causal, L.data(), states);
  for (int64_t e = 0; e < nn; ++e) G[e] = dP[e] * P[e];  // d/dL of P = exp(L); absent entries: P = 0
  for (int64_t it = iters - 1; it >= 0; --it) {
    const T* before = states + 2 * it * nn;
    const T* middle = states + (2 * it + 1) * nn;
    const T* after = states + (2 * it + 2) * nn;
    if (causal) {
      row_step_backward(after, G, nb, causal);
      col_step_backward(before, middle, G, nb, causal, a.data(), c.data());
    } else {
      col_step_backward(middle, after, G, nb, causal, a.data(), c.data());
      row_step_backward(middle, G, nb, causal);
    }
  }
  const T inv_tau = T(1.0 / temperature);
  for (int64_t i = 0; i < nb; ++i) {
    const int64_t cols = row_len(i, nb, causal);
    for (int64_t j = 0; j < cols; ++j) dR[i * ld_dr + j] = G[i * nb + j] * inv_tau;
  }
}

// ---- the layer ------------------------------------------------------------------------------------

namespace {

enum class SortNet { Mlp, Linear };

struct SinkhornOptions {
  int64_t block = 64;
  int64_t iters = 8;
  double temperature = 0.75;
  SortNet sort_net = SortNet::Mlp;
  bool qkv_bias = false;
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
  o.qkv_bias = r.get_bool("qkv_bias", false);
  r.finish(resolved);
  return o;
}

const AttentionKindInfo& sinkhorn_info() {
  static const AttentionKindInfo info{
      "sinkhorn",
      "sparse Sinkhorn attention: blocks attend to themselves and a learned soft-sorted partner, O(n·(b + n/b))",
      AttentionSupport{/*causal=*/true, /*key_padding_mask=*/true, /*variable_length=*/true, /*cross_attention=*/false}};
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
    const int64_t B = in.B, n = in.n, d = dims_.d_model, h = dims_.n_heads, dh = d / h, blk = opt_.block;
    nb_ = (n + blk - 1) / blk;
    const int64_t nb = nb_, np = nb * blk;

    // Validity: position t < n and not padding. Partner row r of block i: valid in some block j that
    // can be mixed into it (every j; causal: j < i).
    valid_.assign(size_t(B * np), 0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < n; ++t)
        valid_[size_t(b * np + t)] = !(in.key_padding_mask && in.key_padding_mask[b * n + t]);
    partner_valid_.assign(size_t(B * nb * blk), 0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t r = 0; r < blk; ++r) {
        uint8_t any = 0;  // over the blocks before i (causal), or over all blocks
        if (!dims_.causal)
          for (int64_t j = 0; j < nb; ++j) any |= valid_[size_t(b * np + j * blk + r)];
        for (int64_t i = 0; i < nb; ++i) {
          partner_valid_[size_t((b * nb + i) * blk + r)] = any;
          if (dims_.causal) any |= valid_[size_t(b * np + i * blk + r)];
        }
      }

    // Q (B, n, d); K, V head-major (B, h, n_p, d_h) with invalid positions zero.
    {
      std::vector<T> k, v;
      maps_.project_in(in, q_, k, v);
      kh_.resize(size_t(B * np * d));
      vh_.resize(size_t(B * np * d));
      pack_heads(k.data(), kh_.data());
      pack_heads(v.data(), vh_.data());
    }

    // The sort network on the block summaries, then one soft permutation per (sample, head).
    summaries_forward(in.x);
    const int64_t rows = B * nb, out_w = h * nb_max_;
    scores_.resize(size_t(rows * out_w));
    if (opt_.sort_net == SortNet::Mlp) {
      hidden_.resize(size_t(rows * d));
      linear_forward(summ_.data(), arena_.value(w1_), arena_.value(b1_), hidden_.data(), rows, d, d);
      for (T& e : hidden_) e = e > T(0) ? e : T(0);
      linear_forward(hidden_.data(), arena_.value(w2_), arena_.value(b2_), scores_.data(), rows, d, out_w);
    } else {
      linear_forward(summ_.data(), arena_.value(w2_), arena_.value(b2_), scores_.data(), rows, d, out_w);
    }
    perm_.resize(size_t(B * h * nb * nb));
    const bool par_sort = B * h > 1 && double(B) * h * nb * nb * opt_.iters >= double(1 << 16);
#pragma omp parallel for schedule(dynamic, 1) if (par_sort)
    for (int64_t bh = 0; bh < B * h; ++bh) {
      const int64_t b = bh / h, hd = bh % h;
      sinkhorn_permutation<T>(scores_.data() + b * nb * out_w + hd * nb_max_, out_w, nb, opt_.iters, opt_.temperature,
                              dims_.causal, perm_.data() + bh * nb * nb, nullptr);
    }

    // Sorted blocks K̃ = P K, Ṽ = P V per (sample, head): (n_b × n_b) · (n_b × b·d_h).
    ks_.resize(kh_.size());
    vs_.resize(vh_.size());
    gemm_batched<T>(false, false, nb, blk * dh, nb, T(1), perm_.data(), nb, nb * nb, kh_.data(), blk * dh, np * dh, T(0),
                    ks_.data(), blk * dh, np * dh, B * h);
    gemm_batched<T>(false, false, nb, blk * dh, nb, T(1), perm_.data(), nb, nb * nb, vh_.data(), blk * dh, np * dh, T(0),
                    vs_.data(), blk * dh, np * dh, B * h);

    o_.resize(size_t(B * n * d));
    probs_.resize(kept_ ? size_t(B * h * np * 2 * blk) : 0);
    core_forward();
    maps_.project_out(o_.data(), out, B * n);
    if (!kept_) release();
  }

  void backward(const T* dout, T* dx, T* dcontext) override {
    require_kept_for_backward(kept_, "sinkhorn");
    (void)dcontext;  // no cross-attention
    const int64_t B = in_.B, n = in_.n, d = dims_.d_model, h = dims_.n_heads, dh = d / h, blk = opt_.block;
    const int64_t nb = nb_, np = nb * blk, rows = B * nb, out_w = h * nb_max_;

    std::vector<T> d_o(size_t(B * n * d)), dq(size_t(B * n * d));
    std::vector<T> dkh(kh_.size()), dvh(vh_.size()), dks(ks_.size()), dvs(vs_.size());
    maps_.backward_out(o_.data(), dout, d_o.data(), B * n);
    release_buffers(o_);
    core_backward(d_o.data(), dq.data(), dkh.data(), dvh.data(), dks.data(), dvs.data());
    release_buffers(d_o, probs_, q_, ks_, vs_);  // what the rest of the backward does not need

    // Through the sorting: dP = dK̃ Kᵀ + dṼ Vᵀ, dK += Pᵀ dK̃, dV += Pᵀ dṼ (per sample and head).
    std::vector<T> dperm(perm_.size());
    gemm_batched<T>(false, true, nb, nb, blk * dh, T(1), dks.data(), blk * dh, np * dh, kh_.data(), blk * dh, np * dh,
                    T(0), dperm.data(), nb, nb * nb, B * h);
    gemm_batched<T>(false, true, nb, nb, blk * dh, T(1), dvs.data(), blk * dh, np * dh, vh_.data(), blk * dh, np * dh,
                    T(1), dperm.data(), nb, nb * nb, B * h);
    gemm_batched<T>(true, false, nb, blk * dh, nb, T(1), perm_.data(), nb, nb * nb, dks.data(), blk * dh, np * dh, T(1),
                    dkh.data(), blk * dh, np * dh, B * h);
    gemm_batched<T>(true, false, nb, blk * dh, nb, T(1), perm_.data(), nb, nb * nb, dvs.data(), blk * dh, np * dh, T(1),
                    dvh.data(), blk * dh, np * dh, B * h);
    release_buffers(dks, dvs);
    std::vector<T> dk(size_t(B * n * d)), dv(size_t(B * n * d));
    unpack_heads(dkh.data(), dk.data());
    unpack_heads(dvh.data(), dv.data());
    release_buffers(dkh, dvh);

    // Through the Sinkhorn iterations (recomputed per (sample, head)) to the scores.
    std::vector<T> dscores(scores_.size(), T(0));
    const bool par_sort = B * h > 1 && double(B) * h * nb * nb * opt_.iters >= double(1 << 16);
#pragma omp parallel if (par_sort)
    {
      std::vector<T> states(size_t((2 * opt_.iters + 1) * nb * nb)), G(size_t(nb * nb));
#pragma omp for schedule(dynamic, 1)
      for (int64_t bh = 0; bh < B * h; ++bh) {
        const int64_t b = bh / h, hd = bh % h, off = b * nb * out_w + hd * nb_max_;
        sinkhorn_permutation_backward<T>(scores_.data() + off, out_w, nb, opt_.iters, opt_.temperature, dims_.causal,
                                         perm_.data() + bh * nb * nb, dperm.data() + bh * nb * nb, dscores.data() + off,
                                         out_w, states.data(), G.data());
      }
    }

    // Through the sort network to the summaries.
    std::vector<T> dsumm(size_t(rows * d));
    if (opt_.sort_net == SortNet::Mlp) {
      std::vector<T> dhidden(size_t(rows * d));
      linear_backward(hidden_.data(), arena_.value(w2_), dscores.data(), dhidden.data(), arena_.grad(w2_),
                      arena_.grad(b2_), rows, d, out_w);
      for (size_t e = 0; e < dhidden.size(); ++e)
        if (!(hidden_[e] > T(0))) dhidden[e] = T(0);
      linear_backward(summ_.data(), arena_.value(w1_), dhidden.data(), dsumm.data(), arena_.grad(w1_), arena_.grad(b1_),
                      rows, d, d);
    } else {
      linear_backward(summ_.data(), arena_.value(w2_), dscores.data(), dsumm.data(), arena_.grad(w2_),
                      arena_.grad(b2_), rows, d, out_w);
    }

    maps_.backward_in(in_, dq.data(), dk.data(), dv.data(), dx, nullptr, "sinkhorn");
    summaries_backward(dsumm.data(), dx);
    release();  // one backward per forward, as in PyTorch
    kept_ = false;
  }

  double forward_flops(int64_t B, int64_t n, int64_t m) const override {
    (void)m;
    const double d = double(dims_.d_model), h = double(dims_.n_heads), blk = double(opt_.block);
    const double nb = std::ceil(double(n) / blk), np = nb * blk;
    const double net = 2.0 * B * nb * d * (h * nb_max_ + (opt_.sort_net == SortNet::Mlp ? d : 0.0));
    const double sinkhorn = 6.0 * B * h * nb * nb * opt_.iters;  // a few operations per entry and half step
    const double sort = 2.0 * 2.0 * B * nb * np * d;            // K̃ and Ṽ
    const double core = 2.0 * 2.0 * B * double(n) * 2.0 * blk * d;  // scores and P·V over 2b keys
    return maps_.flops(B, n, n) + net + sinkhorn + sort + core;
  }

  double activation_bytes(int64_t B, int64_t n, int64_t m, bool training) const override {
    (void)m;
    const double d = double(dims_.d_model), h = double(dims_.n_heads), blk = double(opt_.block);
    const double nb = std::ceil(double(n) / blk), np = nb * blk, nd = double(B) * n * d, npd = double(B) * np * d;
    const double perm = double(B) * h * nb * nb, net = double(B) * nb * (2.0 * d + h * nb_max_);
    const double threads = double(num_threads());
    // Forward: q, k, v, o; K, V, K̃, Ṽ head-major; P; summaries, hidden, scores; per thread two blocks.
    const double fwd = 4.0 * nd + 4.0 * npd + perm + net + threads * 6.0 * blk * blk;
    if (!training) return sizeof(T) * fwd;
    // Kept probabilities (B, h, n_p, 2b); backward: dO, dq, dk, dv, the four head-major gradients,
    // dP, the scores' gradients, and per thread the recomputed Sinkhorn states.
    const double bwd = 4.0 * nd + 4.0 * npd + perm + net + threads * (2.0 * opt_.iters + 3.0) * nb * nb;
    return sizeof(T) * (fwd + double(B) * h * np * 2.0 * blk + bwd);
  }

 private:
  // (B, n, d) → head-major (B, h, n_p, d_h), zero at invalid positions (padding and t ≥ n).
  void pack_heads(const T* src, T* dst) const {
    const int64_t B = in_.B, n = in_.n, d = dims_.d_model, h = dims_.n_heads, dh = d / h, np = nb_ * opt_.block;
#pragma omp parallel for schedule(static) if (B * np * d > 32768)
    for (int64_t bt = 0; bt < B * np; ++bt) {
      const int64_t b = bt / np, t = bt % np;
      for (int64_t hd = 0; hd < h; ++hd) {
        T* o = dst + ((b * h + hd) * np + t) * dh;
        if (valid_[size_t(bt)])
          std::copy(src + (b * n + t) * d + hd * dh, src + (b * n + t) * d + (hd + 1) * dh, o);
        else
          std::fill(o, o + dh, T(0));
      }
    }
  }

  // The gradient of pack_heads: head-major (B, h, n_p, d_h) → (B, n, d), zero at invalid positions.
  void unpack_heads(const T* src, T* dst) const {
    const int64_t B = in_.B, n = in_.n, d = dims_.d_model, h = dims_.n_heads, dh = d / h, np = nb_ * opt_.block;
#pragma omp parallel for schedule(static) if (B * n * d > 32768)
    for (int64_t bt = 0; bt < B * n; ++bt) {
      const int64_t b = bt / n, t = bt % n;
      const bool valid = valid_[size_t(b * np + t)];
      for (int64_t hd = 0; hd < h; ++hd) {
        T* o = dst + bt * d + hd * dh;
        if (valid)
          std::copy(src + ((b * h + hd) * np + t) * dh, src + ((b * h + hd) * np + t + 1) * dh, o);
        else
          std::fill(o, o + dh, T(0));
      }
    }
  }

  // Valid positions per block (B, n_b).
  std::vector<int64_t> block_counts() const {
    const int64_t B = in_.B, blk = opt_.block, nb = nb_, np = nb * blk;
    std::vector<int64_t> cnt(size_t(B * nb), 0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < np; ++t) cnt[size_t(b * nb + t / blk)] += valid_[size_t(b * np + t)];
    return cnt;
  }

  // summ_ (B·n_b, d): the mean of x over the valid positions of block i, or causal over the blocks
  // before i (zero when there are none).
  void summaries_forward(const T* x) {
    const int64_t B = in_.B, n = in_.n, d = dims_.d_model, blk = opt_.block, nb = nb_, np = nb * blk;
    std::vector<T> sums(size_t(B * nb * d), T(0));  // per block: Σ over its valid positions
#pragma omp parallel for schedule(static) if (B * n * d > 32768)
    for (int64_t bi = 0; bi < B * nb; ++bi) {
      const int64_t b = bi / nb, i = bi % nb;
      T* s = sums.data() + bi * d;
      for (int64_t t = i * blk; t < std::min(n, (i + 1) * blk); ++t)
        if (valid_[size_t(b * np + t)])
          for (int64_t c = 0; c < d; ++c) s[c] += x[(b * n + t) * d + c];
    }
    const std::vector<int64_t> cnt = block_counts();
    summ_.assign(size_t(B * nb * d), T(0));
    for (int64_t b = 0; b < B; ++b) {
      std::vector<T> run(size_t(d), T(0));  // causal: Σ over blocks before i
      int64_t run_cnt = 0;
      for (int64_t i = 0; i < nb; ++i) {
        T* s = summ_.data() + (b * nb + i) * d;
        const T* own = sums.data() + (b * nb + i) * d;
        if (!dims_.causal) {
          const int64_t c = cnt[size_t(b * nb + i)];
          if (c > 0)
            for (int64_t e = 0; e < d; ++e) s[e] = own[e] / T(c);
        } else {
          if (run_cnt > 0)
            for (int64_t e = 0; e < d; ++e) s[e] = run[size_t(e)] / T(run_cnt);
          for (int64_t e = 0; e < d; ++e) run[size_t(e)] += own[e];
          run_cnt += cnt[size_t(b * nb + i)];
        }
      }
    }
  }

  // dx (B, n, d) += the gradient of summaries_forward for dsumm (B·n_b, d).
  void summaries_backward(const T* dsumm, T* dx) const {
    const int64_t B = in_.B, n = in_.n, d = dims_.d_model, blk = opt_.block, nb = nb_, np = nb * blk;
    const std::vector<int64_t> cnt = block_counts();
    // g (B·n_b, d): what each valid position of block j receives.
    std::vector<T> g(size_t(B * nb * d), T(0));
    for (int64_t b = 0; b < B; ++b) {
      if (!dims_.causal) {
        for (int64_t j = 0; j < nb; ++j) {
          const int64_t c = cnt[size_t(b * nb + j)];
          if (c > 0)
            for (int64_t e = 0; e < d; ++e) g[size_t((b * nb + j) * d + e)] = dsumm[(b * nb + j) * d + e] / T(c);
        }
        continue;
      }
      // Block i's summary divides by the valid count of blocks before i; block j receives from every i > j.
      std::vector<int64_t> before(size_t(nb), 0);
      for (int64_t i = 1; i < nb; ++i) before[size_t(i)] = before[size_t(i - 1)] + cnt[size_t(b * nb + i - 1)];
      std::vector<T> acc(size_t(d), T(0));
      for (int64_t j = nb - 2; j >= 0; --j) {
        const int64_t i = j + 1;
        if (before[size_t(i)] > 0)
          for (int64_t e = 0; e < d; ++e) acc[size_t(e)] += dsumm[(b * nb + i) * d + e] / T(before[size_t(i)]);
        std::copy(acc.begin(), acc.end(), g.begin() + (b * nb + j) * d);
      }
    }
#pragma omp parallel for schedule(static) if (B * n * d > 32768)
    for (int64_t bt = 0; bt < B * n; ++bt) {
      const int64_t b = bt / n, t = bt % n;
      if (!valid_[size_t(b * np + t)]) continue;
      const T* gj = g.data() + (b * nb + t / blk) * d;
      T* o = dx + bt * d;
      for (int64_t e = 0; e < d; ++e) o[e] += gj[e];
    }
  }

  bool core_in_parallel() const {
    const int64_t B = in_.B, n = in_.n;
    return B * dims_.n_heads * nb_ > 1 && double(B) * n * 2 * opt_.block * dims_.d_model >= double(1 << 18);
  }

  // Scores of the nq queries of block i (Q rows t0..) against its 2b keys (own block, then partner),
  // masked, softmaxed in place: S (nq × 2b).
  void block_probs(int64_t b, int64_t i, int64_t nq, T* S) const {
    const int64_t blk = opt_.block, kw = 2 * blk, np = nb_ * blk, t0 = i * blk;
    const T neg_inf = -std::numeric_limits<T>::infinity();
    const uint8_t* own_valid = valid_.data() + b * np + t0;
    const uint8_t* partner_valid = partner_valid_.data() + (b * nb_ + i) * blk;
    for (int64_t r = 0; r < nq; ++r) {
      T* row = S + r * kw;
      for (int64_t c = 0; c < blk; ++c)
        if (!own_valid[c] || (dims_.causal && c > r)) row[c] = neg_inf;
      for (int64_t c = 0; c < blk; ++c)
        if (!partner_valid[c]) row[blk + c] = neg_inf;
      T mx = neg_inf;
      for (int64_t c = 0; c < kw; ++c) mx = std::max(mx, row[c]);
      if (mx == neg_inf) {  // no visible key: output 0
        std::fill(row, row + kw, T(0));
        continue;
      }
      T sum = 0;
      for (int64_t c = 0; c < kw; ++c) sum += (row[c] = exp_fast<T>(row[c] - mx));
      const T inv = T(1) / sum;
      for (int64_t c = 0; c < kw; ++c) row[c] *= inv;
    }
  }

  // Pd (nq × 2b) = dropout of P (rows t0.. of (b, head)); element (t, c) of head (b, hd) is kept when
  // uniform01(seed, kProbsDropoutStream, ((b·h + hd)·n_p + t)·2b + c) ≥ p.
  void dropout_block(int64_t bh, int64_t t0, int64_t nq, const T* P, T* Pd) const {
    const int64_t kw = 2 * opt_.block, np = nb_ * opt_.block;
    const float p = float(dropout_);
    const T scale = T(1.0 / (1.0 - dropout_));
    for (int64_t r = 0; r < nq; ++r) {
      const uint64_t base = uint64_t((bh * np + t0 + r) * kw);
      for (int64_t c = 0; c < kw; ++c)
        Pd[r * kw + c] = uniform01(seed_, kProbsDropoutStream, base + uint64_t(c)) >= p ? P[r * kw + c] * scale : T(0);
    }
  }

  // Task `task` of the core's loops over (sample, head, block), task = (b·h + hd)·n_b + i: block i of
  // head hd of sample b, bh = b·h + hd; its nq ≤ b rows from t0; where they start in the head-major
  // (B·h, n_p, d_h) buffers (off) and in the (B, n, d) ones (at).
  struct BlockTask {
    int64_t i, b, bh, t0, nq, off, at;
  };
  BlockTask block_task(int64_t task) const {
    const int64_t h = dims_.n_heads, dh = dims_.d_model / h, blk = opt_.block, np = nb_ * blk;
    const int64_t i = task % nb_, bh = task / nb_, b = bh / h, hd = bh % h, t0 = i * blk;
    return {i, b, bh, t0, std::min(blk, in_.n - t0), (bh * np + t0) * dh, (b * in_.n + t0) * dims_.d_model + hd * dh};
  }

  // o_ (B, n, d) from q_, K, V, K̃, Ṽ: parallel over (sample, head, block), each task owning its rows.
  void core_forward() {
    const int64_t B = in_.B, d = dims_.d_model, h = dims_.n_heads, dh = d / h, blk = opt_.block;
    const int64_t np = nb_ * blk, kw = 2 * blk, tasks = B * h * nb_;
    const T scale = T(1.0 / std::sqrt(double(dh)));
#pragma omp parallel if (core_in_parallel())
    {
      std::vector<T> Qp(size_t(blk * dh)), Kt(size_t(dh * kw)), scratch(kept_ ? 0 : size_t(blk * kw)),
          Pd(dropout_ > 0 ? size_t(blk * kw) : 0);
#pragma omp for schedule(static)
      for (int64_t task = 0; task < tasks; ++task) {
        const auto [i, b, bh, t0, nq, off, at] = block_task(task);
        pack_rows(q_.data() + at, d, nq, dh, Qp.data());
        pack_transposed(kh_.data() + off, dh, blk, dh, Kt.data(), kw);
        pack_transposed(ks_.data() + off, dh, blk, dh, Kt.data() + blk, kw);
        T* S = kept_ ? probs_.data() + (bh * np + t0) * kw : scratch.data();
        flash_tile_gemm<T>(false, nq, kw, dh, scale, Qp.data(), dh, Kt.data(), kw, false, S, kw);
        block_probs(b, i, nq, S);
        const T* Pv = S;
        if (dropout_ > 0) {
          dropout_block(bh, t0, nq, S, Pd.data());
          Pv = Pd.data();
        }
        T* O = o_.data() + at;
        flash_tile_gemm<T>(false, nq, dh, blk, T(1), Pv, kw, vh_.data() + off, dh, false, O, d);
        flash_tile_gemm<T>(false, nq, dh, blk, T(1), Pv + blk, kw, vs_.data() + off, dh, true, O, d);
      }
    }
  }

  // From dO (B, n, d): dq (B, n, d), and the gradients of the own-block keys/values dkh, dvh and of
  // the sorted ones dks, dvs (head-major), all overwritten.
  void core_backward(const T* d_o, T* dq, T* dkh, T* dvh, T* dks, T* dvs) const {
    const int64_t B = in_.B, d = dims_.d_model, h = dims_.n_heads, dh = d / h, blk = opt_.block;
    const int64_t np = nb_ * blk, kw = 2 * blk, tasks = B * h * nb_;
    const T scale = T(1.0 / std::sqrt(double(dh)));
    const T drop_scale = T(1.0 / (1.0 - dropout_));
#pragma omp parallel if (core_in_parallel())
    {
      std::vector<T> Qp(size_t(blk * dh)), dOp(size_t(blk * dh)), Vt(size_t(dh * kw)), dS(size_t(blk * kw)),
          Pd(dropout_ > 0 ? size_t(blk * kw) : 0);
#pragma omp for schedule(static)
      for (int64_t task = 0; task < tasks; ++task) {
        const auto [i, b, bh, t0, nq, off, at] = block_task(task);
        pack_rows(q_.data() + at, d, nq, dh, Qp.data());
        pack_rows(d_o + at, d, nq, dh, dOp.data());
        pack_transposed(vh_.data() + off, dh, blk, dh, Vt.data(), kw);
        pack_transposed(vs_.data() + off, dh, blk, dh, Vt.data() + blk, kw);
        const T* P = probs_.data() + (bh * np + t0) * kw;
        const T* Pv = P;
        if (dropout_ > 0) {
          dropout_block(bh, t0, nq, P, Pd.data());
          Pv = Pd.data();
        }
        // dV (own and partner rows, b × d_h each) = P̃ᵀ dO.
        flash_tile_gemm<T>(true, blk, dh, nq, T(1), Pv, kw, dOp.data(), dh, false, dvh + off, dh);
        flash_tile_gemm<T>(true, blk, dh, nq, T(1), Pv + blk, kw, dOp.data(), dh, false, dvs + off, dh);
        // dP̃ = dO [V; Ṽ]ᵀ, back through dropout (P̃ = P·mask/(1 − p)) and the softmax, times the scale.
        flash_tile_gemm<T>(false, nq, kw, dh, T(1), dOp.data(), dh, Vt.data(), kw, false, dS.data(), kw);
        for (int64_t r = 0; r < nq; ++r) {
          const T* p = P + r * kw;
          T* g = dS.data() + r * kw;
          if (dropout_ > 0) {
            const T* pd = Pd.data() + r * kw;
            for (int64_t c = 0; c < kw; ++c) g[c] = pd[c] != T(0) ? g[c] * drop_scale : T(0);
          }
          T dot = 0;
          for (int64_t c = 0; c < kw; ++c) dot += p[c] * g[c];
          for (int64_t c = 0; c < kw; ++c) g[c] = scale * p[c] * (g[c] - dot);
        }
        // dQ = dS [K; K̃];  dK (own and partner rows) = dSᵀ Q.
        T* dQ = dq + at;
        flash_tile_gemm<T>(false, nq, dh, blk, T(1), dS.data(), kw, kh_.data() + off, dh, false, dQ, d);
        flash_tile_gemm<T>(false, nq, dh, blk, T(1), dS.data() + blk, kw, ks_.data() + off, dh, true, dQ, d);
        flash_tile_gemm<T>(true, blk, dh, nq, T(1), dS.data(), kw, Qp.data(), dh, false, dkh + off, dh);
        flash_tile_gemm<T>(true, blk, dh, nq, T(1), dS.data() + blk, kw, Qp.data(), dh, false, dks + off, dh);
      }
    }
  }

  void release() {
    release_buffers(q_, kh_, vh_, ks_, vs_, o_, probs_, perm_, scores_, summ_, hidden_, valid_, partner_valid_);
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
  std::vector<uint8_t> valid_;           // (B, n_p): t < n and not padding
  std::vector<uint8_t> partner_valid_;   // (B, n_b, b): partner row r of block i is visible
  std::vector<T> q_, o_;                 // (B, n, d)
  std::vector<T> kh_, vh_, ks_, vs_;     // (B, h, n_p, d_h): K, V (invalid rows 0) and K̃, Ṽ
  std::vector<T> probs_;                 // (B, h, n_p, 2b): softmax before dropout
  std::vector<T> perm_;                  // (B, h, n_b, n_b): P
  std::vector<T> summ_, hidden_;         // (B·n_b, d): block summaries, the network's hidden layer
  std::vector<T> scores_;                // (B·n_b, h·N_b): R
};

}  // namespace

void register_sinkhorn_attention(AttentionRegistry& registry) {
  register_kind<SinkhornAttention>(registry, sinkhorn_info(), parse_sinkhorn);
}

#define LF_INSTANTIATE(T)                                                                                      \
  template void sinkhorn_permutation<T>(const T*, int64_t, int64_t, int64_t, double, bool, T*, T*);            \
  template void sinkhorn_permutation_backward<T>(const T*, int64_t, int64_t, int64_t, double, bool, const T*,  \
                                                 const T*, T*, int64_t, T*, T*);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
