// ops::attention_decode (src/cpu/attention_decode.h): a decoding step's exact attention over cached
// keys, against its plain reference, with the causal rule, any chunking and thread count, and its
// refusals.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <vector>

#include "cpu/attention_decode.h"
#include "linformer/error.h"
#include "linformer/tensor.h"
#include "ops/attention_decode.h"
#include "test_util.h"

namespace lf {
namespace {

struct Case {
  int64_t B, n, h, hk, d_h, rows, chunks;
  double scale_factor;  // × 1/√d_h; large: a peaked softmax, whose maxima differ between chunks
};

// Random q and a cache with spare capacity (a sequence stride above rows × width), as KvCache keeps it.
template <class T>
struct Operands {
  Operands(const Case& c, uint64_t seed)
      : c(c), width(c.hk * c.d_h), cap(c.rows + 3), q(test::random_vector<T>(c.B * c.n * c.h * c.d_h, seed)),
        k(test::random_vector<T>(c.B * cap * width, seed + 1)), v(test::random_vector<T>(c.B * cap * width, seed + 2)) {}
  TensorView<const T> keys() const { return matrices<const T>(k.data(), c.B, cap * width, c.rows, width); }
  TensorView<const T> values() const { return matrices<const T>(v.data(), c.B, cap * width, c.rows, width); }
  DecodeShape shape() const {
    DecodeShape s;
    s.B = c.B;
    s.n = c.n;
    s.rows = c.rows;
    s.h = c.h;
    s.hk = c.hk;
    s.d_h = c.d_h;
    s.kv_stride = cap * width;
    s.scale = scale();
    return s;
  }
  double scale() const { return c.scale_factor / std::sqrt(double(c.d_h)); }
  std::vector<T> run(int64_t chunks) const {
    std::vector<T> o(q.size(), T(-7));  // overwritten
    ops::attention_decode<T>(TensorView<const T>(q.data(), {c.B, c.n, c.h * c.d_h}), keys(), values(), c.h, scale(),
                             TensorView<T>(o.data(), {c.B, c.n, c.h * c.d_h}), chunks);
    return o;
  }
  Case c;
  int64_t width, cap;
  std::vector<T> q, k, v;
};

// Named lists, never braced ones in a range-for: GCC 12's ASan with detect_stack_use_after_return
// (scripts/test_sanitizers.sh) crashes on those.
const std::vector<int> kThreadCounts = {1, 2};

const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      {1, 1, 1, 1, 1, 1, 0, 1},        // one key: the output is its value
      {1, 1, 8, 8, 64, 1, 0, 1},       // the first decoding step
      {2, 1, 3, 3, 5, 37, 1, 1},       // odd sizes, one chunk
      {2, 1, 3, 1, 5, 37, 5, 1},       // every head sharing one key head, five chunks
      {1, 1, 8, 8, 64, 1000, 0, 1},    // automatic chunks
      {1, 1, 4, 4, 16, 700, 9, 8},     // many chunks, a peaked softmax
      {3, 2, 2, 2, 7, 131, 4, 2},      // two new queries: the causal rule inside the step
      {1, 4, 4, 1, 16, 300, 3, 1},     // four, one key head
      {2, 3, 2, 2, 8, 3, 2, 1},        // as many rows as queries: the first sees one key
      {1, 1, 2, 2, 4, 200, 200, 1},    // a chunk per row
      {2, 2, 4, 1, 32, 150, 3, 1},     // the widths compiled in (32, 64, 128): one key head, two queries,
      {1, 1, 2, 2, 128, 190, 2, 2},    // blocks cut by the chunk ends
      {2, 3, 4, 4, 64, 77, 2, 1},      // three queries, a head each, tails shorter than a vector's lanes
      {1, 1, 8, 8, 64, 5000, 0, 1},    // a long context: many blocks per chunk
      {2, 1, 4, 2, 16, 90, 3, 1},      // grouped-query: heads 0, 1 read key head 0, heads 2, 3 key head 1
      {1, 3, 8, 2, 32, 140, 2, 1},     // groups of four, three queries, a compiled-in width
  };
  return all;
}

