// The attention layer through the registry interface, as the model sees it: every registered kind
// with the options and up to the length its AttentionKindInfo names (bench_options, bench_max_len;
// Linformer k = 256, the rest their defaults), d = 512, h = 8, batch 1, max_len = n, float.
// Forward and forward+backward are separate benchmarks, named BM_Attention/<kind>/<pass>/n:<n>.
// Counters: GFLOP/s from Attention::forward_flops (forward+backward counted as 3× forward, the usual
// convention) and items_per_second in tokens. Threads: LINFORMER_NUM_THREADS, else all cores.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bench_common.h"
#include "linformer/arena.h"
#include "linformer/attention.h"
#include "linformer/error.h"

namespace {

using lf::bench::configure_threads_once;
using lf::bench::kDModel;
using lf::bench::kHeads;
using lf::bench::kSeed;

void BM_Attention(benchmark::State& state, const std::string& kind, const lf::json& options, bool backward) {
  const int64_t n = state.range(0);
  try {
    configure_threads_once();
    const lf::AttentionSpec spec{kind, {kDModel, kHeads, /*max_len=*/n, /*causal=*/false, /*dropout=*/0}, options, ""};
    lf::ParamArena<float> arena;
    std::unique_ptr<lf::Attention<float>> layer = lf::make_attention(spec, arena);
    arena.allocate();
    arena.initialize(kSeed);

    // x (1, n, d) and dout (1, n, d) uniform in [-1, 1).
    const int64_t size = n * kDModel;
    const size_t count = static_cast<size_t>(size);
    const std::vector<float> x = lf::bench::uniform_input(size, 1), dout = lf::bench::uniform_input(size, 2);
    std::vector<float> out(count), dx(count);
    lf::AttentionInput<float> in;
    in.x = x.data();
    in.B = 1;
    in.n = n;

    for (auto _ : state) {
      layer->forward(in, out.data(), /*training=*/backward, kSeed);
      if (backward) layer->backward(dout.data(), dx.data());
      benchmark::DoNotOptimize(out.data());
      benchmark::DoNotOptimize(dx.data());
      benchmark::ClobberMemory();
    }

    const double flops = (backward ? 3.0 : 1.0) * layer->forward_flops(1, n, n);
    state.counters["GFLOP/s"] =
        benchmark::Counter(flops * 1e-9 * double(state.iterations()), benchmark::Counter::kIsRate);
    state.SetItemsProcessed(state.iterations() * n);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// Every registered kind, with the options and the longest length its info names.
const bool registered = [] {
  for (const std::string& kind : lf::AttentionRegistry::instance().names()) {
    const lf::AttentionKindInfo& info = lf::AttentionRegistry::instance().get(kind).info;
    for (const bool backward : {false, true}) {
      const std::string name = "BM_Attention/" + kind + (backward ? "/forward_backward" : "/forward");
      auto* b = benchmark::RegisterBenchmark(name.c_str(), BM_Attention, kind, info.bench_options, backward);
      b->ArgName("n")->Unit(benchmark::kMillisecond)->UseRealTime();
      for (int64_t n = 512; n <= info.bench_max_len; n *= 2) b->Arg(n);
    }
  }
  return true;
}();

}  // namespace
