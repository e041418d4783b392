#include "cpu/attention_decode.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/vec.h"
#include "cpu/vmath.h"

namespace lf {
namespace {

// The chunk count: as given, else one per thread, each of at least kDecodeMinChunk rows.
int64_t chunk_count(const DecodeShape& s) {
  if (s.chunks > 0) return std::min(s.chunks, s.rows);
  const int64_t by_size = std::max<int64_t>(1, s.rows / kDecodeMinChunk);
  return std::min<int64_t>(by_size, std::max(1, omp_get_max_threads()));
}

// The scores of key rows [b0, b0 + tb) for every query and head: S[(r·h + i)·kDecodeBlock + jj] =
// scale·q_{r,i}·k_{b0+jj,i}, or −inf for a key in query r's future. D > 0 is d_h known at compile
// time (the common widths): a head's query stays in registers, and L = kLanes<T> rows' dot products
// are summed together by transpose_sum (a horizontal sum per dot product, L − 1 dependent additions,
// was the kernel's bottleneck).
template <class T, int64_t D>
void block_scores(const DecodeShape& s, const T* q, const T* k, int64_t b0, int64_t tb, T* S) {
  constexpr int64_t Tb = kDecodeBlock;
  const int64_t h = s.h, d_h = D > 0 ? D : s.d_h, ldq = h * d_h, ldk = s.hk * d_h, q_start = s.rows - s.n;
  const T neg_inf = -std::numeric_limits<T>::infinity(), scale = T(s.scale);
  for (int64_t r = 0; r < s.n; ++r)
    for (int64_t i = 0; i < h; ++i) {
      const T* qi = q + r * ldq + i * d_h;
      const T* kc = k + b0 * ldk + kv_head_of(i, h, s.hk) * d_h;  // the head's keys, row jj at jj·ldk
      T* Sr = S + (r * h + i) * Tb;
      if constexpr (D > 0) {
        using V = Vec64<T>;
        constexpr int L = kLanes<T>, NV = int(D) / L;
        static_assert(D % L == 0 && Tb % L == 0, "a head and a block are whole vectors");
        V qv[NV];
        for (int c = 0; c < NV; ++c) qv[c] = load64(qi + c * L);
        for (int64_t g = 0; g < tb; g += L) {
          V x[L];
#pragma GCC unroll 16
          for (int u = 0; u < L; ++u) {
            if (g + u < tb) {
              const T* kr = kc + (g + u) * ldk;
              V a = qv[0] * load64(kr);
              for (int c = 1; c < NV; ++c) a += qv[c] * load64(kr + c * L);
              x[u] = a;
            } else {
              x[u] = V{};  // past the block's end: a score never read
            }
          }
          store64(Sr + g, transpose_sum<T>(x));
        }
      } else {
        for (int64_t jj = 0; jj < tb; ++jj) {
          const T* ki = kc + jj * ldk;
          T dot = 0;
#pragma omp simd reduction(+ : dot)
          for (int64_t c = 0; c < d_h; ++c) dot += qi[c] * ki[c];
          Sr[jj] = dot;
        }
      }
      const int64_t seen = std::clamp<int64_t>(q_start + r + 1 - b0, 0, tb);  // causal: keys up to q_start + r
      for (int64_t jj = 0; jj < seen; ++jj) Sr[jj] *= scale;
      std::fill(Sr + seen, Sr + tb, neg_inf);
    }
}

// acc += Σ_jj S_jj · v_{b0+jj} for every (query, head) over the block's V rows (tb rows of hk·d_h,
// in L2 while each (query, head) runs down its d_h columns). With D > 0 the accumulator stays in
// registers, in two sets for even and odd rows (independent FMA chains), added at the block's end.
template <class T, int64_t D>
void block_values(const DecodeShape& s, const T* v, int64_t b0, int64_t tb, const T* S, T* part) {
  constexpr int64_t Tb = kDecodeBlock;
  const int64_t h = s.h, d_h = D > 0 ? D : s.d_h, ldk = s.hk * d_h, rec = d_h + 2;
  for (int64_t ri = 0; ri < s.n * h; ++ri) {
    const T* Sr = S + ri * Tb;
    const T* vc = v + b0 * ldk + kv_head_of(ri % h, h, s.hk) * d_h;
    T* acc = part + ri * rec + 2;
    if constexpr (D > 0) {
      using V = Vec64<T>;
      constexpr int L = kLanes<T>, NV = int(D) / L;
      V even[NV] = {}, odd[NV] = {};
      int64_t jj = 0;
      for (; jj + 1 < tb; jj += 2) {
        const T w0 = Sr[jj], w1 = Sr[jj + 1];
        const T *v0 = vc + jj * ldk, *v1 = v0 + ldk;
        for (int c = 0; c < NV; ++c) {
          even[c] += w0 * load64(v0 + c * L);
          odd[c] += w1 * load64(v1 + c * L);
        }
      }
      if (jj < tb)
        for (int c = 0; c < NV; ++c) even[c] += Sr[jj] * load64(vc + jj * ldk + c * L);
      for (int c = 0; c < NV; ++c) store64(acc + c * L, load64(acc + c * L) + (even[c] + odd[c]));
    } else {
      for (int64_t jj = 0; jj < tb; ++jj) {
        const T w = Sr[jj];
        const T* vi = vc + jj * ldk;
#pragma omp simd
        for (int64_t c = 0; c < d_h; ++c) acc[c] += w * vi[c];
      }
    }
  }
}

// One (sequence, chunk): the online softmax over key rows [j0, j1) for every query and head. part
// holds, per (query r, head i), m, ℓ and acc (d_h): stride d_h + 2. S is scratch (n·h × kDecodeBlock).
template <class T, int64_t D>
void decode_chunk(const DecodeShape& s, const T* q, const T* k, const T* v, int64_t j0, int64_t j1, T* part, T* S) {
  constexpr int64_t Tb = kDecodeBlock;
  const int64_t h = s.h, d_h = D > 0 ? D : s.d_h, rec = d_h + 2;
  const T neg_inf = -std::numeric_limits<T>::infinity();
  for (int64_t ri = 0; ri < s.n * h; ++ri) {
    T* p = part + ri * rec;
    p[0] = neg_inf;
    std::fill(p + 1, p + rec, T(0));
  }
  for (int64_t b0 = j0; b0 < j1; b0 += Tb) {
    const int64_t tb = std::min(Tb, j1 - b0);
    block_scores<T, D>(s, q, k, b0, tb, S);
    // The online softmax per (query, head): S becomes the block's weights e^{S − m}.
    for (int64_t ri = 0; ri < s.n * h; ++ri) {
      T* Sr = S + ri * Tb;
      T* p = part + ri * rec;
      T bm = neg_inf;
#pragma omp simd reduction(max : bm)
      for (int64_t jj = 0; jj < tb; ++jj) bm = std::max(bm, Sr[jj]);
      if (bm == neg_inf) {  // the whole block is in this query's future
        std::fill(Sr, Sr + tb, T(0));
        continue;
      }
      const T m_new = std::max(p[0], bm);
      if (m_new > p[0]) {
        const T alpha = exp_fast<T>(p[0] - m_new);  // 0 for the first visible block (m = −inf)
        p[1] *= alpha;
        T* acc = p + 2;
#pragma omp simd
        for (int64_t c = 0; c < d_h; ++c) acc[c] *= alpha;
        p[0] = m_new;
      }
      T sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t jj = 0; jj < tb; ++jj) {
        const T e = exp_fast<T>(Sr[jj] - m_new);
        Sr[jj] = e;
        sum += e;
      }
      p[1] += sum;
    }
    block_values<T, D>(s, v, b0, tb, S, part);
  }
}

}  // namespace

template <class T>
void attention_decode(const DecodeShape& s, const T* q, const T* k, const T* v, T* o) {
  const int64_t nc = chunk_count(s), tasks = s.B * nc, ldq = s.h * s.d_h, rec = s.d_h + 2;
  const int64_t per = s.n * s.h * rec;  // one task's partial results
  std::vector<T> parts(size_t(tasks * per));
  // A few thousand multiply-adds do not pay for waking the team (B > 1 alone makes several tasks).
  const bool parallel = tasks > 1 && double(s.B) * s.n * s.rows * s.h * s.d_h >= double(1 << 16);
#pragma omp parallel if (parallel)
  {
    std::vector<T> S(size_t(s.n * s.h * kDecodeBlock));
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t b = task / nc, c = task % nc;
      // Chunk c: rows [c·rows/nc, (c+1)·rows/nc), as even as the division allows.
      const int64_t j0 = c * s.rows / nc, j1 = (c + 1) * s.rows / nc;
      const T *qb = q + b * s.n * ldq, *kb = k + b * s.kv_stride, *vb = v + b * s.kv_stride;
      T* part = parts.data() + task * per;
      switch (s.d_h) {
        case 32: decode_chunk<T, 32>(s, qb, kb, vb, j0, j1, part, S.data()); break;
        case 64: decode_chunk<T, 64>(s, qb, kb, vb, j0, j1, part, S.data()); break;
        case 128: decode_chunk<T, 128>(s, qb, kb, vb, j0, j1, part, S.data()); break;
        default: decode_chunk<T, 0>(s, qb, kb, vb, j0, j1, part, S.data()); break;
      }
    }
    // The merge, after the implicit barrier: per (sequence, query, head), the chunks in order.
#pragma omp for schedule(static)
    for (int64_t bri = 0; bri < s.B * s.n * s.h; ++bri) {
      const int64_t b = bri / (s.n * s.h), ri = bri % (s.n * s.h);
      const T* first = parts.data() + b * nc * per + ri * rec;
      T M = first[0];
      for (int64_t c = 1; c < nc; ++c) M = std::max(M, first[c * per]);
      T* out = o + b * s.n * ldq + ri * s.d_h;  // (r, i) at r·ldq + i·d_h = ri·d_h
      std::fill(out, out + s.d_h, T(0));
      T l = 0;
      for (int64_t c = 0; c < nc; ++c) {
        const T* p = first + c * per;
        if (p[1] == 0) continue;  // a chunk wholly in this query's future
        const T w = std::exp(p[0] - M);
        l += w * p[1];
#pragma omp simd
        for (int64_t j = 0; j < s.d_h; ++j) out[j] += w * p[2 + j];
      }
      const T inv = T(1) / l;  // l ≥ 1: the chunk holding the maximum contributes e^0 at least
#pragma omp simd
      for (int64_t j = 0; j < s.d_h; ++j) out[j] *= inv;
    }
  }
}

template <class T>
void attention_decode_ref(const DecodeShape& s, const T* q, const T* k, const T* v, T* o) {
  const int64_t ldq = s.h * s.d_h, ldk = s.hk * s.d_h, q_start = s.rows - s.n;
  std::vector<double> p;
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t r = 0; r < s.n; ++r)
      for (int64_t i = 0; i < s.h; ++i) {
        const T* qi = q + (b * s.n + r) * ldq + i * s.d_h;
        const T* K = k + b * s.kv_stride + kv_head_of(i, s.h, s.hk) * s.d_h;
        const T* V = v + b * s.kv_stride + kv_head_of(i, s.h, s.hk) * s.d_h;
        const int64_t seen = q_start + r + 1;  // keys 0 .. q_start + r
        p.assign(size_t(seen), 0.0);
        double mx = -INFINITY;
        for (int64_t j = 0; j < seen; ++j) {
          double dot = 0;
          for (int64_t c = 0; c < s.d_h; ++c) dot += double(qi[c]) * double(K[j * ldk + c]);
          mx = std::max(mx, p[size_t(j)] = dot * s.scale);
        }
        double sum = 0;
        for (auto& e : p) sum += (e = std::exp(e - mx));
        for (int64_t c = 0; c < s.d_h; ++c) {
          double acc = 0;
          for (int64_t j = 0; j < seen; ++j) acc += p[size_t(j)] * double(V[j * ldk + c]);
          o[(b * s.n + r) * ldq + i * s.d_h + c] = T(acc / sum);
        }
      }
}

#define LF_INSTANTIATE(T)                                                                       \
  template void attention_decode<T>(const DecodeShape&, const T*, const T*, const T*, T*); \
  template void attention_decode_ref<T>(const DecodeShape&, const T*, const T*, const T*, T*);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
