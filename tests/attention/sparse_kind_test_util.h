// Helpers for the tests of the sparse-pattern kinds (local, strided, global, longformer, bigbird):
// each test states its kind's pattern as a plain predicate allowed(t, j, n) written from the
// documented definition, and these helpers check the layer against it — the built pattern, the output
// against dense masked attention in double (loops), equality with `full` when the pattern covers every
// pair, causality (outputs and gradients), bad options.
#pragma once
#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "attention/sdpa.h"
#include "attention/sparse_pattern.h"
#include "attention_test_util.h"
#include "linformer/rng.h"

namespace lf::test {

// Whether query t may see key j in a sequence of n positions (before causality and padding).
using Allowed = std::function<bool(int64_t t, int64_t j, int64_t n)>;

inline AttentionCase sparse_case(const std::string& kind, json options, int64_t n, bool causal = false,
                                 int64_t max_len = 0, int64_t heads = 2, int64_t d = 8, int64_t B = 2) {
  AttentionCase c;
  c.kind = kind;
  c.dims = AttentionDims{d, heads, max_len > 0 ? max_len : n, causal, 0};
  c.options = std::move(options);
  c.B = B;
  c.n = n;
  return c;
}

// Sample 0 pads its last key; sample 1 pads every key but `keep` (with a causal mask, or a pattern
// without `keep`, some of its rows then see no key at all: zero output).
inline AttentionCase with_padding(AttentionCase c, int64_t keep = 1) {
  c.mask.assign(size_t(c.B * c.n), 0);
  c.mask[size_t(c.n - 1)] = 1;
  if (c.B > 1)
    for (int64_t j = 0; j < c.n; ++j) c.mask[size_t(c.n + j)] = j == keep ? 0 : 1;
  return c;
}

// The pattern the kind builds equals {(t, j) : allowed(t, j, n), j ≤ t when causal}.
inline void expect_pattern_is(const AttentionCase& c, const Allowed& allowed) {
  SCOPED_TRACE(describe(c));
  const SparsePattern p = sparse_kind_pattern(c.kind, c.dims, c.options, c.n);
  ASSERT_EQ(p.n, c.n);
  int failures = 0;
  for (int64_t t = 0; t < c.n; ++t) {
    std::vector<int32_t> want;
    for (int64_t j = 0; j < c.n; ++j)
      if (allowed(t, j, c.n) && (!c.dims.causal || j <= t)) want.push_back(int32_t(j));
    const std::vector<int32_t> got(p.cols.begin() + p.row_ptr[size_t(t)], p.cols.begin() + p.row_ptr[size_t(t + 1)]);
    if (got != want && failures++ < 3) {
      std::string g, w;
      for (int32_t j : got) g += str_cat(j, " ");
      for (int32_t j : want) w += str_cat(j, " ");
      ADD_FAILURE() << "row " << t << ": pattern {" << g << "} but the definition gives {" << w << "}";
    }
  }
  EXPECT_EQ(failures, 0);
}

// The layer's output from its parameters and input, by loops in double: the Q/K/V maps, softmax over
// the allowed, unpadded (and, causal, past) keys, dropout with the dense index of sdpa.h, the output map.
// allowed_of(b): sample b's pattern (a kind whose pattern follows each sample's real length).
inline std::vector<double> dense_reference_of(const AttentionCase& c, const ParamArena<double>& a,
                                              const std::vector<double>& x,
                                              const std::function<Allowed(int64_t b)>& allowed_of, uint64_t seed) {
  const int64_t d = c.dims.d_model, B = c.B, n = c.n, h = c.dims.n_heads, dh = d / h;
  auto P = [&](const char* name) {
    const int id = a.find(name);
    return id < 0 ? nullptr : a.value(id);
  };
  auto lin = [&](const std::vector<double>& in, const double* W, const double* b) {
    std::vector<double> y(size_t(B * n * d));
    for (int64_t r = 0; r < B * n; ++r)
      for (int64_t o = 0; o < d; ++o) {
        double s = b ? b[o] : 0;
        for (int64_t e = 0; e < d; ++e) s += in[size_t(r * d + e)] * W[o * d + e];
        y[size_t(r * d + o)] = s;
      }
    return y;
  };
  const auto q = lin(x, P("to_q.weight"), P("to_q.bias"));
  const auto k = lin(x, P("to_k.weight"), P("to_k.bias"));
  const auto v = lin(x, P("to_v.weight"), P("to_v.bias"));
  std::vector<double> o(q.size(), 0.0), w(static_cast<size_t>(n));
  const double p = c.training ? c.dims.dropout : 0.0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < h; ++i)
      for (int64_t t = 0; t < n; ++t) {
        const Allowed allowed = allowed_of(b);
        double mx = -INFINITY;
        for (int64_t j = 0; j < n; ++j) {
          const bool visible = allowed(t, j, n) && !(c.dims.causal && j > t) && !(!c.mask.empty() && c.mask[size_t(b * n + j)]);
          double s = 0;
          for (int64_t e = 0; e < dh; ++e) s += q[size_t((b * n + t) * d + i * dh + e)] * k[size_t((b * n + j) * d + i * dh + e)];
          w[size_t(j)] = visible ? s / std::sqrt(double(dh)) : -INFINITY;
          mx = std::max(mx, w[size_t(j)]);
        }
        if (mx == -INFINITY) continue;  // no visible key: zero output
        double sum = 0;
        for (double& e : w) sum += (e = std::exp(e - mx));
        for (int64_t j = 0; j < n; ++j) {
          const uint64_t idx = uint64_t(((b * h + i) * n + t) * n + j);
          if (p > 0 && double(uniform01(seed, kProbsDropoutStream, idx)) < double(float(p))) continue;
          const double pw = w[size_t(j)] / sum / (1 - p);
          for (int64_t e = 0; e < dh; ++e) o[size_t((b * n + t) * d + i * dh + e)] += pw * v[size_t((b * n + j) * d + i * dh + e)];
        }
      }
  return lin(o, P("to_out.weight"), P("to_out.bias"));
}
inline std::vector<double> dense_reference(const AttentionCase& c, const ParamArena<double>& a,
                                           const std::vector<double>& x, const Allowed& allowed, uint64_t seed) {
  return dense_reference_of(c, a, x, [&](int64_t) { return allowed; }, seed);
}

// The layer (double and float) against dense_reference.
inline void expect_matches_dense_reference_of(const AttentionCase& c,
                                              const std::function<Allowed(int64_t b)>& allowed_of) {
  SCOPED_TRACE(describe(c));
  AttentionRig<double> rig(c);
  rig.forward(c);
  const std::vector<double> ref = dense_reference_of(c, rig.arena, rig.x, allowed_of, 1234);
  LF_EXPECT_CLOSE(rig.out.data(), ref.data(), int64_t(ref.size()), 1e-12);
  AttentionRig<float> rigf(c);
  rigf.forward(c);
  LF_EXPECT_CLOSE(rigf.out.data(), ref.data(), int64_t(ref.size()), 2e-5);
  for (double e : rig.out) ASSERT_TRUE(std::isfinite(e));
}
inline void expect_matches_dense_reference(const AttentionCase& c, const Allowed& allowed) {
  expect_matches_dense_reference_of(c, [&](int64_t) { return allowed; });
}

// With options whose pattern covers every pair, the kind equals `full` (parameters copied by name):
// outputs, input gradients and parameter gradients.
template <class T>
void expect_equals_full(const AttentionCase& c, double tol) {
  SCOPED_TRACE(describe(c));
  AttentionCase fc = c;
  fc.kind = "full";
  fc.options = {{"qkv_bias", c.options.value("qkv_bias", false)}};
  AttentionRig<T> full(fc, 3), sparse(c, 5);
  ASSERT_EQ(full.arena.params().size(), sparse.arena.params().size());
  for (const ParamInfo& p : full.arena.params()) {
    const int id = sparse.arena.find(p.name);
    ASSERT_GE(id, 0) << p.name;
    std::copy(full.arena.values() + p.offset, full.arena.values() + p.offset + p.numel, sparse.arena.value(id));
  }
  sparse.x = full.x;
  full.forward(fc);
  sparse.forward(c);
  LF_EXPECT_CLOSE(sparse.out.data(), full.out.data(), int64_t(full.out.size()), tol);
  const std::vector<T> w = random_vector<T>(int64_t(full.out.size()), 99);
  std::vector<T> dx_full(full.x.size()), dx_sparse(full.x.size());
  full.arena.zero_grad();
  sparse.arena.zero_grad();
  full.layer->backward(w.data(), dx_full.data());
  sparse.layer->backward(w.data(), dx_sparse.data());
  LF_EXPECT_CLOSE(dx_sparse.data(), dx_full.data(), int64_t(dx_full.size()), tol);
  double scale = 1e-12;  // relative to the largest parameter gradient (to_k.bias's is exactly zero)
  for (int64_t e = 0; e < full.arena.numel(); ++e) scale = std::max(scale, std::abs(double(full.arena.grads()[e])));
  for (const ParamInfo& p : full.arena.params()) {
    const T* g = sparse.arena.grads() + sparse.arena.info(sparse.arena.find(p.name)).offset;
    EXPECT_LE(max_rel_error(g, full.arena.grads() + p.offset, p.numel, scale), tol) << p.name;
  }
}

inline void expect_equals_full_both(const AttentionCase& c) {
  expect_equals_full<double>(c, 1e-12);
  expect_equals_full<float>(c, 2e-5);
}

// Causality, for every t: changing the inputs after t leaves outputs 0..t bit for bit unchanged, and
// the gradient of output t with respect to every input after t is exactly zero.
inline void expect_causal(const AttentionCase& c) {
  SCOPED_TRACE(describe(c));
  ASSERT_TRUE(c.dims.causal);
  const int64_t d = c.dims.d_model, n = c.n;
  for (int64_t t = 0; t + 1 < n; ++t) {
    AttentionRig<double> a(c), b(c);
    for (int64_t s = 0; s < c.B; ++s)
      for (int64_t r = t + 1; r < n; ++r)
        for (int64_t e = 0; e < d; ++e) b.x[size_t((s * n + r) * d + e)] += 1.0 + 0.1 * double(e);
    a.forward(c);
    b.forward(c);
    for (int64_t s = 0; s < c.B; ++s)
      for (int64_t r = 0; r <= t; ++r)
        for (int64_t e = 0; e < d; ++e)
          ASSERT_EQ(a.out[size_t((s * n + r) * d + e)], b.out[size_t((s * n + r) * d + e)])
              << "output " << r << " changed with inputs after " << t;
    // d out_t / d x: a backward from output row t alone.
    std::vector<double> dout(a.out.size(), 0.0), dx(a.x.size());
    const std::vector<double> w = random_vector<double>(d, 7 + uint64_t(t));
    for (int64_t s = 0; s < c.B; ++s) std::copy(w.begin(), w.end(), dout.begin() + (s * n + t) * d);
    a.arena.zero_grad();
    a.layer->backward(dout.data(), dx.data());
    for (int64_t s = 0; s < c.B; ++s)
      for (int64_t r = t + 1; r < n; ++r)
        for (int64_t e = 0; e < d; ++e)
          ASSERT_EQ(dx[size_t((s * n + r) * d + e)], 0.0) << "output " << t << " depends on input " << r;
  }
}

// make_attention refuses the options (InvalidArgument whose message names `option`).
inline void expect_refused(const std::string& kind, const AttentionDims& dims, const json& options,
                           const std::string& option) {
  ParamArena<float> arena;
  try {
    make_attention<float>({kind, dims, options, ""}, arena);
    ADD_FAILURE() << kind << " accepted " << options.dump();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(option), std::string::npos) << e.what();
  }
}

}  // namespace lf::test
