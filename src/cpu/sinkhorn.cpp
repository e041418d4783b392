// The CPU kernels of `sinkhorn` (see sinkhorn.h): loops moved from the kind, unchanged.
#include "cpu/sinkhorn.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/attention_shape.h"  // kProbsDropoutStream
#include "cpu/tile_gemm.h"
#include "cpu/vmath.h"
#include "linformer/rng.h"
#include "linformer/runtime.h"

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
  if (iters == 0) row_step(P, nb, causal);  // no balancing: a row softmax (non-permutative)
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
  if (iters == 0) row_step_backward(states, G, nb, causal);  // the row softmax (states: its output)
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


// ---- the sort over (sample, head) -----------------------------------------------------------------

namespace {
// Below about 65k entry updates a parallel region costs more than it saves.
bool sort_in_parallel(const SinkhornBlocks& s, int64_t iters) {
  return s.B * s.h > 1 && double(s.B) * s.h * s.nb * s.nb * iters >= double(1 << 16);
}
}  // namespace

template <class T>
void sinkhorn_sort_forward(const SinkhornBlocks& s, const T* scores, int64_t nb_max, int64_t iters,
                           double temperature, T* perm) {
  const int64_t B = s.B, h = s.h, nb = s.nb, out_w = h * nb_max;
#pragma omp parallel if (sort_in_parallel(s, iters))
  {
    std::vector<T> part;  // a shorter sample's permutation, before it is spread over n_b × n_b
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < B * h; ++bh) {
      const int64_t b = bh / h, hd = bh % h, own = s.blocks_of(b);
      T* P = perm + bh * nb * nb;
      const T* R = scores + b * nb * out_w + hd * nb_max;
      if (own == nb) {
        sinkhorn_permutation<T>(R, out_w, nb, iters, temperature, s.causal, P, nullptr);
        continue;
      }
      part.resize(size_t(own * own));
      sinkhorn_permutation<T>(R, out_w, own, iters, temperature, s.causal, part.data(), nullptr);
      std::fill(P, P + nb * nb, T(0));
      for (int64_t i = 0; i < own; ++i) std::copy(part.begin() + i * own, part.begin() + (i + 1) * own, P + i * nb);
    }
  }
}

template <class T>
void sinkhorn_sort_backward(const SinkhornBlocks& s, const T* scores, int64_t nb_max, int64_t iters,
                            double temperature, const T* perm, const T* dperm, T* dscores) {
  const int64_t B = s.B, h = s.h, nb = s.nb, out_w = h * nb_max;
#pragma omp parallel if (sort_in_parallel(s, iters))
  {
    std::vector<T> states(size_t((2 * iters + 1) * nb * nb)), G(size_t(nb * nb)), P(size_t(nb * nb)),
        dP(size_t(nb * nb));
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < B * h; ++bh) {
      const int64_t b = bh / h, hd = bh % h, off = b * nb * out_w + hd * nb_max, own = s.blocks_of(b);
      const T* Pb = perm + bh * nb * nb;
      const T* dPb = dperm + bh * nb * nb;
      if (own < nb) {  // the sample's own blocks, gathered into own × own
        for (int64_t i = 0; i < own; ++i) {
          std::copy(Pb + i * nb, Pb + i * nb + own, P.begin() + i * own);
          std::copy(dPb + i * nb, dPb + i * nb + own, dP.begin() + i * own);
        }
        Pb = P.data();
        dPb = dP.data();
      }
      sinkhorn_permutation_backward<T>(scores + off, out_w, own, iters, temperature, s.causal, Pb, dPb, dscores + off,
                                       out_w, states.data(), G.data());
    }
  }
}

// ---- layout and block summaries -------------------------------------------------------------------

