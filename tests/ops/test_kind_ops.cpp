// The ops of the attention kinds' own cores (flash, reformer's LSH attention and key normalisation,
// mixer's token-mixing layout): each refuses views that do not match with lf::InvalidArgument, and
// each kernel matches a plain reference here, in double and float, at odd sizes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/attention_shape.h"
#include "linformer/error.h"
#include "linformer/tensor.h"
#include "ops/flash.h"
#include "ops/reformer.h"
#include "ops/token_mixing.h"
#include "test_util.h"

namespace lf {
namespace {
using test::max_rel_error;
using test::random_vector;
using test::tolerance;

// ---- flash ----------------------------------------------------------------------------------------

// Plain softmax attention in double: O (B, n, h·d_h) and lse (B, h, n), one key head shared or one per head.
void attention_ref(const SdpaShape& s, const std::vector<double>& q, const std::vector<double>& k,
                   const std::vector<double>& v, std::vector<double>& out, std::vector<double>& lse) {
  const int64_t ldq = s.h * s.d_h, ldk = s.hk * s.d_h;
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t i = 0; i < s.h; ++i)
      for (int64_t t = 0; t < s.n; ++t) {
        const int64_t g = s.hk == 1 ? 0 : i;
        std::vector<double> score(size_t(s.mk), -std::numeric_limits<double>::infinity());
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < s.mk; ++j) {
          if ((s.key_mask && s.key_mask[b * s.mk + j]) || (s.causal && j > t)) continue;
          double dot = 0;
          for (int64_t c = 0; c < s.d_h; ++c)
            dot += q[size_t((b * s.n + t) * ldq + i * s.d_h + c)] * k[size_t((b * s.mk + j) * ldk + g * s.d_h + c)];
          score[size_t(j)] = s.scale * dot;
          mx = std::max(mx, score[size_t(j)]);
        }
        double sum = 0;
        for (double x : score) sum += std::exp(x - mx);
        for (int64_t c = 0; c < s.d_h; ++c) {
          double acc = 0;
          for (int64_t j = 0; j < s.mk; ++j)
            acc += std::exp(score[size_t(j)] - mx) / sum * v[size_t((b * s.mk + j) * ldk + g * s.d_h + c)];
          out[size_t((b * s.n + t) * ldq + i * s.d_h + c)] = acc;
        }
        lse[size_t((b * s.h + i) * s.n + t)] = mx + std::log(sum);
      }
}

template <class T>
void expect_flash_matches_reference(int64_t hk, bool causal) {
  const uint8_t mask[2 * 71] = {0, 1, 0, 0, 1};  // a few padded keys of the first sample
  SdpaShape s;
  s.B = 2, s.n = 71, s.mk = causal ? 71 : 67, s.h = 3, s.hk = hk, s.d_h = 5;
  s.scale = 0.4, s.causal = causal, s.key_mask = mask;
  const int64_t nq = s.B * s.n * s.h * s.d_h, nk = s.B * s.mk * s.hk * s.d_h;
  const auto q = random_vector(nq, 1), k = random_vector(nk, 2), v = random_vector(nk, 3);
  std::vector<double> out_ref(static_cast<size_t>(nq)), lse_ref(static_cast<size_t>(s.B * s.h * s.n));
  attention_ref(s, q, k, v, out_ref, lse_ref);

  const auto qt = test::cast_vector<T>(q), kt = test::cast_vector<T>(k), vt = test::cast_vector<T>(v);
  std::vector<T> out(static_cast<size_t>(nq)), lse(lse_ref.size());
  ops::flash_attention_forward<T>(s, TensorView<const T>(qt.data(), {s.B, s.n, s.h * s.d_h}),
                                  TensorView<const T>(kt.data(), {s.B, s.mk, s.hk * s.d_h}),
                                  TensorView<const T>(vt.data(), {s.B, s.mk, s.hk * s.d_h}),
                                  TensorView<T>(out.data(), {s.B, s.n, s.h * s.d_h}),
                                  TensorView<T>(lse.data(), {s.B, s.h, s.n}));
  EXPECT_LE(max_rel_error(out.data(), out_ref.data(), nq), 10 * tolerance<T>());
  EXPECT_LE(max_rel_error(lse.data(), lse_ref.data(), int64_t(lse.size())), 10 * tolerance<T>());
}

