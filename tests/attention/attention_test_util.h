// Helpers for attention tests: build a layer of any kind in double or float, run it on random input,
// and check its gradients against finite differences.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "attention/attention.h"
#include "cpu/threading.h"
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
  void forward(const AttentionCase& c) { layer->forward(input(c), out.data(), c.training, 1234); }
};

// Checks d(Σ w·out)/d(everything) of a double-precision layer against central differences: the
// input, the context, and every trainable parameter.
inline void check_attention_gradients(const AttentionCase& c, double tol = 1e-6) {
  AttentionRig<double> rig(c);
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

// The layer's output, input gradient and parameter gradients are bitwise the same with 1, 3 and 2
// threads, in double (the reference GEMM) or float (the fast paths and the GEMM backend). `prepare`
// (optional) edits each freshly initialised rig before its forward. The thread count is restored.
template <class T = double>
void expect_results_independent_of_threads(
    const AttentionCase& c, const std::type_identity_t<std::function<void(AttentionRig<T>&)>>& prepare = {}) {
  const int saved = num_threads();
  std::vector<T> ref_out, ref_dx, ref_grads;
  for (int threads : {1, 3, 2}) {
    SCOPED_TRACE("threads=" + std::to_string(threads));
    configure_threads(threads);
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
  configure_threads(saved);
}

}  // namespace lf::test
