// What every registered kind must satisfy with its default options, so that a kind added to the
// registry is checked without a line here: gradients against central differences in double (plain,
// causal where supported, with padded keys where supported), float results (the fast paths and the
// GEMM backend) bitwise independent of the thread count, and a row in docs/attention.md's table of
// kinds with a section of its own. Each kind's own test file checks its formula against a plain
// reference and its other options.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "attention/attention_test_util.h"
#include "cpu/gemm.h"

namespace lf {
namespace {

using test::AttentionCase;

const AttentionKindInfo& info_of(const std::string& kind) { return AttentionRegistry::instance().get(kind).info; }

// B = 2 sequences of max_len positions, the last key of the first one padded when `masked`.
AttentionCase every_kind_case(const std::string& kind, AttentionDims dims, bool masked) {
  AttentionCase c;
  c.kind = kind;
  c.dims = dims;
  c.B = 2;
  c.n = dims.max_len;
  if (masked) {
    c.mask.assign(size_t(c.B * c.n), 0);
    c.mask[size_t(c.n - 1)] = 1;
  }
  return c;
}

class EveryKind : public testing::TestWithParam<std::string> {};

TEST_P(EveryKind, GradientsMatchFiniteDifferences) {
  const AttentionKindInfo& info = info_of(GetParam());
  for (const bool causal : {false, true})
    for (const bool masked : {false, true}) {
      if ((causal && !info.support.causal) || (masked && !info.support.key_padding_mask)) continue;
      SCOPED_TRACE(std::string(causal ? "causal" : "bidirectional") + (masked ? ", padded key" : ""));
      test::check_attention_gradients(every_kind_case(GetParam(), AttentionDims{8, 2, 8, causal, 0.0}, masked));
    }
}

TEST_P(EveryKind, FloatResultsIndependentOfThreads) {
  const AttentionKindInfo& info = info_of(GetParam());
  // Large enough for every parallel loop, tile and chunk to split (d 64, 4 heads, 160 positions).
  for (const bool causal : {false, true}) {
    if (causal && !info.support.causal) continue;
    SCOPED_TRACE(causal ? "causal" : "bidirectional");
    test::expect_results_independent_of_threads<float>(
        every_kind_case(GetParam(), AttentionDims{64, 4, 160, causal, 0.0}, info.support.key_padding_mask));
  }
}

// ‖a − b‖ / ‖b‖ over all entries.
double relative_distance(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    norm += double(b[i]) * b[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-300));
}

// bf16 mixed precision (--precision bf16) reaches every kind through its products: the output, the
// input gradient and the parameter gradients move off fp32's (the products are rounded) but stay
// within bf16's precision of them, and stay independent of the thread count.
TEST_P(EveryKind, Bf16ProductsStayCloseToFp32) {
  if (const std::string why = precision_unsupported_reason(Precision::bf16); !why.empty()) GTEST_SKIP() << why;
  // `routing`'s balanced windows are top-w ranks, which bf16's rounding moves across a window's border:
  // test_routing.cpp checks bf16 with the routing held (Routing.Bf16ProductsStayCloseToFp32WithTheRoutingHeld).
  if (GetParam() == "routing") GTEST_SKIP() << "bf16 rounding changes the discrete routing; checked in test_routing.cpp";
  const AttentionKindInfo& info = info_of(GetParam());
  const AttentionCase c = every_kind_case(GetParam(), AttentionDims{64, 4, 96, false, 0.0}, info.support.key_padding_mask);
  // At these sizes most products are below the size bound that keeps small ones fp32: run all in bf16.
  struct EveryShape {
    EveryShape() { set_gemm_bf16_every_shape(true); }
    ~EveryShape() { set_gemm_bf16_every_shape(false); }
  } every_shape;
  std::vector<float> out[2], dx[2], grads[2];
  for (const Precision p : {Precision::fp32, Precision::bf16}) {
    const int i = p == Precision::bf16;
    const RuntimeScope scope(RuntimeOptions{0, 0, p});
    test::AttentionRig<float> rig(c);
    rig.forward(c);
    const auto w = test::random_vector<float>(int64_t(rig.out.size()), 7);
    dx[i].resize(rig.x.size());
    rig.arena.zero_grad();
    rig.layer->backward(w.data(), dx[i].data());
    out[i] = rig.out;
    grads[i].assign(rig.arena.grads(), rig.arena.grads() + rig.arena.numel());
  }
  // bf16 keeps 8 bits of mantissa (relative rounding 2⁻⁹ per operand); errors of chained products add
  // up to at most 0.5 % on these sizes (measured over every kind), against O(1) for a wrong result.
  EXPECT_NE(out[1], out[0]) << "the products did not run in bf16";
  EXPECT_LT(relative_distance(out[1], out[0]), 0.02);
  EXPECT_LT(relative_distance(dx[1], dx[0]), 0.02);
  EXPECT_LT(relative_distance(grads[1], grads[0]), 0.02);
  test::expect_results_independent_of_threads<float>(c, {}, Precision::bf16);
}

// docs/attention.md has a row in its table of kinds, linked to a section headed with the kind's name.
TEST_P(EveryKind, IsDocumented) {
  std::ifstream file(std::string(LINFORMER_SOURCE_DIR) + "/docs/attention.md");
  ASSERT_TRUE(file.good());
  std::stringstream text;
  text << file.rdbuf();
  const std::string& kind = GetParam();
  EXPECT_NE(text.str().find("\n| [`" + kind + "`](#" + kind + ") |"), std::string::npos)
      << "docs/attention.md has no row '| [`" << kind << "`](#" << kind << ") | ...' in its table of kinds";
  EXPECT_NE(text.str().find("\n## `" + kind + "`\n"), std::string::npos)
      << "docs/attention.md has no section '## `" << kind << "`'";
}

INSTANTIATE_TEST_SUITE_P(AllKinds, EveryKind, testing::ValuesIn(AttentionRegistry::instance().names()),
                         [](const testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace lf
