// Flash attention: equal to `full` (same parameters, copied) in outputs and gradients for every
// option — causal, key padding (down to one unpadded key and fully masked query rows), cross-attention,
// lengths that are not multiples of the tile, one head and several, dropout with the same mask;
// finite-difference gradients in double; the tile product and the kernels against plain references;
// no n×n buffer at n = 16384 (peak RSS); the registry and bad configurations.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "attention/sdpa.h"
#include "attention_test_util.h"
#include "cpu/flash.h"
#include "cpu/tile_gemm.h"
#include "linformer/error.h"
#include "linformer/runtime.h"

namespace lf {
namespace {

using test::AttentionCase;
using test::AttentionRig;
using test::describe;
using test::with_dropout;

// A self-attention case (m = 0) or a cross-attention case (m > 0) of kind `flash`.
AttentionCase flash_case(int64_t n, int64_t heads = 2, int64_t d = 8, bool causal = false, bool bias = false,
                         int64_t m = 0, int64_t B = 2) {
  AttentionCase c;
  c.kind = "flash";
  c.dims = AttentionDims{d, heads, std::max(n, m), causal, 0};
  c.options = {{"qkv_bias", bias}};
  c.B = B;
  c.n = n;
  c.m = m;
  return c;
}

// Key padding: sample 0 pads its last two keys; sample 1 pads every key but `keep` (so with a causal
// mask its query rows before `keep` see no key at all); further samples pad nothing.
AttentionCase with_tail_padding(AttentionCase c, int64_t keep) {
  const int64_t kv = c.m > 0 ? c.m : c.n;
  c.mask.assign(size_t(c.B * kv), 0);
  for (int64_t j = std::max<int64_t>(0, kv - 2); j < kv && kv > 2; ++j) c.mask[size_t(j)] = 1;
  if (c.B > 1)
    for (int64_t j = 0; j < kv; ++j) c.mask[size_t(kv + j)] = j == keep ? 0 : 1;
  return c;
}

// Builds `full` and `flash` for the case, copies full's parameter values into flash by name, runs
// forward and backward on the same input, and compares the outputs, the input (and context) gradients
// and every parameter gradient.
template <class T>
void expect_flash_equals_full(const AttentionCase& c, double tol, double grad_tol) {
  SCOPED_TRACE(describe(c));
  AttentionCase fc = c, lc = c;
  fc.kind = "full";
  lc.kind = "flash";
  AttentionRig<T> full(fc, 3), flash(lc, 5);
  ASSERT_EQ(full.arena.params().size(), flash.arena.params().size());
  for (const ParamInfo& p : full.arena.params()) {
    const int id = flash.arena.find(p.name);
    ASSERT_GE(id, 0) << p.name << " missing in flash";
    ASSERT_EQ(flash.arena.info(id).shape, p.shape) << p.name;
    std::copy(full.arena.values() + p.offset, full.arena.values() + p.offset + p.numel, flash.arena.value(id));
  }
  flash.x = full.x;
  flash.ctx = full.ctx;
  full.forward(fc);
  flash.forward(lc);
  LF_EXPECT_CLOSE(flash.out.data(), full.out.data(), int64_t(full.out.size()), tol);

  const std::vector<T> w = test::random_vector<T>(int64_t(full.out.size()), 99);
  std::vector<T> dx_full(full.x.size()), dx_flash(full.x.size()), dc_full(full.ctx.size()), dc_flash(full.ctx.size());
  full.arena.zero_grad();
  flash.arena.zero_grad();
  full.layer->backward(w.data(), dx_full.data(), c.m > 0 ? dc_full.data() : nullptr);
  flash.layer->backward(w.data(), dx_flash.data(), c.m > 0 ? dc_flash.data() : nullptr);
  LF_EXPECT_CLOSE(dx_flash.data(), dx_full.data(), int64_t(dx_full.size()), grad_tol);
  if (c.m > 0) {
    LF_EXPECT_CLOSE(dc_flash.data(), dc_full.data(), int64_t(dc_full.size()), grad_tol);
  }
  // Relative to the largest parameter gradient: to_k.bias has an exactly zero gradient (softmax
  // ignores a constant added to a row of scores), so both layers give rounding noise there.
  double scale = 1e-12;
  for (int64_t e = 0; e < full.arena.numel(); ++e) scale = std::max(scale, std::abs(double(full.arena.grads()[e])));
  for (const ParamInfo& p : full.arena.params()) {
    const T* g = flash.arena.grads() + flash.arena.params()[size_t(flash.arena.find(p.name))].offset;
    EXPECT_LE(test::max_rel_error(g, full.arena.grads() + p.offset, p.numel, scale), grad_tol) << p.name;
  }
}

void expect_flash_equals_full_both(const AttentionCase& c) {
  expect_flash_equals_full<double>(c, 1e-12, 1e-12);
  expect_flash_equals_full<float>(c, 1e-5, 1e-5);
}

TEST(FlashAttention, EqualsFullPlainAndCausal) {
  for (bool causal : {false, true})
    for (bool bias : {false, true}) expect_flash_equals_full_both(flash_case(6, 2, 8, causal, bias));
}

TEST(FlashAttention, EqualsFullWithKeyPaddingMask) {
  // Sample 1 keeps a single key; with the causal mask its rows 0..4 see no key at all (output 0).
  expect_flash_equals_full_both(with_tail_padding(flash_case(7, 2, 8, false, true), 5));
  expect_flash_equals_full_both(with_tail_padding(flash_case(7, 2, 8, true, false), 5));
  // Across tiles: the one kept key sits in the second key tile; rows of the first tile see nothing.
  expect_flash_equals_full_both(with_tail_padding(flash_case(130, 2, 8, false, false), 100));
  expect_flash_equals_full_both(with_tail_padding(flash_case(130, 2, 8, true, true), 100));
}

TEST(FlashAttention, EqualsFullForCrossAttention) {
  expect_flash_equals_full_both(flash_case(5, 2, 8, false, true, 7));
  expect_flash_equals_full_both(with_tail_padding(flash_case(5, 2, 8, false, false, 7), 3));
  expect_flash_equals_full_both(flash_case(65, 2, 8, false, false, 130));
  expect_flash_equals_full_both(with_tail_padding(flash_case(130, 4, 16, false, true, 63), 62));
}

TEST(FlashAttention, EqualsFullForLengthsAcrossTiles) {
  for (int64_t n : {1, 63, 64, 65, 130})
    for (bool causal : {false, true}) expect_flash_equals_full_both(flash_case(n, 2, 8, causal, false));
  // Head width 32: the micro-kernel's full register blocks (not only its edges) in both precisions.
  expect_flash_equals_full_both(flash_case(130, 2, 64, true, true));
  expect_flash_equals_full_both(with_tail_padding(flash_case(200, 2, 64, false, false, 0, 1), 0));
}

TEST(FlashAttention, EqualsFullForOneHeadAndSeveral) {
  for (int64_t heads : {1, 2, 4}) {
    expect_flash_equals_full_both(flash_case(65, heads, 16, false, true));
    expect_flash_equals_full_both(with_tail_padding(flash_case(65, heads, 16, true, false), 3));
  }
}

TEST(FlashAttention, EqualsFullWithDropout) {
  // training = true and the same seed: the same Philox mask on the probabilities, so the same result.
  expect_flash_equals_full_both(with_dropout(flash_case(6, 2, 8, false, true), 0.3));
  expect_flash_equals_full_both(with_dropout(with_tail_padding(flash_case(130, 2, 8, true, false), 100), 0.3));
  expect_flash_equals_full_both(with_dropout(flash_case(65, 2, 8, false, false, 70), 0.5));
}

TEST(FlashAttention, EqualsFullWithMoreThreadsThanHeads) {
  // Fewer (batch, head) pairs than threads: the backward splits the key tiles into chunks whose dQ
  // is summed afterwards. The result must not depend on the thread count.
  for (int threads : {1, 3, 4}) {
    SCOPED_TRACE(threads);
    const RuntimeScope scope(RuntimeOptions{threads});
    // Large enough (n·m·d ≥ 2²⁰) for the kernels to go parallel.
    expect_flash_equals_full_both(flash_case(200, 1, 64, false, true, 0, 1));
    expect_flash_equals_full_both(with_tail_padding(flash_case(200, 2, 64, true, false, 0, 1), 150));
  }
}

TEST(FlashAttention, GradientsMatchFiniteDifferences) {
  const std::vector<AttentionCase> cases = {
      flash_case(6, 2, 8, false, false),
      flash_case(6, 2, 8, true, true),
      with_tail_padding(flash_case(6, 2, 8, false, true), 2),
      with_tail_padding(flash_case(7, 2, 8, true, true), 4),  // fully masked query rows in sample 1
      with_tail_padding(flash_case(5, 2, 8, false, true, 7), 6),
      flash_case(4, 1, 8, false, true, 3),
      with_dropout(with_tail_padding(flash_case(6, 2, 8, true, true), 3), 0.3),
      with_dropout(flash_case(4, 2, 8, false, false, 6), 0.3),
      with_tail_padding(flash_case(70, 2, 8, true, false), 66),  // two query and two key tiles
      with_tail_padding(flash_case(3, 1, 4, false, true, 70, 2), 69),
  };
  for (const AttentionCase& c : cases) {
    SCOPED_TRACE(describe(c));
    test::check_attention_gradients(c);
  }
}

TEST(FlashAttention, CausalOutputIgnoresTheFuture) {
  AttentionCase c = flash_case(70, 2, 8, true, true);
  AttentionRig<double> a(c), b(c);
  for (int64_t e = 0; e < 8; ++e) b.x[size_t((c.n - 1) * 8 + e)] += 3.0;  // the last position of sample 0
  a.forward(c);
  b.forward(c);
  for (int64_t t = 0; t + 1 < c.n; ++t)
    for (int64_t e = 0; e < 8; ++e) EXPECT_EQ(a.out[size_t(t * 8 + e)], b.out[size_t(t * 8 + e)]) << t;
}

// ---- the kernels -------------------------------------------------------------------------------

template <class T>
void check_tile_gemm(double tol) {
  for (bool trans_a : {false, true})
    for (bool accumulate : {false, true})
      for (int64_t M : {1, 3, 4, 5, 8, 9, 64, 65})
        for (int64_t N : {1, 7, 8, 16, 17, 32, 33, 64, 70})
          for (int64_t K : {1, 5, 64, 67}) {
            SCOPED_TRACE(str_cat("M=", M, " N=", N, " K=", K, " trans_a=", trans_a, " acc=", accumulate));
            const int64_t lda = (trans_a ? M : K) + 3, ldb = N + 2, ldc = N + 5;
            const auto A = test::random_vector<T>((trans_a ? K : M) * lda, 1);
            const auto B = test::random_vector<T>(K * ldb, 2);
            auto C = test::random_vector<T>(M * ldc, 3);
            auto R = C;
            flash_tile_gemm<T>(trans_a, M, N, K, T(0.75), A.data(), lda, B.data(), ldb, accumulate, C.data(), ldc);
            flash_tile_gemm_ref<T>(trans_a, M, N, K, T(0.75), A.data(), lda, B.data(), ldb, accumulate, R.data(), ldc);
            LF_EXPECT_CLOSE(C.data(), R.data(), M * ldc, tol);  // the padding columns stay untouched too
          }
}

TEST(FlashAttention, TileProductMatchesReference) {
  check_tile_gemm<double>(1e-13);
  check_tile_gemm<float>(1e-5);
}

// Projected tensors for the kernel-level tests.
struct KernelCase {
  SdpaShape s;
  std::vector<double> q, k, v;
  KernelCase(int64_t B, int64_t n, int64_t mk, int64_t h, int64_t hk, int64_t d_h, bool causal) {
    s = SdpaShape{B, n, mk, h, hk, d_h, 1 / std::sqrt(double(d_h)), causal, nullptr, 0, 7};
    q = test::random_vector<double>(B * n * h * d_h, 21, -2, 2);
    k = test::random_vector<double>(B * mk * hk * d_h, 22, -2, 2);
    v = test::random_vector<double>(B * mk * hk * d_h, 23);
  }
};

TEST(FlashAttention, KernelsMatchSdpaWithOneKvHead) {
  // One key/value head shared by every query head: forward against the plain reference, backward
  // against sdpa_backward (both in double), with a mask leaving sample 1 a single key and dropout.
  for (bool causal : {false, true})
    for (double p : {0.0, 0.25}) {
      SCOPED_TRACE(str_cat("causal=", causal, " dropout=", p));
      const int64_t B = 2, n = 100, h = 3, d_h = 5;
      KernelCase kc(B, n, n, h, 1, d_h, causal);
      std::vector<uint8_t> mask(size_t(B * n), 0);
      for (int64_t j = 0; j < n; ++j) mask[size_t(n + j)] = j != 80;
      mask[3] = 1;
      kc.s.key_mask = mask.data();
      kc.s.dropout = p;
      const size_t qsize = size_t(B * n * h * d_h), ksize = size_t(B * n * d_h);
      std::vector<double> out(qsize), ref(qsize), lse(static_cast<size_t>(B * h * n));
      flash_forward(kc.s, kc.q.data(), kc.k.data(), kc.v.data(), out.data(), lse.data());
      sdpa_forward_ref(kc.s, kc.q.data(), kc.k.data(), kc.v.data(), ref.data());
      LF_EXPECT_CLOSE(out.data(), ref.data(), int64_t(qsize), 1e-12);
      if (causal) {  // sample 1, rows before its one key: no key visible, output exactly 0, lse +inf
        for (int64_t t = 0; t < 80; ++t)
          for (int64_t i = 0; i < h; ++i) {
            EXPECT_EQ(lse[size_t((1 * h + i) * n + t)], std::numeric_limits<double>::infinity());
            for (int64_t c = 0; c < d_h; ++c) EXPECT_EQ(out[size_t(((n + t) * h + i) * d_h + c)], 0.0);
          }
      }
      const auto dout = test::random_vector<double>(int64_t(qsize), 24);
      std::vector<double> dq(qsize), dk(ksize), dv(ksize);
      flash_backward(kc.s, kc.q.data(), kc.k.data(), kc.v.data(), out.data(), lse.data(), dout.data(), dq.data(),
                     dk.data(), dv.data());
      std::vector<double> probs(static_cast<size_t>(B * h * n * n)), o2(qsize), scratch(static_cast<size_t>(2 * n * n));
      std::vector<double> dq2(qsize), dk2(ksize), dv2(ksize);
      sdpa_forward(kc.s, kc.q.data(), kc.k.data(), kc.v.data(), probs.data(), o2.data());
      sdpa_backward(kc.s, kc.q.data(), kc.k.data(), kc.v.data(), probs.data(), dout.data(), dq2.data(), dk2.data(),
                    dv2.data(), scratch.data());
      LF_EXPECT_CLOSE(dq.data(), dq2.data(), int64_t(qsize), 1e-12);
      LF_EXPECT_CLOSE(dk.data(), dk2.data(), int64_t(ksize), 1e-12);
      LF_EXPECT_CLOSE(dv.data(), dv2.data(), int64_t(ksize), 1e-12);
    }
}

// Padding for the kernel-level cases: sample 0 pads its last three keys, sample 1 keeps only keys
// mk/2 and mk − 1, further samples pad nothing.
std::vector<uint8_t> kernel_mask(int64_t B, int64_t mk) {
  std::vector<uint8_t> mask(size_t(B * mk), 0);
  for (int64_t j = mk - 3; j < mk; ++j) mask[size_t(j)] = 1;
  if (B > 1)
    for (int64_t j = 0; j < mk; ++j) mask[size_t(mk + j)] = j != mk / 2 && j != mk - 1;
  return mask;
}

// flash_forward / flash_backward in T on KernelCase's tensors (rounded to T), results in double.
template <class T>
void run_flash(const SdpaShape& s, const KernelCase& kc, const std::vector<double>& dout, std::vector<double>& out,
               std::vector<double>& lse, std::vector<double>& dq, std::vector<double>& dk, std::vector<double>& dv) {
  auto to_t = [](const std::vector<double>& x) { return std::vector<T>(x.begin(), x.end()); };
  const std::vector<T> q = to_t(kc.q), k = to_t(kc.k), v = to_t(kc.v), g = to_t(dout);
  std::vector<T> o(q.size()), l(static_cast<size_t>(s.B * s.h * s.n)), gq(q.size()), gk(k.size()), gv(k.size());
  flash_forward<T>(s, q.data(), k.data(), v.data(), o.data(), l.data());
  flash_backward<T>(s, q.data(), k.data(), v.data(), o.data(), l.data(), g.data(), gq.data(), gk.data(), gv.data());
  out.assign(o.begin(), o.end());
  lse.assign(l.begin(), l.end());
  dq.assign(gq.begin(), gq.end());
  dk.assign(gk.begin(), gk.end());
  dv.assign(gv.begin(), gv.end());
}

// Head width 64 (the micro-kernel's full register blocks in float and double) with lengths that are
// not multiples of the tile: the kernels in T against sdpa_forward_ref / sdpa_backward in double.
template <class T>
void expect_kernels_match_sdpa(int64_t B, int64_t n, int64_t mk, int64_t h, int64_t hk, bool causal, double p,
                               double tol, int64_t q_start = 0) {
  SCOPED_TRACE(str_cat(sizeof(T) == 4 ? "float" : "double", " B=", B, " n=", n, " mk=", mk, " h=", h, " hk=", hk,
                       " causal=", causal, " dropout=", p, " q_start=", q_start));
  KernelCase kc(B, n, mk, h, hk, 64, causal);
  kc.s.q_start = q_start;
  const std::vector<uint8_t> mask = kernel_mask(B, mk);
  kc.s.key_mask = mask.data();
  kc.s.dropout = p;
  const size_t qsize = kc.q.size(), ksize = kc.k.size();
  const auto dout = test::random_vector<double>(int64_t(qsize), 24);
  std::vector<double> out, lse, dq, dk, dv;
  run_flash<T>(kc.s, kc, dout, out, lse, dq, dk, dv);
  std::vector<double> ref(qsize), probs(static_cast<size_t>(B * h * n * mk)), o2(qsize),
      scratch(static_cast<size_t>(sdpa_backward_scratch(kc.s))), dq2(qsize), dk2(ksize), dv2(ksize);
  sdpa_forward_ref(kc.s, kc.q.data(), kc.k.data(), kc.v.data(), ref.data());
  LF_EXPECT_CLOSE(out.data(), ref.data(), int64_t(qsize), tol);
  sdpa_forward(kc.s, kc.q.data(), kc.k.data(), kc.v.data(), probs.data(), o2.data());
  sdpa_backward(kc.s, kc.q.data(), kc.k.data(), kc.v.data(), probs.data(), dout.data(), dq2.data(), dk2.data(),
                dv2.data(), scratch.data());
  LF_EXPECT_CLOSE(dq.data(), dq2.data(), int64_t(qsize), tol);
  LF_EXPECT_CLOSE(dk.data(), dk2.data(), int64_t(ksize), tol);
  LF_EXPECT_CLOSE(dv.data(), dv2.data(), int64_t(ksize), tol);
}

TEST(FlashAttention, KernelsMatchSdpaOnFullRegisterBlocks) {
  for (bool fp32 : {true, false}) {
    auto check = [&](int64_t B, int64_t n, int64_t mk, int64_t h, int64_t hk, bool causal, double p) {
      if (fp32)
        expect_kernels_match_sdpa<float>(B, n, mk, h, hk, causal, p, 2e-5);
      else
        expect_kernels_match_sdpa<double>(B, n, mk, h, hk, causal, p, 1e-12);
    };
    check(2, 150, 200, 2, 2, false, 0.0);  // cross attention, mk ≠ n, neither a multiple of 64
    check(2, 150, 200, 3, 1, false, 0.2);  // one key head, dropout
    check(2, 201, 201, 2, 2, true, 0.25);  // causal, padding, dropout
    check(1, 129, 129, 4, 1, true, 0.0);   // causal, one key head, a one-row last tile
    check(1, 64, 64, 2, 2, false, 0.0);    // exactly one tile
  }
}

// A decoding step: n new queries at positions [q_start, q_start + n) against the q_start cached keys
// and their own, under the causal mask; key tiles start before, at and after the query rows' tile.
TEST(FlashAttention, KernelsMatchSdpaForQueriesAfterCachedKeys) {
  for (const auto& [n, mk] : {std::pair<int64_t, int64_t>{1, 6}, {1, 200}, {7, 300}, {150, 300}, {130, 131}}) {
    expect_kernels_match_sdpa<double>(2, n, mk, 2, 2, true, 0.0, 1e-12, mk - n);
    expect_kernels_match_sdpa<float>(1, n, mk, 2, 1, true, 0.0, 2e-5, mk - n);
  }
  KernelCase kc(1, 4, 9, 1, 1, 8, true);
  std::vector<double> out(kc.q.size()), lse(4);
  kc.s.q_start = 4;  // 4 + 4 ≠ 9 keys
  EXPECT_THROW(flash_forward(kc.s, kc.q.data(), kc.k.data(), kc.v.data(), out.data(), lse.data()), InvalidArgument);
}

TEST(FlashAttention, KernelResultsDoNotDependOnTheThreadCount) {
  // One (batch, key head) pair: the backward deals the key tiles to chunks whose dQ is summed
  // afterwards; their number comes from the shape, so 1, 2 and 3 threads give the same bits.
  KernelCase kc(1, 300, 300, 2, 1, 64, true);
  const std::vector<uint8_t> mask = kernel_mask(1, 300);
  kc.s.key_mask = mask.data();
  kc.s.dropout = 0.1;
  const auto dout = test::random_vector<double>(int64_t(kc.q.size()), 25);
  std::vector<double> ref[5];
  for (int threads : {1, 2, 3}) {
    SCOPED_TRACE(threads);
    const RuntimeScope scope(RuntimeOptions{threads});
    std::vector<double> got[5];
    run_flash<float>(kc.s, kc, dout, got[0], got[1], got[2], got[3], got[4]);
    if (threads == 1) {
      for (int e = 0; e < 5; ++e) ref[e] = got[e];
      continue;
    }
    for (int e = 0; e < 5; ++e) EXPECT_EQ(got[e], ref[e]) << "output " << e;
  }
}

TEST(FlashAttention, KernelGradientsMatchFiniteDifferences) {
  // In double, head width 16 (the double micro-kernel's full 8 × 16 blocks) over two query and key
  // tiles, causal with padding and one key head shared by two query heads; loss = Σ w ∘ O.
  KernelCase kc(2, 70, 70, 2, 1, 16, true);
  const std::vector<uint8_t> mask = kernel_mask(2, 70);
  kc.s.key_mask = mask.data();
  const auto w = test::random_vector<double>(int64_t(kc.q.size()), 26);
  std::vector<double> out(kc.q.size()), lse(static_cast<size_t>(2 * 2 * 70));
  auto loss = [&] {
    flash_forward<double>(kc.s, kc.q.data(), kc.k.data(), kc.v.data(), out.data(), lse.data());
    double sum = 0;
    for (size_t e = 0; e < out.size(); ++e) sum += w[e] * out[e];
    return sum;
  };
  loss();
  std::vector<double> dq(kc.q.size()), dk(kc.k.size()), dv(kc.v.size());
  flash_backward<double>(kc.s, kc.q.data(), kc.k.data(), kc.v.data(), out.data(), lse.data(), w.data(), dq.data(),
                         dk.data(), dv.data());
  test::expect_gradient_matches(loss, kc.q.data(), int64_t(kc.q.size()), dq.data(), "dq");
  test::expect_gradient_matches(loss, kc.k.data(), int64_t(kc.k.size()), dk.data(), "dk");
  test::expect_gradient_matches(loss, kc.v.data(), int64_t(kc.v.size()), dv.data(), "dv");
}

// ---- memory ------------------------------------------------------------------------------------

TEST(FlashAttention, LongSequenceDoesNotAllocateTheScores) {
  // n = 16384, d = 64, one head: an n×n float buffer is 1 GiB (full attention keeps one for the
  // probabilities and two more as backward scratch). flash keeps O(n·d): peak RSS may grow by far less.
  const int64_t n = 16384, d = 64;
  LF_SKIP_MEMORY_TEST_UNDER_SANITIZERS();
  LF_SKIP_WITHOUT_PROC_STATUS();
  ParamArena<float> arena;
  auto layer = make_attention<float>({"flash", {d, 1, n, false, 0}, json::object(), ""}, arena);
  test::expect_peak_rss_growth_below(arena, *layer, n, d, int64_t(256) << 20);
}

// ---- registry and configurations ---------------------------------------------------------------

TEST(FlashAttention, IsRegisteredWithFullSupport) {
  const AttentionSupport s = AttentionRegistry::instance().get("flash").info.support;
  EXPECT_TRUE(s.causal);
  EXPECT_TRUE(s.key_padding_mask);
  EXPECT_TRUE(s.variable_length);
  EXPECT_TRUE(s.cross_attention);
  EXPECT_TRUE(s.attention_mask);
  EXPECT_EQ(validate_attention({"flash", {8, 2, 8, true, 0.1}, json::object(), ""}),
            json({{"qkv_bias", false}, {"kv_heads", 2}}));
}

TEST(FlashAttention, RefusesBadConfigurations) {
  ParamArena<float> arena;
  EXPECT_THROW(make_attention<float>({"flash", {8, 3, 8, false, 0}, json::object(), ""}, arena), InvalidArgument);
  EXPECT_THROW(make_attention<float>({"flash", {8, 2, 8, false, 0}, {{"k", 4}}, ""}, arena), InvalidArgument);
  EXPECT_THROW(make_attention<float>({"flash", {8, 2, 8, false, 0}, {{"qkv_bias", 1}}, ""}, arena), InvalidArgument);
  EXPECT_THROW(make_attention<float>({"flash", {8, 2, 8, false, 1.0}, json::object(), ""}, arena), InvalidArgument);
  EXPECT_THROW(make_attention<float>({"flash", {8, 2, 0, false, 0}, json::object(), ""}, arena), InvalidArgument);
  // Longer than max_len.
  AttentionCase c = flash_case(9);
  AttentionRig<float> rig(c);
  AttentionCase small = flash_case(6);
  AttentionRig<float> layer(small);
  std::vector<float> out(rig.out.size());
  EXPECT_THROW(layer.layer->forward(rig.input(c), out.data(), false, 0), InvalidArgument);
  // Causal cross-attention with different lengths.
  AttentionCase cross = flash_case(5, 2, 8, true, false, 7);
  AttentionRig<float> crig(cross);
  EXPECT_THROW(crig.forward(cross), InvalidArgument);
}

}  // namespace
}  // namespace lf
