// The ops of the sparse-pattern kinds (ops/sparse_attention.h) and of `sinkhorn` (ops/sinkhorn.h): each
// refuses a bad shape with lf::InvalidArgument, and each kernel matches its plain reference in double
// and float at odd sizes (the layers' gradients and thread-count independence are tested in
// tests/attention/).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "cpu/sinkhorn.h"
#include "cpu/sparse_attention.h"
#include "linformer/error.h"
#include "linformer/rng.h"
#include "linformer/tensor.h"
#include "ops/sinkhorn.h"
#include "ops/sparse_attention.h"
#include "test_util.h"

namespace lf {
namespace {
using test::tolerance;

// ---- sparse attention ------------------------------------------------------------------------------

template <class T>
void sparse_matches_reference(bool causal, double tile_density) {
  const int64_t B = 2, n = 37, h = 3, d_h = 5, d = h * d_h;
  const SparsePattern p = ops::build_sparse_pattern(n, n, causal, [&](int64_t t, std::vector<int32_t>& keys) {
    for (int64_t j = 0; j < n; ++j)
      if (uniform01(9, 1, uint64_t(t * n + j)) < 0.3 || j == t) keys.push_back(int32_t(j));
  }, true);
  std::vector<uint8_t> mask(size_t(B * n), 0);
  mask[size_t(n + 4)] = 1;
  const SparseShape s{B, n, n, h, d_h, 0.4, causal, mask.data(), 0.1, 5, tile_density};
  const auto q = test::random_vector<T>(B * n * d, 1), k = test::random_vector<T>(B * n * d, 2),
             v = test::random_vector<T>(B * n * d, 3);
  std::vector<T> out(q.size()), ref(q.size()), probs(size_t(B * h * p.nnz()));
  auto act = [&](const std::vector<T>& x) { return TensorView<const T>(x.data(), {B, n, d}); };
  ops::sparse_attention_forward(s, p, act(q), act(k), act(v), TensorView<T>(probs.data(), {B, h, p.nnz()}),
                                TensorView<T>(out.data(), {B, n, d}));
  sparse_attention_forward_ref(s, p, q.data(), k.data(), v.data(), ref.data());
  LF_EXPECT_CLOSE(out.data(), ref.data(), int64_t(out.size()), tolerance<T>());
  // Inference (no probabilities kept) gives the same output.
  std::vector<T> again(q.size());
  ops::sparse_attention_forward(s, p, act(q), act(k), act(v), TensorView<T>(), TensorView<T>(again.data(), {B, n, d}));
  EXPECT_EQ(again, out);
}

TEST(PatternKindOps, SparseAttentionMatchesItsReference) {
  for (bool causal : {false, true})
    for (double density : {0.0, 2.0}) {
      sparse_matches_reference<double>(causal, density);
      sparse_matches_reference<float>(causal, density);
    }
}

TEST(PatternKindOps, SparseAttentionRefusesBadShapes) {
  const SparsePattern p = ops::build_sparse_pattern(4, 4, false, [](int64_t t, std::vector<int32_t>& keys) {
    keys.push_back(int32_t(t));
  }, false);
  const SparseShape s{1, 4, 4, 2, 3};
  std::vector<double> x(24), wrong(20), probs(8);
  const TensorView<double> good(x.data(), {1, 4, 6}), bad(wrong.data(), {1, 4, 5});
  EXPECT_THROW(ops::sparse_attention_forward<double>(s, p, bad, good, good, {}, good), InvalidArgument);
  EXPECT_THROW(ops::sparse_attention_forward<double>(s, p, good, good, good, TensorView<double>(probs.data(), {7}),
                                                     good),
               InvalidArgument);
  // The backward needs the transpose.
  EXPECT_THROW(ops::sparse_attention_backward<double>(s, p, good, good, good, good, TensorView<double>(probs.data(), {1, 2, 4}),
                                                      good, good, good, good),
               InvalidArgument);
}

// ---- sinkhorn --------------------------------------------------------------------------------------

// n = 8 in blocks of 3 (n_b = 3, n_p = 9), 2 heads of width 3; sample 1 pads position 2.
struct SinkhornRig {
  static constexpr int64_t B = 2, n = 8, h = 2, d_h = 3, d = h * d_h, blk = 3, nb = 3, np = 9;
  std::vector<uint8_t> valid, partner;
  explicit SinkhornRig(bool causal) : valid(size_t(B * np), 1), partner(size_t(B * nb * blk), 1) {
    for (int64_t b = 0; b < B; ++b) valid[size_t(b * np + 8)] = 0;
    valid[size_t(np + 2)] = 0;
    if (causal)
      for (int64_t r = 0; r < blk; ++r) partner[size_t(r)] = 0;  // block 0 has no partner
  }
  ops::Mask valid_view() const { return TensorView<const uint8_t>(valid.data(), {B, np}); }
  SinkhornBlocks blocks(bool causal, double dropout) const {
    SinkhornBlocks s;
    s.B = B, s.n = n, s.h = h, s.d_h = d_h, s.block = blk, s.nb = nb, s.causal = causal, s.valid = valid.data(),
    s.partner_valid = partner.data(), s.dropout = dropout, s.seed = 3;
    return s;
  }
};

template <class T>
void sinkhorn_ops_match_references(bool causal) {
  using R = SinkhornRig;
  const R rig(causal);
  const auto x = test::random_vector<T>(R::B * R::n * R::d, 1);
  // Heads: a plain gather, invalid rows zero; merging back gives x at valid positions.
  std::vector<T> heads(size_t(R::B * R::np * R::d)), back(x.size());
  ops::sinkhorn_split_heads(TensorView<const T>(x.data(), {R::B, R::n, R::d}), rig.valid_view(),
                            TensorView<T>(heads.data(), {R::B, R::h, R::np, R::d_h}));
  ops::sinkhorn_merge_heads(TensorView<const T>(heads.data(), {R::B, R::h, R::np, R::d_h}), rig.valid_view(),
                            TensorView<T>(back.data(), {R::B, R::n, R::d}));
  for (int64_t b = 0; b < R::B; ++b)
    for (int64_t t = 0; t < R::n; ++t)
      for (int64_t c = 0; c < R::d; ++c) {
        const bool ok = rig.valid[size_t(b * R::np + t)];
        EXPECT_EQ(heads[size_t(((b * R::h + c / R::d_h) * R::np + t) * R::d_h + c % R::d_h)],
                  ok ? x[size_t((b * R::n + t) * R::d + c)] : T(0));
        EXPECT_EQ(back[size_t((b * R::n + t) * R::d + c)], ok ? x[size_t((b * R::n + t) * R::d + c)] : T(0));
      }
  // Block means: the plain mean over the valid positions of the block (causal: of the blocks before).
  std::vector<T> means(size_t(R::B * R::nb * R::d));
  ops::sinkhorn_block_means_forward(TensorView<const T>(x.data(), {R::B, R::n, R::d}), rig.valid_view(), causal,
                                    TensorView<T>(means.data(), {R::B, R::nb, R::d}));
  for (int64_t b = 0; b < R::B; ++b)
    for (int64_t i = 0; i < R::nb; ++i)
      for (int64_t c = 0; c < R::d; ++c) {
        double sum = 0;
        int64_t count = 0;
        for (int64_t t = causal ? 0 : i * R::blk; t < (causal ? i * R::blk : (i + 1) * R::blk); ++t)
          if (rig.valid[size_t(b * R::np + t)]) sum += double(x[size_t((b * R::n + t) * R::d + c)]), ++count;
        EXPECT_NEAR(double(means[size_t((b * R::nb + i) * R::d + c)]), count ? sum / double(count) : 0.0,
                    tolerance<T>());
      }
  // Sort: every (sample, head) is sinkhorn_permutation of its columns.
  const int64_t nb_max = 4, out_w = R::h * nb_max;
  const auto scores = test::random_vector<T>(R::B * R::nb * out_w, 4);
  std::vector<T> perm(size_t(R::B * R::h * R::nb * R::nb)), one(size_t(R::nb * R::nb));
  ops::sinkhorn_sort_forward(TensorView<const T>(scores.data(), {R::B, R::nb, out_w}), 5, 0.7, causal,
                             TensorView<T>(perm.data(), {R::B, R::h, R::nb, R::nb}));
  for (int64_t b = 0; b < R::B; ++b)
    for (int64_t i = 0; i < R::h; ++i) {
      sinkhorn_permutation<T>(scores.data() + b * R::nb * out_w + i * nb_max, out_w, R::nb, 5, 0.7, causal,
                              one.data(), nullptr);
      EXPECT_TRUE(std::equal(one.begin(), one.end(), perm.begin() + (b * R::h + i) * R::nb * R::nb));
    }
  // Block attention against its dense reference, with dropout.
  for (double dropout : {0.0, 0.3}) {
    const auto q = test::random_vector<T>(R::B * R::n * R::d, 5);
    std::vector<std::vector<T>> kv;
    for (uint64_t seed = 6; seed < 10; ++seed) kv.push_back(test::random_vector<T>(R::B * R::np * R::d, seed));
    auto hm = [&](const std::vector<T>& e) { return TensorView<const T>(e.data(), {R::B, R::h, R::np, R::d_h}); };
    const ops::SinkhornMasks m{rig.valid_view(), TensorView<const uint8_t>(rig.partner.data(), {R::B, R::nb, R::blk}),
                               causal, dropout, 3};
    std::vector<T> o(q.size()), ref(q.size()), probs(size_t(R::B * R::h * R::np * 2 * R::blk));
    ops::sinkhorn_block_attention_forward(m, TensorView<const T>(q.data(), {R::B, R::n, R::d}), hm(kv[0]), hm(kv[1]),
                                          hm(kv[2]), hm(kv[3]),
                                          TensorView<T>(probs.data(), {R::B, R::h, R::np, 2 * R::blk}),
                                          TensorView<T>(o.data(), {R::B, R::n, R::d}));
    sinkhorn_block_attention_forward_ref(rig.blocks(causal, dropout), q.data(), kv[0].data(), kv[1].data(),
                                         kv[2].data(), kv[3].data(), ref.data());
    LF_EXPECT_CLOSE(o.data(), ref.data(), int64_t(o.size()), tolerance<T>());
  }
}

TEST(PatternKindOps, SinkhornOpsMatchTheirReferences) {
  for (bool causal : {false, true}) {
    sinkhorn_ops_match_references<double>(causal);
    sinkhorn_ops_match_references<float>(causal);
  }
}

TEST(PatternKindOps, SinkhornOpsRefuseBadShapes) {
  using R = SinkhornRig;
  const R rig(false);
  std::vector<double> x(size_t(R::B * R::np * R::d)), y(x.size());
  const TensorView<double> act(x.data(), {R::B, R::n, R::d}), heads(y.data(), {R::B, R::h, R::np, R::d_h});
  // A validity mask of 7 columns is no whole number of the 3 blocks.
  EXPECT_THROW(ops::sinkhorn_block_means_forward<double>(act, TensorView<const uint8_t>(rig.valid.data(), {R::B, 7}),
                                                         false, TensorView<double>(y.data(), {R::B, R::nb, R::d})),
               InvalidArgument);
  EXPECT_THROW(ops::sinkhorn_split_heads<double>(act, rig.valid_view(), TensorView<double>(y.data(), {R::B, R::h, R::np, 2})),
               InvalidArgument);
  EXPECT_THROW(ops::sinkhorn_sort_forward<double>(TensorView<const double>(x.data(), {R::B, R::nb, 5}), 3, 1.0, false,
                                                  TensorView<double>(y.data(), {R::B, R::h, R::nb, R::nb})),
               InvalidArgument);
  const ops::SinkhornMasks m{rig.valid_view(), TensorView<const uint8_t>(rig.partner.data(), {R::B, R::nb, 2}), false,
                             0, 0};
  EXPECT_THROW(ops::sinkhorn_block_attention_forward<double>(m, act, heads, heads, heads, heads, {}, act),
               InvalidArgument);
}

}  // namespace
}  // namespace lf