template <class T>
void sinkhorn_split_heads(const SinkhornBlocks& s, const T* src, T* dst) {
  const int64_t B = s.B, n = s.n, d = s.d(), h = s.h, dh = s.d_h, np = s.np();
#pragma omp parallel for schedule(static) if (B * np * d > 32768)
  for (int64_t bt = 0; bt < B * np; ++bt) {
    const int64_t b = bt / np, t = bt % np;
    for (int64_t hd = 0; hd < h; ++hd) {
      T* o = dst + ((b * h + hd) * np + t) * dh;
      if (s.valid[size_t(bt)])
        std::copy(src + (b * n + t) * d + hd * dh, src + (b * n + t) * d + (hd + 1) * dh, o);
      else
        std::fill(o, o + dh, T(0));
    }
  }
}

template <class T>
void sinkhorn_merge_heads(const SinkhornBlocks& s, const T* src, T* dst) {
  const int64_t B = s.B, n = s.n, d = s.d(), h = s.h, dh = s.d_h, np = s.np();
#pragma omp parallel for schedule(static) if (B * n * d > 32768)
  for (int64_t bt = 0; bt < B * n; ++bt) {
    const int64_t b = bt / n, t = bt % n;
    const bool valid = s.valid[size_t(b * np + t)];
    for (int64_t hd = 0; hd < h; ++hd) {
      T* o = dst + bt * d + hd * dh;
      if (valid)
        std::copy(src + ((b * h + hd) * np + t) * dh, src + ((b * h + hd) * np + t + 1) * dh, o);
      else
        std::fill(o, o + dh, T(0));
    }
  }
}

namespace {
// Valid positions per block (B, n_b).
std::vector<int64_t> block_counts(const SinkhornBlocks& s) {
  const int64_t B = s.B, blk = s.block, nb = s.nb, np = s.np();
  std::vector<int64_t> cnt(size_t(B * nb), 0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < np; ++t) cnt[size_t(b * nb + t / blk)] += s.valid[size_t(b * np + t)];
  return cnt;
}
}  // namespace

template <class T>
void sinkhorn_block_means_forward(const SinkhornBlocks& s, const T* x, T* summ) {
  const int64_t B = s.B, n = s.n, d = s.d(), blk = s.block, nb = s.nb, np = s.np();
  std::vector<T> sums(size_t(B * nb * d), T(0));  // per block: Σ over its valid positions
#pragma omp parallel for schedule(static) if (B * n * d > 32768)
  for (int64_t bi = 0; bi < B * nb; ++bi) {
    const int64_t b = bi / nb, i = bi % nb;
    T* sb = sums.data() + bi * d;
    for (int64_t t = i * blk; t < std::min(n, (i + 1) * blk); ++t)
      if (s.valid[size_t(b * np + t)])
        for (int64_t c = 0; c < d; ++c) sb[c] += x[(b * n + t) * d + c];
  }
  const std::vector<int64_t> cnt = block_counts(s);
  std::fill(summ, summ + B * nb * d, T(0));
  for (int64_t b = 0; b < B; ++b) {
    std::vector<T> run(size_t(d), T(0));  // causal: Σ over blocks before i
    int64_t run_cnt = 0;
    for (int64_t i = 0; i < nb; ++i) {
      T* si = summ + (b * nb + i) * d;
      const T* own = sums.data() + (b * nb + i) * d;
      if (!s.causal) {
        const int64_t c = cnt[size_t(b * nb + i)];
        if (c > 0)
          for (int64_t e = 0; e < d; ++e) si[e] = own[e] / T(c);
      } else {
        if (run_cnt > 0)
          for (int64_t e = 0; e < d; ++e) si[e] = run[size_t(e)] / T(run_cnt);
        for (int64_t e = 0; e < d; ++e) run[size_t(e)] += own[e];
        run_cnt += cnt[size_t(b * nb + i)];
      }
    }
  }
}

template <class T>
void sinkhorn_block_means_backward(const SinkhornBlocks& s, const T* dsumm, T* dx) {
  const int64_t B = s.B, n = s.n, d = s.d(), blk = s.block, nb = s.nb, np = s.np();
  const std::vector<int64_t> cnt = block_counts(s);
  // g (B·n_b, d): what each valid position of block j receives.
  std::vector<T> g(size_t(B * nb * d), T(0));
  for (int64_t b = 0; b < B; ++b) {
    if (!s.causal) {
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
    if (!s.valid[size_t(b * np + t)]) continue;
    const T* gj = g.data() + (b * nb + t / blk) * d;
    T* o = dx + bt * d;
    for (int64_t e = 0; e < d; ++e) o[e] += gj[e];
  }
}

// ---- the block attention --------------------------------------------------------------------------

namespace {

bool core_in_parallel(const SinkhornBlocks& s) {
  return s.B * s.h * s.nb > 1 && double(s.B) * s.n * 2 * s.block * s.d() >= double(1 << 18);
}

// Scores of the nq queries of block i (Q rows t0..) against its 2b keys (own block, then partner),
// masked, softmaxed in place: S (nq × 2b).
template <class T>
void block_probs(const SinkhornBlocks& s, int64_t b, int64_t i, int64_t nq, T* S) {
  const int64_t blk = s.block, kw = 2 * blk, np = s.np(), t0 = i * blk;
  const T neg_inf = -std::numeric_limits<T>::infinity();
  const uint8_t* own_valid = s.valid + b * np + t0;
  const uint8_t* partner_valid = s.partner_valid + (b * s.nb + i) * blk;
  for (int64_t r = 0; r < nq; ++r) {
    T* row = S + r * kw;
    for (int64_t c = 0; c < blk; ++c)
      if (!own_valid[c] || (s.causal && c > r)) row[c] = neg_inf;
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
template <class T>
void dropout_block(const SinkhornBlocks& s, int64_t bh, int64_t t0, int64_t nq, const T* P, T* Pd) {
  const int64_t kw = 2 * s.block, np = s.np();
  const float p = float(s.dropout);
  const T scale = T(1.0 / (1.0 - s.dropout));
  for (int64_t r = 0; r < nq; ++r) {
    const uint64_t base = uint64_t((bh * np + t0 + r) * kw);
    for (int64_t c = 0; c < kw; ++c)
      Pd[r * kw + c] = uniform01(s.seed, kProbsDropoutStream, base + uint64_t(c)) >= p ? P[r * kw + c] * scale : T(0);
  }
}

// Task `task` of the loops over (sample, head, block), task = (b·h + hd)·n_b + i: block i of head hd
// of sample b, bh = b·h + hd; its nq ≤ b rows from t0; where they start in the head-major
// (B·h, n_p, d_h) buffers (off) and in the (B, n, d) ones (at).
struct BlockTask {
  int64_t i, b, bh, t0, nq, off, at;
};
BlockTask block_task(const SinkhornBlocks& s, int64_t task) {
  const int64_t h = s.h, dh = s.d_h, blk = s.block, np = s.np();
  const int64_t i = task % s.nb, bh = task / s.nb, b = bh / h, hd = bh % h, t0 = i * blk;
  return {i, b, bh, t0, std::min(blk, s.n - t0), (bh * np + t0) * dh, (b * s.n + t0) * s.d() + hd * dh};
}

}  // namespace

template <class T>
void sinkhorn_block_attention_forward(const SinkhornBlocks& s, const T* q, const T* kh, const T* vh, const T* ks,
                                      const T* vs, T* probs, T* o, bool keep_probs) {
  const int64_t B = s.B, d = s.d(), h = s.h, dh = s.d_h, blk = s.block;
  const int64_t np = s.np(), kw = 2 * blk, tasks = B * h * s.nb;
  const T scale = T(1.0 / std::sqrt(double(dh)));
#pragma omp parallel if (core_in_parallel(s))
  {
    std::vector<T> Qp(size_t(blk * dh)), Kt(size_t(dh * kw)), scratch(keep_probs ? 0 : size_t(blk * kw)),
        Pd(s.dropout > 0 ? size_t(blk * kw) : 0);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const auto [i, b, bh, t0, nq, off, at] = block_task(s, task);
      pack_rows(q + at, d, nq, dh, Qp.data());
      pack_transposed(kh + off, dh, blk, dh, Kt.data(), kw);
      pack_transposed(ks + off, dh, blk, dh, Kt.data() + blk, kw);
      T* S = keep_probs ? probs + (bh * np + t0) * kw : scratch.data();
      flash_tile_gemm<T>(false, nq, kw, dh, scale, Qp.data(), dh, Kt.data(), kw, false, S, kw);
      block_probs(s, b, i, nq, S);
      const T* Pv = S;
      if (s.dropout > 0) {
        dropout_block(s, bh, t0, nq, S, Pd.data());
        Pv = Pd.data();
      }
      T* O = o + at;
      flash_tile_gemm<T>(false, nq, dh, blk, T(1), Pv, kw, vh + off, dh, false, O, d);
      flash_tile_gemm<T>(false, nq, dh, blk, T(1), Pv + blk, kw, vs + off, dh, true, O, d);
    }
  }
}

template <class T>
void sinkhorn_block_attention_backward(const SinkhornBlocks& s, const T* q, const T* kh, const T* vh, const T* ks,
                                       const T* vs, const T* probs, const T* d_o, T* dq, T* dkh, T* dvh, T* dks,
                                       T* dvs) {
  const int64_t B = s.B, d = s.d(), h = s.h, dh = s.d_h, blk = s.block;
  const int64_t np = s.np(), kw = 2 * blk, tasks = B * h * s.nb;
  const T scale = T(1.0 / std::sqrt(double(dh)));
  const T drop_scale = T(1.0 / (1.0 - s.dropout));
#pragma omp parallel if (core_in_parallel(s))
  {
    std::vector<T> Qp(size_t(blk * dh)), dOp(size_t(blk * dh)), Vt(size_t(dh * kw)), dS(size_t(blk * kw)),
        Pd(s.dropout > 0 ? size_t(blk * kw) : 0);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const auto [i, b, bh, t0, nq, off, at] = block_task(s, task);
      pack_rows(q + at, d, nq, dh, Qp.data());
      pack_rows(d_o + at, d, nq, dh, dOp.data());
      pack_transposed(vh + off, dh, blk, dh, Vt.data(), kw);
      pack_transposed(vs + off, dh, blk, dh, Vt.data() + blk, kw);
      const T* P = probs + (bh * np + t0) * kw;
      const T* Pv = P;
      if (s.dropout > 0) {
        dropout_block(s, bh, t0, nq, P, Pd.data());
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
        if (s.dropout > 0) {
          const T* pd = Pd.data() + r * kw;
          for (int64_t c = 0; c < kw; ++c) g[c] = pd[c] != T(0) ? g[c] * drop_scale : T(0);
        }
        T dot = 0;
        for (int64_t c = 0; c < kw; ++c) dot += p[c] * g[c];
        for (int64_t c = 0; c < kw; ++c) g[c] = scale * p[c] * (g[c] - dot);
      }
      // dQ = dS [K; K̃];  dK (own and partner rows) = dSᵀ Q.
      T* dQ = dq + at;
      flash_tile_gemm<T>(false, nq, dh, blk, T(1), dS.data(), kw, kh + off, dh, false, dQ, d);
      flash_tile_gemm<T>(false, nq, dh, blk, T(1), dS.data() + blk, kw, ks + off, dh, true, dQ, d);
      flash_tile_gemm<T>(true, blk, dh, nq, T(1), dS.data(), kw, Qp.data(), dh, false, dkh + off, dh);
      flash_tile_gemm<T>(true, blk, dh, nq, T(1), dS.data() + blk, kw, Qp.data(), dh, false, dks + off, dh);
    }
  }
}

template <class T>
void sinkhorn_block_attention_forward_ref(const SinkhornBlocks& s, const T* q, const T* kh, const T* vh,
                                          const T* ks, const T* vs, T* o) {
  const int64_t d = s.d(), dh = s.d_h, blk = s.block, np = s.np(), kw = 2 * blk;
  std::vector<double> w(static_cast<size_t>(kw));
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t hd = 0; hd < s.h; ++hd)
      for (int64_t t = 0; t < s.n; ++t) {
        const int64_t i = t / blk, r = t % blk, bh = b * s.h + hd;
        double mx = -INFINITY;
        for (int64_t c = 0; c < kw; ++c) {
          const bool own = c < blk;
          const int64_t col = own ? c : c - blk;
          const bool visible = own ? s.valid[b * np + i * blk + col] && !(s.causal && col > r)
                                   : s.partner_valid[(b * s.nb + i) * blk + col];
          const T* key = (own ? kh : ks) + (bh * np + i * blk + col) * dh;
          double dot = 0;
          for (int64_t e = 0; e < dh; ++e) dot += double(q[(b * s.n + t) * d + hd * dh + e]) * double(key[e]);
          w[size_t(c)] = visible ? dot / std::sqrt(double(dh)) : -INFINITY;
          mx = std::max(mx, w[size_t(c)]);
        }
        double sum = 0;
        for (double& e : w) sum += (e = mx == -INFINITY ? 0.0 : std::exp(e - mx));
        for (int64_t e = 0; e < dh; ++e) {
          double acc = 0;
          for (int64_t c = 0; c < kw; ++c) {
            if (w[size_t(c)] == 0) continue;
            const bool keep = s.dropout == 0 ||
                              double(uniform01(s.seed, kProbsDropoutStream, uint64_t((bh * np + t) * kw + c))) >=
                                  double(float(s.dropout));
            const int64_t col = c < blk ? c : c - blk;
            const T* value = (c < blk ? vh : vs) + (bh * np + i * blk + col) * dh;
            if (keep) acc += w[size_t(c)] / sum / (1 - s.dropout) * double(value[e]);
          }
          o[(b * s.n + t) * d + hd * dh + e] = T(acc);
        }
      }
}

