// Scaled dot-product attention (shared by full and Linformer): fast path vs reference, gradients.
#include <cmath>

#include "attention/sdpa.h"
#include "linformer/error.h"
#include "test_util.h"

namespace lf {
namespace {

struct SdpaCase {
  int64_t B, n, mk, h, hk, d_h;
  bool causal, mask;
  double dropout;
};

class SdpaTest : public ::testing::TestWithParam<SdpaCase> {};

SdpaShape make_shape(const SdpaCase& c, std::vector<uint8_t>& mask) {
  SdpaShape s{c.B, c.n, c.mk, c.h, c.hk, c.d_h, 1 / std::sqrt(double(c.d_h)), c.causal, nullptr, c.dropout, 77};
  if (c.mask) {
    mask.assign(size_t(c.B * c.mk), 0);
    for (int64_t j = c.mk - 2; j < c.mk; ++j) mask[size_t((c.B - 1) * c.mk + j)] = 1;  // last sample: 2 padded keys
    mask[0] = 1;
    s.key_mask = mask.data();
  }
  return s;
}

TEST_P(SdpaTest, FastMatchesReference) {
  const SdpaCase c = GetParam();
  std::vector<uint8_t> mask;
  const SdpaShape s = make_shape(c, mask);
  auto q = test::random_vector<float>(c.B * c.n * c.h * c.d_h, 1, -2, 2);
  auto k = test::random_vector<float>(c.B * c.mk * c.hk * c.d_h, 2, -2, 2);
  auto v = test::random_vector<float>(c.B * c.mk * c.hk * c.d_h, 3);
  std::vector<float> probs(size_t(c.B * c.h * c.n * c.mk)), out(q.size()), ref(q.size());
  sdpa_forward(s, q.data(), k.data(), v.data(), probs.data(), out.data());
  sdpa_forward_ref(s, q.data(), k.data(), v.data(), ref.data());
  LF_EXPECT_CLOSE(out.data(), ref.data(), int64_t(out.size()), 1e-5);
}

TEST_P(SdpaTest, GradientsMatchFiniteDifferences) {
  const SdpaCase c = GetParam();
  std::vector<uint8_t> mask;
  const SdpaShape s = make_shape(c, mask);
  auto q = test::random_vector<double>(c.B * c.n * c.h * c.d_h, 1, -2, 2);
  auto k = test::random_vector<double>(c.B * c.mk * c.hk * c.d_h, 2, -2, 2);
  auto v = test::random_vector<double>(c.B * c.mk * c.hk * c.d_h, 3);
  const auto w = test::random_vector<double>(int64_t(q.size()), 4);
  std::vector<double> probs(size_t(c.B * c.h * c.n * c.mk)), out(q.size());
  auto loss = [&] {
    sdpa_forward(s, q.data(), k.data(), v.data(), probs.data(), out.data());
    return test::weighted_sum(out.data(), w.data(), int64_t(w.size()));
  };
  loss();
  std::vector<double> dq(q.size()), dk(k.size()), dv(v.size()), scratch(size_t(2 * c.n * c.mk));
  sdpa_backward(s, q.data(), k.data(), v.data(), probs.data(), w.data(), dq.data(), dk.data(), dv.data(), scratch.data());
  test::expect_gradient_matches(loss, q.data(), int64_t(q.size()), dq.data(), "q");
  test::expect_gradient_matches(loss, k.data(), int64_t(k.size()), dk.data(), "k");
  test::expect_gradient_matches(loss, v.data(), int64_t(v.size()), dv.data(), "v");
}

// The backward that recomputes the probabilities (probs == null) equals the one that reads the
// stored ones bit for bit, for every shape (masks, one kv head, dropout).
TEST_P(SdpaTest, RecomputedProbabilitiesGiveIdenticalGradients) {
  const SdpaCase c = GetParam();
  std::vector<uint8_t> mask;
  const SdpaShape s = make_shape(c, mask);
  auto q = test::random_vector<float>(c.B * c.n * c.h * c.d_h, 1, -2, 2);
  auto k = test::random_vector<float>(c.B * c.mk * c.hk * c.d_h, 2, -2, 2);
  auto v = test::random_vector<float>(c.B * c.mk * c.hk * c.d_h, 3);
  const auto dout = test::random_vector<float>(int64_t(q.size()), 4);
  std::vector<float> probs(size_t(c.B * c.h * c.n * c.mk)), out(q.size());
  sdpa_forward(s, q.data(), k.data(), v.data(), probs.data(), out.data());
  std::vector<float> grads[2][3];
  for (int recompute = 0; recompute < 2; ++recompute) {
    std::vector<float> scratch(size_t(sdpa_backward_scratch(s, recompute == 1)));
    auto& [dq, dk, dv] = grads[recompute];
    dq.resize(q.size());
    dk.resize(k.size());
    dv.resize(v.size());
    sdpa_backward<float>(s, q.data(), k.data(), v.data(), recompute ? nullptr : probs.data(), dout.data(), dq.data(), dk.data(),
                  dv.data(), scratch.data());
  }
  for (int t = 0; t < 3; ++t) EXPECT_EQ(grads[0][t], grads[1][t]) << "tensor " << t;
}

INSTANTIATE_TEST_SUITE_P(Shapes, SdpaTest,
                         ::testing::Values(SdpaCase{1, 5, 7, 2, 2, 3, false, false, 0},
                                           SdpaCase{2, 6, 6, 3, 3, 4, true, false, 0},
                                           SdpaCase{2, 5, 9, 2, 2, 3, false, true, 0},
                                           SdpaCase{2, 6, 6, 2, 2, 3, true, true, 0},
                                           SdpaCase{2, 4, 5, 4, 1, 3, false, false, 0},  // one kv head
                                           SdpaCase{2, 6, 5, 2, 1, 4, false, true, 0.3}));

// A decoding step's queries: positions [q_start, mk) of a causal call over mk keys. The reference's
// rows equal those of the whole call (the definition), and the fast path equals the reference.
TEST(Sdpa, QueriesAfterCachedKeysAreTheLastRowsOfTheWholeCall) {
  const int64_t B = 2, mk = 23, h = 2, hk = 2, d_h = 4, ld = h * d_h;
  const auto q = test::random_vector<double>(B * mk * ld, 1, -2, 2);
  const auto k = test::random_vector<double>(B * mk * ld, 2, -2, 2), v = test::random_vector<double>(B * mk * ld, 3);
  const SdpaShape whole{B, mk, mk, h, hk, d_h, 0.5, true, nullptr, 0, 0};
  std::vector<double> all(q.size());
  sdpa_forward_ref(whole, q.data(), k.data(), v.data(), all.data());
  for (const int64_t q_start : {0, 1, 15, 22}) {
    SCOPED_TRACE(str_cat("q_start ", q_start));
    const int64_t n = mk - q_start;
    SdpaShape s = whole;
    s.n = n;
    s.q_start = q_start;
    std::vector<double> qs(size_t(B * n * ld)), want(qs.size()), ref(qs.size()), out(qs.size()),
        probs(size_t(n * mk));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t e = 0; e < n * ld; ++e) {
        qs[size_t(b * n * ld + e)] = q[size_t((b * mk + q_start) * ld + e)];
        want[size_t(b * n * ld + e)] = all[size_t((b * mk + q_start) * ld + e)];
      }
    sdpa_forward_ref(s, qs.data(), k.data(), v.data(), ref.data());
    LF_EXPECT_CLOSE(ref.data(), want.data(), int64_t(ref.size()), 1e-14);
    sdpa_forward(s, qs.data(), k.data(), v.data(), probs.data(), out.data(), /*keep_probs=*/false);
    LF_EXPECT_CLOSE(out.data(), ref.data(), int64_t(ref.size()), 1e-12);
  }
  // Keys that do not end at the last query, and an offset without the causal mask, are refused.
  SdpaShape bad = whole;
  bad.n = 3;
  bad.q_start = 19;
  std::vector<double> probs(size_t(3 * mk)), out(size_t(B * 3 * ld));
  EXPECT_THROW(sdpa_forward(bad, q.data(), k.data(), v.data(), probs.data(), out.data(), false), InvalidArgument);
  bad.q_start = 20;
  bad.causal = false;
  EXPECT_THROW(sdpa_forward(bad, q.data(), k.data(), v.data(), probs.data(), out.data(), false), InvalidArgument);
}

TEST(Sdpa, FullyMaskedRowGivesZerosNotNaN) {
  const SdpaCase c{1, 3, 4, 1, 1, 2, false, false, 0};
  std::vector<uint8_t> mask(4, 1);
  SdpaShape s{c.B, c.n, c.mk, c.h, c.hk, c.d_h, 1.0, false, mask.data(), 0, 0};
  auto q = test::random_vector<float>(6, 1), k = test::random_vector<float>(8, 2), v = test::random_vector<float>(8, 3);
  std::vector<float> probs(12), out(6);
  sdpa_forward(s, q.data(), k.data(), v.data(), probs.data(), out.data());
  for (float o : out) EXPECT_EQ(o, 0.0f);
}

}  // namespace
}  // namespace lf