template <class T>
void expect_matches_reference() {
  const int saved = omp_get_max_threads();
  for (const Case& c : cases())
    for (int threads : kThreadCounts) {
      omp_set_num_threads(threads);
      const Operands<T> op(c, 11 + uint64_t(c.rows));
      std::vector<T> want(op.q.size());
      attention_decode_ref<T>(op.shape(), op.q.data(), op.k.data(), op.v.data(), want.data());
      const std::vector<T> got = op.run(c.chunks);
      EXPECT_LE(test::max_rel_error(got.data(), want.data(), int64_t(got.size())), test::tolerance<T>())
          << "B " << c.B << " n " << c.n << " h " << c.h << " hk " << c.hk << " d_h " << c.d_h << " rows " << c.rows
          << " chunks " << c.chunks << " threads " << threads;
      EXPECT_EQ(op.run(c.chunks), got) << "not deterministic, rows " << c.rows << " threads " << threads;
    }
  omp_set_num_threads(saved);
}

TEST(OpsAttentionDecode, MatchesReferenceFloat) { expect_matches_reference<float>(); }
TEST(OpsAttentionDecode, MatchesReferenceDouble) { expect_matches_reference<double>(); }

// A single key: the softmax is 1, the output that key's value, exactly.
TEST(OpsAttentionDecode, OneKeyGivesItsValue) {
  const Case c{2, 1, 3, 3, 4, 1, 0, 1};
  const Operands<double> op(c, 5);
  const std::vector<double> o = op.run(0);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t j = 0; j < c.h * c.d_h; ++j) EXPECT_EQ(o[size_t(b * c.h * c.d_h + j)], op.v[size_t(b * op.cap * op.width + j)]);
}

// Query r of a step sees keys 0 .. rows − n + r: changing the later rows leaves its output bitwise
// unchanged, for every chunking; and the last query sees them all (its output does change).
TEST(OpsAttentionDecode, QueriesIgnoreTheirFutureBitwise) {
  static const Case c{2, 4, 2, 2, 8, 90, 0, 1};  // static: GCC 12's ASan with detect_stack_use_after_return crashed on it on the stack
  const Operands<float> op(c, 21);
  const std::vector<int64_t> chunk_counts = {1, 3, 90};
  for (int64_t chunks : chunk_counts) {
    const std::vector<float> before = op.run(chunks);
    for (int64_t r = 0; r + 1 < c.n; ++r) {
      Operands<float> changed = op;
      for (int64_t b = 0; b < c.B; ++b)
        for (int64_t j = c.rows - c.n + r + 1; j < c.rows; ++j)
          for (int64_t e = 0; e < op.width; ++e) {
            changed.k[size_t(b * op.cap * op.width + j * op.width + e)] = 50.0f;
            changed.v[size_t(b * op.cap * op.width + j * op.width + e)] = -1e4f;
          }
      const std::vector<float> after = changed.run(chunks);
      const int64_t row = c.h * c.d_h;
      for (int64_t b = 0; b < c.B; ++b)
        for (int64_t t = 0; t < c.n; ++t) {
          const float* x = before.data() + (b * c.n + t) * row;
          const float* y = after.data() + (b * c.n + t) * row;
          if (t <= r)
            EXPECT_EQ(std::vector<float>(x, x + row), std::vector<float>(y, y + row))
                << "query " << t << " saw row " << c.rows - c.n + r + 1 << ", chunks " << chunks;
          else
            EXPECT_NE(std::vector<float>(x, x + row), std::vector<float>(y, y + row)) << "query " << t;
        }
    }
  }
}