double sinkhorn_forward_scratch(double block) { return double(num_threads()) * 6.0 * block * block; }
double sinkhorn_backward_scratch(double nb, int64_t iters) {
  return double(num_threads()) * (2.0 * double(iters) + 3.0) * nb * nb;
}

#define LF_INSTANTIATE(T)                                                                                           \
  template void sinkhorn_permutation<T>(const T*, int64_t, int64_t, int64_t, double, bool, T*, T*);                 \
  template void sinkhorn_permutation_backward<T>(const T*, int64_t, int64_t, int64_t, double, bool, const T*,       \
                                                 const T*, T*, int64_t, T*, T*);                                    \
  template void sinkhorn_sort_forward<T>(const SinkhornBlocks&, const T*, int64_t, int64_t, double, T*);            \
  template void sinkhorn_sort_backward<T>(const SinkhornBlocks&, const T*, int64_t, int64_t, double, const T*,      \
                                          const T*, T*);                                                            \
  template void sinkhorn_split_heads<T>(const SinkhornBlocks&, const T*, T*);                                       \
  template void sinkhorn_merge_heads<T>(const SinkhornBlocks&, const T*, T*);                                       \
  template void sinkhorn_block_means_forward<T>(const SinkhornBlocks&, const T*, T*);                               \
  template void sinkhorn_block_means_backward<T>(const SinkhornBlocks&, const T*, T*);                              \
  template void sinkhorn_block_attention_forward<T>(const SinkhornBlocks&, const T*, const T*, const T*, const T*,  \
                                                    const T*, T*, T*, bool);                                        \
  template void sinkhorn_block_attention_backward<T>(const SinkhornBlocks&, const T*, const T*, const T*, const T*, \
                                                     const T*, const T*, const T*, T*, T*, T*, T*, T*);             \
  template void sinkhorn_block_attention_forward_ref<T>(const SinkhornBlocks&, const T*, const T*, const T*,        \
                                                        const T*, const T*, T*);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
