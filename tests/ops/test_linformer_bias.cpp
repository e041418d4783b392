// The bias terms of Linformer's compressed keys and values as ops (src/ops/linformer_bias.h): each
// against its definition written out here, on strided rows (the columns of one head inside a wider
// activation, E's first m of max_len columns), with padding and empty slots; bad views refused.
#include <gtest/gtest.h>

#include <vector>

#include "linformer/error.h"
#include "linformer/tensor.h"
#include "ops/linformer_bias.h"
#include "test_util.h"

namespace lf {
namespace {
using test::random_vector;

// k = 4 slots of width 3 inside rows of 5; E (k, m = 6) inside rows of L = 8; positions 1 and 4 padded,
// slot 2 empty.
constexpr int64_t k = 4, width = 3, ld = 5, m = 6, L = 8;
const std::vector<uint8_t> kPadded = {0, 1, 0, 0, 1, 0};
const std::vector<uint8_t> kEmpty = {0, 0, 1, 0};

template <class T>
double tolerance() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-13;
}

template <class T>
void check_masked_row_sums() {
  const auto E = random_vector<T>(k * L, 1), dsums = random_vector<T>(k, 2);
  std::vector<T> sums(k, T(9)), dE(k * L, T(0.5));
  ops::masked_row_sums<T>(matrix(E.data(), k, m, L), vector_view(kPadded.data(), m), vector_view(sums.data(), k));
  ops::masked_row_sums_backward<T>(vector_view(dsums.data(), k), vector_view(kPadded.data(), m),
                                   matrix(dE.data(), k, m, L));
  for (int64_t j = 0; j < k; ++j) {
    double want = 0;
    for (int64_t t = 0; t < m; ++t)
      if (!kPadded[size_t(t)]) want += double(E[size_t(j * L + t)]);
    EXPECT_NEAR(double(sums[size_t(j)]), want, tolerance<T>()) << j;
    for (int64_t t = 0; t < L; ++t)  // padded columns and those past m keep their value
      EXPECT_EQ(dE[size_t(j * L + t)], T(0.5) + (t < m && !kPadded[size_t(t)] ? dsums[size_t(j)] : T(0)))
          << j << "," << t;
  }
  // Without padding every one of the m columns counts.
  ops::masked_row_sums<T>(matrix(E.data(), k, m, L), {}, vector_view(sums.data(), k));
  double want = 0;
  for (int64_t t = 0; t < m; ++t) want += double(E[size_t(t)]);
  EXPECT_NEAR(double(sums[0]), want, tolerance<T>());
}

TEST(OpsLinformerBias, MaskedRowSumsMatchTheirDefinition) {
  check_masked_row_sums<double>();
  check_masked_row_sums<float>();
}

template <class T>
void check_row_weighted_bias() {
  const auto r = random_vector<T>(k, 3), b = random_vector<T>(width, 4), dC = random_vector<T>(k * ld, 5);
  auto C = random_vector<T>(k * ld, 6);
  const auto C0 = C;
  ops::add_row_weighted_bias<T>(vector_view(r.data(), k), vector_view(b.data(), width), matrix(C.data(), k, width, ld));
  std::vector<T> db(width, T(0.25)), dr(k, T(9));
  ops::add_row_weighted_bias_backward<T>(matrix(dC.data(), k, width, ld), vector_view(r.data(), k),
                                         vector_view(b.data(), width), vector_view(db.data(), width),
                                         vector_view(dr.data(), k));
  for (int64_t j = 0; j < k; ++j) {
    double dot = 0;
    for (int64_t c = 0; c < ld; ++c) {
      const double add = c < width ? double(r[size_t(j)]) * double(b[size_t(c)]) : 0.0;
      EXPECT_NEAR(double(C[size_t(j * ld + c)]), double(C0[size_t(j * ld + c)]) + add, tolerance<T>()) << j << "," << c;
      if (c < width) dot += double(dC[size_t(j * ld + c)]) * double(b[size_t(c)]);
    }
    EXPECT_NEAR(double(dr[size_t(j)]), dot, tolerance<T>()) << j;
  }
  for (int64_t c = 0; c < width; ++c) {
    double want = 0.25;
    for (int64_t j = 0; j < k; ++j) want += double(dC[size_t(j * ld + c)]) * double(r[size_t(j)]);
    EXPECT_NEAR(double(db[size_t(c)]), want, tolerance<T>()) << c;
  }
  // dr is optional.
  ops::add_row_weighted_bias_backward<T>(matrix(dC.data(), k, width, ld), vector_view(r.data(), k),
                                         vector_view(b.data(), width), vector_view(db.data(), width), {});
}

TEST(OpsLinformerBias, RowWeightedBiasMatchesItsDefinition) {
  check_row_weighted_bias<double>();
  check_row_weighted_bias<float>();
}

template <class T>
void check_slot_bias() {
  const auto bias = random_vector<T>(width, 7), ddst = random_vector<T>(k * ld, 8);
  std::vector<T> dst(k * ld, T(3)), dbias(width, T(0.5));
  ops::slot_bias<T>(vector_view(bias.data(), width), vector_view(kEmpty.data(), k), matrix(dst.data(), k, width, ld));
  ops::slot_bias_backward<T>(matrix(ddst.data(), k, width, ld), vector_view(kEmpty.data(), k),
                             vector_view(dbias.data(), width));
  for (int64_t j = 0; j < k; ++j)
    for (int64_t c = 0; c < ld; ++c)
      EXPECT_EQ(dst[size_t(j * ld + c)], c >= width ? T(3) : kEmpty[size_t(j)] ? T(0) : bias[size_t(c)]) << j << "," << c;
  for (int64_t c = 0; c < width; ++c) {
    double want = 0.5;
    for (int64_t j = 0; j < k; ++j)
      if (!kEmpty[size_t(j)]) want += double(ddst[size_t(j * ld + c)]);
    EXPECT_NEAR(double(dbias[size_t(c)]), want, tolerance<T>()) << c;
  }
}

TEST(OpsLinformerBias, SlotBiasSkipsEmptySlots) {
  check_slot_bias<double>();
  check_slot_bias<float>();
}

TEST(OpsLinformerBias, RefusesBadViews) {
  std::vector<float> E(k * m), sums(k), C(k * width), b(width);
  std::vector<uint8_t> empty(k);
  const auto e = matrix<const float>(E.data(), k, m);
  EXPECT_THROW(ops::masked_row_sums<float>(e, {}, vector_view(sums.data(), k - 1)), InvalidArgument);
  EXPECT_THROW(ops::masked_row_sums<float>(e, vector_view<const uint8_t>(empty.data(), k), vector_view(sums.data(), k)),
               InvalidArgument);  // a padding mask of k, not m
  EXPECT_THROW(ops::masked_row_sums<float>(e.t(), {}, vector_view(sums.data(), k)), InvalidArgument);  // not rows
  EXPECT_THROW(ops::add_row_weighted_bias<float>(vector_view<const float>(sums.data(), k), vector_view<const float>(b.data(), 2),
                                                 matrix(C.data(), k, width)),
               InvalidArgument);
  EXPECT_THROW(ops::add_row_weighted_bias_backward<float>(matrix<const float>(C.data(), k, width),
                                                          vector_view<const float>(sums.data(), k),
                                                          vector_view<const float>(b.data(), width), {}, {}),
               InvalidArgument);  // db is required
  EXPECT_THROW(ops::slot_bias<float>(vector_view<const float>(b.data(), width), {}, matrix(C.data(), k, width)),
               InvalidArgument);  // the empty slots are required
  EXPECT_THROW(ops::slot_bias_backward<float>(matrix<const float>(C.data(), k, width),
                                              vector_view<const uint8_t>(empty.data(), k), vector_view(b.data(), 2)),
               InvalidArgument);
}

}  // namespace
}  // namespace lf
