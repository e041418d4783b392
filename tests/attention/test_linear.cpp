// The linear-attention core and the `linear` kind (elu(x) + 1 features). The core against plain
// O(n²) sums (the causal one an explicit sum over s ≤ t) with key padding, chunk boundaries and
// stabiliser shifts, and its backward against finite differences; the layer against a double
// reference written from its parameters by name (float within 2e-5), finite-difference gradients for
// every option (causal, mask, n < max_len, cross-attention, qkv_bias, chunk boundaries: n not a
// multiple of the chunk, n < chunk, several chunks), causality (outputs up to t bitwise unchanged by
// later inputs, Jacobian exactly zero above the diagonal, a shorter sequence gives the same prefix
// bitwise), padded keys without influence, thread-count independence, memory (no n×n and no
// per-position d_h×d_h state at n = 16384), the registry and bad options.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "attention/linear_core.h"
#include "attention_test_util.h"
#include "cpu/linear_attention.h"
#include "linformer/error.h"
#include "linformer/runtime.h"

namespace lf {
namespace {

using test::AttentionCase;
using test::AttentionRig;
using test::cross;
using test::describe;
using test::with_mask;

// ---- the core ------------------------------------------------------------------------------------

struct CoreCase {
  LinearCoreShape s;
  std::vector<uint8_t> mask;  // (B, m) or empty
  bool shifted = false;       // causal: random key shifts μ per key
};

CoreCase core_case(int64_t n, int64_t m, bool causal, int64_t chunk, bool masked = false, bool shifted = false) {
  CoreCase c;
  c.s.B = 2;
  c.s.h = 2;
  c.s.n = n;
  c.s.m = m;
  c.s.r = 5;
  c.s.dv = 3;
  c.s.causal = causal;
  c.s.chunk = chunk;
  c.s.eps = 1e-3;  // large enough that a wrong eps shows
  if (masked) {
    c.mask.assign(size_t(c.s.B * m), 0);
    c.mask[1] = 1;
    c.mask[size_t(m - 1)] = 1;
    for (int64_t j = 0; j < m; j += 3) c.mask[size_t(m + j)] = 1;
  }
  c.shifted = shifted;
  return c;
}

struct CoreData {
  std::vector<double> fq, fk, v, shift;
};

CoreData core_data(const CoreCase& c, uint64_t seed) {
  const LinearCoreShape& s = c.s;
  CoreData d;
  d.fq = test::random_vector<double>(s.B * s.n * s.h * s.r, seed, 0.05, 1.0);  // features are non-negative
  d.fk = test::random_vector<double>(s.B * s.m * s.h * s.r, seed + 1, 0.05, 1.0);
  d.v = test::random_vector<double>(s.B * s.m * s.h * s.dv, seed + 2);
  if (c.shifted) d.shift = test::random_vector<double>(s.B * s.h * s.m, seed + 3, -1.5, 3.0);  // (B, h, m)
  for (int64_t b = 0; b < s.B; ++b)  // garbage at padded keys: it must not reach anything
    for (int64_t j = 0; j < s.m; ++j)
      if (!c.mask.empty() && c.mask[size_t(b * s.m + j)]) {
        for (int64_t e = 0; e < s.h * s.r; ++e) d.fk[size_t((b * s.m + j) * s.h * s.r + e)] = std::nan("");
        for (int64_t e = 0; e < s.h * s.dv; ++e) d.v[size_t((b * s.m + j) * s.h * s.dv + e)] = 1e300;
      }
  return d;
}

// out (B, n, h·d_v) by the definition: explicit sums over the keys each query sees.
std::vector<double> core_reference(const CoreCase& c, const CoreData& d) {
  const LinearCoreShape& s = c.s;
  std::vector<double> out(size_t(s.B * s.n * s.h * s.dv), 0.0);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t hd = 0; hd < s.h; ++hd)
      for (int64_t t = 0; t < s.n; ++t) {
        std::vector<double> num(size_t(s.dv), 0.0);
        double den = 0;
        const int64_t last = s.causal ? t : s.m - 1;
        const double* sh = c.shifted ? d.shift.data() + (b * s.h + hd) * s.m : nullptr;
        double run = -INFINITY;  // R_t: the largest shift of a valid key up to t
        for (int64_t j = 0; sh && j <= last; ++j)
          if (c.mask.empty() || !c.mask[size_t(b * s.m + j)]) run = std::max(run, sh[j]);
        for (int64_t j = 0; j <= last; ++j) {
          if (!c.mask.empty() && c.mask[size_t(b * s.m + j)]) continue;
          double w = 0;
          for (int64_t e = 0; e < s.r; ++e)
            w += d.fq[size_t(((b * s.n + t) * s.h + hd) * s.r + e)] * d.fk[size_t(((b * s.m + j) * s.h + hd) * s.r + e)];
          if (sh) w *= std::exp(sh[j] - run);
          den += w;
          for (int64_t e = 0; e < s.dv; ++e) num[size_t(e)] += w * d.v[size_t(((b * s.m + j) * s.h + hd) * s.dv + e)];
        }
        for (int64_t e = 0; e < s.dv; ++e)
          out[size_t(((b * s.n + t) * s.h + hd) * s.dv + e)] = num[size_t(e)] / (den + s.eps);
      }
  return out;
}

template <class T>
std::vector<T> core_forward(const CoreCase& c, const CoreData& d, std::vector<T>* den_out = nullptr) {
  LinearCoreShape s = c.s;
  s.key_mask = c.mask.empty() ? nullptr : c.mask.data();
  const auto fq = test::cast_vector<T>(d.fq), fk = test::cast_vector<T>(d.fk), v = test::cast_vector<T>(d.v),
             shift = test::cast_vector<T>(d.shift);
  std::vector<T> out(size_t(s.B * s.n * s.h * s.dv)), den(size_t(s.B * s.h * s.n));
  linear_core_forward<T>(s, fq.data(), fk.data(), v.data(), c.shifted ? shift.data() : nullptr, out.data(), den.data());
  if (den_out) *den_out = den;
  return out;
}

std::string describe(const CoreCase& c) {
  return str_cat("n=", c.s.n, " m=", c.s.m, " causal=", c.s.causal, " chunk=", c.s.chunk, " mask=", !c.mask.empty(),
                 " shifted=", c.shifted);
}

std::vector<CoreCase> core_cases() {
  std::vector<CoreCase> cases;
  for (bool masked : {false, true}) {
    cases.push_back(core_case(10, 10, false, 4, masked));
    cases.push_back(core_case(7, 11, false, 4, masked));  // cross: m ≠ n, neither a multiple of the chunk
    cases.push_back(core_case(10, 10, true, 4, masked));  // n not a multiple of the chunk
    cases.push_back(core_case(3, 3, true, 8, masked));    // n < chunk
    cases.push_back(core_case(13, 13, true, 3, masked));  // several chunks
    cases.push_back(core_case(12, 12, true, 4, masked));  // a multiple of the chunk
    cases.push_back(core_case(6, 6, true, 1, masked));    // one position per chunk
    cases.push_back(core_case(13, 13, true, 3, masked, true));
    cases.push_back(core_case(10, 10, true, 4, masked, true));
  }
  return cases;
}

TEST(LinearCore, MatchesExplicitSums) {
  for (const CoreCase& c : core_cases()) {
    SCOPED_TRACE(describe(c));
    const CoreData d = core_data(c, 5);
    const std::vector<double> ref = core_reference(c, d);
    const std::vector<double> out = core_forward<double>(c, d);
    LF_EXPECT_CLOSE(out.data(), ref.data(), int64_t(ref.size()), 1e-13);
    const std::vector<float> outf = core_forward<float>(c, d);
    LF_EXPECT_CLOSE(outf.data(), ref.data(), int64_t(ref.size()), 2e-6);
  }
}

TEST(LinearCore, BackwardMatchesFiniteDifferences) {
  for (const CoreCase& c : core_cases()) {
    SCOPED_TRACE(describe(c));
    CoreData d = core_data(c, 6);
    const LinearCoreShape& s = c.s;
    const auto w = test::random_vector<double>(s.B * s.n * s.h * s.dv, 7);
    auto loss = [&] {
      const std::vector<double> out = core_forward<double>(c, d);
      return test::weighted_sum(out.data(), w.data(), int64_t(w.size()));
    };
    std::vector<double> den;
    const std::vector<double> out = core_forward<double>(c, d, &den);
    LinearCoreShape sm = s;
    sm.key_mask = c.mask.empty() ? nullptr : c.mask.data();
    std::vector<double> dfq(d.fq.size()), dfk(d.fk.size()), dv(d.v.size());
    linear_core_backward<double>(sm, d.fq.data(), d.fk.data(), d.v.data(), c.shifted ? d.shift.data() : nullptr,
                                 out.data(), den.data(), w.data(), dfq.data(), dfk.data(), dv.data());
    test::expect_gradient_matches(loss, d.fq.data(), int64_t(d.fq.size()), dfq.data(), "phi_q", 1e-7);
    // Padded keys: zero gradients (their values are garbage, not differentiable inputs).
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t j = 0; j < s.m; ++j)
        if (!c.mask.empty() && c.mask[size_t(b * s.m + j)]) {
          for (int64_t e = 0; e < s.h * s.r; ++e) {
            ASSERT_EQ(dfk[size_t((b * s.m + j) * s.h * s.r + e)], 0.0);
            d.fk[size_t((b * s.m + j) * s.h * s.r + e)] = 0.5;  // a finite value for the differences
          }
          for (int64_t e = 0; e < s.h * s.dv; ++e) {
            ASSERT_EQ(dv[size_t((b * s.m + j) * s.h * s.dv + e)], 0.0);
            d.v[size_t((b * s.m + j) * s.h * s.dv + e)] = 0.5;
          }
        }
    test::expect_gradient_matches(loss, d.fk.data(), int64_t(d.fk.size()), dfk.data(), "phi_k", 1e-7);
    test::expect_gradient_matches(loss, d.v.data(), int64_t(d.v.size()), dv.data(), "v", 1e-7);
  }
}

