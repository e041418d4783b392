// What every causal kind must satisfy with its default options, for generation: no output at a
// position t moves when a later input changes (bitwise, float and double); the output at t does not
// depend on how long the sequence is; and incremental decoding (Attention::decode) — a prompt's
// prefill, then one position at a time, then a chunk — gives the outputs of the parallel forward over
// the same prefix, to rounding, with the decoding mechanism docs/generation.md lists for the kind.
#include <gtest/gtest.h>

#include <map>

#include "attention/attention_test_util.h"

namespace lf {
namespace {

using test::AttentionCase;

std::vector<std::string> causal_kinds() {
  std::vector<std::string> kinds;
  for (const AttentionFactory& f : AttentionRegistry::instance().entries())
    if (f.info.support.causal) kinds.push_back(f.info.name);
  return kinds;
}

AttentionCase causal_case(const std::string& kind, int64_t n, int64_t max_len, json options = json::object()) {
  AttentionCase c;
  c.kind = kind;
  c.options = std::move(options);
  c.dims = AttentionDims{16, 2, max_len, /*causal=*/true, 0.0};
  c.B = 2;
  c.n = n;
  return c;
}

class EveryCausalKind : public testing::TestWithParam<std::string> {};

// Options whose window, block or bucket is a few positions, so that a 48-position decode passes
// through several of them (the defaults follow max_len and may cover it whole).
json small_options(const std::string& kind) {
  static const std::map<std::string, json> options = {
      {"local", {{"window", 5}}},        {"longformer", {{"window", 4}}}, {"global", {{"window", 3}}},
      {"strided", {{"stride", 4}}},      {"bigbird", {{"block", 4}}},     {"reformer", {{"bucket_size", 8}}},
      {"sinkhorn", {{"block", 8}}},      {"aft_local", {{"window", 6}}},  {"aft_conv", {{"window", 3}}},
      {"linear", {{"chunk", 8}}},        {"performer", {{"chunk", 8}}},
      {"causal_linformer", {{"block", 4}, {"slots", 2}, {"window_blocks", 1}, {"max_blocks", 3}}},
      {"routing", {{"window", 6}, {"clusters", 4}, {"local_heads", 1}}},
  };
  const auto it = options.find(kind);
  return it == options.end() ? json::object() : it->second;
}


TEST_P(EveryCausalKind, OutputsIgnoreTheFutureBitwise) {
  test::expect_outputs_ignore_the_future<float>(causal_case(GetParam(), 24, 24));
  test::expect_outputs_ignore_the_future<double>(causal_case(GetParam(), 24, 24));
}

// A short sequence's outputs are those of its positions inside a longer one (to rounding: a product
// over fewer rows may block differently), so a prefix decoded at length t is what training saw.
TEST_P(EveryCausalKind, OutputsIndependentOfTheTotalLength) {
  // 160 positions: past the kinds' default block, bucket and window sizes, and many small ones.
  for (const json& options : {json::object(), small_options(GetParam())})
    for (const int64_t part : {1, 7, 37, 64, 100, 159}) {
      SCOPED_TRACE(str_cat("prefix ", part, " of 160, options ", options.dump()));
      const auto r = test::prefix_outputs<double>(causal_case(GetParam(), 160, 160, options),
                                                  causal_case(GetParam(), part, 160, options));
      EXPECT_LE(test::max_rel_error(r.part.data(), r.full.data(), int64_t(r.full.size())), 1e-10);
    }
}

// Decodes the rig's input in chunks of `schedule` positions and compares each chunk's outputs with
// the parallel forward's rows.
template <class T>
void expect_decode_matches_forward(const std::string& kind, const json& options, const std::vector<int64_t>& schedule,
                                   double tol) {
  int64_t n = 0;
  for (int64_t c : schedule) n += c;
  const AttentionCase c = causal_case(kind, n, n, options);
  SCOPED_TRACE(test::describe(c));
  test::AttentionRig<T> rig(c);
  rig.forward(c);
  const int64_t B = c.B, d = c.dims.d_model;
  std::unique_ptr<DecodeState<T>> state = rig.layer->begin_decode(B, d);
  ASSERT_TRUE(state != nullptr);
  int64_t t = 0;
  for (const int64_t step : schedule) {
    SCOPED_TRACE(str_cat("positions ", t, "..", t + step - 1));
    std::vector<T> x(size_t(B * step * d)), out(x.size()), want(x.size());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < step * d; ++i) {
        x[size_t(b * step * d + i)] = rig.x[size_t((b * n + t) * d + i)];
        want[size_t(b * step * d + i)] = rig.out[size_t((b * n + t) * d + i)];
      }
    rig.layer->decode(*state, x.data(), step, out.data());
    ASSERT_EQ(state->length, t + step);
    ASSERT_LE(test::max_rel_error(out.data(), want.data(), int64_t(out.size())), tol);
    EXPECT_GT(state->bytes(), 0.0);
    t += step;
  }
}

TEST_P(EveryCausalKind, DecodeMatchesTheParallelForward) {
  // A 5-position prompt, 20 single steps, a chunk of 4, single steps, a chunk of 9, single steps: 48.
  std::vector<int64_t> schedule = {5};
  schedule.insert(schedule.end(), 20, 1);
  schedule.push_back(4);
  schedule.insert(schedule.end(), 6, 1);
  schedule.push_back(9);
  schedule.insert(schedule.end(), 4, 1);
  for (const json& options : {json::object(), small_options(GetParam())}) {
    expect_decode_matches_forward<double>(GetParam(), options, schedule, 1e-10);
    expect_decode_matches_forward<float>(GetParam(), options, schedule, 1e-4);
    expect_decode_matches_forward<double>(GetParam(), options, {48}, 1e-10);                        // prefill only
    expect_decode_matches_forward<double>(GetParam(), options, std::vector<int64_t>(48, 1), 1e-10);  // token by token
  }
}

// Options that change a kind's features or state decode like its forward too.
TEST(DecodeOptions, PerformerGeneralizedAndNoProjectionDecodeLikeTheForward) {
  std::vector<int64_t> schedule = {5};
  schedule.insert(schedule.end(), 12, 1);
  schedule.push_back(9);
  const json relu = {{"chunk", 8}, {"generalized_attention", true}};
  expect_decode_matches_forward<double>("performer", relu, schedule, 1e-10);
  expect_decode_matches_forward<float>("performer", relu, schedule, 1e-4);
  const json plain = {{"chunk", 8}, {"no_projection", true}};
  expect_decode_matches_forward<double>("performer", plain, schedule, 1e-10);
  expect_decode_matches_forward<float>("performer", plain, schedule, 1e-4);
}

// A prefill long enough for the parallel paths (a sparse step's pattern builds its rows in parallel
// from 1024 rows; flash runs several query and key tiles), then single steps and a chunk.
TEST(Decode, LongPrefillMatchesTheParallelForward) {
  for (const std::string kind : {"local", "bigbird", "strided", "flash", "full"}) {
    SCOPED_TRACE(kind);
    expect_decode_matches_forward<double>(kind, small_options(kind), {1100, 1, 1, 37, 1}, 1e-10);
  }
}

// The mechanism each kind decodes with (docs/generation.md's table): kRecompute only where the kind
// cannot be incremental.
TEST_P(EveryCausalKind, DecodesWithItsDocumentedMechanism) {
  static const std::map<std::string, DecodeMechanism> expected = {
      {"causal_linformer", DecodeMechanism::kCompressed},
      {"linear", DecodeMechanism::kRecurrent},
      {"performer", DecodeMechanism::kRecurrent},
      {"aft_simple", DecodeMechanism::kRecurrent},
      {"aft_full", DecodeMechanism::kKvCache},
      {"aft_local", DecodeMechanism::kWindow},
      {"aft_conv", DecodeMechanism::kWindow},
      {"full", DecodeMechanism::kKvCache},       {"flash", DecodeMechanism::kKvCache},
      {"local", DecodeMechanism::kWindow},       {"strided", DecodeMechanism::kKvCache},
      {"global", DecodeMechanism::kKvCache},     {"longformer", DecodeMechanism::kKvCache},
      {"bigbird", DecodeMechanism::kKvCache},    {"reformer", DecodeMechanism::kRecompute},
      {"sinkhorn", DecodeMechanism::kRecompute}, {"mixer", DecodeMechanism::kRecompute},
      {"synthesizer", DecodeMechanism::kRecompute}, {"routing", DecodeMechanism::kRecompute},
  };
  const AttentionCase c = causal_case(GetParam(), 8, 8);
  test::AttentionRig<float> rig(c);
  const auto it = expected.find(GetParam());
  const DecodeMechanism want = it == expected.end() ? DecodeMechanism::kRecompute : it->second;
  EXPECT_STREQ(decode_mechanism_name(rig.layer->decode_mechanism()), decode_mechanism_name(want));
}

// A recurrent or window state holds as many bytes after 200 positions as after 1: the memory of a step
// does not grow with the context. A KV cache grows, but geometrically: its size changes a few times
// (amortised appends), not at every position.
TEST_P(EveryCausalKind, DecodeStateMemoryFollowsItsMechanism) {
  const AttentionCase c = causal_case(GetParam(), 8, 256, small_options(GetParam()));
  test::AttentionRig<double> rig(c);
  const DecodeMechanism m = rig.layer->decode_mechanism();
  if (m == DecodeMechanism::kRecompute) GTEST_SKIP() << "the fallback keeps the whole input";
  const bool constant = m == DecodeMechanism::kRecurrent || m == DecodeMechanism::kWindow;
  const int64_t B = c.B, d = c.dims.d_model;
  auto state = rig.layer->begin_decode(B, d);
  std::vector<double> x(size_t(B * d)), out(x.size());
  double first = 0, last = 0;
  int changes = 0;
  for (int64_t t = 0; t < 200; ++t) {
    for (int64_t i = 0; i < B * d; ++i) x[size_t(i)] = rig.x[size_t((i + t * 7) % int64_t(rig.x.size()))];
    rig.layer->decode(*state, x.data(), 1, out.data());
    const double bytes = state->bytes();
    if (t == 0) first = last = bytes;
    if (constant) {
      ASSERT_EQ(bytes, first) << "after " << t + 1 << " positions";
    }
    ASSERT_GE(bytes, last) << "after " << t + 1 << " positions";
    changes += bytes != last;
    last = bytes;
  }
  EXPECT_GT(first, 0.0);
  if (m == DecodeMechanism::kKvCache) {
    EXPECT_GT(last, first);       // it holds the context
    EXPECT_LE(changes, 16) << "a KV cache should grow geometrically, not a copy per token";
  }
}

INSTANTIATE_TEST_SUITE_P(AllCausalKinds, EveryCausalKind, testing::ValuesIn(causal_kinds()),
                         [](const testing::TestParamInfo<std::string>& p) { return p.param; });

// The state's memory: a window (local) stays bounded however long the decode, a KV cache (full, and
// a sparse kind) grows linearly in the context, within twice the rows it holds.
TEST(Decode, WindowStateIsBoundedAndKvCacheGrowsLinearly) {
  const int64_t B = 2, d = 16, n = 400;
  for (const auto& [kind, options] : {std::pair<std::string, json>{"local", {{"window", 5}}}, {"full", json::object()},
                                      {"bigbird", {{"block", 4}}}}) {
    SCOPED_TRACE(kind);
    const AttentionCase c = causal_case(kind, 8, n, options);
    test::AttentionRig<float> rig(c);
    auto state = rig.layer->begin_decode(B, d);
    const std::vector<float> x = test::random_vector<float>(B * d, 3);
    std::vector<float> out(x.size());
    double at_100 = 0;
    for (int64_t t = 1; t <= n; ++t) {
      rig.layer->decode(*state, x.data(), 1, out.data());
      const double held = 2.0 * B * d * sizeof(float) * double(t);  // K and V of t positions
      if (kind == "local") {
        ASSERT_LE(state->bytes(), 2.0 * B * d * sizeof(float) * 2 * 16) << t;  // 2·max(w + 1, 8) rows, any t
      } else {
        ASSERT_GE(state->bytes(), held) << t;
        ASSERT_LE(state->bytes(), 2 * held + 2.0 * B * d * sizeof(float) * 16) << t;
      }
      if (t == 100) at_100 = state->bytes();
    }
    if (kind != "local") {
      EXPECT_GE(state->bytes(), 3 * at_100);  // 400 positions against 100
    }
  }
  EXPECT_THROW(test::AttentionRig<float>(causal_case("full", 8, 8)).layer->begin_decode(2, 8), InvalidArgument);
}

// The fallback's own checks: a state from another layer, and an empty step.
TEST(Decode, RefusesAForeignStateAndAnEmptyStep) {
  const AttentionCase c = causal_case("synthesizer", 8, 8);
  test::AttentionRig<float> a(c), b(c);
  auto state = a.layer->begin_decode(2, 16);
  std::vector<float> x(2 * 16), out(x.size());
  EXPECT_THROW(a.layer->decode(*state, x.data(), 0, out.data()), InvalidArgument);
  EXPECT_THROW(a.layer->begin_decode(0, 16), InvalidArgument);
}

// The incremental states' checks: a state from another kind (one with the same state class included), an
// empty step, a width or batch that begin_decode cannot take, a layer that is not causal, and for the
// kinds with a position bias a step past max_len.
TEST(Decode, IncrementalKindsRefuseBadStatesAndSteps) {
  const std::vector<std::string> kinds = {"linear", "performer", "aft_simple", "aft_full", "aft_local", "aft_conv"};
  for (const std::string& kind : kinds) {
    SCOPED_TRACE(kind);
    const AttentionCase c = causal_case(kind, 8, 8);
    test::AttentionRig<float> rig(c);
    std::vector<float> x(size_t(2 * 9 * 16)), out(x.size());
    for (const std::string& other : {std::string("synthesizer"), kind == "linear" ? std::string("performer")
                                                                 : kind == "aft_conv" ? std::string("aft_local")
                                                                                      : std::string("linear")}) {
      test::AttentionRig<float> foreign(causal_case(other, 8, 8));
      auto state = foreign.layer->begin_decode(2, 16);
      EXPECT_THROW(rig.layer->decode(*state, x.data(), 1, out.data()), InvalidArgument) << "a state of " << other;
    }
    auto state = rig.layer->begin_decode(2, 16);
    EXPECT_THROW(rig.layer->decode(*state, x.data(), 0, out.data()), InvalidArgument);
    EXPECT_THROW(rig.layer->begin_decode(2, 8), InvalidArgument);
    EXPECT_THROW(rig.layer->begin_decode(0, 16), InvalidArgument);
    if (kind == "aft_full" || kind == "aft_local") {
      rig.layer->decode(*state, x.data(), 8, out.data());
      EXPECT_THROW(rig.layer->decode(*state, x.data(), 1, out.data()), InvalidArgument) << "past max_len";
    }
    AttentionCase bidirectional = c;
    bidirectional.dims.causal = false;
    test::AttentionRig<float> b(bidirectional);
    EXPECT_THROW(b.layer->begin_decode(2, 16), InvalidArgument);
  }
}

}  // namespace
}  // namespace lf