TEST(KindOps, FlashAttentionForwardMatchesPlainAttention) {
  for (bool causal : {false, true})
    for (int64_t hk : {int64_t(1), int64_t(3)}) {
      expect_flash_matches_reference<double>(hk, causal);
      expect_flash_matches_reference<float>(hk, causal);
    }
}

TEST(KindOps, FlashAttentionRefusesViewsThatDoNotMatchTheShape) {
  SdpaShape s;
  s.B = 1, s.n = 4, s.mk = 4, s.h = 2, s.hk = 2, s.d_h = 3;
  std::vector<float> x(24), lse(8);
  const TensorView<float> seq(x.data(), {1, 4, 6}), wrong(x.data(), {1, 6, 4}), stats(lse.data(), {1, 2, 4});
  EXPECT_THROW(ops::flash_attention_forward<float>(s, seq, wrong, seq, seq, stats), InvalidArgument);
  EXPECT_THROW(ops::flash_attention_forward<float>(s, seq, seq, seq, seq, TensorView<float>(lse.data(), {1, 4, 2})),
               InvalidArgument);
  EXPECT_THROW(ops::flash_attention_backward<float>(s, seq, seq, seq, seq, stats, seq, wrong, seq, seq),
               InvalidArgument);
  EXPECT_THROW(ops::flash_attention_forward<float>(s, seq.t(), seq, seq, seq, stats), InvalidArgument);
}

// ---- reformer -------------------------------------------------------------------------------------

constexpr double kFloor = 1e-3;

template <class T>
void expect_l2_normalize_matches_reference() {
  const int64_t rows = 37, d = 7;
  auto u = random_vector(rows * d, 4), dkn = random_vector(rows * d, 5), du0 = random_vector(rows * d, 6);
  std::fill_n(u.begin() + 3 * d, d, 1e-5);  // one row below the floor
  std::vector<double> kn_ref(u.size()), norms_ref(static_cast<size_t>(rows)), du_ref = du0;
  for (int64_t r = 0; r < rows; ++r) {
    const double* x = u.data() + r * d;
    double ss = 0;
    for (int64_t c = 0; c < d; ++c) ss += x[c] * x[c];
    const double norm = std::sqrt(ss);
    norms_ref[size_t(r)] = norm;
    double dot = 0;
    for (int64_t c = 0; c < d; ++c) {
      kn_ref[size_t(r * d + c)] = x[c] / std::max(norm, kFloor);
      dot += kn_ref[size_t(r * d + c)] * dkn[size_t(r * d + c)];
    }
    for (int64_t c = 0; c < d; ++c)
      du_ref[size_t(r * d + c)] += norm > kFloor ? (dkn[size_t(r * d + c)] - kn_ref[size_t(r * d + c)] * dot) / norm
                                                 : dkn[size_t(r * d + c)] / kFloor;
  }
  const auto ut = test::cast_vector<T>(u), dknt = test::cast_vector<T>(dkn);
  std::vector<T> kn(u.size()), norms(static_cast<size_t>(rows)), du = test::cast_vector<T>(du0);
  ops::l2_normalize_rows<T>(matrix(ut.data(), rows, d), matrix(kn.data(), rows, d), vector_view(norms.data(), rows),
                            kFloor);
  ops::l2_normalize_rows_backward<T>(matrix(kn.data(), rows, d), vector_view(norms.data(), rows),
                                     matrix(dknt.data(), rows, d), matrix(du.data(), rows, d), kFloor);
  EXPECT_LE(max_rel_error(kn.data(), kn_ref.data(), rows * d), tolerance<T>());
  EXPECT_LE(max_rel_error(norms.data(), norms_ref.data(), rows), tolerance<T>());
  EXPECT_LE(max_rel_error(du.data(), du_ref.data(), rows * d), 10 * tolerance<T>());
}