// Incremental decoding: the core run piece by piece from the carried state (H, z, R) gives the rows of
// one causal forward over the whole sequence, to rounding, for any split (a piece shorter than a chunk,
// longer, single positions), with and without key shifts; the state is what the whole forward ends in.
template <class T>
void expect_pieces_match_the_whole(bool shifted, const std::vector<int64_t>& pieces, double tol) {
  int64_t n = 0;
  for (int64_t p : pieces) n += p;
  const CoreCase whole = core_case(n, n, true, 4, false, shifted);
  SCOPED_TRACE(describe(whole));
  const CoreData d = core_data(whole, 13);
  const std::vector<T> want = core_forward<T>(whole, d);
  const LinearCoreShape& s = whole.s;
  std::vector<T> H(size_t(s.B * s.h * s.r * s.dv), T(0)), z(size_t(s.B * s.h * s.r), T(0));
  std::vector<T> R(size_t(s.B * s.h), -std::numeric_limits<T>::infinity());
  const LinearCoreState<T> state{H.data(), z.data(), shifted ? R.data() : nullptr};
  int64_t t = 0;
  for (const int64_t p : pieces) {
    // The piece's rows of every input, (B, p, ·), and its shifts (B, h, p).
    auto rows = [&](const std::vector<double>& src, int64_t w) {
      std::vector<T> out;
      for (int64_t b = 0; b < s.B; ++b)
        for (int64_t i = (b * n + t) * w; i < (b * n + t + p) * w; ++i) out.push_back(T(src[size_t(i)]));
      return out;
    };
    const std::vector<T> fq = rows(d.fq, s.h * s.r), fk = rows(d.fk, s.h * s.r), v = rows(d.v, s.h * s.dv);
    std::vector<T> shift;
    for (int64_t bh = 0; shifted && bh < s.B * s.h; ++bh)
      for (int64_t i = 0; i < p; ++i) shift.push_back(T(d.shift[size_t(bh * n + t + i)]));
    LinearCoreShape sp = s;
    sp.n = sp.m = p;
    sp.chunk = 3;  // elsewhere than the whole forward's chunks
    std::vector<T> out(size_t(s.B * p * s.h * s.dv)), den(size_t(s.B * s.h * p));
    linear_core_forward<T>(sp, fq.data(), fk.data(), v.data(), shifted ? shift.data() : nullptr, out.data(), den.data(),
                           &state);
    const int64_t w = s.h * s.dv;
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t i = 0; i < p * w; ++i)
        ASSERT_NEAR(double(out[size_t(b * p * w + i)]), double(want[size_t((b * n + t) * w + i)]), tol)
            << "piece at " << t << " of " << p << ", sample " << b;
    t += p;
  }
}

TEST(LinearCore, DecodingInPiecesMatchesTheWholeForward) {
  // Named vectors, not braced lists inside the loop: GCC 12's ASan build crashed on the latter.
  const std::vector<int64_t> mixed = {5, 1, 1, 7, 1, 2, 1, 1}, single(11, 1);
  for (const bool shifted : {false, true}) {
    expect_pieces_match_the_whole<double>(shifted, mixed, 1e-13);
    expect_pieces_match_the_whole<float>(shifted, mixed, 2e-6);
    expect_pieces_match_the_whole<double>(shifted, single, 1e-13);
  }
}

TEST(LinearCore, ChunkSizeChangesOnlyRounding) {
  for (bool causal : {false, true}) {
    CoreCase a = core_case(37, 37, causal, 64, true), b = a;
    b.s.chunk = 5;
    const CoreData d = core_data(a, 9);
    const std::vector<double> oa = core_forward<double>(a, d), ob = core_forward<double>(b, d);
    LF_EXPECT_CLOSE(oa.data(), ob.data(), int64_t(oa.size()), 1e-14);
  }
}

TEST(LinearCore, RefusesBadShapes) {
  CoreCase c = core_case(4, 5, true, 2);
  const CoreData d = core_data(core_case(4, 5, false, 2), 1);
  EXPECT_THROW(core_forward<double>(c, d), InvalidArgument);  // causal with m ≠ n
  c = core_case(4, 4, false, 0);
  EXPECT_THROW(core_forward<double>(c, core_data(core_case(4, 4, false, 2), 1)), InvalidArgument);
}

// ---- the layer: reference ------------------------------------------------------------------------

AttentionCase lin_case(int64_t n, bool causal, json options = {{"chunk", 4}}, int64_t max_len = 0, int64_t heads = 2,
                       int64_t d = 8) {
  AttentionCase c;
  c.kind = "linear";
  c.dims = AttentionDims{d, heads, max_len > 0 ? max_len : n, causal, 0};
  c.options = std::move(options);
  c.B = 2;
  c.n = n;
  return c;
}

// The layer by its definition, in double, from the rig's parameters by name.
template <class T>
std::vector<double> reference_forward(const AttentionCase& c, const AttentionRig<T>& rig) {
  const int64_t B = c.B, n = c.n, m = c.m > 0 ? c.m : c.n, d = c.dims.d_model, h = c.dims.n_heads, dh = d / h;
  auto param = [&](const std::string& name) { return test::param_values(rig, name); };
  const auto Wq = param("to_q.weight"), Wk = param("to_k.weight"), Wv = param("to_v.weight"),
             Wo = param("to_out.weight"), bq = param("to_q.bias"), bk = param("to_k.bias"), bv = param("to_v.bias"),
             bo = param("to_out.bias");
  auto linear = [&](const std::vector<double>& W, const std::vector<double>& b, const T* x) {
    return test::affine(W, b, x, d, d);
  };
  auto phi = [](double x) { return x > 0 ? x + 1 : std::exp(x); };
  std::vector<double> out(size_t(B * n * d));
  for (int64_t b = 0; b < B; ++b) {
    const T* x = rig.x.data() + b * n * d;
    const T* ctx = c.m > 0 ? rig.ctx.data() + b * m * d : x;
    std::vector<std::vector<double>> Q(static_cast<size_t>(n)), K(static_cast<size_t>(m)), V(static_cast<size_t>(m));
    for (int64_t t = 0; t < n; ++t) Q[size_t(t)] = linear(Wq, bq, x + t * d);
    for (int64_t s = 0; s < m; ++s) {
      K[size_t(s)] = linear(Wk, bk, ctx + s * d);
      V[size_t(s)] = linear(Wv, bv, ctx + s * d);
    }
    for (int64_t t = 0; t < n; ++t) {
      std::vector<double> O(static_cast<size_t>(d), 0.0);
      for (int64_t hd = 0; hd < h; ++hd) {
        std::vector<double> num(static_cast<size_t>(dh), 0.0);
        double den = 0;
        const int64_t last = c.dims.causal ? t : m - 1;  // causal: the explicit sum over s ≤ t
        for (int64_t s = 0; s <= last; ++s) {
          if (!c.mask.empty() && c.mask[size_t(b * m + s)]) continue;
          double w = 0;
          for (int64_t e = 0; e < dh; ++e) w += phi(Q[size_t(t)][size_t(hd * dh + e)]) * phi(K[size_t(s)][size_t(hd * dh + e)]);
          den += w;
          for (int64_t e = 0; e < dh; ++e) num[size_t(e)] += w * V[size_t(s)][size_t(hd * dh + e)];
        }
        for (int64_t e = 0; e < dh; ++e) O[size_t(hd * dh + e)] = num[size_t(e)] / (den + 1e-6);
      }
      for (int64_t r = 0; r < d; ++r) {
        double acc = bo[size_t(r)];
        for (int64_t e = 0; e < d; ++e) acc += Wo[size_t(r * d + e)] * O[size_t(e)];
        out[size_t((b * n + t) * d + r)] = acc;
      }
    }
  }
  return out;
}

void expect_matches_reference_both(const AttentionCase& c) {
  test::expect_matches_reference_both(c, [&](const auto& rig) { return reference_forward(c, rig); });
}

TEST(LinearAttention, MatchesReference) {
  for (bool causal : {false, true}) {
    expect_matches_reference_both(lin_case(12, causal));                               // a multiple of the chunk
    expect_matches_reference_both(lin_case(10, causal, {{"chunk", 4}}, 12));            // n < max_len, partial chunk
    expect_matches_reference_both(lin_case(3, causal, {{"chunk", 8}}, 8));              // n < chunk
    expect_matches_reference_both(lin_case(13, causal, {{"chunk", 3}}));                // several chunks
    expect_matches_reference_both(with_mask(lin_case(11, causal, {{"chunk", 4}}, 16), 6));
    expect_matches_reference_both(with_mask(lin_case(9, causal, {{"chunk", 4}, {"qkv_bias", true}}), 0));
    expect_matches_reference_both(lin_case(8, causal, {{"chunk", 1}}, 0, 1));           // one head, chunk 1
    expect_matches_reference_both(lin_case(13, causal, {{"chunk", 4}}, 16, 4, 16));
    expect_matches_reference_both(lin_case(40, causal, json::object()));                // default chunk
    expect_matches_reference_both(with_mask(cross(lin_case(6, false), 9), 4));          // cross-attention
    expect_matches_reference_both(cross(lin_case(7, false, {{"qkv_bias", true}}), 3));
    // Large enough for the parallel paths and full register blocks.
    expect_matches_reference_both(with_mask(lin_case(150, causal, {{"chunk", 32}}, 160, 2, 64), 100));
  }
  expect_matches_reference_both(cross(lin_case(8, true), 8));  // causal cross-attention (m = n)
}

// ---- gradients -----------------------------------------------------------------------------------

TEST(LinearAttention, GradientsMatchFiniteDifferences) {
  std::vector<AttentionCase> cases;
  for (bool causal : {false, true}) {
    cases.push_back(lin_case(12, causal));
    cases.push_back(with_mask(lin_case(10, causal, {{"chunk", 4}}, 12), 5));  // padding, n < max_len
    cases.push_back(lin_case(9, causal, {{"chunk", 4}, {"qkv_bias", true}}));
    cases.push_back(lin_case(3, causal, {{"chunk", 8}}));   // n < chunk
    cases.push_back(lin_case(13, causal, {{"chunk", 3}}));  // several chunks, a partial one
    cases.push_back(lin_case(6, causal, {{"chunk", 1}}, 0, 1));
  }
  cases.push_back(with_mask(cross(lin_case(5, false, {{"qkv_bias", true}}), 7), 3));
  cases.push_back(cross(lin_case(6, true, {{"chunk", 4}}), 6));
  for (const AttentionCase& c : cases) {
    SCOPED_TRACE(describe(c));
    test::check_attention_gradients(c);
  }
}

TEST(LinearAttention, ResultsDoNotDependOnTheThreadCount) {
  for (bool causal : {false, true}) {
    const AttentionCase c = with_mask(lin_case(300, causal, {{"chunk", 16}}, 300, 4, 64), 200);
    SCOPED_TRACE(describe(c));
    test::expect_results_independent_of_threads(c);
  }
}

// ---- causality -----------------------------------------------------------------------------------

std::vector<AttentionCase> causal_cases() {
  return {lin_case(12, true), with_mask(lin_case(11, true, {{"chunk", 4}}, 16), 6), lin_case(9, true, {{"chunk", 3}}),
          lin_case(5, true, {{"chunk", 8}})};
}

TEST(LinearAttention, CausalOutputIgnoresTheFuture) {
  for (const AttentionCase& c : causal_cases()) {
    test::expect_outputs_ignore_the_future<double>(c);
    test::expect_outputs_ignore_the_future<float>(c);
  }
}

TEST(LinearAttention, CausalJacobianIsZeroAboveTheDiagonal) {
  for (const AttentionCase& c : causal_cases()) test::expect_causal_jacobian_is_zero_above_the_diagonal(c);
}

void expect_same_prefix_float(const AttentionCase& full, const AttentionCase& part) {
  // The float GEMM backend of the Q/K/V maps may round differently for another row count.
  const test::PrefixOutputs<float> r = test::prefix_outputs<float>(full, part);
  for (size_t i = 0; i < r.part.size(); ++i) ASSERT_NEAR(r.part[i], r.full[i], 1e-6) << "element " << i;
}

std::vector<std::tuple<int64_t, int64_t, int64_t>> prefix_cases() {  // chunk, n, shorter n
  return {{4, 16, 7}, {4, 16, 8}, {8, 16, 3}, {3, 20, 13}, {64, 100, 65}, {1, 9, 4}};
}

TEST(LinearAttention, ShorterCausalSequenceGivesTheSamePrefixBitwise) {
  // Bitwise in double; float within 1e-6 (the maps' GEMM), the core itself bitwise in both (below).
  for (auto [chunk, full_n, part_n] : prefix_cases()) {
    SCOPED_TRACE(str_cat("chunk=", chunk, " n=", full_n, " prefix=", part_n));
    const AttentionCase full = lin_case(full_n, true, {{"chunk", chunk}});
    const AttentionCase part = lin_case(part_n, true, {{"chunk", chunk}}, full_n);
    test::expect_same_prefix<double>(full, part);
    expect_same_prefix_float(full, part);
  }
}

template <class T>
void expect_core_prefix(int64_t chunk, int64_t full_n, int64_t part_n, bool shifted) {
  SCOPED_TRACE(str_cat("chunk=", chunk, " n=", full_n, " prefix=", part_n, " shifted=", shifted));
  CoreCase full = core_case(full_n, full_n, true, chunk, true, shifted), part = core_case(part_n, part_n, true, chunk);
  const CoreData a = core_data(full, 12);
  CoreData b;
  const LinearCoreShape& s = full.s;
  part.mask.assign(size_t(s.B * part_n), 0);
  for (int64_t bb = 0; bb < s.B; ++bb) {
    auto rows = [&](const std::vector<double>& src, int64_t w) {
      return std::vector<double>(src.begin() + bb * full_n * w, src.begin() + (bb * full_n + part_n) * w);
    };
    const auto fq = rows(a.fq, s.h * s.r), fk = rows(a.fk, s.h * s.r), v = rows(a.v, s.h * s.dv);
    b.fq.insert(b.fq.end(), fq.begin(), fq.end());
    b.fk.insert(b.fk.end(), fk.begin(), fk.end());
    b.v.insert(b.v.end(), v.begin(), v.end());
    std::copy(full.mask.begin() + bb * full_n, full.mask.begin() + bb * full_n + part_n, part.mask.begin() + bb * part_n);
  }
  if (shifted) {  // the first keys' shifts
    part.shifted = true;
    for (int64_t bh = 0; bh < s.B * s.h; ++bh)
      b.shift.insert(b.shift.end(), a.shift.begin() + bh * full_n, a.shift.begin() + bh * full_n + part_n);
  }
  const std::vector<T> oa = core_forward<T>(full, a), ob = core_forward<T>(part, b);
  const int64_t w = s.h * s.dv;
  for (int64_t bb = 0; bb < s.B; ++bb)
    for (int64_t e = 0; e < part_n * w; ++e)
      ASSERT_EQ(ob[size_t(bb * part_n * w + e)], oa[size_t(bb * full_n * w + e)]) << "sample " << bb << " e " << e;
}

TEST(LinearCore, ShorterCausalSequenceGivesTheSamePrefixBitwise) {
  for (auto [chunk, full, part] : prefix_cases())
    for (bool shifted : {false, true}) {
      expect_core_prefix<double>(chunk, full, part, shifted);
      expect_core_prefix<float>(chunk, full, part, shifted);
    }
}

TEST(LinearAttention, PaddedPositionsHaveNoInfluence) {
  for (bool causal : {false, true}) {
    const AttentionCase c = with_mask(lin_case(11, causal, {{"chunk", 4}}, 12), 6);
    test::expect_padded_positions_have_no_influence<double>(c, test::nan_or(1e30));
  }
}

TEST(LinearAttention, EveryKeyPaddedGivesZeroAttention) {
  // A sequence whose keys are all padding: the attention output is 0 (the output map's bias remains).
  AttentionCase c = lin_case(6, false);
  c.mask.assign(size_t(c.B * c.n), 0);
  std::fill(c.mask.begin() + c.n, c.mask.end(), 1);
  AttentionRig<double> rig(c);
  rig.forward(c);
  const int bo = rig.arena.find("to_out.bias");
  for (int64_t t = 0; t < c.n; ++t)
    for (int64_t e = 0; e < 8; ++e) ASSERT_EQ(rig.out[size_t((c.n + t) * 8 + e)], rig.arena.value(bo)[e]);
}

// ---- memory --------------------------------------------------------------------------------------

TEST(LinearAttention, LongSequenceKeepsNeitherScoresNorPerPositionStates) {
  // n = 16384, d = d_h = 64, one head: an n×n float matrix is 1 GiB, and per-position d_h×d_h causal
  // states would be n·d_h² floats = 256 MiB. The layer keeps O(n·d): a few MiB per buffer.
  const int64_t n = 16384, d = 64;
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "bidirectional");
    ParamArena<float> arena;
    auto layer = make_attention<float>({"linear", {d, 1, n, causal, 0}, json::object(), ""}, arena);
    EXPECT_LT(layer->activation_bytes(1, n, n, true), double(n) * d * d);
    LF_SKIP_MEMORY_TEST_UNDER_SANITIZERS();
    LF_SKIP_WITHOUT_PROC_STATUS();
    test::expect_peak_rss_growth_below(arena, *layer, n, d, int64_t(64) << 20,
                                       causal ? "causal_peak_rss_growth_bytes" : "peak_rss_growth_bytes");
  }
}

// ---- registry and configurations -----------------------------------------------------------------

TEST(LinearAttention, IsRegisteredWithItsSupportAndDefaults) {
  const AttentionSupport s = AttentionRegistry::instance().get("linear").info.support;
  EXPECT_TRUE(s.causal);
  EXPECT_TRUE(s.key_padding_mask);
  EXPECT_TRUE(s.variable_length);
  EXPECT_TRUE(s.cross_attention);
  const json defaults = {{"qkv_bias", false}, {"chunk", 64}};
  EXPECT_EQ(validate_attention({"linear", {8, 2, 4096, true, 0.1}, json::object(), ""}), defaults);
  ParamArena<float> arena;
  make_attention<float>({"linear", {8, 2, 10, false, 0}, {{"qkv_bias", true}}, "l."}, arena);
  for (const char* name : {"l.to_q.weight", "l.to_k.bias", "l.to_v.weight", "l.to_out.weight", "l.to_out.bias"})
    EXPECT_GE(arena.find(name), 0) << name;
  EXPECT_EQ(arena.count(), 8);
}

TEST(LinearAttention, IgnoresDropout) {
  // No probabilities are formed: attention dropout leaves a training forward unchanged.
  AttentionCase c = lin_case(9, true), dropped = c;
  dropped.dims.dropout = 0.5;
  dropped.training = true;
  AttentionRig<double> a(c), b(dropped);
  a.forward(c);
  b.forward(dropped);
  EXPECT_EQ(a.out, b.out);
}

TEST(LinearAttention, RefusesBadConfigurations) {
  ParamArena<float> arena;
  auto make = [&](const json& options) { return make_attention<float>({"linear", {8, 2, 8, false, 0}, options, ""}, arena); };
  EXPECT_THROW(make({{"chunk", 0}}), InvalidArgument);
  EXPECT_THROW(make({{"chunk", -4}}), InvalidArgument);
  EXPECT_THROW(make({{"chunk", 2048}}), InvalidArgument);
  EXPECT_THROW(make({{"chunk", 2.5}}), InvalidArgument);
  EXPECT_THROW(make({{"qkv_bias", 1}}), InvalidArgument);
  EXPECT_THROW(make({{"features", 8}}), InvalidArgument);  // a performer option
  EXPECT_THROW(make_attention<float>({"linear", {8, 3, 8, false, 0}, json::object(), ""}, arena), InvalidArgument);
  AttentionCase small = lin_case(6, false);
  AttentionRig<float> layer(small);
  AttentionCase longer = lin_case(9, false);
  AttentionRig<float> rig(longer);
  std::vector<float> out(rig.out.size());
  EXPECT_THROW(layer.layer->forward(rig.input(longer), out.data(), false, 0), InvalidArgument);
  // Causal cross-attention needs m = n.
  AttentionCase bad = cross(lin_case(6, true), 6);
  AttentionRig<float> crig(bad);
  AttentionInput<float> in = crig.input(bad);
  in.m = 5;
  EXPECT_THROW(crig.layer->forward(in, crig.out.data(), false, 0), InvalidArgument);
}

}  // namespace
}  // namespace lf
