#include "attention/sdpa.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "linformer/error.h"
#include "linformer/rng.h"
#include "linformer/tensor.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/norm_act.h"
#include "ops/score_masks.h"
#include "ops/softmax.h"

namespace lf {
namespace {

// Where head i of sample b starts: in q, out, dq (rows of h·d_h) and, through its kv head g
// (kv_head_of), in k, v, dk, dv (rows of hk·d_h).
struct HeadOffsets {
  int64_t q, kv;
};
HeadOffsets head_offsets(const SdpaShape& s, int64_t b, int64_t i) {
  const int64_t g = kv_head_of(i, s.h, s.hk);
  return {b * s.n * (s.h * s.d_h) + i * s.d_h, b * s.mk * (s.hk * s.d_h) + g * s.d_h};
}

// S (n × mk) += (b, i)'s score bias, and −inf where its score mask hides the key.
template <class T>
void apply_score_mask(const SdpaShape& s, int64_t b, int64_t i, T* S) {
  const T* bias = s.score_bias_of<T>(b, i);
  const uint8_t* mask = s.score_mask_of(b, i);
  const int64_t nm = s.n * s.mk;
  if (bias)
    for (int64_t e = 0; e < nm; ++e) S[e] += bias[e];
  if (mask)
    for (int64_t e = 0; e < nm; ++e)
      if (!mask[e]) S[e] = -std::numeric_limits<T>::infinity();
}

// P (n × mk) = softmax(scale · Q Kᵀ + masks) of one (b, i) block; Q, K at head_offsets.
template <class T>
void head_probs(const SdpaShape& s, int64_t b, int64_t i, const T* Q, const T* K, T* P) {
  const auto probs = matrix(P, s.n, s.mk);
  ops::matmul(matrix(Q, s.n, s.d_h, s.h * s.d_h), matrix(K, s.mk, s.d_h, s.hk * s.d_h).t(), probs, s.scale);  // S
  apply_score_mask(s, b, i, P);
  ops::mask_scores(probs, s.key_mask ? vector_view(s.key_mask + b * s.mk, s.mk) : TensorView<const uint8_t>(),
                   s.causal, s.q_start);
  ops::softmax_forward<T>(probs, probs);
}

void check_shape(const SdpaShape& s) {
  LF_REQUIRE(s.hk > 0 && s.h % s.hk == 0, "attention: key heads (", s.hk, ") must divide the query heads (", s.h, ")");
  LF_REQUIRE(s.q_start >= 0 && (s.causal || s.q_start == 0), "attention: q_start (", s.q_start,
             ") must be >= 0, and 0 without a causal mask");
  LF_REQUIRE(!s.causal || s.mk == s.q_start + s.n, "attention: causal masking needs q_start + n = ", s.q_start + s.n,
             " keys, got ", s.mk);
}

}  // namespace

template <class T>
void sdpa_forward(const SdpaShape& s, const T* q, const T* k, const T* v, T* probs, T* out, bool keep_probs) {
  check_shape(s);
  const int64_t ldq = s.h * s.d_h, ldk = s.hk * s.d_h, nm = s.n * s.mk;
  Buffer<T> dropped(s.dropout > 0 ? nm : 0);
  for (int64_t b = 0; b < s.B; ++b) {
    for (int64_t i = 0; i < s.h; ++i) {
      const HeadOffsets at = head_offsets(s, b, i);
      T* P = keep_probs ? probs + (b * s.h + i) * nm : probs;
      head_probs(s, b, i, q + at.q, k + at.kv, P);
      const T* Pd = P;
      if (s.dropout > 0) {
        ops::dropout_forward<T>(vector_view(P, nm), vector_view(dropped.data(), nm), s.dropout, s.seed,
                                kProbsDropoutStream, uint64_t((b * s.h + i) * nm));
        Pd = dropped.data();
      }
      ops::matmul(matrix(Pd, s.n, s.mk), matrix(v + at.kv, s.mk, s.d_h, ldk), matrix(out + at.q, s.n, s.d_h, ldq));
    }
  }
}

template <class T>
void sdpa_backward(const SdpaShape& s, const T* q, const T* k, const T* v, const T* probs, const T* dout, T* dq,
                   T* dk, T* dv, T* scratch) {
  check_shape(s);
  const int64_t ldq = s.h * s.d_h, ldk = s.hk * s.d_h, nm = s.n * s.mk;
  ops::fill(vector_view(dk, s.B * s.mk * ldk), 0);
  ops::fill(vector_view(dv, s.B * s.mk * ldk), 0);
  T* dP = scratch;                           // (n × mk)
  T* Pd = scratch + nm;                      // dropped probabilities (n × mk), with dropout only
  T* Prec = scratch + (s.dropout > 0 ? 2 : 1) * nm;  // recomputed probabilities (n × mk), without probs only
  for (int64_t b = 0; b < s.B; ++b) {
    for (int64_t i = 0; i < s.h; ++i) {
      const HeadOffsets at = head_offsets(s, b, i);
      const T *Q = q + at.q, *K = k + at.kv, *V = v + at.kv, *dO = dout + at.q;
      const T* P = probs ? probs + (b * s.h + i) * nm : Prec;
      if (!probs) head_probs(s, b, i, Q, K, Prec);  // exactly the forward's steps
      const T* Pused = P;
      if (s.dropout > 0) {
        ops::dropout_forward<T>(vector_view(P, nm), vector_view(Pd, nm), s.dropout, s.seed, kProbsDropoutStream,
                                uint64_t((b * s.h + i) * nm));
        Pused = Pd;
      }
      const auto q_head = matrix(Q, s.n, s.d_h, ldq), do_head = matrix(dO, s.n, s.d_h, ldq);
      const auto k_head = matrix(K, s.mk, s.d_h, ldk);
      const auto dp = matrix(dP, s.n, s.mk);
      // dV (mk × d_h) += P̃ᵀ dO; heads sharing one kv head accumulate.
      ops::matmul(matrix(Pused, s.n, s.mk).t(), do_head, matrix(dv + at.kv, s.mk, s.d_h, ldk), 1, 1);
      // dP̃ (n × mk) = dO Vᵀ, then back through dropout and softmax (masked entries have P = 0, so dS = 0).
      ops::matmul(do_head, matrix(V, s.mk, s.d_h, ldk).t(), dp);
      if (s.dropout > 0)
        ops::dropout_backward<T>(vector_view(dP, nm), vector_view(dP, nm), s.dropout, s.seed, kProbsDropoutStream,
                                 uint64_t((b * s.h + i) * nm));
      ops::softmax_backward<T>(matrix(P, s.n, s.mk), dp, dp);
      // dQ (n × d_h) = scale · dS K;  dK (mk × d_h) += scale · dSᵀ Q.
      ops::matmul(dp, k_head, matrix(dq + at.q, s.n, s.d_h, ldq), s.scale);
      ops::matmul(dp.t(), q_head, matrix(dk + at.kv, s.mk, s.d_h, ldk), s.scale, 1);
    }
  }
}

template <class T>
void sdpa_forward_ref(const SdpaShape& s, const T* q, const T* k, const T* v, T* out) {
  const int64_t ldq = s.h * s.d_h, ldk = s.hk * s.d_h;
  std::vector<double> p(size_t(s.mk));
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t i = 0; i < s.h; ++i) {
      const int64_t g = kv_head_of(i, s.h, s.hk);
      const uint8_t* score_mask = s.score_mask_of(b, i);
      const T* score_bias = s.score_bias_of<T>(b, i);
      for (int64_t t = 0; t < s.n; ++t) {
        double mx = -INFINITY;
        for (int64_t j = 0; j < s.mk; ++j) {
          const bool hidden = (s.key_mask && s.key_mask[b * s.mk + j]) || (s.causal && j > s.q_start + t) ||
                              (score_mask && !score_mask[t * s.mk + j]);
          double dot = 0;
          for (int64_t c = 0; c < s.d_h; ++c)
            dot += double(q[(b * s.n + t) * ldq + i * s.d_h + c]) * double(k[(b * s.mk + j) * ldk + g * s.d_h + c]);
          p[size_t(j)] = hidden ? -INFINITY : dot * s.scale + (score_bias ? double(score_bias[t * s.mk + j]) : 0.0);
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
