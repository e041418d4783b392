// The sparse-pattern core shared by local, strided, global, longformer and bigbird: pattern building
// (sorting, filtering, causality, the transpose), the kernels against their dense reference and against
// dense attention when the pattern is full, finite-difference gradients of the kernels (random
// patterns, causal, padding, dropout, rows with no visible key), bit-identical results for any thread
// count and for inference, varying lengths through one layer, no O(n²) buffer at n = 16384 for every
// kind, and the registry entries.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "attention/sdpa.h"
#include "attention/sparse_pattern.h"
#include "attention_test_util.h"
#include "cpu/sparse_attention.h"
#include "linformer/rng.h"

namespace lf {
namespace {

const std::vector<std::string> kKinds = {"local", "strided", "global", "longformer", "bigbird"};

// ---- patterns ----------------------------------------------------------------------------------------

TEST(SparsePattern, BuildSortsFiltersAndTransposes) {
  // Unsorted keys with duplicates and out-of-range entries; row 2 empty.
  const RowKeys rows = [](int64_t t, std::vector<int32_t>& keys) {
    if (t == 2) return;
    keys.insert(keys.end(), {int32_t(t + 3), int32_t(t), -1, int32_t(t), 0, 99, int32_t(t + 1)});
  };
  for (bool causal : {false, true}) {
    const SparsePattern p = build_sparse_pattern(5, 6, causal, rows, true);
    ASSERT_EQ(p.row_ptr.size(), 6u);
    for (int64_t t = 0; t < 5; ++t) {
      std::vector<int32_t> want;
      if (t != 2)
        for (int32_t j : {0, int32_t(t), int32_t(t + 1), int32_t(t + 3)})
          if (j < 6 && (!causal || j <= t) && std::find(want.begin(), want.end(), j) == want.end()) want.push_back(j);
      std::sort(want.begin(), want.end());
      EXPECT_EQ(std::vector<int32_t>(p.cols.begin() + p.row_ptr[size_t(t)], p.cols.begin() + p.row_ptr[size_t(t + 1)]), want)
          << "row " << t << " causal " << causal;
    }
    EXPECT_EQ(count_pattern_entries(5, 6, causal, rows), p.nnz());
    // The transpose lists every entry once, keys in order, queries ascending, pointing back at its entry.
    ASSERT_TRUE(p.has_transpose());
    std::vector<int> seen(size_t(p.nnz()), 0);
    for (int64_t j = 0; j < 6; ++j)
      for (int64_t c = p.col_ptr[size_t(j)]; c < p.col_ptr[size_t(j + 1)]; ++c) {
        const int64_t e = p.col_entry[size_t(c)], t = p.col_rows[size_t(c)];
        EXPECT_EQ(p.cols[size_t(e)], j);
        EXPECT_TRUE(e >= p.row_ptr[size_t(t)] && e < p.row_ptr[size_t(t + 1)]);
        if (c > p.col_ptr[size_t(j)]) {
          EXPECT_LT(p.col_rows[size_t(c - 1)], t);
        }
        ++seen[size_t(e)];
      }
    for (int s : seen) EXPECT_EQ(s, 1);
  }
}

TEST(SparsePattern, WindowAndGlobalHelpers) {
  std::vector<int32_t> keys;
  append_window(5, 8, 4, 1, false, keys);  // |k| ≤ 2
  EXPECT_EQ(keys, std::vector<int32_t>({3, 4, 5, 6, 7}));
  keys.clear();
  append_window(5, 8, 2, 2, true, keys);  // 5 − 2k, k = 0..2
  EXPECT_EQ(keys, std::vector<int32_t>({1, 3, 5}));
  keys.clear();
  append_window(1, 8, 6, 3, false, keys);  // 1 + 3k, |k| ≤ 3, inside [0, 8)
  EXPECT_EQ(keys, std::vector<int32_t>({1, 4, 7}));
  keys.clear();
  append_window(0, 8, 1000000000, 1, true, keys);  // a huge window is clipped, not enumerated
  EXPECT_EQ(keys, std::vector<int32_t>({0}));
}

// ---- the kernels -------------------------------------------------------------------------------------

struct CoreCase {
  int64_t B = 2, n = 7, m = 7, h = 2, d_h = 4;
  bool causal = false, mask = false;
  double dropout = 0, density = 0.4;
  uint64_t pattern_seed = 1;
  double tile_density = 0;  // 0: every block on tiles; 2: every block entry by entry
};

// A random pattern (each pair with probability `density`; row 1 empty; the diagonal always in for
// self-attention rows past 1), and a padding mask where sample 1 keeps only key 3 (rows without it see
// nothing) and sample 0 pads its last key.
struct CoreRig {
  CoreCase c;
  SparseShape s;
  SparsePattern p;
  std::vector<uint8_t> mask;
  std::vector<double> q, k, v;

