// CPU kernels at the sizes the model runs them: gemm<float> (GFLOP/s counter), and the memory-bound
// kernels (softmax, layernorm, GELU, cross-entropy, AdamW) forward and backward, with bytes/s counted
// as one read of every input and one write of every output. Threads: LINFORMER_NUM_THREADS, else all
// cores.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "linformer/rng.h"
#include "linformer/runtime.h"
#include "cpu/adamw.h"
#include "cpu/conv1d.h"
#include "cpu/cross_entropy.h"
#include "cpu/gelu.h"
#include "cpu/gemm.h"
#include "cpu/layernorm.h"
#include "cpu/softmax.h"

namespace {

// Honours LINFORMER_NUM_THREADS once, on first use (not at static initialisation, before main), on the
// thread that runs the benchmarks, for the rest of the process.
void configure_threads_once() { static const lf::RuntimeScope scope{lf::RuntimeOptions{}}; }

std::vector<float> uniform(int64_t n, uint64_t stream, float lo = -1, float hi = 1) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = lo + (hi - lo) * lf::uniform01(42, stream, uint64_t(i));
  return v;
}

void set_bytes(benchmark::State& state, int64_t floats_per_iteration) {
  state.SetBytesProcessed(state.iterations() * floats_per_iteration * int64_t(sizeof(float)));
}

// C (M, N) = A (M, K) · B (K, N), or · Bᵀ with B stored (N, K) when the fourth argument is 1 (a linear
// layer's x·Wᵀ).
void BM_Gemm(benchmark::State& state) {
  configure_threads_once();
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  const bool trans_b = state.range(3) != 0;
  const std::vector<float> A = uniform(M * K, 1), B = uniform(K * N, 2);
  std::vector<float> C(size_t(M * N));
  for (auto _ : state) {
    lf::gemm<float>(false, trans_b, M, N, K, 1.f, A.data(), K, B.data(), trans_b ? K : N, 0.f, C.data(), N);
    benchmark::DoNotOptimize(C.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * double(M) * double(N) * double(K) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Gemm)
    ->ArgNames({"M", "N", "K", "trans_b"})
    ->Args({2048, 2048, 2048, 0})
    ->Args({4096, 256, 64, 0})
    ->Args({4096, 512, 512, 0})
    ->Args({4096, 512, 512, 1})
    ->Args({4096, 512, 2048, 1})->Unit(benchmark::kMillisecond)->UseRealTime();

// Attention probabilities: rows = n · heads (4096 · 8), cols = k (256).
void BM_Softmax(benchmark::State& state) {
  configure_threads_once();
  const bool backward = state.range(0);
  const int64_t rows = 4096 * 8, cols = 256, n = rows * cols;
  const std::vector<float> x = uniform(n, 3, -5, 5), dy = uniform(n, 4);
  std::vector<float> y(n), dx(n);
  lf::softmax_forward(x.data(), y.data(), rows, cols);
  for (auto _ : state) {
    if (backward)
      lf::softmax_backward(y.data(), dy.data(), dx.data(), rows, cols);
    else
      lf::softmax_forward(x.data(), y.data(), rows, cols);
    benchmark::ClobberMemory();
  }
  set_bytes(state, (backward ? 3 : 2) * n);
}
BENCHMARK(BM_Softmax)->ArgName("backward")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

// Token activations: rows = 4096 tokens, C = d_model = 512.
void BM_LayerNorm(benchmark::State& state) {
  configure_threads_once();
  const bool backward = state.range(0);
  const int64_t rows = 4096, C = 512, n = rows * C;
  const std::vector<float> x = uniform(n, 5), w = uniform(C, 6, 0.5f, 1.5f), b = uniform(C, 7), dy = uniform(n, 8);
  std::vector<float> y(n), dx(n), mean(rows), rstd(rows), dw(C), db(C);
  lf::layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, C);
  for (auto _ : state) {
    if (backward)
      lf::layernorm_backward(x.data(), w.data(), mean.data(), rstd.data(), dy.data(), dx.data(), dw.data(), db.data(),
                             rows, C);
    else
      lf::layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, C);
    benchmark::ClobberMemory();
  }
  set_bytes(state, (backward ? 3 : 2) * n);
}
BENCHMARK(BM_LayerNorm)->ArgName("backward")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

// The depthwise convolution before attention (conv_kernel = 5) on 8 × 512 tokens of width 128, the
// main job's shape.
void BM_DepthwiseConv1d(benchmark::State& state) {
  configure_threads_once();
  const bool backward = state.range(0);
  const int64_t B = 8, n = 512, d = 128, K = 5, N = B * n * d;
  const std::vector<float> x = uniform(N, 13), w = uniform(d * K, 14), b = uniform(d, 15), dy = uniform(N, 16);
  std::vector<float> y(N), dw(static_cast<size_t>(d * K)), db(static_cast<size_t>(d));
  for (auto _ : state) {
    if (backward)
      lf::depthwise_conv1d_backward(x.data(), w.data(), dy.data(), y.data(), dw.data(), db.data(), B, n, d, K, false);
    else
      lf::depthwise_conv1d_forward(x.data(), w.data(), b.data(), y.data(), B, n, d, K, false);
    benchmark::ClobberMemory();
  }
  set_bytes(state, (backward ? 3 : 2) * N);
}
BENCHMARK(BM_DepthwiseConv1d)->ArgName("backward")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

// Feed-forward hidden activations: 4096 tokens × 4·512.
void BM_Gelu(benchmark::State& state) {
  configure_threads_once();
  const bool backward = state.range(0);
  const int64_t n = 4096 * 2048;
  const std::vector<float> x = uniform(n, 9, -4, 4), dy = uniform(n, 10);
  std::vector<float> y(n);
  for (auto _ : state) {
    if (backward)
      lf::gelu_backward(x.data(), dy.data(), y.data(), n);
    else
      lf::gelu_forward(x.data(), y.data(), n);
    benchmark::ClobberMemory();
  }
  set_bytes(state, (backward ? 3 : 2) * n);
}
BENCHMARK(BM_Gelu)->ArgName("backward")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

// Language-model head: 4096 tokens × a 260-symbol byte vocabulary.
void BM_CrossEntropy(benchmark::State& state) {
  configure_threads_once();
  const bool backward = state.range(0);
  const int64_t N = 4096, V = 260;
  const std::vector<float> logits = uniform(N * V, 11, -5, 5);
  std::vector<int32_t> targets(N);
  for (int64_t r = 0; r < N; ++r) targets[size_t(r)] = int32_t(r * 7919 % V);
  std::vector<float> d(size_t(N * V));
  for (auto _ : state) {
    if (backward) {
      lf::cross_entropy_backward(logits.data(), targets.data(), d.data(), N, V);
    } else {
      const lf::CrossEntropyResult r = lf::cross_entropy_forward(logits.data(), targets.data(), N, V);
      benchmark::DoNotOptimize(r);
    }
    benchmark::ClobberMemory();
  }
  set_bytes(state, (backward ? 2 : 1) * N * V);
}
BENCHMARK(BM_CrossEntropy)->ArgName("backward")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

// One optimizer step over 4M parameters (p, g, m, v read; p, m, v written).
void BM_AdamW(benchmark::State& state) {
  configure_threads_once();
  const int64_t n = int64_t(1) << 22;
  std::vector<float> p = uniform(n, 12), m(n, 0.f), v(n, 0.f);
  const std::vector<float> g = uniform(n, 13);
  int64_t t = 0;
  for (auto _ : state) {
    lf::adamw_step(p.data(), g.data(), m.data(), v.data(), n, ++t, lf::AdamWOptions{});
    benchmark::ClobberMemory();
  }
  set_bytes(state, 7 * n);
}
BENCHMARK(BM_AdamW)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace
