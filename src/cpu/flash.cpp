// The kernels of flash.h: FlashAttention-2's forward and backward on the CPU, on the tile product
// (tile_gemm_kernel.h, inlined here).
#include "cpu/flash.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "cpu/tile_gemm.h"
#include "cpu/tile_gemm_kernel.h"
#include "cpu/vmath.h"
#include "linformer/error.h"
#include "linformer/rng.h"

namespace lf {
namespace {

using tile_detail::tile_gemm;

// ---- shared helpers -----------------------------------------------------------------------------

// Below about a million multiply-adds in Q Kᵀ a parallel region costs more than it saves (much more
// on a loaded machine, where waking the team can take milliseconds): run on the calling thread.
inline bool worth_threads(const SdpaShape& s) { return double(s.B) * s.h * s.n * s.mk * s.d_h >= double(1 << 20); }

void check_flash_shape(const SdpaShape& s) {
  LF_REQUIRE(s.hk > 0 && s.h % s.hk == 0, "flash attention: key heads (", s.hk, ") must divide the query heads (", s.h,
             ")");
  LF_REQUIRE(s.q_start >= 0 && (s.causal || s.q_start == 0), "flash attention: q_start (", s.q_start,
             ") must be >= 0, and 0 without a causal mask");
  LF_REQUIRE(!s.causal || s.mk == s.q_start + s.n, "flash attention: causal masking needs q_start + n = ",
             s.q_start + s.n, " keys, got ", s.mk);
  LF_REQUIRE(s.dropout >= 0 && s.dropout < 1, "flash attention: dropout must be in [0, 1), got ", s.dropout);
}

// True when every key of [j0, j0 + tk) is padding (the tile contributes nothing).
inline bool all_padded(const uint8_t* km, int64_t j0, int64_t tk) {
  if (!km) return false;
  for (int64_t j = 0; j < tk; ++j)
    if (!km[j0 + j]) return false;
  return true;
}

// Scores S (tq × tk, row stride ldS) of query rows t0.. against keys j0..: plus the score bias ab, and
// −inf where the score mask am hides the key, the key is padding or (causal) in the future. am, ab:
// the (b, i) blocks (n × mk) of SdpaShape's score mask and bias, or null.
template <class T>
inline void mask_scores(const SdpaShape& s, const uint8_t* km, const uint8_t* am, const T* ab, int64_t t0, int64_t j0,
                        int64_t tq, int64_t tk, T* S, int64_t ldS) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  for (int64_t r = 0; r < tq; ++r) {
    T* row = S + r * ldS;
    const int64_t at = (t0 + r) * s.mk + j0;  // (query t0 + r, key j0) in am and ab
    if (ab)
      for (int64_t j = 0; j < tk; ++j) row[j] += ab[at + j];
    if (am)
      for (int64_t j = 0; j < tk; ++j)
        if (!am[at + j]) row[j] = neg_inf;
    if (km)
      for (int64_t j = 0; j < tk; ++j)
        if (km[j0 + j]) row[j] = neg_inf;
    if (s.causal)
      for (int64_t j = std::max<int64_t>(0, s.q_start + t0 + r + 1 - j0); j < tk; ++j) row[j] = neg_inf;
  }
}

// The same on transposed scores St (tk × tq, row stride ldS): row j is key j0 + j, column r query t0 + r.
template <class T>
inline void mask_scores_transposed(const SdpaShape& s, const uint8_t* km, const uint8_t* am, const T* ab, int64_t t0,
                                   int64_t j0, int64_t tq, int64_t tk, T* St, int64_t ldS) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < tk; ++j) {
    T* row = St + j * ldS;
    const int64_t at = t0 * s.mk + j0 + j;  // (query t0, key j0 + j) in am and ab; query t0 + r at + r·mk
    if (ab)
      for (int64_t r = 0; r < tq; ++r) row[r] += ab[at + r * s.mk];
    if (am)
      for (int64_t r = 0; r < tq; ++r)
        if (!am[at + r * s.mk]) row[r] = neg_inf;
    if (km && km[j0 + j])
      std::fill(row, row + tq, neg_inf);
    else if (s.causal)  // query t0 + r (position q_start + t0 + r) sees key j0 + j when r ≥ j0 + j − q_start − t0
      std::fill(row, row + std::clamp<int64_t>(j0 + j - s.q_start - t0, 0, tq), neg_inf);
  }
}

// Xh (B, heads, rows, d_h) = X (B, rows, heads·d_h) regrouped by head, contiguous per head; the rows
// are shared out over the threads of the calling parallel region (an omp for without a barrier).
template <class T>
inline void pack_heads(int64_t B, int64_t rows, int64_t heads, int64_t d_h, const T* X, T* Xh) {
#pragma omp for schedule(static) nowait
  for (int64_t bt = 0; bt < B * rows; ++bt) {
    const int64_t b = bt / rows, t = bt % rows;
    const T* x = X + bt * heads * d_h;
    for (int64_t i = 0; i < heads; ++i) std::copy(x + i * d_h, x + (i + 1) * d_h, Xh + ((b * heads + i) * rows + t) * d_h);
  }
}

}  // namespace

// ---- forward --------------------------------------------------------------------------------------

// The forward works on transposed scores Sᵀ (keys × queries): the query tile is transposed once and
// reused against every key tile, key and value rows are plain copies, and the online softmax's
// per-query max, exp and sums run along contiguous rows of Sᵀ (vectorised, without reductions).
template <class T>
void flash_forward(const SdpaShape& s, const T* q, const T* k, const T* v, T* out, T* lse) {
  check_flash_shape(s);
  constexpr int64_t Tq = kFlashForwardTile, Tk = kFlashForwardTile;
  const int64_t ldq = s.h * s.d_h, ldk = s.hk * s.d_h, d_h = s.d_h;
  const int64_t nq = (s.n + Tq - 1) / Tq;
  const int64_t tasks = s.B * s.h * nq;
  const T neg_inf = -std::numeric_limits<T>::infinity();
  const float keep_p = float(s.dropout);
  const T drop_scale = T(1.0 / (1.0 - s.dropout));

  const bool parallel = tasks > 1 && worth_threads(s);
#pragma omp parallel if (parallel)
  {
    // Per-thread scratch: K and V of the current (batch, key head) regrouped into contiguous (mk, d_h)
    // panels, so that the tile products read key tiles in place, without the (B, mk, hk·d_h) layout's
    // 2 KiB row stride (a tile's rows on a few L1 sets), and copied once per head rather than per query
    // tile (a thread's tasks are mostly consecutive query tiles of one head); Sᵀ then P̃ᵀ (Tk × Tq), the
    // transposed query tile, the output accumulator (Tq × d_h), and per query row the running max m,
    // sum ℓ and this tile's terms.
    std::vector<T> Kh(static_cast<size_t>(s.mk * d_h)), Vh(static_cast<size_t>(s.mk * d_h));
    int64_t packed = -1;  // the (batch, key head) in Kh and Vh
    std::vector<T> St(static_cast<size_t>(Tk * Tq)), Qt(static_cast<size_t>(d_h * Tq)),
        acc(static_cast<size_t>(Tq * d_h));
    std::vector<T> mrow(static_cast<size_t>(Tq)), lrow(static_cast<size_t>(Tq)), msub(static_cast<size_t>(Tq)),
        alpha(static_cast<size_t>(Tq)), tsum(static_cast<size_t>(Tq));
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t qt = task % nq, bi = task / nq, b = bi / s.h, i = bi % s.h, g = kv_head_of(i, s.h, s.hk);
      const int64_t t0 = qt * Tq, tq = std::min(Tq, s.n - t0);
      if (packed != b * s.hk + g) {
        pack_rows(k + b * s.mk * ldk + g * d_h, ldk, s.mk, d_h, Kh.data());
        pack_rows(v + b * s.mk * ldk + g * d_h, ldk, s.mk, d_h, Vh.data());
        packed = b * s.hk + g;
      }
      const T* Kb = Kh.data();  // (mk, d_h)
      const T* Vb = Vh.data();
      const uint8_t* km = s.key_mask ? s.key_mask + b * s.mk : nullptr;
      pack_transposed(q + (b * s.n + t0) * ldq + i * d_h, ldq, tq, d_h, Qt.data(), Tq);
      std::fill(acc.begin(), acc.end(), T(0));
      std::fill(mrow.begin(), mrow.end(), neg_inf);
      std::fill(lrow.begin(), lrow.end(), T(0));
      // Later key tiles are all in the future.
      const int64_t kv_end = s.causal ? std::min(s.mk, s.q_start + t0 + tq) : s.mk;
      for (int64_t j0 = 0; j0 < kv_end; j0 += Tk) {
        const int64_t tk = std::min(Tk, kv_end - j0);
        if (all_padded(km, j0, tk)) continue;
        const T* Kp = Kb + j0 * d_h;  // (tk, d_h)
        const T* Vp = Vb + j0 * d_h;
        T* S = St.data();
        tile_gemm<T, false>(tk, tq, d_h, T(s.scale), Kp, d_h, Qt.data(), Tq, false, S, Tq);  // scale·K Qᵀ
        mask_scores_transposed(s, km, s.score_mask_of(b, i), s.score_bias_of<T>(b, i), t0, j0, tq, tk, S, Tq);
        // The tile's max per query, the new running max, and the factor rescaling the earlier tiles.
        for (int64_t r = 0; r < tq; ++r) msub[size_t(r)] = mrow[size_t(r)];
        for (int64_t j = 0; j < tk; ++j) {
          const T* row = S + j * Tq;
          T* mx = msub.data();
#pragma omp simd
          for (int64_t r = 0; r < tq; ++r) mx[r] = row[r] > mx[r] ? row[r] : mx[r];
        }
        bool rescale = false;
        for (int64_t r = 0; r < tq; ++r) {
          const T m_new = msub[size_t(r)];
          // A query that has seen no key yet (m = −inf) subtracts 0 instead, so that exp(−inf) = 0.
          alpha[size_t(r)] = m_new == neg_inf ? T(1) : exp_fast<T>(mrow[size_t(r)] - m_new);
          if (m_new == neg_inf) msub[size_t(r)] = 0;
          mrow[size_t(r)] = m_new;
          rescale |= alpha[size_t(r)] != T(1);
        }
        // P = exp(S − m) (masked entries are −inf: exp_fast gives 0) and its column sums.
        std::fill(tsum.begin(), tsum.end(), T(0));
        for (int64_t j = 0; j < tk; ++j) {
          T* row = S + j * Tq;
          const T* m = msub.data();
          T* sum = tsum.data();
#pragma omp simd
          for (int64_t r = 0; r < tq; ++r) {
            const T e = exp_fast<T>(row[r] - m[r]);
            row[r] = e;
            sum[r] += e;
          }
        }
        for (int64_t r = 0; r < tq; ++r) lrow[size_t(r)] = lrow[size_t(r)] * alpha[size_t(r)] + tsum[size_t(r)];
        if (rescale)
          for (int64_t r = 0; r < tq; ++r) {
            T* o = acc.data() + r * d_h;
            const T a = alpha[size_t(r)];
#pragma omp simd
            for (int64_t c = 0; c < d_h; ++c) o[c] *= a;
          }
        if (s.dropout > 0)
          for (int64_t j = 0; j < tk; ++j) {
            T* row = S + j * Tq;
            const uint64_t base = uint64_t(((b * s.h + i) * s.n + t0) * s.mk + j0 + j);
            for (int64_t r = 0; r < tq; ++r)
              row[r] = uniform01(s.seed, kProbsDropoutStream, base + uint64_t(r * s.mk)) >= keep_p ? row[r] * drop_scale
                                                                                                     : T(0);
          }
        tile_gemm<T, true>(tq, d_h, tk, T(1), S, Tq, Vp, d_h, true, acc.data(), d_h);  // += P̃ V
      }
      for (int64_t r = 0; r < tq; ++r) {
        const T l = lrow[size_t(r)];
        const T inv = l > 0 ? T(1) / l : T(0);  // all keys masked: output 0
        T* o = out + (b * s.n + t0 + r) * ldq + i * d_h;
        const T* a = acc.data() + r * d_h;
#pragma omp simd
        for (int64_t c = 0; c < d_h; ++c) o[c] = a[c] * inv;
        lse[(b * s.h + i) * s.n + t0 + r] = l > 0 ? mrow[size_t(r)] + std::log(l) : std::numeric_limits<T>::infinity();
      }
    }
  }
}

// ---- backward -------------------------------------------------------------------------------------

template <class T>
void flash_backward(const SdpaShape& s, const T* q, const T* k, const T* v, const T* out, const T* lse,
                    const T* dout, T* dq, T* dk, T* dv) {
  check_flash_shape(s);
  constexpr int64_t Tq = kFlashBackwardTile, Tk = kFlashBackwardTile;
  const int64_t ldq = s.h * s.d_h, ldk = s.hk * s.d_h, d_h = s.d_h;
  const int64_t nq = (s.n + Tq - 1) / Tq, nk = (s.mk + Tk - 1) / Tk;
  const bool dropout = s.dropout > 0;
  const float keep_p = float(s.dropout);
  const T drop_scale = T(1.0 / (1.0 - s.dropout));
  const T scale = T(s.scale);

  // D (B, h, n) = rowsum(dO ∘ O): the softmax backward's Σ_j P̃_tj dP̃_tj without the scores.
  std::vector<T> D(size_t(s.B * s.h * s.n));
#pragma omp parallel for schedule(static) if (s.B * s.n * ldq > 32768)
  for (int64_t bt = 0; bt < s.B * s.n; ++bt)
    for (int64_t i = 0; i < s.h; ++i) {
      const T* o = out + bt * ldq + i * d_h;
      const T* g = dout + bt * ldq + i * d_h;
      T acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t c = 0; c < d_h; ++c) acc += o[c] * g[c];
      D[size_t(((bt / s.n) * s.h + i) * s.n + bt % s.n)] = acc;
    }

  // Tasks: (batch, key head, chunk of key tiles). With fewer than kBackwardTasks (batch, key head)
  // pairs the key tiles of a head are dealt to several chunks (tile c, c + C, c + 2C, … for balance
  // under the causal mask); chunk 0 adds its dQ into dq, chunk c > 0 into its own buffer, summed in
  // chunk order afterwards. The chunk count depends on the shape only, so the result does not depend
  // on the thread count.
  constexpr int64_t kBackwardTasks = 8, kMaxChunks = 4;
  const int64_t groups = s.B * s.hk;
  const int64_t chunks =
      worth_threads(s) ? std::clamp((kBackwardTasks + groups - 1) / groups, int64_t(1), std::min(nk, kMaxChunks)) : 1;
  const int64_t qsize = s.B * s.n * ldq;
  std::fill(dq, dq + qsize, T(0));
  std::vector<T> dq_part(size_t((chunks - 1) * qsize), T(0));
  std::fill(dk, dk + s.B * s.mk * ldk, T(0));
  std::fill(dv, dv + s.B * s.mk * ldk, T(0));
  const int64_t tasks = groups * chunks;
  // Q and dO regrouped per head, (B, h, n, d_h), as K and V in the forward: every key tile reads every
  // query tile, which is then a contiguous panel, neither strided nor copied again per key tile.
  const auto Qh = std::make_unique_for_overwrite<T[]>(size_t(qsize));
  const auto dOh = std::make_unique_for_overwrite<T[]>(size_t(qsize));

#pragma omp parallel if (tasks > 1 && worth_threads(s))
  {
    pack_heads(s.B, s.n, s.h, d_h, q, Qh.get());
    pack_heads(s.B, s.n, s.h, d_h, dout, dOh.get());
#pragma omp barrier
    const size_t tile = size_t(Tq * Tk);
    const size_t panel = size_t(Tk * d_h);
    std::vector<T> P(tile), Pd(dropout ? tile : 0), Md(dropout ? tile : 0), dP(tile), Kt(panel), Vt(panel), Kp(panel),
        dKacc(panel), dVacc(panel);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t c = task % chunks, bg = task / chunks, b = bg / s.hk, g = bg % s.hk;
      T* dq_out = c == 0 ? dq : dq_part.data() + (c - 1) * qsize;
      const T* Kb = k + b * s.mk * ldk + g * d_h;
      const T* Vb = v + b * s.mk * ldk + g * d_h;
      const uint8_t* km = s.key_mask ? s.key_mask + b * s.mk : nullptr;
      for (int64_t kt = c; kt < nk; kt += chunks) {
        const int64_t j0 = kt * Tk, tk = std::min(Tk, s.mk - j0);
        if (all_padded(km, j0, tk)) continue;  // padded keys get zero gradients (already filled)
        pack_transposed(Kb + j0 * ldk, ldk, tk, d_h, Kt.data(), Tk);
        pack_transposed(Vb + j0 * ldk, ldk, tk, d_h, Vt.data(), Tk);
        pack_rows(Kb + j0 * ldk, ldk, tk, d_h, Kp.data());
        std::fill(dKacc.begin(), dKacc.end(), T(0));
        std::fill(dVacc.begin(), dVacc.end(), T(0));
        const int64_t group = s.h / s.hk;  // the query heads reading key head g
        for (int64_t i = g * group; i < (g + 1) * group; ++i) {
          // Earlier query rows see none of these keys.
          const int64_t first_qt = s.causal ? std::max<int64_t>(0, j0 - s.q_start) / Tq : 0;
          for (int64_t qt = first_qt; qt < nq; ++qt) {
            const int64_t t0 = qt * Tq, tq = std::min(Tq, s.n - t0);
            const T* Qp = Qh.get() + ((b * s.h + i) * s.n + t0) * d_h;    // (tq, d_h)
            const T* dOp = dOh.get() + ((b * s.h + i) * s.n + t0) * d_h;  // (tq, d_h)
            const T* lse_t = lse + (b * s.h + i) * s.n + t0;
            const T* D_t = D.data() + (b * s.h + i) * s.n + t0;
            // P = exp(scale·Q Kᵀ + masks − lse), the forward's probabilities, recomputed.
            tile_gemm<T, false>(tq, tk, d_h, scale, Qp, d_h, Kt.data(), Tk, false, P.data(), Tk);
            mask_scores(s, km, s.score_mask_of(b, i), s.score_bias_of<T>(b, i), t0, j0, tq, tk, P.data(), Tk);
            for (int64_t r = 0; r < tq; ++r) {
              T* p = P.data() + r * Tk;
              const T l = lse_t[r];
#pragma omp simd
              for (int64_t j = 0; j < tk; ++j) p[j] = exp_fast<T>(p[j] - l);  // −inf − l and x − ∞ give 0
              if (dropout) {
                const uint64_t base = uint64_t(((b * s.h + i) * s.n + t0 + r) * s.mk + j0);
                T* md = Md.data() + r * Tk;
                T* pd = Pd.data() + r * Tk;
                for (int64_t j = 0; j < tk; ++j) {
                  md[j] = uniform01(s.seed, kProbsDropoutStream, base + uint64_t(j)) >= keep_p ? drop_scale : T(0);
                  pd[j] = p[j] * md[j];
                }
              }
            }
            // dV (tk × d_h) += P̃ᵀ dO.
            tile_gemm<T, true>(tk, d_h, tq, T(1), dropout ? Pd.data() : P.data(), Tk, dOp, d_h, true, dVacc.data(),
                               d_h);
            // dP̃ (tq × tk) = dO Vᵀ, then dS = scale · P ∘ (dP − D) with dP = dP̃ ∘ mask/(1 − p).
            tile_gemm<T, false>(tq, tk, d_h, T(1), dOp, d_h, Vt.data(), Tk, false, dP.data(), Tk);
            for (int64_t r = 0; r < tq; ++r) {
              const T* p = P.data() + r * Tk;
              T* ds = dP.data() + r * Tk;
              const T Dr = D_t[r];
              if (dropout) {
                const T* md = Md.data() + r * Tk;
#pragma omp simd
                for (int64_t j = 0; j < tk; ++j) ds[j] = scale * p[j] * (ds[j] * md[j] - Dr);
              } else {
#pragma omp simd
                for (int64_t j = 0; j < tk; ++j) ds[j] = scale * p[j] * (ds[j] - Dr);
              }
            }
            // dQ (tq × d_h) += dS K;  dK (tk × d_h) += dSᵀ Q.
            tile_gemm<T, false>(tq, d_h, tk, T(1), dP.data(), Tk, Kp.data(), d_h, true,
                                dq_out + (b * s.n + t0) * ldq + i * d_h, ldq);
            tile_gemm<T, true>(tk, d_h, tq, T(1), dP.data(), Tk, Qp, d_h, true, dKacc.data(), d_h);
          }
        }
        for (int64_t j = 0; j < tk; ++j) {
          T* dkr = dk + (b * s.mk + j0 + j) * ldk + g * d_h;
          T* dvr = dv + (b * s.mk + j0 + j) * ldk + g * d_h;
          std::copy(dKacc.begin() + j * d_h, dKacc.begin() + (j + 1) * d_h, dkr);
          std::copy(dVacc.begin() + j * d_h, dVacc.begin() + (j + 1) * d_h, dvr);
        }
      }
    }
  }

  if (chunks > 1) {
#pragma omp parallel for schedule(static) if (qsize > 32768)
    for (int64_t e = 0; e < qsize; ++e) {
      T sum = dq[e];
      for (int64_t c = 1; c < chunks; ++c) sum += dq_part[size_t((c - 1) * qsize + e)];
      dq[e] = sum;
    }
  }
}

#define LF_INSTANTIATE(T)                                                                                         \
  template void flash_forward<T>(const SdpaShape&, const T*, const T*, const T*, T*, T*);                         \
  template void flash_backward<T>(const SdpaShape&, const T*, const T*, const T*, const T*, const T*, const T*, T*, \
                                  T*, T*);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
