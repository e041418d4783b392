// What every registered kind must satisfy with its default options, so that a kind added to the
// registry is checked without a line here: gradients against central differences in double (plain,
// causal where supported, with padded keys where supported), float results (the fast paths and the
// GEMM backend) bitwise independent of the thread count, and a row in docs/attention.md's table of
// kinds with a section of its own. Each kind's own test file checks its formula against a plain
// reference and its other options.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "attention/attention_test_util.h"

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
