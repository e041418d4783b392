// Sparse Sinkhorn attention: equal to a plain dense reference of its definition (loops in double,
// written here from the parameters by name) for every option — causal or not, key padding, lengths
// that are not multiples of the block, shorter than max_len, both sort networks, dropout; finite-
// difference gradients in double for every option; causality (outputs up to t ignore later inputs,
// the Jacobian above the diagonal is exactly zero, a shorter causal sequence gives the same prefix);
// padded positions have no influence; results independent of the thread count; the Sinkhorn kernel
// (doubly stochastic, causal rows, its backward); no n×n buffer at n = 16384; the registry, defaults
// and bad configurations.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "attention/sdpa.h"
#include "attention_test_util.h"
#include "cpu/sinkhorn.h"
#include "linformer/error.h"
#include "linformer/rng.h"
#include "linformer/runtime.h"

namespace lf {
namespace {

using test::AttentionCase;
using test::AttentionRig;
using test::describe;
using test::with;
using test::with_dropout;
using test::with_mask;

// Small blocks and few iterations, so that tiny sequences have several blocks.
const json kSmall = {{"block", 4}, {"sinkhorn_iters", 3}};

AttentionCase sk_case(int64_t n, bool causal, json options = kSmall, int64_t max_len = 0, int64_t heads = 2,
                      int64_t d = 8) {
  AttentionCase c;
  c.kind = "sinkhorn";
  c.dims = AttentionDims{d, heads, max_len > 0 ? max_len : n, causal, 0};
  c.options = std::move(options);
  c.B = 2;
  c.n = n;
  return c;
}

// ---- the dense reference ------------------------------------------------------------------------

double log_sum_exp(const std::vector<double>& v) {
  double mx = -INFINITY;
  for (double e : v) mx = std::max(mx, e);
  double s = 0;
  for (double e : v) s += std::exp(e - mx);
  return mx + std::log(s);
}

// The layer's definition in plain loops, in double, from the rig's parameters and input.
template <class T>
std::vector<double> reference_forward(const AttentionCase& c, const AttentionRig<T>& rig, uint64_t seed) {
  const json o = validate_attention({c.kind, c.dims, c.options, ""});
  const int64_t blk = o.at("block").get<int64_t>(), iters = o.at("sinkhorn_iters").get<int64_t>();
  const double tau = o.at("temperature").get<double>();
  const bool mlp = o.at("sort_net").get<std::string>() == "mlp";
  const bool causal = c.dims.causal;
  const int64_t B = c.B, n = c.n, d = c.dims.d_model, h = c.dims.n_heads, dh = d / h;
  const int64_t nb = (n + blk - 1) / blk, np = nb * blk, NB = (c.dims.max_len + blk - 1) / blk;
  const double p = c.training ? c.dims.dropout : 0.0, scale = 1 / std::sqrt(double(dh));
  auto param = [&](const std::string& name) { return test::param_values(rig, name); };
  const auto Wq = param("to_q.weight"), Wk = param("to_k.weight"), Wv = param("to_v.weight"),
             Wo = param("to_out.weight"), bq = param("to_q.bias"), bk = param("to_k.bias"), bv = param("to_v.bias"),
             bo = param("to_out.bias"), W1 = param("sort_net.hidden.weight"), b1 = param("sort_net.hidden.bias"),
             W2 = param("sort_net.out.weight"), b2 = param("sort_net.out.bias");
  const auto linear = test::affine<double>;  // y (fan_out) = W x + b
  // A sample sorts the blocks of its real length (its last unpadded position + 1) only.
  int64_t own = nb;
  auto exists = [&](int64_t i, int64_t j) { return i < own && j < own && (!causal || j < i); };
  const bool gumbel = c.training && o.at("gumbel_noise").get<bool>();
  const bool non_permutative = o.at("non_permutative").get<bool>();  // a row softmax, no balancing

  std::vector<double> out(size_t(B * n * d));
  for (int64_t b = 0; b < B; ++b) {
    std::vector<double> x(size_t(n * d));
    for (int64_t e = 0; e < n * d; ++e) x[size_t(e)] = double(rig.x[size_t(b * n * d + e)]);
    std::vector<bool> valid(size_t(np), false);
    for (int64_t t = 0; t < n; ++t) valid[size_t(t)] = c.mask.empty() || !c.mask[size_t(b * n + t)];
    own = nb;
    if (!c.mask.empty()) {
      int64_t len = n;
      while (len > 1 && !valid[size_t(len - 1)]) --len;
      own = (len + blk - 1) / blk;
    }
    // Q (n × d); K, V (n_p × d), zero at invalid positions.
    std::vector<std::vector<double>> Q(static_cast<size_t>(n)),
        K(static_cast<size_t>(np), std::vector<double>(static_cast<size_t>(d), 0.0)), V = K;
    for (int64_t t = 0; t < n; ++t) {
      Q[size_t(t)] = linear(Wq, bq, &x[size_t(t * d)], d, d);
      if (valid[size_t(t)]) {
        K[size_t(t)] = linear(Wk, bk, &x[size_t(t * d)], d, d);
        V[size_t(t)] = linear(Wv, bv, &x[size_t(t * d)], d, d);
      }
    }
    // Block summaries, the sort network's scores R (n_b × h·N_b).
    std::vector<std::vector<double>> R(static_cast<size_t>(nb));
    for (int64_t i = 0; i < nb; ++i) {
      std::vector<double> s(size_t(d), 0.0);
      int64_t count = 0;
      for (int64_t t = 0; t < n; ++t) {
        const bool used = causal ? t / blk < i : t / blk == i;
        if (!used || !valid[size_t(t)]) continue;
        ++count;
        for (int64_t e = 0; e < d; ++e) s[size_t(e)] += x[size_t(t * d + e)];
      }
      if (count > 0)
        for (double& e : s) e /= double(count);
      if (mlp) {
        std::vector<double> hid = linear(W1, b1, s.data(), d, d);
        for (double& e : hid) e = std::max(e, 0.0);
        R[size_t(i)] = linear(W2, b2, hid.data(), d, h * NB);
      } else {
        R[size_t(i)] = linear(W2, b2, s.data(), d, h * NB);
      }
      // Gumbel noise −log(−log u), u the Philox draw of (seed, sample, block, column) over N_b blocks.
      for (int64_t col = 0; gumbel && col < h * NB; ++col) {
        const double u = uniform01_f64(seed, stream_id("sinkhorn.gumbel_noise"), uint64_t((b * NB + i) * h * NB + col));
        R[size_t(i)][size_t(col)] += -std::log(-std::log(std::max(u, 1e-300)));
      }
    }
    std::vector<std::vector<double>> O(size_t(n), std::vector<double>(size_t(d), 0.0));
    for (int64_t hd = 0; hd < h; ++hd) {
      // Sinkhorn in the log domain.
      std::vector<std::vector<double>> L(size_t(nb), std::vector<double>(size_t(nb), 0.0));
      for (int64_t i = 0; i < nb; ++i)
        for (int64_t j = 0; j < nb; ++j)
          if (exists(i, j)) L[size_t(i)][size_t(j)] = R[size_t(i)][size_t(hd * NB + j)] / tau;
      auto normalise_rows = [&] {
        for (int64_t i = 0; i < nb; ++i) {
          std::vector<double> row;
          for (int64_t j = 0; j < nb; ++j)
            if (exists(i, j)) row.push_back(L[size_t(i)][size_t(j)]);
          if (row.empty()) continue;
          const double lse = log_sum_exp(row);
          for (int64_t j = 0; j < nb; ++j)
            if (exists(i, j)) L[size_t(i)][size_t(j)] -= lse;
        }
      };
      auto normalise_columns = [&] {
        const auto before = L;
        for (int64_t i = 0; i < nb; ++i)
          for (int64_t j = 0; j < nb; ++j) {
            if (!exists(i, j)) continue;
            std::vector<double> col;  // non-causal: every row; causal: rows j < k ≤ i, and a mean
            for (int64_t k = 0; k < nb; ++k)
              if (exists(k, j) && (!causal || k <= i)) col.push_back(before[size_t(k)][size_t(j)]);
            L[size_t(i)][size_t(j)] -= log_sum_exp(col) - (causal ? std::log(double(col.size())) : 0.0);
          }
      };
      if (non_permutative) normalise_rows();
      for (int64_t it = 0; it < (non_permutative ? 0 : iters); ++it) {
        if (causal) {
          normalise_columns();
          normalise_rows();
        } else {
          normalise_rows();
          normalise_columns();
        }
      }
      // Partner block i: K̃_i[r] = Σ_j P_ij K[j·b + r]; row r visible when valid in some mixed block.
      for (int64_t t = 0; t < n; ++t) {
        const int64_t i = t / blk, r = t % blk;
        std::vector<double> score(size_t(2 * blk), -INFINITY);
        std::vector<std::vector<double>> keys(size_t(2 * blk), std::vector<double>(size_t(dh), 0.0)),
            vals = keys;
        for (int64_t cc = 0; cc < blk; ++cc) {
          const int64_t pos = i * blk + cc;
          for (int64_t e = 0; e < dh; ++e) {
            keys[size_t(cc)][size_t(e)] = K[size_t(pos)][size_t(hd * dh + e)];
            vals[size_t(cc)][size_t(e)] = V[size_t(pos)][size_t(hd * dh + e)];
          }
          if (valid[size_t(pos)] && (!causal || cc <= r)) score[size_t(cc)] = 0;
          bool partner_visible = false;
          for (int64_t j = 0; j < nb; ++j) {
            if (!exists(i, j)) continue;
            const double pij = std::exp(L[size_t(i)][size_t(j)]);
            partner_visible = partner_visible || valid[size_t(j * blk + cc)];
            for (int64_t e = 0; e < dh; ++e) {
              keys[size_t(blk + cc)][size_t(e)] += pij * K[size_t(j * blk + cc)][size_t(hd * dh + e)];
              vals[size_t(blk + cc)][size_t(e)] += pij * V[size_t(j * blk + cc)][size_t(hd * dh + e)];
            }
          }
          if (partner_visible) score[size_t(blk + cc)] = 0;
        }
        double mx = -INFINITY;
        for (int64_t k = 0; k < 2 * blk; ++k) {
          if (score[size_t(k)] == -INFINITY) continue;
          double dot = 0;
          for (int64_t e = 0; e < dh; ++e) dot += Q[size_t(t)][size_t(hd * dh + e)] * keys[size_t(k)][size_t(e)];
          score[size_t(k)] = dot * scale;
          mx = std::max(mx, score[size_t(k)]);
        }
        if (mx == -INFINITY) continue;  // no visible key: output 0
        double sum = 0;
        for (double& s : score) sum += (s = s == -INFINITY ? 0.0 : std::exp(s - mx));
        for (int64_t k = 0; k < 2 * blk; ++k) {
          const uint64_t idx = uint64_t(((b * h + hd) * np + t) * 2 * blk + k);
          const bool keep = p == 0 || double(uniform01(seed, kProbsDropoutStream, idx)) >= double(float(p));
          if (!keep) continue;
          const double w = score[size_t(k)] / sum / (1 - p);
          for (int64_t e = 0; e < dh; ++e) O[size_t(t)][size_t(hd * dh + e)] += w * vals[size_t(k)][size_t(e)];
        }
      }
    }
    for (int64_t t = 0; t < n; ++t) {
      const std::vector<double> y = linear(Wo, bo, O[size_t(t)].data(), d, d);
      std::copy(y.begin(), y.end(), out.begin() + (b * n + t) * d);
    }
  }
  return out;
}

void expect_matches_reference_both(const AttentionCase& c) {
  test::expect_matches_reference_both(c, [&](const auto& rig) { return reference_forward(c, rig, rig.kForwardSeed); });
}

TEST(SinkhornAttention, MatchesDenseReference) {
  for (bool causal : {false, true}) {
    expect_matches_reference_both(sk_case(12, causal));
    expect_matches_reference_both(sk_case(10, causal, kSmall, 12));  // internal padding, shorter than max_len
    expect_matches_reference_both(with_mask(sk_case(11, causal, kSmall, 16), 6));
    expect_matches_reference_both(with_mask(sk_case(12, causal), 0));
    expect_matches_reference_both(
        sk_case(9, causal, with(kSmall, {{"sort_net", "linear"}, {"qkv_bias", true}, {"temperature", 0.3}})));
    expect_matches_reference_both(sk_case(9, causal, with(kSmall, {{"sinkhorn_iters", 1}, {"block", 3}})));
    expect_matches_reference_both(sk_case(6, causal, {{"block", 1}}));   // one position per block
    expect_matches_reference_both(sk_case(6, causal, {{"block", 6}}));   // one block
    expect_matches_reference_both(sk_case(8, causal, kSmall, 0, 1));     // one head
    expect_matches_reference_both(sk_case(13, causal, kSmall, 16, 4, 16));
    expect_matches_reference_both(with_dropout(with_mask(sk_case(12, causal), 7), 0.3));
    // Gumbel noise on the scores in training (with and without dropout), none at inference.
    const json gumbel = with(kSmall, {{"gumbel_noise", true}});
    expect_matches_reference_both(with_dropout(sk_case(12, causal, gumbel), 0.0));
    expect_matches_reference_both(with_dropout(with_mask(sk_case(11, causal, gumbel, 16), 6), 0.3));
    expect_matches_reference_both(sk_case(12, causal, gumbel));
    // Non-permutative: the row softmax of the scores, no balancing.
    const json rows_only = with(kSmall, {{"non_permutative", true}});
    expect_matches_reference_both(sk_case(12, causal, rows_only));
    expect_matches_reference_both(with_mask(sk_case(11, causal, rows_only, 16), 6));
    // A ragged batch: sample 1 is 5 real positions padded to 14 (its blocks 2 and 3 are padding).
    AttentionCase ragged = sk_case(14, causal);
    ragged.mask.assign(size_t(2 * 14), 0);
    for (int64_t t = 5; t < 14; ++t) ragged.mask[size_t(14 + t)] = 1;
    expect_matches_reference_both(ragged);
    expect_matches_reference_both(sk_case(32, causal, json::object()));  // defaults at max_len 32
    expect_matches_reference_both(sk_case(20, causal, json::object(), 32));
    // Large enough for the parallel paths; several tiles of the register-blocked products.
    expect_matches_reference_both(with_mask(sk_case(150, causal, {{"block", 32}}, 160, 2, 32), 100));
  }
}

// ---- gradients ---------------------------------------------------------------------------------

TEST(SinkhornAttention, GradientsMatchFiniteDifferences) {
  std::vector<AttentionCase> cases;
  for (bool causal : {false, true}) {
    cases.push_back(sk_case(12, causal));
    cases.push_back(with_mask(sk_case(10, causal, kSmall, 12), 5));  // padding, internal padding, n < max_len
    cases.push_back(sk_case(9, causal, with(kSmall, {{"sort_net", "linear"}, {"qkv_bias", true}, {"temperature", 0.4},
                                                     {"sinkhorn_iters", 1}})));
    cases.push_back(sk_case(9, causal, with(kSmall, {{"block", 3}, {"sinkhorn_iters", 8}, {"temperature", 2.0}})));
    cases.push_back(with_dropout(with_mask(sk_case(11, causal), 3), 0.3));
    cases.push_back(sk_case(5, causal, {{"block", 1}, {"sinkhorn_iters", 2}}));
    cases.push_back(sk_case(6, causal, {{"block", 6}}));
    cases.push_back(sk_case(8, causal, kSmall, 0, 1));
    cases.push_back(with_dropout(sk_case(9, causal, with(kSmall, {{"gumbel_noise", true}})), 0.0));
    cases.push_back(with_mask(sk_case(10, causal, with(kSmall, {{"non_permutative", true}}), 12), 5));
    AttentionCase ragged = sk_case(13, causal);  // sample 1: 6 real positions, its last 2 blocks padding
    ragged.mask.assign(size_t(2 * 13), 0);
    for (int64_t t = 6; t < 13; ++t) ragged.mask[size_t(13 + t)] = 1;
    cases.push_back(ragged);
  }
  for (const AttentionCase& c : cases) {
    SCOPED_TRACE(describe(c));
    test::check_attention_gradients(c);
  }
}

TEST(SinkhornAttention, ResultsDoNotDependOnTheThreadCount) {
  // Large enough for every parallel loop (the Sinkhorn rounds, the blocks, the packing).
  for (bool causal : {false, true}) {
    const AttentionCase c = with_dropout(with_mask(sk_case(300, causal, {{"block", 8}}, 300, 4, 64), 200), 0.1);
    SCOPED_TRACE(describe(c));
    test::expect_results_independent_of_threads(c);
    // Gumbel noise, and the row softmax of the non-permutative variant.
    for (const json& extra : {json{{"gumbel_noise", true}}, json{{"non_permutative", true}}}) {
      AttentionCase e = c;
      e.options = with(e.options, extra);
      SCOPED_TRACE(describe(e));
      test::expect_results_independent_of_threads(e);
    }
  }
}

// ---- causality ---------------------------------------------------------------------------------

std::vector<AttentionCase> causal_cases() {
  return {sk_case(12, true), with_mask(sk_case(11, true, kSmall, 16), 6), sk_case(32, true, json::object()),
          with_dropout(sk_case(13, true, with(kSmall, {{"block", 3}})), 0.2)};
}

TEST(SinkhornAttention, CausalOutputIgnoresTheFuture) {
  for (const AttentionCase& c : causal_cases()) {
    const std::vector<int64_t> ts = {0, 2, 3, 4, 7, c.n - 2};
    test::expect_outputs_ignore_the_future<double>(c, ts);
    test::expect_outputs_ignore_the_future<float>(c, ts);
  }
}

TEST(SinkhornAttention, CausalJacobianIsZeroAboveTheDiagonal) {
  for (const AttentionCase& c : causal_cases())  // (with dropout, a query's only key may be dropped)
    test::expect_causal_jacobian_is_zero_above_the_diagonal(c, 1, /*past_nonzero=*/c.dims.dropout == 0);
}

TEST(SinkhornAttention, ShorterCausalSequenceGivesTheSamePrefix) {
  // Variable length: a causal layer built for 16 positions gives, on the first 7 positions alone,
  // exactly the outputs it gives them inside the 16-position sequence.
  test::expect_same_prefix<double>(sk_case(16, true, kSmall), sk_case(7, true, kSmall, 16));
}

TEST(SinkhornAttention, PaddedPositionsHaveNoInfluence) {
  for (bool causal : {false, true}) {
    const AttentionCase c = with_mask(sk_case(11, causal, kSmall, 12), 6);
    test::expect_padded_positions_have_no_influence<double>(c, [](double x, int64_t) { return x + 1.5; });
  }
}

// ---- the Sinkhorn kernel -----------------------------------------------------------------------

template <class T>
std::vector<T> permutation(const std::vector<T>& R, int64_t nb, int64_t iters, bool causal, double tau = 0.75) {
  std::vector<T> P(size_t(nb * nb));
  sinkhorn_permutation<T>(R.data(), nb + 2, nb, iters, tau, causal, P.data(), nullptr);
  return P;
}

TEST(SinkhornAttention, PermutationIsDoublyStochastic) {
  const int64_t nb = 7;
  const auto R = test::random_vector<double>(nb * (nb + 2), 8, -3, 3);  // row stride nb + 2
  for (int64_t iters : {1, 3, 60}) {
    SCOPED_TRACE(iters);
    const std::vector<double> P = permutation(R, nb, iters, false);
    for (int64_t j = 0; j < nb; ++j) {  // the last half step normalises the columns exactly
      double col = 0;
      for (int64_t i = 0; i < nb; ++i) col += P[size_t(i * nb + j)];
      EXPECT_NEAR(col, 1.0, 1e-12);
    }
    double worst_row = 0;
    for (int64_t i = 0; i < nb; ++i) {
      double row = 0;
      for (int64_t j = 0; j < nb; ++j) row += P[size_t(i * nb + j)];
      worst_row = std::max(worst_row, std::abs(row - 1));
    }
    if (iters == 60) {
      EXPECT_LT(worst_row, 1e-9);
    }
    if (iters == 1) {
      EXPECT_GT(worst_row, 1e-3);  // not yet balanced: the test can tell
    }
  }
  // Float agrees with double.
  const std::vector<float> Pf = permutation(test::cast_vector<float>(R), nb, 8, false);
  const std::vector<double> Pd = permutation(R, nb, 8, false);
  LF_EXPECT_CLOSE(Pf.data(), Pd.data(), nb * nb, 1e-5);
  // A lower temperature sharpens P towards a permutation matrix: larger row maxima.
  auto mean_row_max = [&](const std::vector<double>& P) {
    double s = 0;
    for (int64_t i = 0; i < nb; ++i) s += *std::max_element(P.begin() + i * nb, P.begin() + (i + 1) * nb);
    return s / double(nb);
  };
  EXPECT_GT(mean_row_max(permutation(R, nb, 60, false, 0.1)), mean_row_max(permutation(R, nb, 60, false, 0.75)) + 0.1);
}

TEST(SinkhornAttention, CausalPermutationUsesOnlyEarlierRows) {
  const int64_t nb = 7;
  const auto R = test::random_vector<double>(nb * (nb + 2), 9, -3, 3);
  const std::vector<double> P = permutation(R, nb, 5, true);
  for (int64_t i = 0; i < nb; ++i) {
    double row = 0;
    for (int64_t j = 0; j < nb; ++j) {
      if (j >= i) {
        EXPECT_EQ(P[size_t(i * nb + j)], 0.0);
      }
      row += P[size_t(i * nb + j)];
    }
    EXPECT_NEAR(row, i == 0 ? 0.0 : 1.0, 1e-12) << "row " << i;
  }
  EXPECT_EQ(P[size_t(1 * nb + 0)], 1.0);  // row 1 has one partner
  // Rows ≤ i are unchanged when rows > i of R change.
  for (int64_t i = 0; i < nb; ++i) {
    auto R2 = R;
    for (int64_t e = (i + 1) * (nb + 2); e < nb * (nb + 2); ++e) R2[size_t(e)] += 1.0 + double(e % 3);
    const std::vector<double> P2 = permutation(R2, nb, 5, true);
    for (int64_t e = 0; e < (i + 1) * nb; ++e) ASSERT_EQ(P2[size_t(e)], P[size_t(e)]) << "row " << i;
  }
}

TEST(SinkhornAttention, PermutationBackwardMatchesFiniteDifferences) {
  const int64_t nb = 6, ld = nb + 2;
  for (bool causal : {false, true})
    for (int64_t iters : {1, 4}) {
      SCOPED_TRACE(str_cat("causal=", causal, " iters=", iters));
      auto R = test::random_vector<double>(nb * ld, 10, -2, 2);
      const auto W = test::random_vector<double>(nb * nb, 11);
      auto loss = [&] { return test::weighted_sum(permutation(R, nb, iters, causal, 0.6).data(), W.data(), nb * nb); };
      const std::vector<double> P = permutation(R, nb, iters, causal, 0.6);
      std::vector<double> dR(size_t(nb * ld), 0.0), states(size_t((2 * iters + 1) * nb * nb)), G(size_t(nb * nb));
      sinkhorn_permutation_backward<double>(R.data(), ld, nb, iters, 0.6, causal, P.data(), W.data(), dR.data(), ld,
                                            states.data(), G.data());
      test::expect_gradient_matches(loss, R.data(), nb * ld, dR.data(), "R", 1e-7);
    }
}

// ---- memory ------------------------------------------------------------------------------------

TEST(SinkhornAttention, LongSequenceDoesNotAllocateTheScores) {
  // n = 16384, d = 64, one head: an n×n float buffer is 1 GiB. Sinkhorn keeps O(n·b + (n/b)²).
  const int64_t n = 16384, d = 64;
  ParamArena<float> arena;
  auto layer = make_attention<float>({"sinkhorn", {d, 1, n, false, 0}, json::object(), ""}, arena);
  EXPECT_LT(layer->activation_bytes(1, n, n, true), double(n) * n);
  LF_SKIP_MEMORY_TEST_UNDER_SANITIZERS();
  LF_SKIP_WITHOUT_PROC_STATUS();
  test::expect_peak_rss_growth_below(arena, *layer, n, d, int64_t(256) << 20);
}

// ---- registry and configurations ---------------------------------------------------------------

TEST(SinkhornAttention, IsRegisteredWithItsSupportAndDefaults) {
  const AttentionSupport s = AttentionRegistry::instance().get("sinkhorn").info.support;
  EXPECT_TRUE(s.causal);
  EXPECT_TRUE(s.key_padding_mask);
  EXPECT_TRUE(s.variable_length);
  EXPECT_FALSE(s.cross_attention);
  const json defaults = {{"block", 64}, {"sinkhorn_iters", 8}, {"temperature", 0.75}, {"sort_net", "mlp"},
                         {"gumbel_noise", false}, {"non_permutative", false}, {"qkv_bias", false}};
  EXPECT_EQ(validate_attention({"sinkhorn", {8, 2, 4096, true, 0.1}, json::object(), ""}), defaults);
  EXPECT_EQ(validate_attention({"sinkhorn", {8, 2, 32, false, 0}, json::object(), ""})["block"], 8);
  EXPECT_EQ(validate_attention({"sinkhorn", {8, 2, 8, false, 0}, json::object(), ""})["block"], 2);
  EXPECT_EQ(validate_attention({"sinkhorn", {8, 2, 3, false, 0}, json::object(), ""})["block"], 1);
  // The sort network's output: h · ⌈max_len / b⌉ partner scores per block.
  ParamArena<float> arena;
  make_attention<float>({"sinkhorn", {8, 2, 10, false, 0}, {{"block", 4}}, "l."}, arena);
  EXPECT_EQ(arena.info(arena.find("l.sort_net.out.weight")).shape, (std::vector<int64_t>{6, 8}));
  EXPECT_GE(arena.find("l.sort_net.hidden.weight"), 0);
  ParamArena<float> linear;
  make_attention<float>({"sinkhorn", {8, 2, 10, false, 0}, {{"sort_net", "linear"}}, ""}, linear);
  EXPECT_LT(linear.find("sort_net.hidden.weight"), 0);
}

TEST(SinkhornAttention, RefusesBadConfigurations) {
  ParamArena<float> arena;
  auto make = [&](const json& options, int64_t max_len = 8, double dropout = 0) {
    return make_attention<float>({"sinkhorn", {8, 2, max_len, false, dropout}, options, ""}, arena);
  };
  EXPECT_THROW(make({{"block", 0}}), InvalidArgument);
  EXPECT_THROW(make({{"block", -2}}), InvalidArgument);
  EXPECT_THROW(make({{"block", 9}}), InvalidArgument);  // more than max_len
  EXPECT_THROW(make({{"block", "4"}}), InvalidArgument);
  EXPECT_THROW(make({{"block", 2.5}}), InvalidArgument);
  EXPECT_THROW(make({{"sinkhorn_iters", 0}}), InvalidArgument);
  EXPECT_THROW(make({{"sinkhorn_iters", 101}}), InvalidArgument);
  EXPECT_THROW(make({{"temperature", 0}}), InvalidArgument);
  EXPECT_THROW(make({{"temperature", -0.5}}), InvalidArgument);
  EXPECT_THROW(make({{"temperature", "hot"}}), InvalidArgument);
  EXPECT_THROW(make({{"sort_net", "conv"}}), InvalidArgument);
  EXPECT_THROW(make({{"qkv_bias", 1}}), InvalidArgument);
  EXPECT_THROW(make({{"gumbel_noise", "yes"}}), InvalidArgument);
  EXPECT_THROW(make({{"non_permutative", 0}}), InvalidArgument);
  EXPECT_THROW(make({{"k", 4}}), InvalidArgument);  // unknown option
  EXPECT_THROW(make(json::object(), 8, 1.0), InvalidArgument);
  try {
    make({{"temperature", 0}});
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("temperature"), std::string::npos) << e.what();
  }
  // Longer than max_len; cross-attention.
  AttentionCase small = sk_case(6, false);
  AttentionRig<float> layer(small);
  AttentionCase longer = sk_case(9, false);
  AttentionRig<float> rig(longer);
  std::vector<float> out(rig.out.size());
  EXPECT_THROW(layer.layer->forward(rig.input(longer), out.data(), false, 0), InvalidArgument);
  AttentionCase cross = sk_case(6, false);
  cross.m = 6;
  AttentionRig<float> crig(cross);
  EXPECT_THROW(crig.forward(cross), InvalidArgument);
}

}  // namespace
}  // namespace lf
