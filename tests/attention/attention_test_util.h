// Helpers for attention tests: build a layer of any kind in double or float, run it on random input,
// and check it: against a reference written from its parameters, its gradients against finite
// differences, causality, padding, the thread count, and its peak memory on a long sequence.
#pragma once
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "linformer/attention.h"
#include "linformer/runtime.h"
#include "test_util.h"

namespace lf::test {

struct AttentionCase {
  std::string kind;
  AttentionDims dims;
  json options = json::object();
  int64_t B = 2, n = 0, m = 0;  // m > 0: cross-attention with a context of m positions
  std::vector<uint8_t> mask;    // (B, kv length), nonzero = padding; empty for none
  bool training = false;        // applies dropout
};

template <class T>
struct AttentionRig {
  ParamArena<T> arena;
  std::unique_ptr<Attention<T>> layer;
  std::vector<T> x, ctx, out;

  explicit AttentionRig(const AttentionCase& c, uint64_t seed = 1) {
    layer = make_attention<T>(AttentionSpec{c.kind, c.dims, c.options, ""}, arena);
    arena.allocate();
    arena.initialize(seed);
    x = random_vector<T>(c.B * c.n * c.dims.d_model, seed + 10);
    if (c.m > 0) ctx = random_vector<T>(c.B * c.m * c.dims.d_model, seed + 11);
    out.resize(size_t(c.B * c.n * c.dims.d_model));
  }
  AttentionInput<T> input(const AttentionCase& c) const {
    AttentionInput<T> in;
    in.x = x.data();
    in.B = c.B;
    in.n = c.n;
    if (c.m > 0) {
      in.context = ctx.data();
      in.m = c.m;
    }
    in.key_padding_mask = c.mask.empty() ? nullptr : c.mask.data();
    return in;
  }
  void forward(const AttentionCase& c) { layer->forward(input(c), out.data(), c.training, kForwardSeed); }
  static constexpr uint64_t kForwardSeed = 1234;  // the dropout seed of forward()
};

// ---- case builders ---------------------------------------------------------------------------------

// Options `base` with the entries of `extra` set (added or replaced).
inline json with(json base, const json& extra) {
  for (const auto& [k, v] : extra.items()) base[k] = v;
  return base;
}

// Key padding over the keys (the context's under cross-attention): sample 0 pads its keys 1 and
// last; sample 1, if any, pads every key but `keep` (all of them for keep = -1).
inline AttentionCase with_mask(AttentionCase c, int64_t keep) {
  const int64_t kv = c.m > 0 ? c.m : c.n;
  c.mask.assign(size_t(c.B * kv), 0);
  c.mask[1] = 1;
  c.mask[size_t(kv - 1)] = 1;
  if (c.B > 1)
    for (int64_t j = 0; j < kv; ++j) c.mask[size_t(kv + j)] = j == keep ? 0 : 1;
  return c;
}

// Training with attention dropout p.
inline AttentionCase with_dropout(AttentionCase c, double p = 0.3) {
  c.dims.dropout = p;
  c.training = true;
  return c;
}

// Cross-attention to a context of m positions (max_len grown to cover it).
inline AttentionCase cross(AttentionCase c, int64_t m) {
  c.m = m;
  c.dims.max_len = std::max({c.dims.max_len, m, c.n});
  return c;
}

inline std::string describe(const AttentionCase& c) {
  return str_cat(c.kind, " B=", c.B, " n=", c.n, " m=", c.m, " max_len=", c.dims.max_len, " h=", c.dims.n_heads,
                 " d=", c.dims.d_model, " causal=", c.dims.causal, " mask=", !c.mask.empty(),
                 " dropout=", c.dims.dropout, " training=", c.training, " ", c.options.dump());
}

// Leaves a rig as it is built (the default `prepare` of the checks below).
struct NoPrepare {
  template <class Rig>
  void operator()(Rig&) const {}
};

// Checks d(Σ w·out)/d(everything) of a double-precision layer against central differences: the
// input, the context, and every trainable parameter (a fixed one must receive none). `prepare`
// (optional) edits the freshly built rig (parameters, input) first.
template <class Prepare = NoPrepare>
void check_attention_gradients(const AttentionCase& c, double tol = 1e-6, const Prepare& prepare = {}) {
  AttentionRig<double> rig(c);
  prepare(rig);
  const int64_t d = c.dims.d_model;
  const std::vector<double> w = random_vector<double>(c.B * c.n * d, 99);
  auto loss = [&] {
    rig.forward(c);
    return weighted_sum(rig.out.data(), w.data(), int64_t(w.size()));
  };
  loss();
  std::vector<double> dx(rig.x.size()), dctx(rig.ctx.size());
  rig.arena.zero_grad();
  rig.layer->backward(w.data(), dx.data(), c.m > 0 ? dctx.data() : nullptr);
  expect_gradient_matches(loss, rig.x.data(), int64_t(rig.x.size()), dx.data(), "input", tol);
  if (c.m > 0) expect_gradient_matches(loss, rig.ctx.data(), int64_t(rig.ctx.size()), dctx.data(), "context", tol);
  for (const ParamInfo& p : rig.arena.params()) {
    const std::vector<double> analytic(rig.arena.grads() + p.offset, rig.arena.grads() + p.offset + p.numel);
    if (!p.trainable) {
      for (double g : analytic) EXPECT_EQ(g, 0.0) << p.name << " is fixed but received a gradient";
      continue;
    }
    expect_gradient_matches(loss, rig.arena.values() + p.offset, p.numel, analytic.data(), p.name, tol);
  }
}

// ---- reference -------------------------------------------------------------------------------------

// A parameter's values by name, in double; empty where the layer has no such parameter.
template <class T>
std::vector<double> param_values(const ParamArena<T>& arena, const std::string& name) {
  const int id = arena.find(name);
  if (id < 0) return {};
  return std::vector<double>(arena.value(id), arena.value(id) + arena.info(id).numel);
}

template <class T>
std::vector<double> param_values(const AttentionRig<T>& rig, const std::string& name) {
  return param_values(rig.arena, name);
}

// y = W x + b in double for one row x of fan_in features: W (fan_out, fan_in) row-major, b empty for
// none. Each entry sums the bias first, then the products in order.
template <class X>
std::vector<double> affine(const std::vector<double>& W, const std::vector<double>& b, const X* x, int64_t fan_in,
                           int64_t fan_out) {
  std::vector<double> y(static_cast<size_t>(fan_out));
  for (int64_t r = 0; r < fan_out; ++r) {
    double acc = b.empty() ? 0.0 : b[size_t(r)];
    for (int64_t e = 0; e < fan_in; ++e) acc += W[size_t(r * fan_in + e)] * double(x[e]);
    y[size_t(r)] = acc;
  }
  return y;
}

// The layer's output (a rig of seed 3, edited by `prepare` before its forward) against `reference`,
// a double computation of it from the rig (its parameters, input, and AttentionRig::kForwardSeed for
// dropout): max_rel_error ≤ tol, and every output finite.
template <class T, class Reference, class Prepare = NoPrepare>
void expect_matches_reference(const AttentionCase& c, double tol, const Reference& reference, const Prepare& prepare = {}) {
  SCOPED_TRACE(describe(c));
  AttentionRig<T> rig(c, 3);
  prepare(rig);
  rig.forward(c);
  const std::vector<double> ref = reference(static_cast<const AttentionRig<T>&>(rig));
  LF_EXPECT_CLOSE(rig.out.data(), ref.data(), int64_t(ref.size()), tol);
  for (T e : rig.out) ASSERT_TRUE(std::isfinite(double(e)));
}

// In double within 1e-12 and in float within float_tol; `reference` and `prepare` take either rig.
template <class Reference, class Prepare = NoPrepare>
void expect_matches_reference_both(const AttentionCase& c, const Reference& reference, const Prepare& prepare = {},
                                   double float_tol = 2e-5) {
  expect_matches_reference<double>(c, 1e-12, reference, prepare);
  expect_matches_reference<float>(c, float_tol, reference, prepare);
}

// The layer's output, input gradient and parameter gradients are bitwise the same with 1, 3 and 2
// threads, in double (the reference GEMM) or float (the fast paths and the GEMM backend). `prepare`
// (optional) edits each freshly initialised rig before its forward. The thread count is restored.
template <class T = double>
void expect_results_independent_of_threads(
    const AttentionCase& c, const std::type_identity_t<std::function<void(AttentionRig<T>&)>>& prepare = {},
    Precision precision = Precision::fp32) {
  std::vector<T> ref_out, ref_dx, ref_grads;
  for (int threads : {1, 3, 2}) {
    SCOPED_TRACE("threads=" + std::to_string(threads));
    const RuntimeScope scope(RuntimeOptions{threads, 0, precision});
    AttentionRig<T> rig(c);
    if (prepare) prepare(rig);
    rig.forward(c);
    const auto w = random_vector<T>(int64_t(rig.out.size()), 7);
    std::vector<T> dx(rig.x.size());
    rig.arena.zero_grad();
    rig.layer->backward(w.data(), dx.data());
    const std::vector<T> grads(rig.arena.grads(), rig.arena.grads() + rig.arena.numel());
    if (ref_out.empty()) {
      ref_out = rig.out;
      ref_dx = dx;
      ref_grads = grads;
      continue;
    }
    EXPECT_EQ(rig.out, ref_out);
    EXPECT_EQ(dx, ref_dx);
    EXPECT_EQ(grads, ref_grads);
  }
}


// A backward (random output weights, seed 4) after the forward of a rig of seed 3 edited by
// `prepare`: the input and parameter gradients are finite.
template <class T, class Prepare = NoPrepare>
void expect_finite_backward(const AttentionCase& c, const Prepare& prepare = {}) {
  SCOPED_TRACE(describe(c));
  AttentionRig<T> rig(c, 3);
  prepare(rig);
  rig.forward(c);
  std::vector<T> dx(rig.x.size());
  const auto w = random_vector<T>(int64_t(rig.out.size()), 4);
  rig.arena.zero_grad();
  rig.layer->backward(w.data(), dx.data());
  for (T e : dx) ASSERT_TRUE(std::isfinite(double(e)));
  for (int64_t e = 0; e < rig.arena.numel(); ++e) ASSERT_TRUE(std::isfinite(double(rig.arena.grads()[e])));
}

// ---- causality -------------------------------------------------------------------------------------

// For each t in `ts` (every t < n − 1 when empty): adding to the inputs after t (both samples) leaves
// the outputs 0..t bitwise unchanged, and does change a later output of sample 0 — unless `later`
// is kUnlessPadded and every later position of sample 0 is padded (then it must not). Rigs of seed 1,
// edited by `prepare`.
enum class LaterOutputs { kChange, kChangeUnlessPadded };

template <class T, class Prepare = NoPrepare>
void expect_outputs_ignore_the_future(const AttentionCase& c, std::vector<int64_t> ts = {},
                                      LaterOutputs later = LaterOutputs::kChange, const Prepare& prepare = {}) {
  const int64_t d = c.dims.d_model, n = c.n;
  if (ts.empty())
    for (int64_t t = 0; t < n - 1; ++t) ts.push_back(t);
  for (int64_t t : ts) {
    SCOPED_TRACE(str_cat(describe(c), " t=", t));
    AttentionRig<T> a(c), b(c);
    prepare(a);
    prepare(b);
    for (int64_t s = 0; s < c.B; ++s)
      for (int64_t u = t + 1; u < n; ++u)
        for (int64_t e = 0; e < d; ++e) b.x[size_t((s * n + u) * d + e)] += T(0.5 + 0.1 * double(e));
    a.forward(c);
    b.forward(c);
    for (int64_t s = 0; s < c.B; ++s)
      for (int64_t u = 0; u <= t; ++u)
        for (int64_t e = 0; e < d; ++e)
          ASSERT_EQ(a.out[size_t((s * n + u) * d + e)], b.out[size_t((s * n + u) * d + e)]) << "sample " << s << " t " << u;
    bool differs = false, later_real = false;
    for (int64_t e = (t + 1) * d; e < n * d; ++e) differs = differs || a.out[size_t(e)] != b.out[size_t(e)];
    for (int64_t u = t + 1; u < n; ++u) later_real = later_real || c.mask.empty() || !c.mask[size_t(u)];
    if (later == LaterOutputs::kChangeUnlessPadded) {
      EXPECT_EQ(differs, later_real) << "the change should reach exactly the later outputs of real positions";
    } else {
      EXPECT_TRUE(differs) << "the change does not reach the later outputs";
    }
  }
}

// The gradient of output row t of sample 0 alone (a random weighting, seed 5 + t), for t = 0, step,
// 2·step, … < n: exactly zero at every input after t (and in the other samples), and nonzero at some
// input ≤ t where past_nonzero (dropout or padding may hide every earlier key). A double rig of seed 1
// per t, edited by `prepare`.
template <class Prepare = NoPrepare>
void expect_causal_jacobian_is_zero_above_the_diagonal(const AttentionCase& c, int64_t step = 1,
                                                       bool past_nonzero = true, const Prepare& prepare = {}) {
  const int64_t d = c.dims.d_model, n = c.n;
  for (int64_t t = 0; t < n; t += step) {
    SCOPED_TRACE(str_cat(describe(c), " t=", t));
    AttentionRig<double> rig(c);
    prepare(rig);
    rig.forward(c);
    std::vector<double> dout(rig.out.size(), 0.0), dx(rig.x.size());
    const auto w = random_vector<double>(d, 5 + uint64_t(t));
    std::copy(w.begin(), w.end(), dout.begin() + t * d);
    rig.arena.zero_grad();
    rig.layer->backward(dout.data(), dx.data());
    double past = 0;
    for (int64_t u = 0; u <= t; ++u)
      for (int64_t e = 0; e < d; ++e) past = std::max(past, std::abs(dx[size_t(u * d + e)]));
    if (past_nonzero) {
      EXPECT_GT(past, 0.0);
    }
    for (int64_t e = (t + 1) * d; e < c.B * n * d; ++e) ASSERT_EQ(dx[size_t(e)], 0.0) << "element " << e;
  }
}

// The outputs of a causal layer on the first part.n positions alone and, from the same inputs, the
// first part.n outputs inside `full` (the same layer, full.n positions): rigs of seed 4 edited by
// `prepare`, part's inputs copied from full's. Each (B, part.n, d).
template <class T>
struct PrefixOutputs {
  std::vector<T> part, full;
};

template <class T, class Prepare = NoPrepare>
PrefixOutputs<T> prefix_outputs(const AttentionCase& full, const AttentionCase& part, const Prepare& prepare = {}) {
  const int64_t d = full.dims.d_model, fn = full.n, pn = part.n;
  AttentionRig<T> a(full, 4), b(part, 4);
  prepare(a);
  prepare(b);
  for (int64_t s = 0; s < full.B; ++s)
    std::copy(a.x.begin() + s * fn * d, a.x.begin() + (s * fn + pn) * d, b.x.begin() + s * pn * d);
  a.forward(full);
  b.forward(part);
  PrefixOutputs<T> r;
  r.part = b.out;
  for (int64_t s = 0; s < full.B; ++s)
    r.full.insert(r.full.end(), a.out.begin() + s * fn * d, a.out.begin() + (s * fn + pn) * d);
  return r;
}

// prefix_outputs are bitwise equal.
template <class T, class Prepare = NoPrepare>
void expect_same_prefix(const AttentionCase& full, const AttentionCase& part, const Prepare& prepare = {}) {
  SCOPED_TRACE(str_cat(describe(part), " inside n=", full.n));
  const PrefixOutputs<T> r = prefix_outputs<T>(full, part, prepare);
  ASSERT_EQ(r.part.size(), r.full.size());
  for (size_t i = 0; i < r.part.size(); ++i)
    ASSERT_EQ(r.part[i], r.full[i]) << "sample " << int64_t(i) / (part.n * part.dims.d_model) << " e "
                                    << int64_t(i) % (part.n * part.dims.d_model);
}

// ---- padding ---------------------------------------------------------------------------------------

// Garbage for the inputs at padded positions: NaN in odd features, `huge` in even ones.
inline auto nan_or(double huge) {
  return [huge](auto, int64_t e) { return e % 2 ? std::numeric_limits<double>::quiet_NaN() : huge; };
}

// The inputs at the padded positions of `c` (self-attention) replaced by garbage(x, feature) change no
// output at an unpadded position, bit for bit. With gradients: the input gradient is finite, zero at
// every padded position, and the parameter gradients finite. Rigs of seed 1, edited by `prepare`.
template <class T, class Garbage, class Prepare = NoPrepare>
void expect_padded_positions_have_no_influence(const AttentionCase& c, const Garbage& garbage, bool gradients = false,
                                               const Prepare& prepare = {}) {
  SCOPED_TRACE(describe(c));
  ASSERT_EQ(c.m, 0);
  ASSERT_EQ(c.mask.size(), size_t(c.B * c.n));
  AttentionRig<T> a(c), b(c);
  prepare(a);
  prepare(b);
  const int64_t d = c.dims.d_model;
  for (int64_t bt = 0; bt < c.B * c.n; ++bt)
    if (c.mask[size_t(bt)])
      for (int64_t e = 0; e < d; ++e) b.x[size_t(bt * d + e)] = T(garbage(b.x[size_t(bt * d + e)], e));
  a.forward(c);
  b.forward(c);
  for (int64_t bt = 0; bt < c.B * c.n; ++bt)
    if (!c.mask[size_t(bt)]) {
      for (int64_t e = 0; e < d; ++e) ASSERT_EQ(a.out[size_t(bt * d + e)], b.out[size_t(bt * d + e)]) << bt;
    }
  if (!gradients) return;
  const auto w = random_vector<T>(int64_t(b.out.size()), 3);
  std::vector<T> dx(b.x.size());
  b.arena.zero_grad();
  b.layer->backward(w.data(), dx.data());
  for (int64_t bt = 0; bt < c.B * c.n; ++bt)
    for (int64_t e = 0; e < d; ++e) {
      ASSERT_TRUE(std::isfinite(double(dx[size_t(bt * d + e)])));
      if (c.mask[size_t(bt)]) {
        ASSERT_EQ(dx[size_t(bt * d + e)], T(0));
      }
    }
  for (int64_t i = 0; i < b.arena.numel(); ++i) ASSERT_TRUE(std::isfinite(double(b.arena.grads()[i]))) << i;
}

// ---- memory ----------------------------------------------------------------------------------------

// The peak-RSS growth (peak_rss_growth) of a training forward and a backward of a float layer —
// parameters allocated and initialised — on B samples of n positions of d features: input and output
// gradient random (seeds 1 and 2), allocated before the measurement. Sampled outputs and input
// gradients must be finite. A test calls LF_SKIP_MEMORY_TEST_UNDER_SANITIZERS() and
// LF_SKIP_WITHOUT_PROC_STATUS() first.
inline int64_t forward_backward_peak_rss_growth(Attention<float>& layer, int64_t B, int64_t n, int64_t d) {
  const int64_t size = B * n * d;
  const auto x = random_vector<float>(size, 1);
  const auto dout = random_vector<float>(size, 2);
  std::vector<float> out(static_cast<size_t>(size)), dx(static_cast<size_t>(size));
  AttentionInput<float> in;
  in.x = x.data();
  in.B = B;
  in.n = n;
  const int64_t growth = peak_rss_growth([&] {
    layer.forward(in, out.data(), true, 1);
    layer.backward(dout.data(), dx.data());
  });
  int64_t not_finite = 0;
  for (int64_t i = 0; i < size; i += 4099) not_finite += !std::isfinite(out[size_t(i)]) + !std::isfinite(dx[size_t(i)]);
  EXPECT_EQ(not_finite, 0) << "non-finite outputs or input gradients";
  return growth;
}


// The peak-RSS check of a float layer on one sequence of n positions: its arena allocated and
// initialised (seed 1) and edited by `prepare`, then forward_backward_peak_rss_growth, recorded as the
// test property `property` and expected below limit_bytes. A test calls
// LF_SKIP_MEMORY_TEST_UNDER_SANITIZERS() and LF_SKIP_WITHOUT_PROC_STATUS() first.
template <class Prepare = NoPrepare>
void expect_peak_rss_growth_below(ParamArena<float>& arena, Attention<float>& layer, int64_t n, int64_t d,
                                  int64_t limit_bytes, const std::string& property = "peak_rss_growth_bytes",
                                  const Prepare& prepare = {}) {
  arena.allocate();
  arena.initialize(1);
  prepare(arena);
  const int64_t growth = forward_backward_peak_rss_growth(layer, 1, n, d);
  ::testing::Test::RecordProperty(property, std::to_string(growth));
  EXPECT_LT(growth, limit_bytes) << "peak RSS grew by " << growth << " bytes (limit " << limit_bytes
                                 << "; one n×n float matrix: " << n * n * 4 << ")";
}

}  // namespace lf::test
