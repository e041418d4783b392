#include "attention/sdpa.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "linformer/error.h"
#include "linformer/rng.h"
#include "cpu/dropout.h"
#include "cpu/gemm.h"
#include "cpu/softmax.h"

namespace lf {
namespace {

// Sets masked scores of one (b, i) block S (n × mk) to -inf.
template <class T>
void apply_masks(const SdpaShape& s, int64_t b, T* S) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  if (s.key_mask) {
    const uint8_t* km = s.key_mask + b * s.mk;
    for (int64_t t = 0; t < s.n; ++t)
      for (int64_t j = 0; j < s.mk; ++j)
        if (km[j]) S[t * s.mk + j] = neg_inf;
  }
  if (s.causal)
    for (int64_t t = 0; t < s.n; ++t)
      for (int64_t j = t + 1; j < s.mk; ++j) S[t * s.mk + j] = neg_inf;
}

// Where head i of sample b starts: in q, out, dq (rows of h·d_h) and, through its kv head g (0 when
// the heads share one, hk = 1), in k, v, dk, dv (rows of hk·d_h).
struct HeadOffsets {
  int64_t q, kv;
};
HeadOffsets head_offsets(const SdpaShape& s, int64_t b, int64_t i) {
  const int64_t g = s.hk == 1 ? 0 : i;
  return {b * s.n * (s.h * s.d_h) + i * s.d_h, b * s.mk * (s.hk * s.d_h) + g * s.d_h};
}

// P (n × mk) = softmax(scale · Q Kᵀ + masks) of one (b, i) block; Q, K at head_offsets.
template <class T>
void head_probs(const SdpaShape& s, int64_t b, const T* Q, const T* K, T* P) {
  gemm<T>(false, true, s.n, s.mk, s.d_h, T(s.scale), Q, s.h * s.d_h, K, s.hk * s.d_h, T(0), P, s.mk);  // S (n × mk)
  apply_masks(s, b, P);
  softmax_forward(P, P, s.n, s.mk);
}

void check_shape(const SdpaShape& s) {
  LF_REQUIRE(s.hk == s.h || s.hk == 1, "attention: key heads must equal query heads or be 1, got ", s.hk);
  LF_REQUIRE(!s.causal || s.mk == s.n, "attention: causal masking needs as many keys as queries");
}

}  // namespace

template <class T>
void sdpa_forward(const SdpaShape& s, const T* q, const T* k, const T* v, T* probs, T* out, bool keep_probs) {
  check_shape(s);
  const int64_t ldq = s.h * s.d_h, ldk = s.hk * s.d_h, nm = s.n * s.mk;
  std::vector<T> dropped(s.dropout > 0 ? size_t(nm) : 0);
  for (int64_t b = 0; b < s.B; ++b) {
    for (int64_t i = 0; i < s.h; ++i) {
      const HeadOffsets at = head_offsets(s, b, i);
      T* P = keep_probs ? probs + (b * s.h + i) * nm : probs;
      head_probs(s, b, q + at.q, k + at.kv, P);
      const T* Pd = P;
      if (s.dropout > 0) {
        dropout_forward(P, dropped.data(), nm, s.dropout, s.seed, kProbsDropoutStream, uint64_t((b * s.h + i) * nm));
        Pd = dropped.data();
      }
      gemm<T>(false, false, s.n, s.d_h, s.mk, T(1), Pd, s.mk, v + at.kv, ldk, T(0), out + at.q, ldq);
    }
  }
}