// Scores far apart between chunks (one key dominating): the merge rescales exactly, no overflow.
TEST(OpsAttentionDecode, MergesChunksWhoseMaximaDiffer) {
  const Case c{1, 1, 2, 2, 4, 500, 7, 1};
  Operands<float> op(c, 31);
  for (int64_t e = 0; e < op.width; ++e) {
    op.q[size_t(e)] = 1.0f;
    op.k[size_t(433 * op.width + e)] = 60.0f;  // score 60·4/2 = 120 in the seventh chunk; e^120 overflows float
  }
  std::vector<float> want(op.q.size());
  attention_decode_ref<float>(op.shape(), op.q.data(), op.k.data(), op.v.data(), want.data());
  const std::vector<float> got = op.run(c.chunks);
  EXPECT_LE(test::max_rel_error(got.data(), want.data(), int64_t(got.size())), test::tolerance<float>());
  for (int64_t e = 0; e < op.width; ++e) EXPECT_NEAR(got[size_t(e)], op.v[size_t(433 * op.width + e)], 1e-6);
}

TEST(OpsAttentionDecode, RefusesBadShapes) {
  std::vector<float> q(2 * 1 * 8), kv(2 * 10 * 8), o(2 * 1 * 8);
  const TensorView<const float> Q(q.data(), {2, 1, 8});
  const TensorView<float> O(o.data(), {2, 1, 8});
  const TensorView<const float> K(kv.data(), {2, 10, 8});
  auto call = [&](TensorView<const float> q_, TensorView<const float> k_, TensorView<const float> v_, int64_t heads,
                  TensorView<float> o_, double scale = 0.5, int64_t chunks = 0) {
    ops::attention_decode<float>(q_, k_, v_, heads, scale, o_, chunks);
  };
  EXPECT_NO_THROW(call(Q, K, K, 2, O));
  EXPECT_NO_THROW(call(Q, TensorView<const float>(kv.data(), {2, 10, 4}), TensorView<const float>(kv.data(), {2, 10, 4}), 2, O));
  EXPECT_THROW(call(Q, K, K, 3, O), InvalidArgument);   // 3 heads do not divide 8
  EXPECT_THROW(call(Q, K, K, 0, O), InvalidArgument);
  EXPECT_THROW(call(Q, TensorView<const float>(kv.data(), {2, 10, 6}), TensorView<const float>(kv.data(), {2, 10, 6}), 2, O),
               InvalidArgument);  // a width of 6 is not whole heads of 4
  // Key heads must divide the query heads: 4 heads of width 2 against 3 key heads.
  EXPECT_THROW(call(Q, TensorView<const float>(kv.data(), {2, 10, 6}), TensorView<const float>(kv.data(), {2, 10, 6}), 4, O),
               InvalidArgument);
  EXPECT_NO_THROW(call(Q, TensorView<const float>(kv.data(), {2, 10, 4}), TensorView<const float>(kv.data(), {2, 10, 4}), 4, O));
  EXPECT_THROW(call(Q, K, TensorView<const float>(kv.data(), {2, 9, 8}), 2, O), InvalidArgument);  // v's rows
  EXPECT_THROW(call(Q, TensorView<const float>(kv.data(), {1, 10, 8}), TensorView<const float>(kv.data(), {1, 10, 8}), 2, O),
               InvalidArgument);  // batch
  EXPECT_THROW(call(Q, TensorView<const float>(kv.data(), {2, 0, 8}), TensorView<const float>(kv.data(), {2, 0, 8}), 2, O),
               InvalidArgument);  // fewer rows than queries
  const auto gappy = TensorView<const float>::strided(kv.data(), {2, 5, 8}, {80, 16, 1});
  EXPECT_THROW(call(Q, gappy, gappy, 2, O), InvalidArgument);  // rows not contiguous
  EXPECT_THROW(call(Q, K, K, 2, TensorView<float>(o.data(), {2, 8})), InvalidArgument);
  EXPECT_THROW(call(TensorView<const float>(q.data(), {2, 0, 8}), K, K, 2, TensorView<float>(o.data(), {2, 0, 8})),
               InvalidArgument);
  EXPECT_THROW(call(Q, K, K, 2, O, NAN), InvalidArgument);
  EXPECT_THROW(call(Q, K, K, 2, O, 0.5, -1), InvalidArgument);
}

}  // namespace
}  // namespace lf
