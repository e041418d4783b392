// CPU kernels at the sizes the model runs them: gemm<float> and the linear layers' forward in fp32 and
// int8 (GFLOP/s counter), and the memory-bound
// kernels (softmax, layernorm, GELU, cross-entropy, AdamW) forward and backward, with bytes/s counted
// as one read of every input and one write of every output. Then the small ops of the ops layer
// (BM_Op*: element-wise, score masks, Linformer's window poolings, the optimizer, cross-entropy), called
// through src/ops/ with the views the model and the kinds pass them, at the model's shapes (batch 1,
// n = 4096, d = 512, 8 heads, Linformer k = 256, vocabulary 260, a 6-layer model's parameters); the
// same bytes/s convention, plus items/s where the op's unit is not an element (rows, parameters).
// Threads: LINFORMER_NUM_THREADS, else all cores.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cpu/adamw.h"
#include "cpu/attention_decode.h"
#include "cpu/conv1d.h"
#include "cpu/cross_entropy.h"
#include "cpu/elementwise.h"
#include "cpu/flash.h"
#include "cpu/gelu.h"
#include "cpu/gemm.h"
#include "cpu/layernorm.h"
#include "cpu/linformer_bias.h"
#include "cpu/softmax.h"
#include "cpu/tile_gemm.h"
#include "linformer/arena.h"
#include "linformer/config.h"
#include "linformer/model.h"
#include "linformer/rng.h"
#include "linformer/runtime.h"
#include "linformer/tensor.h"
#include "ops/elementwise.h"
#include "ops/linear.h"
#include "ops/linformer_bias.h"
#include "ops/matmul.h"
#include "ops/optimizer.h"
#include "ops/score_masks.h"
#include "ops/sequence.h"
#include "ops/window_pooling.h"

namespace {

// Honours LINFORMER_NUM_THREADS once, on first use (not at static initialisation, before main), on the
// thread that runs the benchmarks, for the rest of the process.
void configure_threads_once() { static const lf::RuntimeScope scope{lf::RuntimeOptions{}}; }

std::vector<float> uniform(int64_t n, uint64_t stream, float lo = -1, float hi = 1) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = lo + (hi - lo) * lf::uniform01(42, stream, uint64_t(i));
  return v;
}

// The "GFLOP/s" counter of a benchmark doing `flops` floating-point operations per iteration.
void count_gflops(benchmark::State& state, double flops) {
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
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
  count_gflops(state, 2.0 * double(M) * double(N) * double(K));
}
BENCHMARK(BM_Gemm)
    ->ArgNames({"M", "N", "K", "trans_b"})
    ->Args({2048, 2048, 2048, 0})
    ->Args({4096, 256, 64, 0})
    ->Args({4096, 512, 512, 0})
    ->Args({4096, 512, 512, 1})
    ->Args({4096, 512, 2048, 1})->Unit(benchmark::kMillisecond)->UseRealTime();

// The single-threaded tile product at flash's tile shapes: C (M, N) = A (M, K) · B (K, N), or with
// trans_a (the fourth argument) Aᵀ for A stored (K, M).
void BM_TileGemm(benchmark::State& state) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  const bool trans_a = state.range(3) != 0;
  const std::vector<float> A = uniform(M * K, 1), B = uniform(K * N, 2);
  std::vector<float> C(size_t(M * N));
  for (auto _ : state) {
    lf::flash_tile_gemm<float>(trans_a, M, N, K, 1.f, A.data(), trans_a ? M : K, B.data(), N, true, C.data(), N);
    benchmark::DoNotOptimize(C.data());
  }
  count_gflops(state, 2.0 * double(M) * double(N) * double(K));
}
BENCHMARK(BM_TileGemm)
    ->ArgNames({"M", "N", "K", "trans_a"})
    ->Args({64, 64, 64, 0})
    ->Args({64, 64, 64, 1})
    ->Args({64, 16, 64, 0})
    ->Args({128, 64, 256, 1})
    ->Args({256, 128, 64, 0})->Unit(benchmark::kMicrosecond)->UseRealTime();

