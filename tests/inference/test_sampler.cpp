// The sampler: exact truncation on small logit vectors, greedy at temperature 0, the penalty, the
// drawn frequencies against the distribution, and the same seed giving the same draws.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "linformer/error.h"
#include "linformer/sampling.h"

namespace lf {
namespace {

SamplingOptions opts(double temperature, int64_t top_k, double top_p, double penalty = 1.0, uint64_t seed = 1) {
  SamplingOptions o;
  o.temperature = temperature;
  o.top_k = top_k;
  o.top_p = top_p;
  o.repetition_penalty = penalty;
  o.seed = seed;
  return o;
}

// softmax(z / t) in double.
std::vector<double> softmax(const std::vector<float>& z, double t) {
  std::vector<double> p(z.size());
  double s = 0;
  for (size_t i = 0; i < z.size(); ++i) s += p[i] = std::exp(z[i] / t);
  for (double& v : p) v /= s;
  return p;
}

const std::vector<float> kLogits = {1.0f, 3.0f, 2.0f, 0.0f, 2.5f};  // order by probability: 1, 4, 2, 0, 3

TEST(Sampler, TemperatureZeroIsGreedy) {
  Sampler s(opts(0, 0, 1));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(s.next(kLogits.data(), 5), 1);
  const std::vector<double> p = s.distribution(kLogits.data(), 5);
  EXPECT_EQ(p, (std::vector<double>{0, 1, 0, 0, 0}));
}

TEST(Sampler, NoTruncationIsTheSoftmaxOfTheTemperedLogits) {
  const std::vector<double> p = Sampler(opts(0.7, 0, 1)).distribution(kLogits.data(), 5);
  const std::vector<double> want = softmax(kLogits, 0.7);
  for (size_t i = 0; i < 5; ++i) EXPECT_NEAR(p[i], want[i], 1e-12) << i;
}

TEST(Sampler, TopKKeepsExactlyTheKMostLikely) {
  const std::vector<double> p = Sampler(opts(1, 2, 1)).distribution(kLogits.data(), 5);
  const double z = std::exp(3.0) + std::exp(2.5);
  EXPECT_NEAR(p[1], std::exp(3.0) / z, 1e-12);
  EXPECT_NEAR(p[4], std::exp(2.5) / z, 1e-12);
  EXPECT_EQ(p[0], 0);
  EXPECT_EQ(p[2], 0);
  EXPECT_EQ(p[3], 0);
}

TEST(Sampler, TopPKeepsTheSmallestPrefixReachingP) {
  const std::vector<double> full = softmax(kLogits, 1);
  // Just above the top two's mass: the third (id 2) is needed; just below it: not.
  const double two = full[1] + full[4];
  std::vector<double> p = Sampler(opts(1, 0, two + 1e-6)).distribution(kLogits.data(), 5);
  EXPECT_GT(p[2], 0);
  EXPECT_EQ(p[0], 0);
  EXPECT_NEAR(p[1], full[1] / (two + full[2]), 1e-12);
  p = Sampler(opts(1, 0, two - 1e-6)).distribution(kLogits.data(), 5);
  EXPECT_EQ(p[2], 0);
  EXPECT_NEAR(p[1] + p[4], 1.0, 1e-12);
  // A p below the top token's probability keeps that token alone.
  p = Sampler(opts(1, 0, 0.01)).distribution(kLogits.data(), 5);
  EXPECT_EQ(p, (std::vector<double>{0, 1, 0, 0, 0}));
}

TEST(Sampler, TopKThenTopP) {
  // top_k = 3 keeps ids 1, 4, 2; top_p over their renormalised mass is what a user of both expects
  // from HF's order (k first); with p = 1 nothing more is cut.
  const std::vector<double> p = Sampler(opts(1, 3, 1)).distribution(kLogits.data(), 5);
  EXPECT_EQ(p[0], 0);
  EXPECT_EQ(p[3], 0);
  EXPECT_NEAR(p[1] + p[4] + p[2], 1.0, 1e-12);
}

TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  const std::vector<float> z = {2.0f, -1.0f, 0.5f};
  const std::vector<double> p = Sampler(opts(1, 0, 1, 2.0)).distribution(z.data(), 3, {0, 1, 0});
  const std::vector<double> want = softmax({1.0f, -2.0f, 0.5f}, 1);
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(p[i], want[i], 1e-12) << i;
  // Greedy with a strong penalty leaves the repeated token.
  Sampler g(opts(0, 0, 1, 10.0));
  EXPECT_EQ(g.next(z.data(), 3, {0}), 2);
}

TEST(Sampler, DrawsFollowTheDistribution) {
  Sampler s(opts(1.0, 0, 1, 1.0, 7));
  const std::vector<double> want = softmax(kLogits, 1);
  const int draws = 20000;
  std::vector<int> count(5, 0);
  for (int i = 0; i < draws; ++i) ++count[size_t(s.next(kLogits.data(), 5))];
  for (size_t i = 0; i < 5; ++i) {
    const double sd = std::sqrt(want[i] * (1 - want[i]) / draws);
    EXPECT_NEAR(double(count[i]) / draws, want[i], 5 * sd) << "id " << i;
  }
  // Truncated ids are never drawn.
  Sampler k(opts(1.0, 2, 1, 1.0, 7));
  for (int i = 0; i < 2000; ++i) {
    const int32_t id = k.next(kLogits.data(), 5);
    ASSERT_TRUE(id == 1 || id == 4) << id;
  }
}

TEST(Sampler, SameSeedSameDrawsOtherSeedOtherDraws) {
  auto draw = [](uint64_t seed) {
    Sampler s(opts(1.0, 0, 1, 1.0, seed));
    std::vector<int32_t> ids;
    for (int i = 0; i < 64; ++i) ids.push_back(s.next(kLogits.data(), 5));
    return ids;
  };
  EXPECT_EQ(draw(3), draw(3));
  EXPECT_NE(draw(3), draw(4));
}

TEST(Sampler, BadOptionsAreRefusedByName) {
  auto refused = [](const SamplingOptions& o, const char* name) {
    try {
      Sampler s(o);
      ADD_FAILURE() << name << " accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  };
  refused(opts(-1, 0, 1), "`temperature`");
  refused(opts(1, -1, 1), "`top_k`");
  refused(opts(1, 0, 0), "`top_p`");
  refused(opts(1, 0, 1.5), "`top_p`");
  refused(opts(1, 0, 1, 0), "`repetition_penalty`");
}

}  // namespace
}  // namespace lf
