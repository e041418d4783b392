// The decoding KV cache (attention/kv_cache.h): it holds exactly the rows appended (whole, or the
// window a new query may see), its capacity grows geometrically (a few reallocations for a long
// decode, not one per token), and with a window its memory stays bounded however long the decode.
#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "attention/kv_cache.h"
#include "test_util.h"

namespace lf {
namespace {

// The value of row `pos` of sequence b, feature e: distinct for every (b, pos, e), and V ≠ K.
double key_value(int64_t b, int64_t pos, int64_t e) { return double(b * 100000 + pos * 10 + e); }

// Appends positions [t, t + n) of B sequences of width d.
void append(KvCache<double>& cache, int64_t B, int64_t d, int64_t t, int64_t n) {
  std::vector<double> k(size_t(B * n * d)), v(k.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t r = 0; r < n; ++r)
      for (int64_t e = 0; e < d; ++e) {
        k[size_t((b * n + r) * d + e)] = key_value(b, t + r, e);
        v[size_t((b * n + r) * d + e)] = -key_value(b, t + r, e);
      }
  cache.append(k.data(), v.data(), n);
}

// Every row the cache holds is the one appended at its position.
void expect_rows(const KvCache<double>& cache, int64_t B, int64_t d) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t r = 0; r < cache.rows(); ++r)
      for (int64_t e = 0; e < d; ++e) {
        ASSERT_EQ(cache.keys(b)[r * d + e], key_value(b, cache.first() + r, e)) << "b " << b << " row " << r;
        ASSERT_EQ(cache.values(b)[r * d + e], -key_value(b, cache.first() + r, e)) << "b " << b << " row " << r;
      }
}

TEST(KvCache, HoldsEveryAppendedRowAndGrowsGeometrically) {
  const int64_t B = 3, d = 5;
  KvCache<double> cache(B, d);
  std::set<double> sizes;
  int64_t t = 0;
  for (const int64_t n : {7, 1, 1, 30, 1, 1, 1, 64, 2}) {
    append(cache, B, d, t, n);
    t += n;
    ASSERT_EQ(cache.first(), 0);
    ASSERT_EQ(cache.end(), t);
    expect_rows(cache, B, d);
  }
  for (int64_t i = 0; i < 2000; ++i, ++t) {
    append(cache, B, d, t, 1);
    sizes.insert(cache.bytes());
    ASSERT_LE(cache.bytes(), 2.0 * 2 * B * d * sizeof(double) * double(t + 1));  // at most twice the rows held
  }
  expect_rows(cache, B, d);
  EXPECT_LE(sizes.size(), 6u);  // 2108 → 4220 rows: doublings, not a copy per token
}

TEST(KvCache, WindowKeepsTheRecentRowsInBoundedMemory) {
  const int64_t B = 2, d = 3, w = 9;
  KvCache<double> cache(B, d, w);
  int64_t t = 0;
  double largest = 0;
  for (int64_t i = 0; i < 3000; ++i) {
    const int64_t n = i % 50 == 7 ? 4 : 1;  // single steps and a few chunks
    append(cache, B, d, t, n);
    // Every key a new query at t.. may see (t − w on) is held, and nothing older than needed piles up.
    ASSERT_LE(cache.first(), std::max<int64_t>(0, t - w));
    ASSERT_EQ(cache.end(), t + n);
    t += n;
    largest = std::max(largest, cache.bytes());
    if (i % 97 == 0) expect_rows(cache, B, d);
  }
  expect_rows(cache, B, d);
  EXPECT_LE(largest, 2.0 * 2 * B * d * sizeof(double) * (w + 4 + 16));  // independent of the 3000 tokens
  // A long prefill takes room for its own rows; the next step gives it back.
  append(cache, B, d, t, 500);
  EXPECT_GE(cache.bytes(), 2.0 * B * d * sizeof(double) * 500);
  append(cache, B, d, t + 500, 1);
  EXPECT_LE(cache.bytes(), 2.0 * 2 * B * d * sizeof(double) * (w + 1 + 16));
  expect_rows(cache, B, d);
}

TEST(KvCache, StepChecksRefuseBadCalls) {
  const AttentionDims causal{16, 2, 8, /*causal=*/true, 0.0}, bidirectional{16, 2, 8, false, 0.0};
  EXPECT_THROW(check_begin_decode("full", 0, 16, causal), InvalidArgument);
  EXPECT_THROW(check_begin_decode("full", 1, 8, causal), InvalidArgument);
  EXPECT_THROW(check_begin_decode("full", 1, 16, bidirectional), InvalidArgument);
  KvCacheState<double> state(1, 16, KvCache<double>::kWhole);
  EXPECT_NO_THROW(decode_state_as<KvCacheState<double>>(state, "full", 8, causal));
  EXPECT_THROW(decode_state_as<KvCacheState<double>>(state, "full", 0, causal), InvalidArgument);
  EXPECT_THROW(decode_state_as<KvCacheState<double>>(state, "full", 9, causal), InvalidArgument);  // past max_len
  struct Other final : DecodeState<double> {
    double bytes() const override { return 0; }
  } other;
  EXPECT_THROW(decode_state_as<KvCacheState<double>>(other, "full", 1, causal), InvalidArgument);
}

}  // namespace
}  // namespace lf
