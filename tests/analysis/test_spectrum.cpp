// The spectrum analysis (src/analysis/spectrum.h) against plain references: singular values of
// matrices with known ones, the cumulative curve of a matrix of known rank, the best rank-k error,
// the context mapping of one head (also causal), Linformer's output with fixed projections, and the
// context-mapping matrix of a tiny model against one computed from its weights by hand.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "analysis/spectrum.h"
#include "linformer/arena.h"
#include "linformer/error.h"
#include "linformer/model.h"
#include "linformer/rng.h"
#include "test_util.h"

namespace lf {
namespace {

using test::random_vector;

// A (n, n) row-stochastic matrix of rank r: A (n, r) · B (r, n) with every row of A and of B a
// probability vector (so P's rows sum to 1, as a softmax's do); generic random entries make the rank
// exactly r.
std::vector<double> stochastic_rank_r(int64_t n, int64_t r, uint64_t seed) {
  std::vector<double> A = random_vector(n * r, seed, 0.1, 1.0), B = random_vector(r * n, seed + 1, 0.1, 1.0);
  auto normalise_rows = [](std::vector<double>& m, int64_t rows, int64_t cols) {
    for (int64_t i = 0; i < rows; ++i) {
      double s = 0;
      for (int64_t j = 0; j < cols; ++j) s += m[size_t(i * cols + j)];
      for (int64_t j = 0; j < cols; ++j) m[size_t(i * cols + j)] /= s;
    }
  };
  normalise_rows(A, n, r);
  normalise_rows(B, r, n);
  std::vector<double> P(size_t(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t t = 0; t < r; ++t)
      for (int64_t j = 0; j < n; ++j) P[size_t(i * n + j)] += A[size_t(i * r + t)] * B[size_t(t * n + j)];
  return P;
}

TEST(Spectrum, SingularValuesOfKnownMatrices) {
  // [[3, 0], [4, 5]]: AᵀA = [[25, 20], [20, 25]] has eigenvalues 45 and 5.
  const std::vector<double> s = singular_values({3, 0, 4, 5}, 2, 2);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_NEAR(s[0], std::sqrt(45.0), 1e-12);
  EXPECT_NEAR(s[1], std::sqrt(5.0), 1e-12);
  // A rectangular (2, 3) matrix with orthogonal rows of norms 2 and 7 (and a sign): σ = 7, 2.
  const std::vector<double> r = singular_values({0, 2, 0, -7, 0, 0}, 2, 3);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_NEAR(r[0], 7.0, 1e-12);
  EXPECT_NEAR(r[1], 2.0, 1e-12);
}

TEST(Spectrum, CumulativeReachesOneAtTheRankAndNotBefore) {
  const int64_t n = 40;
  for (int64_t r : {1, 3, 7, 20}) {
    SCOPED_TRACE("rank " + std::to_string(r));
    const std::vector<double> sigma = singular_values(stochastic_rank_r(n, r, 10 + uint64_t(r)), n, n);
    ASSERT_EQ(int64_t(sigma.size()), n);
    EXPECT_TRUE(std::is_sorted(sigma.rbegin(), sigma.rend())) << "largest first";
    const std::vector<double> c = normalized_cumulative(sigma);
    EXPECT_NEAR(c[size_t(r - 1)], 1.0, 1e-12) << "c_r = 1 for a matrix of rank r";
    if (r > 1) {
      EXPECT_LT(c[size_t(r - 2)], 1.0 - 1e-6) << "a generic rank-r matrix is not reached before r";
    }
    for (size_t i = 1; i < c.size(); ++i) EXPECT_GE(c[i], c[i - 1]);
    EXPECT_EQ(c.back(), 1.0);
    // Its best rank-k error: 0 from k = r on, positive below.
    EXPECT_LT(best_rank_k_error(sigma, r), 1e-12);
    if (r > 1) {
      EXPECT_GT(best_rank_k_error(sigma, r - 1), 1e-6);
    }
  }
  // A stochastic matrix's largest singular value is at least 1 (its rows sum to 1: P·1 = 1).
  EXPECT_GE(singular_values(stochastic_rank_r(n, 5, 3), n, n)[0], 1.0 - 1e-12);
}

TEST(Spectrum, BestRankKErrorFromTheSingularValues) {
  const std::vector<double> sigma = {4, 3, 2, 1};  // total 30
  EXPECT_NEAR(best_rank_k_error(sigma, 0), 1.0, 1e-15);
  EXPECT_NEAR(best_rank_k_error(sigma, 1), std::sqrt(14.0 / 30.0), 1e-15);
  EXPECT_NEAR(best_rank_k_error(sigma, 3), std::sqrt(1.0 / 30.0), 1e-15);
  EXPECT_EQ(best_rank_k_error(sigma, 4), 0.0);
  EXPECT_EQ(best_rank_k_error(sigma, 9), 0.0);
  // On a full-rank random matrix: 0 at k = n and strictly decreasing in k.
  const int64_t n = 24;
  const std::vector<double> s = singular_values(random_vector(n * n, 5), n, n);
  EXPECT_EQ(best_rank_k_error(s, n), 0.0);
  for (int64_t k = 1; k <= n; ++k) EXPECT_LT(best_rank_k_error(s, k), best_rank_k_error(s, k - 1)) << "k = " << k;
  EXPECT_THROW(best_rank_k_error(s, -1), InvalidArgument);
  EXPECT_THROW(normalized_cumulative({0.0, 0.0}), InvalidArgument);
}

// softmax(q kᵀ · scale) by the definition, one entry at a time.
std::vector<double> reference_context_mapping(const std::vector<double>& q, const std::vector<double>& k, int64_t n,
                                              int64_t m, int64_t d_h, int64_t ld, double scale, bool causal) {
  std::vector<double> P(size_t(n * m), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    double denom = 0;
    for (int64_t j = 0; j < m; ++j) {
      if (causal && j > i) continue;
      double s = 0;
      for (int64_t e = 0; e < d_h; ++e) s += q[size_t(i * ld + e)] * k[size_t(j * ld + e)];
      P[size_t(i * m + j)] = std::exp(s * scale);
      denom += P[size_t(i * m + j)];
    }
    for (int64_t j = 0; j < m; ++j) P[size_t(i * m + j)] /= denom;
  }
  return P;
}

TEST(Spectrum, ContextMappingIsTheRowSoftmaxOfTheScores) {
  const int64_t n = 9, d_h = 3, ld = 5;  // one head's 3 columns inside rows of 5
  const std::vector<double> q = random_vector(n * ld, 1, -2, 2), k = random_vector(n * ld, 2, -2, 2);
  for (bool causal : {false, true}) {
    std::vector<double> P(size_t(n * n));
    context_mapping(q.data(), ld, k.data(), ld, n, n, d_h, 0.7, causal, P.data());
    const std::vector<double> ref = reference_context_mapping(q, k, n, n, d_h, ld, 0.7, causal);
    EXPECT_LT(test::max_rel_error(P.data(), ref.data(), n * n), 1e-14) << (causal ? "causal" : "bidirectional");
    if (causal) {
      EXPECT_EQ(P[size_t(0 * n + 1)], 0.0);
    }
  }
}

TEST(Spectrum, GaussianProjectionHasVarianceOneOverK) {
  const int64_t k = 32, n = 512;
  const std::vector<double> R = gaussian_projection(k, n, 3, 11);
  double mean = 0, var = 0;
  for (double v : R) mean += v;
  mean /= double(R.size());
  for (double v : R) var += (v - mean) * (v - mean);
  var /= double(R.size());
  EXPECT_NEAR(mean, 0.0, 0.01);
  EXPECT_NEAR(var * k, 1.0, 0.03);
  EXPECT_EQ(R, gaussian_projection(k, n, 3, 11)) << "a pure function of (seed, stream)";
  EXPECT_NE(R, gaussian_projection(k, n, 3, 12));
}

TEST(Spectrum, LinformerFixedOutputMatchesThePlainFormula) {
  const int64_t n = 11, d_h = 4, ld = 6, k = 5;
  const double delta = 0.7, scale = 0.5;
  const std::vector<double> q = random_vector(n * ld, 21, -1.5, 1.5), kx = random_vector(n * ld, 22, -1.5, 1.5),
                            v = random_vector(n * ld, 23);
  const std::vector<double> R = gaussian_projection(k, n, 9, 4);
  std::vector<double> out(size_t(n * d_h));
  linformer_fixed_output(q.data(), kx.data(), v.data(), n, d_h, ld, R.data(), k, delta, scale, out.data());

  // Ō = softmax(Q (δ R K)ᵀ · scale) (e^{−δ} R V), entry by entry.
  std::vector<double> ref(size_t(n * d_h), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> w(static_cast<size_t>(k));
    double denom = 0;
    for (int64_t t = 0; t < k; ++t) {
      double s = 0;
      for (int64_t e = 0; e < d_h; ++e) {
        double ek = 0;
        for (int64_t j = 0; j < n; ++j) ek += delta * R[size_t(t * n + j)] * kx[size_t(j * ld + e)];
        s += q[size_t(i * ld + e)] * ek;
      }
      w[size_t(t)] = std::exp(s * scale);
      denom += w[size_t(t)];
    }
    for (int64_t e = 0; e < d_h; ++e)
      for (int64_t t = 0; t < k; ++t) {
        double fv = 0;
        for (int64_t j = 0; j < n; ++j) fv += std::exp(-delta) * R[size_t(t * n + j)] * v[size_t(j * ld + e)];
        ref[size_t(i * d_h + e)] += w[size_t(t)] / denom * fv;
      }
  }
  EXPECT_LT(test::max_rel_error(out.data(), ref.data(), n * d_h), 1e-13);
}

TEST(Spectrum, RelativeError) {
  const std::vector<double> b = {3, 4}, a = {3, 5};
  EXPECT_NEAR(relative_error(a.data(), b.data(), 2), 0.2, 1e-15);
  EXPECT_EQ(relative_error(b.data(), b.data(), 2), 0.0);
}

TEST(Spectrum, DefaultKListAndOptions) {
  EXPECT_EQ(default_k_list(16), (std::vector<int64_t>{1, 2, 4, 8, 16}));
  EXPECT_EQ(default_k_list(20), (std::vector<int64_t>{1, 2, 4, 8, 16, 20}));
  EXPECT_EQ(default_k_list(1), (std::vector<int64_t>{1}));
  SpectrumOptions o;
  o.k_list = {2, 8};
  EXPECT_NO_THROW(validate_spectrum_options(o, 8));
  EXPECT_THROW(validate_spectrum_options(o, 7), InvalidArgument);
  o.k_list = {4, 2};
  EXPECT_THROW(validate_spectrum_options(o, 8), InvalidArgument);
  o.k_list = {0};
  EXPECT_THROW(validate_spectrum_options(o, 8), InvalidArgument);
  o.k_list = {};
  o.delta = 0;
  EXPECT_THROW(validate_spectrum_options(o, 8), InvalidArgument);
}

// ---- A tiny model ---------------------------------------------------------------------------------

ModelConfig exact_config(bool pre_ln, const std::string& task = "mlm") {
  ModelConfig c;
  c.task = task;
  c.vocab_size = 260;
  c.d_model = 12;
  c.n_layers = 2;
  c.n_heads = 3;
  c.d_ff = 24;
  c.max_len = 16;
  c.pre_ln = pre_ln;
  c.attention = {LayerAttention{"full", json{{"qkv_bias", true}}}, LayerAttention{"flash", json::object()}};
  return c;
}

std::vector<double> param(const ParamArena<float>& arena, const std::string& name) {
  const int id = arena.find(name);
  EXPECT_GE(id, 0) << name;
  const float* v = arena.value(id);
  return std::vector<double>(v, v + arena.info(id).numel);
}

// The P of layer 0, head h, computed from the weights alone: x = tok + pos embeddings, LN1 (pre-LN) or
// the embeddings' LayerNorm (post-LN), then Q, K with to_q/to_k and the row softmax.
std::vector<double> layer0_reference_P(const ParamArena<float>& arena, const ModelConfig& c,
                                       const std::vector<int32_t>& tokens, int64_t h) {
  const int64_t n = int64_t(tokens.size()), d = c.d_model, d_h = d / c.n_heads;
  const std::vector<double> tok = param(arena, "embeddings.token.weight"), pos = param(arena, "embeddings.position.weight");
  const std::string norm = c.pre_ln ? "layers.0.attn_norm." : "embeddings.norm.";
  const std::vector<double> g = param(arena, norm + "weight"), beta = param(arena, norm + "bias");
  std::vector<double> x(size_t(n * d));
  for (int64_t t = 0; t < n; ++t) {
    double mean = 0, var = 0;
    for (int64_t e = 0; e < d; ++e) {
      x[size_t(t * d + e)] = tok[size_t(tokens[size_t(t)] * d + e)] + pos[size_t(t * d + e)];
      mean += x[size_t(t * d + e)] / double(d);
    }
    for (int64_t e = 0; e < d; ++e) var += (x[size_t(t * d + e)] - mean) * (x[size_t(t * d + e)] - mean) / double(d);
    for (int64_t e = 0; e < d; ++e)
      x[size_t(t * d + e)] = (x[size_t(t * d + e)] - mean) / std::sqrt(var + c.ln_eps) * g[size_t(e)] + beta[size_t(e)];
  }
  const std::vector<double> wq = param(arena, "layers.0.attn.to_q.weight"), wk = param(arena, "layers.0.attn.to_k.weight");
  const std::vector<double> bq = param(arena, "layers.0.attn.to_q.bias"), bk = param(arena, "layers.0.attn.to_k.bias");
  std::vector<double> q(size_t(n * d_h)), k(size_t(n * d_h));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t e = 0; e < d_h; ++e) {
      const int64_t o = h * d_h + e;  // output feature of the head
      double sq = bq[size_t(o)], sk = bk[size_t(o)];
      for (int64_t i = 0; i < d; ++i) {
        sq += wq[size_t(o * d + i)] * x[size_t(t * d + i)];
        sk += wk[size_t(o * d + i)] * x[size_t(t * d + i)];
      }
      q[size_t(t * d_h + e)] = sq;
      k[size_t(t * d_h + e)] = sk;
    }
  return reference_context_mapping(q, k, n, n, d_h, d_h, 1.0 / std::sqrt(double(d_h)), c.task == "clm");
}

TEST(SpectrumModel, ContextMappingOfLayer0MatchesTheWeights) {
  for (bool pre_ln : {true, false})
    for (const std::string task : {"mlm", "clm"}) {
      SCOPED_TRACE(std::string(pre_ln ? "pre-LN " : "post-LN ") + task);
      const ModelConfig c = exact_config(pre_ln, task);
      ParamArena<float> arena;
      Model<float> model(c, arena);
      arena.allocate(false);
      arena.initialize(5);
      const std::vector<int32_t> tokens = {72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 33};
      const int64_t n = int64_t(tokens.size()), d = c.d_model, d_h = d / c.n_heads;
      std::vector<std::vector<double>> qkv;
      model.set_attention_input_observer([&](int64_t layer, const float* x, int64_t B, int64_t len) {
        if (layer == 0) qkv = attention_qkv(arena, 0, d, x, len);
        EXPECT_EQ(B, 1);
      });
      model.forward(tokens.data(), nullptr, 1, n, false, 0, false);
      ASSERT_EQ(qkv.size(), 3u);
      for (int64_t h = 0; h < c.n_heads; ++h) {
        std::vector<double> P(size_t(n * n));
        context_mapping(qkv[0].data() + h * d_h, d, qkv[1].data() + h * d_h, d, n, n, d_h, 1.0 / std::sqrt(double(d_h)),
                        task == "clm", P.data());
        const std::vector<double> ref = layer0_reference_P(arena, c, tokens, h);
        // The model's attention input is float (LN in float): agreement to float rounding.
        EXPECT_LT(test::max_rel_error(P.data(), ref.data(), n * n), 1e-5) << "head " << h;
      }
    }
}

TEST(SpectrumModel, AnalysisOfATinyModelIsConsistent) {
  const ModelConfig c = exact_config(true);
  ParamArena<float> arena;
  Model<float> model(c, arena);
  arena.allocate(false);
  arena.initialize(7);
  const int64_t n = 16, S = 3;
  std::vector<std::vector<int32_t>> seqs(S);
  for (int64_t s = 0; s < S; ++s)
    for (int64_t t = 0; t < n; ++t) seqs[size_t(s)].push_back(int32_t(97 + (s * 7 + t * 3) % 26));
  SpectrumOptions opt;
  opt.k_list = {1, 4, 16};
  const SpectrumResult r = analyse_spectrum(model, arena, seqs, opt);
  ASSERT_EQ(r.n, n);
  ASSERT_EQ(r.cumulative.size(), size_t(c.n_layers * c.n_heads * S * n));
  for (int64_t l = 0; l < c.n_layers; ++l)
    for (int64_t h = 0; h < c.n_heads; ++h)
      for (int64_t s = 0; s < S; ++s) {
        const size_t at = r.slot(l, h, s);
        EXPECT_EQ(r.cumulative[at * size_t(n) + size_t(n - 1)], 1.0);
        EXPECT_EQ(r.rank_k_error[at * 3 + 2], 0.0) << "k = n";
        EXPECT_GT(r.rank_k_error[at * 3 + 0], r.rank_k_error[at * 3 + 1]);
        for (int j = 0; j < 3; ++j) EXPECT_TRUE(std::isfinite(r.linformer_error[at * 3 + size_t(j)]));
      }
  // The same seed gives the same numbers; the observer is removed afterwards.
  const SpectrumResult again = analyse_spectrum(model, arena, seqs, opt);
  EXPECT_EQ(again.linformer_error, r.linformer_error);
  EXPECT_EQ(again.cumulative, r.cumulative);
}

TEST(SpectrumModel, RefusesAttentionThatIsNotExact) {
  ModelConfig c = exact_config(true);
  c.attention = {LayerAttention{"full", json::object()}, LayerAttention{"linformer", json{{"k", 4}}}};
  try {
    require_exact_attention(c);
    FAIL() << "a linformer layer was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("layer 1 is 'linformer'"), std::string::npos) << e.what();
  }
  c = exact_config(true, "classify");
  c.n_classes = 2;
  EXPECT_THROW(require_exact_attention(c), InvalidArgument);
  EXPECT_NO_THROW(require_exact_attention(exact_config(false)));
}

}  // namespace
}  // namespace lf