template <class T>
void sdpa_backward(const SdpaShape& s, const T* q, const T* k, const T* v, const T* probs, const T* dout, T* dq,
                   T* dk, T* dv, T* scratch) {
  check_shape(s);
  const int64_t ldq = s.h * s.d_h, ldk = s.hk * s.d_h, nm = s.n * s.mk;
  std::fill(dk, dk + s.B * s.mk * ldk, T(0));
  std::fill(dv, dv + s.B * s.mk * ldk, T(0));
  T* dP = scratch;                           // (n × mk)
  T* Pd = scratch + nm;                      // dropped probabilities (n × mk), with dropout only
  T* Prec = scratch + (s.dropout > 0 ? 2 : 1) * nm;  // recomputed probabilities (n × mk), without probs only
  for (int64_t b = 0; b < s.B; ++b) {
    for (int64_t i = 0; i < s.h; ++i) {
      const HeadOffsets at = head_offsets(s, b, i);
      const T *Q = q + at.q, *K = k + at.kv, *V = v + at.kv, *dO = dout + at.q;
      const T* P = probs ? probs + (b * s.h + i) * nm : Prec;
      if (!probs) head_probs(s, b, Q, K, Prec);  // exactly the forward's steps
      const T* Pused = P;
      if (s.dropout > 0) {
        dropout_forward(P, Pd, nm, s.dropout, s.seed, kProbsDropoutStream, uint64_t((b * s.h + i) * nm));
        Pused = Pd;
      }
      // dV (mk × d_h) += P̃ᵀ dO; heads sharing one kv head accumulate.
      gemm<T>(true, false, s.mk, s.d_h, s.n, T(1), Pused, s.mk, dO, ldq, T(1), dv + at.kv, ldk);
      // dP̃ (n × mk) = dO Vᵀ, then back through dropout and softmax (masked entries have P = 0, so dS = 0).
      gemm<T>(false, true, s.n, s.mk, s.d_h, T(1), dO, ldq, V, ldk, T(0), dP, s.mk);
      if (s.dropout > 0) dropout_backward(dP, dP, nm, s.dropout, s.seed, kProbsDropoutStream, uint64_t((b * s.h + i) * nm));
      softmax_backward(P, dP, dP, s.n, s.mk);
      // dQ (n × d_h) = scale · dS K;  dK (mk × d_h) += scale · dSᵀ Q.
      gemm<T>(false, false, s.n, s.d_h, s.mk, T(s.scale), dP, s.mk, K, ldk, T(0), dq + at.q, ldq);
      gemm<T>(true, false, s.mk, s.d_h, s.n, T(s.scale), dP, s.mk, Q, ldq, T(1), dk + at.kv, ldk);
    }
  }
}

template <class T>
void sdpa_forward_ref(const SdpaShape& s, const T* q, const T* k, const T* v, T* out) {
  const int64_t ldq = s.h * s.d_h, ldk = s.hk * s.d_h;
  std::vector<double> p(size_t(s.mk));
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t i = 0; i < s.h; ++i) {
      const int64_t g = s.hk == 1 ? 0 : i;
      for (int64_t t = 0; t < s.n; ++t) {
        double mx = -INFINITY;
        for (int64_t j = 0; j < s.mk; ++j) {
          const bool hidden = (s.key_mask && s.key_mask[b * s.mk + j]) || (s.causal && j > t);
          double dot = 0;
          for (int64_t c = 0; c < s.d_h; ++c)
            dot += double(q[(b * s.n + t) * ldq + i * s.d_h + c]) * double(k[(b * s.mk + j) * ldk + g * s.d_h + c]);
          p[size_t(j)] = hidden ? -INFINITY : dot * s.scale;
          mx = std::max(mx, p[size_t(j)]);
        }
        double sum = 0;
        for (auto& e : p) sum += (e = mx == -INFINITY ? 0.0 : std::exp(e - mx));
        for (int64_t c = 0; c < s.d_h; ++c) {
          double acc = 0;
          for (int64_t j = 0; j < s.mk; ++j) {
            const double w = sum > 0 ? p[size_t(j)] / sum : 0.0;
            const uint64_t idx = uint64_t((b * s.h + i) * s.n * s.mk + t * s.mk + j);
            const bool keep = s.dropout == 0 || double(uniform01(s.seed, kProbsDropoutStream, idx)) >= double(float(s.dropout));
            acc += keep ? w / (1 - s.dropout) * double(v[(b * s.mk + j) * ldk + g * s.d_h + c]) : 0.0;
          }
          out[(b * s.n + t) * ldq + i * s.d_h + c] = T(acc);
        }
      }
    }
}

#define LF_INSTANTIATE(T)                                                                                      \
  template void sdpa_forward<T>(const SdpaShape&, const T*, const T*, const T*, T*, T*, bool);                       \
  template void sdpa_backward<T>(const SdpaShape&, const T*, const T*, const T*, const T*, const T*, T*, T*, T*, \
                                 T*);                                                                          \
  template void sdpa_forward_ref<T>(const SdpaShape&, const T*, const T*, const T*, T*);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