// A decoding step's exact attention (attention_decode): one new query of batch 1, 8 heads of width
// 64, against `rows` cached keys and values; KV_GB/s: the K and V bytes read per second.
void BM_AttentionDecode(benchmark::State& state) {
  configure_threads_once();
  lf::DecodeShape s;
  s.B = 1, s.n = 1, s.rows = state.range(0), s.h = s.hk = 8, s.d_h = 64, s.scale = 0.125;
  s.kv_stride = s.rows * s.h * s.d_h;
  const std::vector<float> q = uniform(s.h * s.d_h, 1), k = uniform(s.kv_stride, 2), v = uniform(s.kv_stride, 3);
  std::vector<float> out(q.size());
  for (auto _ : state) {
    lf::attention_decode<float>(s, q.data(), k.data(), v.data(), out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["KV_GB"] = benchmark::Counter(2.0 * double(s.kv_stride) * sizeof(float) * double(state.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
}
BENCHMARK(BM_AttentionDecode)->ArgName("rows")->Arg(1024)->Arg(4096)->Arg(16384)->Unit(benchmark::kMicrosecond)->UseRealTime();

// The memory floor of a step that streams its operands: a plain threaded sum over `MiB` of floats
// (each thread a contiguous half), read again and again. Below the share of L3 the process gets it
// measures the cache's read rate, far above it the DRAM's: a decoding step at context t reads its K
// and V (2·t·d floats) and the layer's weights once per token, and cannot run faster than this rate.
void BM_StreamRead(benchmark::State& state) {
  configure_threads_once();
  const int64_t n = state.range(0) * (int64_t(1) << 20) / int64_t(sizeof(float));
  const std::vector<float> a = uniform(n, 4);
  for (auto _ : state) {
    float total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static)
    for (int64_t blk = 0; blk < n / 4096; ++blk) {
      float lanes[16] = {};
      const float* p = a.data() + blk * 4096;
      for (int64_t i = 0; i < 4096; i += 16)
#pragma omp simd
        for (int l = 0; l < 16; ++l) lanes[l] += p[i + l];
      for (float x : lanes) total += x;
    }
    benchmark::DoNotOptimize(total);
  }
  state.counters["GB"] = benchmark::Counter(double(n) * sizeof(float) * double(state.iterations()) / 1e9,
                                            benchmark::Counter::kIsRate);
}
BENCHMARK(BM_StreamRead)->ArgName("MiB")->Arg(4)->Arg(8)->Arg(16)->Arg(24)->Arg(256)->Unit(benchmark::kMicrosecond)->UseRealTime();

// flash attention's kernels on the layer's shapes: batch 1, 8 heads of width 64, n = mk, no mask.
// GFLOP/s counts the products: 2 in the forward (scores, P·V), 5 in the backward (scores again, dV,
// dP, dQ, dK), 2·n·mk·d_h each per head.
void BM_Flash(benchmark::State& state) {
  configure_threads_once();
  const int64_t n = state.range(0);
  const bool backward = state.range(1) != 0;
  lf::SdpaShape s;
  s.B = 1, s.n = s.mk = n, s.h = s.hk = 8, s.d_h = 64, s.scale = 0.125;
  const int64_t size = n * s.h * s.d_h;
  const std::vector<float> q = uniform(size, 1), k = uniform(size, 2), v = uniform(size, 3), dout = uniform(size, 4);
  const size_t sz = static_cast<size_t>(size);
  std::vector<float> out(sz), lse(static_cast<size_t>(s.h * n)), dq(sz), dk(sz), dv(sz);
  lf::flash_forward<float>(s, q.data(), k.data(), v.data(), out.data(), lse.data());
  for (auto _ : state) {
    if (backward)
      lf::flash_backward<float>(s, q.data(), k.data(), v.data(), out.data(), lse.data(), dout.data(), dq.data(),
                                dk.data(), dv.data());
    else
      lf::flash_forward<float>(s, q.data(), k.data(), v.data(), out.data(), lse.data());
    benchmark::DoNotOptimize(out.data());
    benchmark::DoNotOptimize(dq.data());
  }
  count_gflops(state, (backward ? 5 : 2) * 2.0 * double(n) * double(n) * 8 * 64);
}
BENCHMARK(BM_Flash)
    ->ArgNames({"n", "backward"})
    ->Args({1024, 0})
    ->Args({4096, 0})
    ->Args({1024, 1})
    ->Args({4096, 1})->Unit(benchmark::kMillisecond)->UseRealTime();
// Every GEMM shape of the 6-layer d = 512 Linformer model at n = 4096, k = 256, 8 heads of 64,
// d_ff = 2048, vocabulary 260 (forward and backward: the per-op profile in
// bench/results/amd-epyc-f25-m17/profile/report_n4096_k256_l6_t2.md), plus sgemm 2048³, through
// ops::matmul with the model's layouts: C (M, N) = op(A) · op(B) (+ C where the model accumulates:
// the weight gradients), tA/tB = the operand is read transposed (a `.t()` view), one head's operands
// are columns of rows of 512 (heads side by side), scores rows of k. The GFLOP/s counter counts
// 2·M·N·K per call. scripts/gemm_backends.sh runs these for each backend.
struct GemmShape {
  const char* name;
  int64_t M, N, K;
  bool ta, tb;
  int64_t lda, ldb, ldc;  // row strides of the stored A, B, C; 0: dense
  double beta;
};

constexpr GemmShape kGemmShapes[] = {
    {"sgemm_2048", 2048, 2048, 2048, false, false, 0, 0, 0, 0},
    // linear layers: y = x·Wᵀ, dx = dy·W, dW += dyᵀ·x (4096 tokens)
    {"ff1_fwd", 4096, 2048, 512, false, true, 0, 0, 0, 0},
    {"ff2_fwd", 4096, 512, 2048, false, true, 0, 0, 0, 0},
    {"ff1_dx", 4096, 512, 2048, false, false, 0, 0, 0, 0},
    {"ff2_dx", 4096, 2048, 512, false, false, 0, 0, 0, 0},
    {"ff1_dW", 2048, 512, 4096, true, false, 0, 0, 0, 1},
    {"ff2_dW", 512, 2048, 4096, true, false, 0, 0, 0, 1},
    {"qkvo_fwd", 4096, 512, 512, false, true, 0, 0, 0, 0},
    {"qkvo_dx", 4096, 512, 512, false, false, 0, 0, 0, 0},
    {"qkvo_dW", 512, 512, 4096, true, false, 0, 0, 0, 1},
    {"vocab_fwd", 4096, 260, 512, false, true, 0, 0, 0, 0},
    {"vocab_dx", 4096, 512, 260, false, false, 0, 0, 0, 0},
    {"vocab_dW", 260, 512, 4096, true, false, 0, 0, 0, 1},
    // inference, in blocks of 2048 tokens
    {"ff1_fwd_2048", 2048, 2048, 512, false, true, 0, 0, 0, 0},
    {"ff2_fwd_2048", 2048, 512, 2048, false, true, 0, 0, 0, 0},
    // generation: one token's rows (a decoding step's four maps and its feed-forward)
    {"qkvo_fwd_1", 1, 512, 512, false, true, 0, 0, 0, 0},
    {"ff1_fwd_1", 1, 2048, 512, false, true, 0, 0, 0, 0},
    {"ff2_fwd_1", 1, 512, 2048, false, true, 0, 0, 0, 0},
    {"qkvo_fwd_4", 4, 512, 512, false, true, 0, 0, 0, 0},
    // Linformer's projections of keys and values: K̄ = E·X (k × n · n × d), and their gradients
    {"proj_fwd", 256, 512, 4096, false, false, 0, 0, 0, 0},
    {"proj_dE", 256, 4096, 512, false, true, 0, 0, 0, 1},
    {"proj_dX", 4096, 512, 256, true, false, 0, 0, 0, 1},
    {"kv_fwd", 256, 512, 512, false, true, 0, 0, 0, 0},
    {"kv_dx", 256, 512, 512, false, false, 0, 0, 0, 0},
    {"kv_dW", 512, 512, 256, true, false, 0, 0, 0, 1},
    // one head: scores = Q_h·K̄_hᵀ, out_h = P·V̄_h, dV̄_h = Pᵀ·dout_h
    {"head_scores", 4096, 256, 64, false, true, 512, 512, 256, 0},
    {"head_pv", 4096, 64, 256, false, false, 256, 512, 512, 0},
    {"head_dV", 256, 64, 4096, true, false, 256, 512, 512, 0},
    // the quality study's model (d = 128, 4 heads, n = 512, k = 128): where bf16 stops paying
    {"small_linear", 512, 128, 128, false, true, 0, 0, 0, 0},
    {"small_dW", 128, 128, 512, true, false, 0, 0, 0, 1},
    {"small_head_scores", 512, 128, 32, false, true, 128, 128, 128, 0},
    {"small_head_pv", 512, 32, 128, false, false, 128, 128, 128, 0},
};

void BM_GemmShape(benchmark::State& state, GemmShape g, lf::Precision precision, bool every_shape) {
  configure_threads_once();
  if (const std::string why = lf::precision_unsupported_reason(precision); !why.empty()) return state.SkipWithError(why.c_str());
  lf::set_gemm_precision(precision);  // this thread's products; restored below
  lf::set_gemm_bf16_every_shape(every_shape);
  // Stored shapes: A is (K, M) when read transposed, else (M, K); likewise B (N, K) or (K, N).
  const int64_t a_rows = g.ta ? g.K : g.M, a_cols = g.ta ? g.M : g.K;
  const int64_t b_rows = g.tb ? g.N : g.K, b_cols = g.tb ? g.K : g.N;
  const int64_t lda = g.lda ? g.lda : a_cols, ldb = g.ldb ? g.ldb : b_cols, ldc = g.ldc ? g.ldc : g.N;
  std::vector<float> A = uniform(a_rows * lda, 1), B = uniform(b_rows * ldb, 2), C = uniform(g.M * ldc, 3);
  using View = lf::TensorView<float>;
  const View a = View::strided(A.data(), {a_rows, a_cols}, {lda, 1}), b = View::strided(B.data(), {b_rows, b_cols}, {ldb, 1});
  const View c = View::strided(C.data(), {g.M, g.N}, {ldc, 1});
  for (auto _ : state) {
    lf::ops::matmul<float>(g.ta ? a.t() : a, g.tb ? b.t() : b, c, 1.0, g.beta);
    benchmark::DoNotOptimize(C.data());
    benchmark::ClobberMemory();
  }
  count_gflops(state, 2.0 * double(g.M) * double(g.N) * double(g.K));
  lf::set_gemm_precision(lf::Precision::fp32);
  lf::set_gemm_bf16_every_shape(false);
  state.SetLabel(std::to_string(g.M) + "x" + std::to_string(g.N) + "x" + std::to_string(g.K) + " tA=" +
                 std::to_string(int(g.ta)) + " tB=" + std::to_string(int(g.tb)) + " " + lf::gemm_backend() + " " +
                 lf::precision_name(precision));
}

[[maybe_unused]] const bool gemm_shapes_registered = [] {
  // BM_GemmShape/<name> in fp32; BM_GemmShapeBf16/<name> with --precision bf16's products (the size bound
  // included: a shape it keeps fp32 measures fp32); BM_GemmShapeBf16Forced/<name> in bf16 at any size,
  // to see where the bound should lie.
  const auto add = [](const char* family, const GemmShape& g, lf::Precision p, bool every_shape) {
    benchmark::RegisterBenchmark((std::string(family) + g.name).c_str(), BM_GemmShape, g, p, every_shape)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  };
  for (const GemmShape& g : kGemmShapes) {
    add("BM_GemmShape/", g, lf::Precision::fp32, false);
    add("BM_GemmShapeBf16/", g, lf::Precision::bf16, false);
    add("BM_GemmShapeBf16Forced/", g, lf::Precision::bf16, true);
  }
  return true;
}();

// The linear layers' forward at the model's shapes (the *_fwd rows above: y = x·Wᵀ + b through
// ops::linear_forward): BM_LinearShape/<name> in fp32, BM_LinearShapeInt8/<name> with --precision int8
// (x and W quantised on each call, as the model runs it; the counter counts 2·M·N·K operations either way).
void BM_LinearShape(benchmark::State& state, GemmShape g, lf::Precision precision) {
  configure_threads_once();
  if (const std::string why = lf::precision_unsupported_reason(precision); !why.empty()) return state.SkipWithError(why.c_str());
  lf::set_gemm_precision(precision);
  const std::vector<float> x = uniform(g.M * g.K, 1), W = uniform(g.N * g.K, 2, -0.05f, 0.05f), b = uniform(g.N, 3);
  std::vector<float> y(size_t(g.M * g.N));
  for (auto _ : state) {
    lf::ops::linear_forward<float>(lf::matrix(x.data(), g.M, g.K), lf::matrix(W.data(), g.N, g.K),
                                   lf::vector_view(b.data(), g.N), lf::matrix(y.data(), g.M, g.N));
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  count_gflops(state, 2.0 * double(g.M) * double(g.N) * double(g.K));
  lf::set_gemm_precision(lf::Precision::fp32);
  state.SetLabel(std::to_string(g.M) + "x" + std::to_string(g.N) + "x" + std::to_string(g.K) + " " + lf::precision_name(precision));
}

[[maybe_unused]] const bool linear_shapes_registered = [] {
  for (const GemmShape& g : kGemmShapes) {
    if (g.ta || !g.tb || g.lda || g.ldb || g.ldc || g.beta != 0) continue;  // the forward products of linear layers
    benchmark::RegisterBenchmark((std::string("BM_LinearShape/") + g.name).c_str(), BM_LinearShape, g, lf::Precision::fp32)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark((std::string("BM_LinearShapeInt8/") + g.name).c_str(), BM_LinearShape, g,
                                 lf::Precision::int8)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  return true;
}();

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

// --- The ops layer's small ops (src/ops/), called as the model and the kinds call them -------------

constexpr int64_t kTokens = 4096;  // batch 1 × n = 4096
constexpr int64_t kWidth = 512;    // d_model
constexpr int64_t kHeads = 8;
constexpr int64_t kProjected = 256;  // Linformer's k
constexpr int64_t kVocab = 260;      // the byte vocabulary

// One (B·n, d) activation as an op sees it: `vector_view` of its B·n·d elements (0: how model.cpp
// passes the residual adds and copies; rank 1 is a single row to the row kernels), or
// `matrix(B·n, d)` (1: how the kinds pass theirs).
lf::TensorView<float> activation_view(std::vector<float>& x, bool rows) {
  return rows ? lf::matrix(x.data(), kTokens, kWidth) : lf::vector_view(x.data(), kTokens * kWidth);
}

void set_items(benchmark::State& state, int64_t items_per_iteration) {
  state.SetItemsProcessed(state.iterations() * items_per_iteration);
}

// fill: one write (sdpa's zeroing of dK, dV; linformer's of dcontext).
void BM_OpFill(benchmark::State& state) {
  configure_threads_once();
  const int64_t N = kTokens * kWidth;
  std::vector<float> y(static_cast<size_t>(N));
  const lf::TensorView<float> yv = activation_view(y, state.range(0));
  for (auto _ : state) {
    lf::ops::fill(yv, 0);
    benchmark::ClobberMemory();
  }
  set_bytes(state, N);
}
BENCHMARK(BM_OpFill)->ArgName("rows")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

// copy: one read, one write (the model's attention input to the convolution's, dx of the residual).
void BM_OpCopy(benchmark::State& state) {
  configure_threads_once();
  const int64_t N = kTokens * kWidth;
  std::vector<float> x = uniform(N, 20), y(static_cast<size_t>(N));
  const lf::TensorView<float> xv = activation_view(x, state.range(0)), yv = activation_view(y, state.range(0));
  for (auto _ : state) {
    lf::ops::copy<float>(xv, yv);
    benchmark::ClobberMemory();
  }
  set_bytes(state, 2 * N);
}
BENCHMARK(BM_OpCopy)->ArgName("rows")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

// y = 0.5·y + 0.5·x (the general path: beta ≠ 1): x and y read, y written.
void BM_OpAxpby(benchmark::State& state) {
  configure_threads_once();
  const int64_t N = kTokens * kWidth;
  std::vector<float> x = uniform(N, 21), y = uniform(N, 22);
  const lf::TensorView<float> xv = activation_view(x, state.range(0)), yv = activation_view(y, state.range(0));
  for (auto _ : state) {
    lf::ops::axpby<float>(0.5, xv, 0.5, yv);
    benchmark::ClobberMemory();
  }
  set_bytes(state, 3 * N);
}
BENCHMARK(BM_OpAxpby)->ArgName("rows")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

// y += x, the residual add of every block (forward and backward): x and y read, y written.
void BM_OpAdd(benchmark::State& state) {
  configure_threads_once();
  const int64_t N = kTokens * kWidth;
  std::vector<float> x = uniform(N, 23), y = uniform(N, 24);
  const lf::TensorView<float> xv = activation_view(x, state.range(0)), yv = activation_view(y, state.range(0));
  for (auto _ : state) {
    lf::ops::add<float>(xv, yv);
    benchmark::ClobberMemory();
  }
  set_bytes(state, 3 * N);
}
BENCHMARK(BM_OpAdd)->ArgName("rows")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

// y *= s in place (contiguous only; Linformer's scaled projections, the trainer's clipping, which
// BM_OpClipScale measures over the gradients): one read, one write. s alternates 2 and 0.5 (exact).
void BM_OpScale(benchmark::State& state) {
  configure_threads_once();
  const int64_t N = kTokens * kWidth;
  std::vector<float> y = uniform(N, 25);
  const lf::TensorView<float> yv = lf::vector_view(y.data(), N);
  int64_t i = 0;
  for (auto _ : state) {
    lf::ops::scale(yv, (i++ & 1) ? 0.5 : 2.0);
    benchmark::ClobberMemory();
  }
  set_bytes(state, 2 * N);
}
BENCHMARK(BM_OpScale)->Unit(benchmark::kMicrosecond)->UseRealTime();

// ReLU in place (synthesizer's and sinkhorn's hidden units) on (B·n, d) rows: forward y = max(x, 0)
// (one read, one write); backward dx = dy where y > 0, in place on dy (two reads, one write).
void BM_OpRelu(benchmark::State& state) {
  configure_threads_once();
  const bool backward = state.range(0);
  const int64_t N = kTokens * kWidth;
  std::vector<float> x = uniform(N, 26), y(static_cast<size_t>(N)), dy = uniform(N, 27);
  const lf::TensorView<float> xv = activation_view(x, true), yv = activation_view(y, true),
                              dyv = activation_view(dy, true);
  lf::ops::relu_forward<float>(xv, yv);
  for (auto _ : state) {
    if (backward)
      lf::ops::relu_backward<float>(yv, dyv, dyv);
    else
      lf::ops::relu_forward<float>(xv, yv);
    benchmark::ClobberMemory();
  }
  set_bytes(state, (backward ? 3 : 2) * N);
}
BENCHMARK(BM_OpRelu)->ArgName("backward")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

// Padded rows of a (B·n, d) activation set to zero (the convolution's input and gradient, the
// padding select of every kind), the last `padded_percent` % of the rows padded: the mask read, the
// padded rows written (bytes); rows/s as items.
void BM_OpZeroMaskedRows(benchmark::State& state) {
  configure_threads_once();
  const int64_t padded = kTokens * state.range(0) / 100;
  std::vector<float> y = uniform(kTokens * kWidth, 28);
  std::vector<uint8_t> mask(static_cast<size_t>(kTokens), 0);
  for (int64_t r = kTokens - padded; r < kTokens; ++r) mask[size_t(r)] = 1;
  const lf::TensorView<float> yv = activation_view(y, true);
  const lf::TensorView<const uint8_t> maskv = lf::vector_view<const uint8_t>(mask.data(), kTokens);
  for (auto _ : state) {
    lf::ops::zero_masked_rows(maskv, yv);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * (kTokens + padded * kWidth * int64_t(sizeof(float))));
  set_items(state, kTokens);
}
BENCHMARK(BM_OpZeroMaskedRows)
    ->ArgName("padded_percent")
    ->Arg(10)
    ->Arg(50)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// The ops that replaced the kinds' and heads' last host loops, at the model's shapes: Linformer's
// masked row sums of E (k, n) and its bias term on (k, d), the classifier's mean pooling of (n, d),
// the model's finiteness check of (n, d). Bytes: what each reads and writes once. ref:1 runs the
// kernel's plain `_ref` loop (the implementation before the fast path) on the same data, so one run
// gives both.
void BM_OpMaskedRowSums(benchmark::State& state) {
  configure_threads_once();
  const bool ref = state.range(0);
  std::vector<float> E = uniform(kProjected * kTokens, 30), sums(static_cast<size_t>(kProjected));
  std::vector<uint8_t> padded(static_cast<size_t>(kTokens), 0);
  for (auto _ : state) {
    if (ref)
      lf::masked_row_sums_ref(E.data(), kTokens, kProjected, kTokens, padded.data(), sums.data());
    else
      lf::ops::masked_row_sums<float>(lf::matrix<const float>(E.data(), kProjected, kTokens),
                                      lf::vector_view<const uint8_t>(padded.data(), kTokens),
                                      lf::vector_view(sums.data(), kProjected));
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * kProjected * kTokens * int64_t(sizeof(float)));
}
BENCHMARK(BM_OpMaskedRowSums)->ArgName("ref")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

// dE (k, n) += dsums at the real positions (learned E's gradient): dE read and written.
void BM_OpMaskedRowSumsBackward(benchmark::State& state) {
  configure_threads_once();
  const bool ref = state.range(0);
  std::vector<float> dE = uniform(kProjected * kTokens, 36), dsums = uniform(kProjected, 37);
  std::vector<uint8_t> padded(static_cast<size_t>(kTokens), 0);
  for (auto _ : state) {
    if (ref)
      lf::masked_row_sums_backward_ref(dsums.data(), kProjected, kTokens, padded.data(), dE.data(), kTokens);
    else
      lf::ops::masked_row_sums_backward<float>(lf::vector_view<const float>(dsums.data(), kProjected),
                                               lf::vector_view<const uint8_t>(padded.data(), kTokens),
                                               lf::matrix(dE.data(), kProjected, kTokens));
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * 2 * kProjected * kTokens * int64_t(sizeof(float)));
}
BENCHMARK(BM_OpMaskedRowSumsBackward)->ArgName("ref")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_OpAddRowWeightedBias(benchmark::State& state) {
  configure_threads_once();
  const bool ref = state.range(0);
  std::vector<float> r = uniform(kProjected, 31), b = uniform(kWidth, 32), C = uniform(kProjected * kWidth, 33);
  for (auto _ : state) {
    if (ref)
      lf::add_row_weighted_bias_ref(r.data(), b.data(), kProjected, kWidth, C.data(), kWidth);
    else
      lf::ops::add_row_weighted_bias<float>(lf::vector_view<const float>(r.data(), kProjected),
                                            lf::vector_view<const float>(b.data(), kWidth),
                                            lf::matrix(C.data(), kProjected, kWidth));
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * 2 * kProjected * kWidth * int64_t(sizeof(float)));
}
BENCHMARK(BM_OpAddRowWeightedBias)->ArgName("ref")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

// From dC (k, d): db += Σ_j r_j dC_j and dr = dC b (the row sums' gradient): dC read once.
void BM_OpAddRowWeightedBiasBackward(benchmark::State& state) {
  configure_threads_once();
  const bool ref = state.range(0);
  std::vector<float> dC = uniform(kProjected * kWidth, 38), r = uniform(kProjected, 39), b = uniform(kWidth, 40);
  std::vector<float> db(static_cast<size_t>(kWidth)), dr(static_cast<size_t>(kProjected));
  for (auto _ : state) {
    if (ref)
      lf::add_row_weighted_bias_backward_ref(dC.data(), kWidth, r.data(), b.data(), kProjected, kWidth, db.data(),
                                             dr.data());
    else
      lf::ops::add_row_weighted_bias_backward<float>(
          lf::matrix<const float>(dC.data(), kProjected, kWidth), lf::vector_view<const float>(r.data(), kProjected),
          lf::vector_view<const float>(b.data(), kWidth), lf::vector_view(db.data(), kWidth),
          lf::vector_view(dr.data(), kProjected));
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * kProjected * kWidth * int64_t(sizeof(float)));
}
BENCHMARK(BM_OpAddRowWeightedBiasBackward)->ArgName("ref")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

// conv_full's weight (h·d_h, d_h, w) rearranged to one (d_h × d_h) matrix per head and tap, (h, w, d_h,
// d_h), at d = 512, h = 8 and w = n / k = 16 (the by_tap view of src/attention/linformer.cpp); its
// gradient scattered back with accumulate:1. Bytes: read and written once (accumulate: the target read
// too).
void BM_OpCopyStrided(benchmark::State& state) {
  configure_threads_once();
  const bool accumulate = state.range(0);
  constexpr int64_t G = kHeads, W = kTokens / kProjected, D = kWidth / kHeads, N = G * W * D * D;
  std::vector<float> weight = uniform(N, 41), taps = uniform(N, 42);
  const lf::TensorView<float> by_tap =
      lf::TensorView<float>::strided(weight.data(), {G, W, D, D}, {D * D * W, 1, D * W, W});
  const lf::TensorView<float> packed(taps.data(), {G, W, D, D});
  for (auto _ : state) {
    if (accumulate)
      lf::ops::copy_strided<float>(packed, by_tap, true);
    else
      lf::ops::copy_strided<float>(by_tap, packed);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * (accumulate ? 3 : 2) * N * int64_t(sizeof(float)));
}
BENCHMARK(BM_OpCopyStrided)->ArgName("accumulate")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_OpSequencePoolMean(benchmark::State& state) {
  configure_threads_once();
  std::vector<float> h = uniform(kTokens * kWidth, 34), pooled(static_cast<size_t>(kWidth));
  for (auto _ : state) {
    lf::ops::sequence_pool_forward<float>(lf::TensorView<const float>(h.data(), {1, kTokens, kWidth}),
                                          lf::TensorView<const uint8_t>(), lf::ops::SequencePooling::kMean,
                                          lf::matrix(pooled.data(), 1, kWidth));
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * kTokens * kWidth * int64_t(sizeof(float)));
}
BENCHMARK(BM_OpSequencePoolMean)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_OpAllFinite(benchmark::State& state) {
  configure_threads_once();
  const bool ref = state.range(0);
  std::vector<float> x = uniform(kTokens * kWidth, 35);
  for (auto _ : state)
    benchmark::DoNotOptimize(ref ? lf::all_finite_ref(x.data(), kTokens * kWidth)
                                 : lf::ops::all_finite<float>(lf::vector_view<const float>(x.data(), kTokens * kWidth)));
  state.SetBytesProcessed(state.iterations() * kTokens * kWidth * int64_t(sizeof(float)));
}
BENCHMARK(BM_OpAllFinite)->ArgName("ref")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

// One head's (n, n) score block masked before its softmax, as sdpa's head_probs does for `full`
// (n = 4096): causal and/or the last 10 % of the keys padded. Items: score entries of the block;
// bytes: the entries set to -inf (4 bytes each; the op reads nothing else but the mask).
void BM_OpMaskScores(benchmark::State& state) {
  configure_threads_once();
  const bool causal = state.range(0), padded = state.range(1);
  const int64_t n = kTokens, masked_keys = padded ? n / 10 : 0;
  std::vector<float> scores(static_cast<size_t>(n * n), 0.f);  // the values do not matter to a mask
  std::vector<uint8_t> key_mask(static_cast<size_t>(n), 0);
  for (int64_t j = n - masked_keys; j < n; ++j) key_mask[size_t(j)] = 1;
  const lf::TensorView<float> sv = lf::matrix(scores.data(), n, n);
  const lf::TensorView<const uint8_t> mv =
      padded ? lf::vector_view<const uint8_t>(key_mask.data(), n) : lf::TensorView<const uint8_t>();
  for (auto _ : state) {
    lf::ops::mask_scores(sv, mv, causal);
    benchmark::ClobberMemory();
  }
  const int64_t writes = n * masked_keys + (causal ? n * (n - 1) / 2 : 0);
  state.SetBytesProcessed(state.iterations() * writes * int64_t(sizeof(float)));
  set_items(state, n * n);
}
BENCHMARK(BM_OpMaskScores)
    ->ArgNames({"causal", "padded"})
    ->Args({1, 0})
    ->Args({0, 1})
    ->Args({1, 1})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// Linformer's window poolings along the sequence, compress-first at the model's shape: the (m, d) =
// (4096, 512) keys (or values) of one sample pooled to (k, d) = (256, 512), windows of w = 16.
// projection: 0 mean (window_compress with counts), 1 conv (window_compress with taps), 2 max
// (window_max_pool, with the winners' positions). Forward: src read, dst (and amax) written. Backward:
// ddst read and dsrc += (read and written) — conv also reads src for dtap; max reads amax and touches
// only the winners' k·d entries of dsrc.
void BM_OpWindowPooling(benchmark::State& state) {
  configure_threads_once();
  const int projection = int(state.range(0));
  const bool backward = state.range(1);
  const int64_t m = kTokens, k = kProjected, w = m / k, d = kWidth;
  const std::vector<float> src = uniform(m * d, 30), ddst = uniform(k * d, 31), tap = uniform(w, 32, 0, 0.1f);
  std::vector<float> dst(static_cast<size_t>(k * d)), dsrc(static_cast<size_t>(m * d), 0.f),
      dtap(static_cast<size_t>(w), 0.f);
  std::vector<int32_t> count(static_cast<size_t>(k), int32_t(w)), amax(static_cast<size_t>(k * d));
  const auto srcv = lf::matrix(src.data(), m, d);
  const auto ddstv = lf::matrix(ddst.data(), k, d);
  const auto dstv = lf::matrix(dst.data(), k, d);
  const auto dsrcv = lf::matrix(dsrc.data(), m, d);
  const auto amaxv = lf::matrix(amax.data(), k, d);
  const lf::TensorView<const float> tapv =
      projection == 1 ? lf::vector_view(tap.data(), w) : lf::TensorView<const float>();
  const lf::TensorView<const int32_t> countv =
      projection == 0 ? lf::vector_view<const int32_t>(count.data(), k) : lf::TensorView<const int32_t>();
  const lf::TensorView<float> dtapv = projection == 1 ? lf::vector_view(dtap.data(), w) : lf::TensorView<float>();
  const lf::TensorView<const uint8_t> no_padding;
  if (projection == 2) lf::ops::window_max_pool<float>(srcv, no_padding, w, dstv, amaxv);
  for (auto _ : state) {
    if (projection == 2) {
      if (backward)
        lf::ops::window_max_pool_backward<float>(amaxv, ddstv, dsrcv);
      else
        lf::ops::window_max_pool<float>(srcv, no_padding, w, dstv, amaxv);
    } else {
      if (backward)
        lf::ops::window_compress_backward<float>(srcv, tapv, countv, no_padding, w, ddstv, dsrcv, dtapv);
      else
        lf::ops::window_compress<float>(srcv, tapv, countv, no_padding, w, dstv);
    }
    benchmark::ClobberMemory();
  }
  int64_t floats = 0;  // 4-byte elements (float or int32) moved per call
  if (!backward)
    floats = m * d + (projection == 2 ? 2 : 1) * k * d;
  else if (projection == 2)
    floats = 4 * k * d;  // amax, ddst; the winners of dsrc read and written
  else
    floats = k * d + 2 * m * d + (projection == 1 ? m * d : 0);
  set_bytes(state, floats);
}
BENCHMARK(BM_OpWindowPooling)
    ->ArgNames({"projection", "backward"})
    ->ArgsProduct({{0, 1, 2}, {0, 1}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// The parameters of the model `linformer bench` times (LinformerLM's shape: 6 layers, d = 512, 8
// heads, d_ff = 2048, n = 4096, Linformer k = 256, the byte vocabulary), declared by the model itself
// into an arena; values, gradients and AdamW's moments filled once for the process (~540 MiB).
struct OptimizerState {
  lf::ParamArena<float> arena;
  std::vector<float> m, v;
  OptimizerState() {
    lf::ModelConfig config;
    config.vocab_size = kVocab;
    config.d_model = kWidth;
    config.n_heads = kHeads;
    config.n_layers = 6;
    config.d_ff = 4 * kWidth;
    config.max_len = kTokens;
    config.attention = {lf::LayerAttention{"linformer", lf::json{{"k", kProjected}}}};
    config.dropout_embedding = config.dropout_attention = config.dropout_ffn = 0;
    { lf::Model<float> model(config, arena); }  // declares the parameters
    arena.allocate();
    const int64_t n = arena.numel();
    float* p = arena.values();
    float* g = arena.grads();
    for (int64_t i = 0; i < n; ++i) {
      p[i] = 0.02f * (2 * lf::uniform01(42, 40, uint64_t(i)) - 1);
      g[i] = 1e-3f * (2 * lf::uniform01(42, 41, uint64_t(i)) - 1);
    }
    m.assign(size_t(n), 0.f);
    v.assign(size_t(n), 0.f);
  }
  static OptimizerState& get() {
    static OptimizerState s;
    return s;
  }
};

// One AdamW step as the trainer makes it: ops::adamw_step per trainable parameter tensor (weight
// decay on matrices only). p, g, m, v read; p, m, v written. Items: parameters.
void BM_OpAdamW(benchmark::State& state) {
  configure_threads_once();
  OptimizerState& s = OptimizerState::get();
  lf::ParamArena<float>& arena = s.arena;
  int64_t t = 0, trained = 0;
  for (const lf::ParamInfo& p : arena.params())
    if (p.trainable) trained += p.numel;
  for (auto _ : state) {
    ++t;
    for (const lf::ParamInfo& p : arena.params()) {
      if (!p.trainable) continue;
      lf::AdamWOptions a;
      if (p.shape.size() < 2) a.weight_decay = 0;
      lf::ops::adamw_step<float>(lf::vector_view(arena.values() + p.offset, p.numel),
                                 lf::vector_view(arena.grads() + p.offset, p.numel),
                                 lf::vector_view(s.m.data() + p.offset, p.numel),
                                 lf::vector_view(s.v.data() + p.offset, p.numel), t, a);
    }
    benchmark::ClobberMemory();
  }
  set_bytes(state, 7 * trained);
  set_items(state, trained);
  state.counters["params"] = double(trained);
  state.counters["tensors"] = double(arena.params().size());
}
BENCHMARK(BM_OpAdamW)->Unit(benchmark::kMillisecond)->UseRealTime();

// The global norm of every gradient, one call over the arena's gradient buffer (the trainer's
// clipping test): one read.
void BM_OpGlobalNorm(benchmark::State& state) {
  configure_threads_once();
  lf::ParamArena<float>& arena = OptimizerState::get().arena;
  const int64_t n = arena.numel();
  const lf::TensorView<const float> g = lf::vector_view<const float>(arena.grads(), n);
  for (auto _ : state) benchmark::DoNotOptimize(lf::ops::global_norm<float>(g));
  set_bytes(state, n);
  set_items(state, n);
}
BENCHMARK(BM_OpGlobalNorm)->Unit(benchmark::kMillisecond)->UseRealTime();

// Clipping: every gradient scaled in place (ops::scale over the arena's gradients), one read and one
// write; the factor alternates 2 and 0.5.
void BM_OpClipScale(benchmark::State& state) {
  configure_threads_once();
  lf::ParamArena<float>& arena = OptimizerState::get().arena;
  const int64_t n = arena.numel();
  const lf::TensorView<float> g = lf::vector_view(arena.grads(), n);
  int64_t i = 0;
  for (auto _ : state) {
    lf::ops::scale(g, (i++ & 1) ? 0.5 : 2.0);
    benchmark::ClobberMemory();
  }
  set_bytes(state, 2 * n);
  set_items(state, n);
}
BENCHMARK(BM_OpClipScale)->Unit(benchmark::kMillisecond)->UseRealTime();

// The language-model loss through the op the trainer's objective calls (ops::cross_entropy_*), on
// (B·n, V) = (4096, 260) logits, one target per row: forward reads the logits; backward reads them
// and writes dlogits. Items: rows.
void BM_OpCrossEntropy(benchmark::State& state) {
  configure_threads_once();
  const bool backward = state.range(0);
  const int64_t N = kTokens, V = kVocab;
  const std::vector<float> logits = uniform(N * V, 33, -5, 5);
  std::vector<int32_t> targets(static_cast<size_t>(N));
  for (int64_t r = 0; r < N; ++r) targets[size_t(r)] = int32_t(r * 7919 % V);
  std::vector<float> d(static_cast<size_t>(N * V));
  const auto lv = lf::matrix(logits.data(), N, V);
  const auto tv = lf::vector_view<const int32_t>(targets.data(), N);
  const auto dv = lf::matrix(d.data(), N, V);
  for (auto _ : state) {
    if (backward) {
      lf::ops::cross_entropy_backward<float>(lv, tv, dv);
    } else {
      const lf::CrossEntropyResult r = lf::ops::cross_entropy_forward<float>(lv, tv);
      benchmark::DoNotOptimize(r);
    }
    benchmark::ClobberMemory();
  }
  set_bytes(state, (backward ? 2 : 1) * N * V);
  set_items(state, N);
}
BENCHMARK(BM_OpCrossEntropy)->ArgName("backward")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace
