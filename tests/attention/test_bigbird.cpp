// `bigbird`: the block structure of the pattern (global blocks see all, the others their window, the
// global blocks and exactly r random blocks, whole blocks, a partial last block), reproducible random
// blocks (same seed and n: same pattern; another seed: another), output against dense masked attention,
// equal to `full` when the blocks cover everything, finite-difference gradients for every option,
// causality, defaults and bad options.
#include <cmath>
#include <set>

#include "sparse_kind_test_util.h"

namespace lf {
namespace {

using test::AttentionCase;
using test::sparse_case;

AttentionCase bb_case(json options, int64_t n, bool causal = false, int64_t max_len = 0) {
  return sparse_case("bigbird", std::move(options), n, causal, max_len);
}

json bb_options(int64_t block, int64_t window, int64_t global, int64_t random, int64_t seed = 0) {
  return {{"block", block}, {"window_blocks", window}, {"global_blocks", global}, {"random_blocks", random}, {"seed", seed}};
}

// Blocks of 4 with 2 random blocks each out of 16: two draws almost surely differ.
json with_seed_options(bool per_layer) {
  json o = bb_options(4, 1, 1, 2, 9);
  o["random_per_layer"] = per_layer;
  return o;
}

// The key blocks of each query block, read from the built pattern; checks that every row of a block
// sees whole key blocks (clipped to n, and causal to j ≤ t) of one common set.
std::vector<std::set<int64_t>> block_sets(const AttentionCase& c, int64_t block) {
  const SparsePattern p = sparse_kind_pattern(c.kind, c.dims, c.options, c.n);
  const int64_t nb = (c.n + block - 1) / block;
  std::vector<std::set<int64_t>> sets(static_cast<size_t>(nb));
  for (int64_t qb = 0; qb < nb; ++qb) {
    const int64_t last = std::min(c.n, (qb + 1) * block) - 1;  // causal: the block's last row sees the most
    for (int64_t e = p.row_ptr[size_t(last)]; e < p.row_ptr[size_t(last + 1)]; ++e) sets[size_t(qb)].insert(p.cols[size_t(e)] / block);
    for (int64_t t = qb * block; t <= last; ++t) {
      std::vector<int32_t> want;
      for (int64_t kb : sets[size_t(qb)])
        for (int64_t j = kb * block; j < std::min(c.n, (kb + 1) * block); ++j)
          if (!c.dims.causal || j <= t) want.push_back(int32_t(j));
      const std::vector<int32_t> got(p.cols.begin() + p.row_ptr[size_t(t)], p.cols.begin() + p.row_ptr[size_t(t + 1)]);
      EXPECT_EQ(got, want) << "row " << t << " does not see whole blocks of its block's set";
    }
  }
  return sets;
}

test::Allowed from_blocks(const std::vector<std::set<int64_t>>& sets, int64_t block) {
  return [sets, block](int64_t t, int64_t j, int64_t) { return sets[size_t(t / block)].count(j / block) > 0; };
}

TEST(BigbirdAttention, BlockStructureFollowsTheDefinition) {
  for (bool causal : {false, true})
    for (int64_t n : {64, 70})  // 70: a partial last block
      for (const int64_t g : {2, 3})
        for (const std::string placement : {"ends", "first"}) {
      const int64_t block = 4, w = 3, r = 3, nb = (n + block - 1) / block;
      AttentionCase c = bb_case(bb_options(block, w, g, r, 7), n, causal);
      c.options["global_placement"] = placement;
      SCOPED_TRACE(test::describe(c));
      // "ends": the first ⌈g/2⌉ and the last ⌊g/2⌋ blocks (bidirectional); otherwise the first g.
      std::set<int64_t> global;
      const int64_t head = placement == "ends" && !causal ? (g + 1) / 2 : g;
      for (int64_t kb = 0; kb < head; ++kb) global.insert(kb);
      for (int64_t kb = nb - (g - head); kb < nb; ++kb) global.insert(kb);
      const auto sets = block_sets(c, block);
      for (int64_t qb = 0; qb < nb; ++qb) {
        const std::set<int64_t>& s = sets[size_t(qb)];
        if (global.count(qb)) {  // global query block: every (causal: every earlier) block
          EXPECT_EQ(int64_t(s.size()), causal ? qb + 1 : nb) << qb;
          continue;
        }
        std::set<int64_t> fixed = global;
        for (int64_t kb = causal ? qb - (w - 1) : qb - w / 2; kb <= (causal ? qb : qb + w / 2); ++kb)
          if (kb >= 0 && kb < nb) fixed.insert(kb);
        int64_t random = 0, candidates = 0;
        for (int64_t kb : fixed) EXPECT_TRUE(s.count(kb)) << "query block " << qb << " misses block " << kb;
        for (int64_t kb : s)
          if (!fixed.count(kb)) {
            ++random;
            if (causal) {
              EXPECT_LT(kb, qb) << "a causal random block in the future";
            }
          }
        for (int64_t kb = 0; kb < (causal ? qb : nb); ++kb) candidates += fixed.count(kb) ? 0 : 1;
        EXPECT_EQ(random, std::min(r, candidates)) << "query block " << qb;
      }
    }
}

TEST(BigbirdAttention, RandomBlocksAreReproducibleFromTheSeed) {
  const AttentionCase a = bb_case(bb_options(4, 3, 1, 2, 11), 96), b = bb_case(bb_options(4, 3, 1, 2, 12), 96);
  const auto sa = block_sets(a, 4), sa2 = block_sets(a, 4), sb = block_sets(b, 4);
  EXPECT_EQ(sa, sa2);
  EXPECT_NE(sa, sb) << "seeds 11 and 12 drew the same random blocks";
  // Two layers with the same seed give the same output; the patterns do not depend on the thread count
  // (built in parallel, checked by the core's tests).
  test::AttentionRig<double> r1(a), r2(a);
  r1.forward(a);
  r2.forward(a);
  EXPECT_EQ(r1.out, r2.out);
}

// Layers of one model (their parameter prefixes) draw their own random blocks, unless random_per_layer
// is false; a layer with the same prefix draws the same. Seen through the outputs of layers with the
// same parameter values, which differ only where their patterns do.
TEST(BigbirdAttention, RandomBlocksAreDrawnPerLayer) {
  auto output = [](const std::string& prefix, bool per_layer) {
    AttentionCase c = bb_case(with_seed_options(per_layer), 64);
    ParamArena<double> arena;
    auto layer = make_attention<double>(AttentionSpec{c.kind, c.dims, c.options, prefix}, arena);
    arena.allocate();
    for (int64_t i = 0; i < arena.numel(); ++i) arena.values()[i] = 0.3 * std::sin(double(i));
    const std::vector<double> x = test::random_vector<double>(c.B * c.n * c.dims.d_model, 5);
    std::vector<double> out(x.size());
    AttentionInput<double> in;
    in.x = x.data();
    in.B = c.B;
    in.n = c.n;
    layer->forward(in, out.data(), false, 0);
    return out;
  };
  EXPECT_NE(output("layers.0.attn.", true), output("layers.1.attn.", true));
  EXPECT_EQ(output("layers.0.attn.", true), output("layers.0.attn.", true));
  EXPECT_EQ(output("layers.0.attn.", false), output("layers.1.attn.", false));
  EXPECT_EQ(output("", true), output("", false));  // no prefix: the seed itself
}

TEST(BigbirdAttention, MatchesDenseMaskedReference) {
  for (bool causal : {false, true}) {
    for (const json& o : {bb_options(2, 3, 1, 1), bb_options(3, 1, 1, 2, 5), bb_options(2, causal ? 2 : 1, 0, 2, 3)}) {
      AttentionCase c = bb_case(o, 11, causal);
      const int64_t block = o["block"].get<int64_t>();
      const auto allowed = from_blocks(block_sets(c, block), block);
      test::expect_matches_dense_reference(c, allowed);
      // Each sample with the pattern of its real length (last unpadded key + 1) on its real rows: sample 0
      // pads its last key (10 positions), sample 1 keeps only key 7 (8 positions).
      auto pattern_of = [&](int64_t len) -> test::Allowed {
        AttentionCase real = c;
        real.n = len;
        const test::Allowed a = from_blocks(block_sets(real, block), block);
        return [a, allowed, len](int64_t t, int64_t j, int64_t n) {
          return t < len && j < len ? a(t, j, n) : allowed(t, j, n);
        };
      };
      const test::Allowed first = pattern_of(10), second = pattern_of(8);
      test::expect_matches_dense_reference_of(test::with_padding(c, 7),
                                              [&](int64_t b) { return b == 0 ? first : second; });
      test::expect_matches_dense_reference(test::with_dropout(c), allowed);
    }
  }
  AttentionCase c = bb_case(bb_options(2, 3, 1, 1), 7, false, 16);  // n < max_len
  test::expect_matches_dense_reference(c, from_blocks(block_sets(c, 2), 2));
}

TEST(BigbirdAttention, EqualsFullWhenTheBlocksCoverEverything) {
  for (bool causal : {false, true}) {
    test::expect_equals_full_both(bb_case({{"block", 3}, {"global_blocks", 3}, {"qkv_bias", true}}, 9, causal));
    test::expect_equals_full_both(test::with_padding(bb_case(bb_options(2, 9, 0, 0), 9, causal), 4));
    test::expect_equals_full_both(test::with_dropout(bb_case(bb_options(2, 1, 1, 8), 9, causal)));
  }
}

TEST(BigbirdAttention, GradientsMatchFiniteDifferences) {
  for (bool causal : {false, true}) {
    test::check_attention_gradients(bb_case({{"block", 2}, {"window_blocks", 1}, {"global_blocks", 1}, {"random_blocks", 1},
                                             {"qkv_bias", true}}, 8, causal));
    test::check_attention_gradients(bb_case(bb_options(2, 3, 0, 1, 4), 7, causal));  // partial last block
    test::check_attention_gradients(test::with_padding(bb_case(bb_options(2, 1, 1, 1), 8, causal), 5));
    test::check_attention_gradients(test::with_dropout(bb_case(bb_options(2, 1, 1, 1), 8, causal)));
    test::check_attention_gradients(bb_case(bb_options(2, 1, 1, 2), 5, causal, 9));
  }
}

TEST(BigbirdAttention, CausalOutputIgnoresTheFuture) {
  test::expect_causal(bb_case(bb_options(2, 2, 1, 1), 9, true));
  test::expect_causal(test::with_padding(bb_case(bb_options(3, 1, 1, 1, 3), 9, true), 4));
  test::expect_causal(test::with_dropout(bb_case(bb_options(2, 1, 0, 2), 9, true)));
}

TEST(BigbirdAttention, OptionsAndDefaults) {
  EXPECT_EQ(validate_attention({"bigbird", {512, 8, 4096, false, 0}, json::object(), ""}),
            json({{"block", 64}, {"window_blocks", 3}, {"global_blocks", 2}, {"global_placement", "ends"},
                  {"random_blocks", 3}, {"seed", 0}, {"random_per_layer", true}, {"qkv_bias", false}}));
  EXPECT_EQ(validate_attention({"bigbird", {8, 2, 64, false, 0}, json::object(), ""})["block"], 8);
  EXPECT_EQ(validate_attention({"bigbird", {8, 2, 6, false, 0}, json::object(), ""})["block"], 1);
  EXPECT_EQ(validate_attention({"bigbird", {8, 2, 64, true, 0}, {{"window_blocks", 2}}, ""})["window_blocks"], 2);
  const AttentionDims dims{8, 2, 16, false, 0};
  test::expect_refused("bigbird", dims, {{"block", 0}}, "block");
  test::expect_refused("bigbird", dims, {{"block", 17}}, "block");
  test::expect_refused("bigbird", dims, {{"window_blocks", 2}}, "window_blocks");  // even, bidirectional
  test::expect_refused("bigbird", dims, {{"window_blocks", 0}}, "window_blocks");
  test::expect_refused("bigbird", dims, {{"block", 4}, {"global_blocks", 5}}, "global_blocks");
  test::expect_refused("bigbird", dims, {{"random_blocks", -1}}, "random_blocks");
  test::expect_refused("bigbird", dims, {{"global_placement", "last"}}, "global_placement");
  test::expect_refused("bigbird", dims, {{"random_per_layer", "yes"}}, "random_per_layer");
  test::expect_refused("bigbird", dims, {{"seed", -3}}, "seed");
  test::expect_refused("bigbird", dims, {{"num_random_blocks", 3}}, "num_random_blocks");
}

}  // namespace
}  // namespace lf