  explicit CoreRig(const CoreCase& cc) : c(cc) {
    const RowKeys rows = [&](int64_t t, std::vector<int32_t>& keys) {
      if (t == 1) return;
      for (int64_t j = 0; j < c.m; ++j)
        if (uniform01(c.pattern_seed, 5, uint64_t(t * c.m + j)) < c.density || (j == t && c.n == c.m)) keys.push_back(int32_t(j));
    };
    p = build_sparse_pattern(c.n, c.m, c.causal, rows, true);
    if (c.mask) {
      mask.assign(size_t(c.B * c.m), 0);
      mask[size_t(c.m - 1)] = 1;
      for (int64_t j = 0; j < c.m; ++j) mask[size_t(c.m + j)] = j == 3 ? 0 : 1;
    }
    s = SparseShape{c.B, c.n, c.m, c.h, c.d_h, 1.0 / std::sqrt(double(c.d_h)), c.causal,
                    c.mask ? mask.data() : nullptr, c.dropout, 77, c.tile_density};
    q = test::random_vector<double>(c.B * c.n * c.h * c.d_h, 1, -2, 2);
    k = test::random_vector<double>(c.B * c.m * c.h * c.d_h, 2, -2, 2);
    v = test::random_vector<double>(c.B * c.m * c.h * c.d_h, 3);
  }