TEST(KindOps, L2NormalizeRowsMatchesReference) {
  expect_l2_normalize_matches_reference<double>();
  expect_l2_normalize_matches_reference<float>();
}

TEST(KindOps, ReformerOpsRefuseViewsThatDoNotMatchTheShape) {
  ReformerShape s;
  s.B = 1, s.n = 5, s.h = 2, s.d_h = 3, s.n_hashes = 2, s.n_buckets = 4;
  std::vector<float> x(30), R(2 * 2 * 3 * 2), stats(20), norms(10);
  std::vector<int32_t> b(20), p(20);
  const TensorView<float> seq(x.data(), {1, 5, 6});
  const TensorView<int32_t> lists(b.data(), {2, 1, 2, 5}), perm(p.data(), {2, 1, 2, 5});
  EXPECT_THROW(ops::lsh_hash<float>(s, seq, TensorView<float>(R.data(), {2, 2, 3, 1}), lists), InvalidArgument);
  EXPECT_THROW(ops::lsh_hash<float>(s, TensorView<float>(x.data(), {1, 6, 5}), TensorView<float>(R.data(), {2, 2, 3, 2}),
                                    lists),
               InvalidArgument);
  EXPECT_THROW(ops::lsh_sort(s, lists, TensorView<int32_t>(p.data(), {2, 2, 5})), InvalidArgument);
  EXPECT_THROW(ops::lsh_attention_forward<float>(s, seq, seq, seq, lists, perm, seq,
                                                 TensorView<float>(stats.data(), {1, 2, 5})),
               InvalidArgument);
  const TensorView<float> st(stats.data(), {2, 1, 2, 5});
  EXPECT_THROW(ops::lsh_attention_backward<float>(s, seq, seq, seq, lists, perm, seq, st, seq, seq, seq,
                                                  TensorView<float>(x.data(), {5, 6})),
               InvalidArgument);
  EXPECT_THROW(ops::lsh_rotations<float>(0, 0, TensorView<float>(R.data(), {12})), InvalidArgument);
  EXPECT_THROW(ops::l2_normalize_rows<float>(matrix(x.data(), 10, 3), matrix(x.data(), 10, 3),
                                             vector_view(norms.data(), 9), kFloor),
               InvalidArgument);
  EXPECT_THROW(ops::l2_normalize_rows_backward<float>(matrix(x.data(), 10, 3), vector_view(norms.data(), 10),
                                                      matrix(x.data(), 10, 3), matrix(x.data(), 15, 2), kFloor),
               InvalidArgument);
}

// ---- token mixing ---------------------------------------------------------------------------------

template <class T>
void expect_token_mixing_matches_reference() {
  const int64_t B = 3, n = 7, d = 10, G = 2, dh = 5, np = 9, N = B * dh;
  const uint8_t mask[B * n] = {0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  auto x = test::cast_vector<T>(random_vector(B * n * d, 7));
  x[size_t(2 * d)] = std::numeric_limits<T>::quiet_NaN();  // in a padded row: must not pass
  std::vector<T> xp(static_cast<size_t>(G * np * N), T(-5)), back(x.size());
  ops::token_mixing_pack<T>(TensorView<const T>(x.data(), {B, n, d}), TensorView<const uint8_t>(mask, {B * n}),
                            TensorView<T>(xp.data(), {G, np, N}));
  for (int64_t g = 0; g < G; ++g)
    for (int64_t t = 0; t < np; ++t)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t c = 0; c < dh; ++c) {
          const bool zero = t >= n || mask[b * n + t];
          EXPECT_EQ(xp[size_t((g * np + t) * N + b * dh + c)], zero ? T(0) : x[size_t((b * n + t) * d + g * dh + c)]);
        }
  ops::token_mixing_unpack<T>(TensorView<const T>(xp.data(), {G, np, N}), TensorView<T>(back.data(), {B, n, d}));
  for (int64_t e = 0; e < B * n * d; ++e)
    EXPECT_EQ(back[size_t(e)], mask[e / d] ? T(0) : x[size_t(e)]) << e;

  // The bias rows and their sums: the first `rows` of a (G, L) bias.
  const int64_t L = 11, rows = 9;
  const auto bias = test::cast_vector<T>(random_vector(G * L, 8));
  std::vector<T> filled(static_cast<size_t>(G * rows * N)), sums = bias;
  ops::broadcast_rows<T>(matrix(bias.data(), G, rows, L), TensorView<T>(filled.data(), {G, rows, N}));
  ops::add_row_sums<T>(TensorView<const T>(xp.data(), {G, rows, N}), matrix(sums.data(), G, rows, L));
  for (int64_t g = 0; g < G; ++g)
    for (int64_t r = 0; r < L; ++r) {
      double acc = 0;
      for (int64_t j = 0; r < rows && j < N; ++j) {
        EXPECT_EQ(filled[size_t((g * rows + r) * N + j)], bias[size_t(g * L + r)]);
        acc += double(xp[size_t((g * rows + r) * N + j)]);
      }
      EXPECT_NEAR(double(sums[size_t(g * L + r)]), double(bias[size_t(g * L + r)]) + acc, 10 * tolerance<T>());
    }

  // The lower triangles, of a block inside a wider matrix (row stride L).
  const int64_t bs = 7;
  const auto W = test::cast_vector<T>(random_vector(bs * L, 9));
  std::vector<T> tri(static_cast<size_t>(bs * bs), T(3)), acc = W;
  ops::lower_triangle<T>(matrix(W.data(), bs, bs, L), matrix(tri.data(), bs, bs));
  ops::add_lower_triangle<T>(matrix(tri.data(), bs, bs), matrix(acc.data(), bs, bs, L));
  for (int64_t r = 0; r < bs; ++r)
    for (int64_t c = 0; c < L; ++c) {
      const T w = W[size_t(r * L + c)];
      if (c < bs) {
        EXPECT_EQ(tri[size_t(r * bs + c)], c <= r ? w : T(0));
      }
      EXPECT_EQ(acc[size_t(r * L + c)], c <= r ? w + w : w);
    }
}

TEST(KindOps, TokenMixingOpsMatchTheirDefinitions) {
  expect_token_mixing_matches_reference<double>();
  expect_token_mixing_matches_reference<float>();
}

TEST(KindOps, TokenMixingOpsRefuseMismatchedViews) {
  std::vector<float> x(120), y(120);
  const TensorView<float> seq(x.data(), {2, 6, 10});
  EXPECT_THROW(ops::token_mixing_pack<float>(seq, {}, TensorView<float>(y.data(), {3, 6, 6})), InvalidArgument);
  EXPECT_THROW(ops::token_mixing_pack<float>(seq, {}, TensorView<float>(y.data(), {2, 5, 10})), InvalidArgument);
  std::vector<uint8_t> mask(11);
  EXPECT_THROW(ops::token_mixing_pack<float>(seq, TensorView<const uint8_t>(mask.data(), {11}),
                                             TensorView<float>(y.data(), {2, 6, 10})),
               InvalidArgument);
  EXPECT_THROW(ops::token_mixing_unpack<float>(TensorView<float>(y.data(), {2, 6, 9}), seq), InvalidArgument);
  EXPECT_THROW(ops::broadcast_rows<float>(matrix(x.data(), 2, 5), TensorView<float>(y.data(), {2, 6, 10})),
               InvalidArgument);
  EXPECT_THROW(ops::add_row_sums<float>(TensorView<float>(y.data(), {2, 6, 10}), matrix(x.data(), 3, 6)),
               InvalidArgument);
  EXPECT_THROW(ops::lower_triangle<float>(matrix(x.data(), 4, 5), matrix(y.data(), 4, 5)), InvalidArgument);
  EXPECT_THROW(ops::add_lower_triangle<float>(matrix(x.data(), 4, 4, 6), matrix(y.data(), 4, 4)), InvalidArgument);
}

}  // namespace
}  // namespace lf