  template <class T>
  std::vector<T> forward(std::vector<T>* probs = nullptr, bool keep = true) const {
    const auto qt = test::cast_vector<T>(q), kt = test::cast_vector<T>(k), vt = test::cast_vector<T>(v);
    std::vector<T> out(q.size()), local(keep ? size_t(c.B * c.h * p.nnz()) : 0);
    std::vector<T>& P = probs ? *probs : local;
    P.resize(local.size());
    sparse_attention_forward(s, p, qt.data(), kt.data(), vt.data(), keep ? P.data() : nullptr, out.data(), keep);
    return out;
  }
};

std::string describe(const CoreCase& c) {
  return str_cat("n=", c.n, " m=", c.m, " causal=", c.causal, " mask=", c.mask, " dropout=", c.dropout,
                 " density=", c.density, c.tile_density > 1 ? " entry by entry" : " on tiles");
}

// Both ways of running a block (tiles, entries), each with causality, padding and dropout; more keys
// than queries; and a length over one block (rows 0..31 and 32..39) with a mixed tile decision.
std::vector<CoreCase> core_cases() {
  std::vector<CoreCase> cases;
  for (double tile_density : {0.0, 2.0}) {
    for (bool causal : {false, true})
      for (bool mask : {false, true})
        for (double dropout : {0.0, 0.3}) {
          CoreCase c;
          c.causal = causal;
          c.mask = mask;
          c.dropout = dropout;
          c.tile_density = tile_density;
          cases.push_back(c);
        }
    CoreCase cross;  // more keys than queries, dense-ish
    cross.n = 5;
    cross.m = 9;
    cross.density = 0.7;
    cross.tile_density = tile_density;
    cases.push_back(cross);
    cross.mask = true;
    cases.push_back(cross);
  }
  CoreCase longer;
  longer.n = longer.m = 40;
  longer.d_h = 3;
  longer.density = 0.3;
  longer.tile_density = 0.31;
  longer.mask = true;
  cases.push_back(longer);
  longer.causal = true;
  cases.push_back(longer);
  return cases;
}

TEST(SparsePatternCore, ForwardMatchesReference) {
  for (const CoreCase& c : core_cases()) {
    SCOPED_TRACE(describe(c));
    const CoreRig rig(c);
    std::vector<double> ref(rig.q.size());
    sparse_attention_forward_ref(rig.s, rig.p, rig.q.data(), rig.k.data(), rig.v.data(), ref.data());
    const auto out = rig.forward<double>();
    LF_EXPECT_CLOSE(out.data(), ref.data(), int64_t(ref.size()), 1e-13);
    const auto outf = rig.forward<float>();
    LF_EXPECT_CLOSE(outf.data(), ref.data(), int64_t(ref.size()), 1e-5);
    // Row 1 has no entries: zero output everywhere.
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t e = 0; e < c.h * c.d_h; ++e) EXPECT_EQ(out[size_t((b * c.n + 1) * c.h * c.d_h + e)], 0.0);
  }
}

TEST(SparsePatternCore, FullPatternEqualsDenseAttention) {
  // Every pair in the pattern: the core is `full`'s scaled dot-product attention (sdpa reference),
  // with causality, padding and dropout (the same mask: the dense element index).
  for (CoreCase c : core_cases()) {
    c.density = 1.0;
    SCOPED_TRACE(describe(c));
    CoreRig rig(c);
    rig.p = build_sparse_pattern(c.n, c.m, c.causal, [&](int64_t, std::vector<int32_t>& keys) {
      for (int64_t j = 0; j < c.m; ++j) keys.push_back(int32_t(j));
    }, true);
    const SdpaShape ds{c.B, c.n, c.m, c.h, c.h, c.d_h, rig.s.scale, c.causal, rig.s.key_mask, c.dropout, rig.s.seed};
    std::vector<double> ref(rig.q.size());
    sdpa_forward_ref(ds, rig.q.data(), rig.k.data(), rig.v.data(), ref.data());
    const auto out = rig.forward<double>();
    LF_EXPECT_CLOSE(out.data(), ref.data(), int64_t(ref.size()), 1e-13);
  }
}

TEST(SparsePatternCore, GradientsMatchFiniteDifferences) {
  for (const CoreCase& c : core_cases()) {
    SCOPED_TRACE(describe(c));
    CoreRig rig(c);
    const std::vector<double> w = test::random_vector<double>(int64_t(rig.q.size()), 9);
    auto loss = [&] {
      const auto out = rig.forward<double>();
      return test::weighted_sum(out.data(), w.data(), int64_t(w.size()));
    };
    std::vector<double> P;
    const auto out = rig.forward<double>(&P);
    std::vector<double> dq(rig.q.size()), dk(rig.k.size()), dv(rig.v.size());
    sparse_attention_backward(rig.s, rig.p, rig.q.data(), rig.k.data(), rig.v.data(), out.data(), P.data(), w.data(),
                              dq.data(), dk.data(), dv.data());
    test::expect_gradient_matches(loss, rig.q.data(), int64_t(rig.q.size()), dq.data(), "q", 1e-7);
    test::expect_gradient_matches(loss, rig.k.data(), int64_t(rig.k.size()), dk.data(), "k", 1e-7);
    test::expect_gradient_matches(loss, rig.v.data(), int64_t(rig.v.size()), dv.data(), "v", 1e-7);
    for (double g : dq) ASSERT_TRUE(std::isfinite(g));
  }
}

TEST(SparsePatternCore, InferenceEqualsKeptBitForBit) {
  for (const CoreCase& c : core_cases()) {
    const CoreRig rig(c);
    EXPECT_EQ(rig.forward<float>(nullptr, true), rig.forward<float>(nullptr, false)) << describe(c);
  }
}

TEST(SparsePatternCore, SameBitsForAnyThreadCount) {
  // Big enough to run in parallel: B·h·nnz·d_h well over the threshold. Blocks on tiles and entry by
  // entry (density 0.2 around the 0.2 threshold).
  CoreCase c;
  c.B = 2;
  c.n = c.m = 300;
  c.h = 3;
  c.d_h = 16;
  c.density = 0.2;
  c.mask = true;
  c.dropout = 0.1;
  c.tile_density = 0.2;
  const CoreRig rig(c);
  const int saved = omp_get_max_threads();
  std::vector<std::vector<float>> outs, dqs, dks, dvs;
  for (int threads : {1, 3, 4}) {
    omp_set_num_threads(threads);
    std::vector<float> P;
    const auto out = rig.forward<float>(&P);
    const auto q = test::cast_vector<float>(rig.q), k = test::cast_vector<float>(rig.k), v = test::cast_vector<float>(rig.v);
    const auto w = test::random_vector<float>(int64_t(q.size()), 4);
    std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
    sparse_attention_backward(rig.s, rig.p, q.data(), k.data(), v.data(), out.data(), P.data(), w.data(), dq.data(),
                              dk.data(), dv.data());
    outs.push_back(out);
    dqs.push_back(dq);
    dks.push_back(dk);
    dvs.push_back(dv);
  }
  omp_set_num_threads(saved);
  for (size_t r = 1; r < outs.size(); ++r) {
    EXPECT_EQ(outs[r], outs[0]);
    EXPECT_EQ(dqs[r], dqs[0]);
    EXPECT_EQ(dks[r], dks[0]);
    EXPECT_EQ(dvs[r], dvs[0]);
  }
}

// ---- the layers --------------------------------------------------------------------------------------

TEST(SparsePatternKinds, RegisteredWithTheirSupport) {
  for (const std::string& kind : kKinds) {
    ASSERT_TRUE(AttentionRegistry::instance().has(kind)) << kind;
    const AttentionSupport s = AttentionRegistry::instance().get(kind).info.support;
    EXPECT_TRUE(s.causal && s.key_padding_mask && s.variable_length) << kind;
    EXPECT_FALSE(s.cross_attention) << kind;
    // Default options work down to tiny models.
    for (int64_t max_len : {1, 2, 8, 32, 65536})
      for (bool causal : {false, true}) EXPECT_NO_THROW(validate_attention({kind, {8, 2, max_len, causal, 0}, json::object(), ""}))
          << kind << " max_len " << max_len;
  }
  EXPECT_THROW(sparse_kind_pattern("full", {8, 2, 8, false, 0}, json::object(), 8), InvalidArgument);
}

TEST(SparsePatternKinds, OneLayerServesSeveralLengths) {
  // A layer called at n = 12, then 5, then 12 again gives what a fresh layer gives at each length.
  for (const std::string& kind : kKinds)
    for (bool causal : {false, true}) {
      SCOPED_TRACE(kind);
      test::AttentionCase c;
      c.kind = kind;
      c.dims = AttentionDims{8, 2, 12, causal, 0};
      c.n = 12;
      test::AttentionRig<double> rig(c);
      std::vector<double> first(rig.out.size()), dx(rig.x.size());
      rig.forward(c);
      first = rig.out;
      test::AttentionCase shorter = c;
      shorter.n = 5;
      test::AttentionRig<double> fresh(shorter);
      fresh.forward(shorter);
      rig.forward(shorter);
      EXPECT_EQ(std::vector<double>(rig.out.begin(), rig.out.begin() + 2 * 5 * 8), fresh.out);
      rig.layer->backward(fresh.out.data(), dx.data());  // a backward at the shorter length
      rig.forward(c);
      EXPECT_EQ(rig.out, first);
    }
}

TEST(SparsePatternKinds, LongSequenceHasNoQuadraticBuffer) {
  // n = 16384, d = 64, one head, default options: an n×n float buffer would be 1 GiB. Each kind's
  // forward and backward must raise the peak RSS by far less, and its own estimate must say so too.
  const int64_t n = 16384, d = 64;
  LF_SKIP_MEMORY_TEST_UNDER_SANITIZERS();
  LF_SKIP_WITHOUT_PROC_STATUS();
  for (const std::string& kind : kKinds) {
    SCOPED_TRACE(kind);
    ParamArena<float> arena;
    auto layer = make_attention<float>({kind, {d, 1, n, false, 0}, json::object(), ""}, arena);
    EXPECT_LT(layer->activation_bytes(1, n, n, true), 256.0 * (1 << 20));
    test::expect_peak_rss_growth_below(arena, *layer, n, d, int64_t(256) << 20, kind + "_peak_rss_growth_bytes");
  }
}

}  // namespace
}  // namespace lf
