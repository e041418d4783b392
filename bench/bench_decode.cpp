// Generation speed of one causal attention layer (issue 17 item 5): every causal kind of the registry
// (its bench_options), d = 512, h = 8, B = 1, float. A context of t positions is prefilled through
// Attention::decode (chunks of kPrefillChunk positions, one chunk for the recompute fallback), then
// each iteration decodes one more position (n_new = 1): the benchmark's time is the time per token.
// Named BM_Decode/<kind>[/<variant>]/t:<t>, labelled with the kind's decode mechanism. Counters:
// cache_MiB and cache_bytes (the state's bytes() after the timed steps: what the generation keeps per
// layer), prefill_ms (the untimed prefill, once), items_per_second in tokens.
// Skipped, with the reason as the benchmark's error: contexts above kMaxRecomputeContext for a kind
// that decodes by recompute (each token reruns forward() over the whole prefix: minutes at 16384), and
// a layer whose parameters alone pass kMaxParamBytes at that max_len (aft_full's max_len² biases).
// scripts/bench_decode.sh runs it interleaved with the PyTorch peer (scripts/peer_decode.py).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "bench_common.h"
#include "linformer/arena.h"
#include "linformer/attention.h"
#include "linformer/error.h"

namespace {

using lf::bench::kDModel;
using lf::bench::kHeads;
using lf::bench::kSeed;

constexpr int64_t kSteps = 8;                      // timed tokens per context (a fallback's cost a forward each)
constexpr int64_t kPrefillChunk = 1024;            // bounds the prefill's n_new × t scores
constexpr int64_t kMaxRecomputeContext = 2048;
constexpr double kMaxParamBytes = 512.0 * (1 << 20);

// The contexts: $LINFORMER_DECODE_CONTEXTS (a comma list; scripts/bench_decode.sh --smoke passes small
// ones), else issue 17's 1024 ... 16384.
std::vector<int64_t> contexts() {
  std::vector<int64_t> out;
  if (const char* env = std::getenv("LINFORMER_DECODE_CONTEXTS")) {
    std::stringstream list(env);
    for (std::string item; std::getline(list, item, ',');)
      if (!item.empty()) out.push_back(std::stoll(item));
  }
  if (out.empty()) out = {1024, 2048, 4096, 8192, 16384};
  return out;
}

void BM_Decode(benchmark::State& state, const std::string& kind, const lf::json& options) {
  const int64_t t = state.range(0);
  try {
    lf::bench::configure_threads_once();
    // One untimed warm-up token, then the timed ones; max_len covers them all, rounded up to a multiple
    // of 256 for the kinds whose blocks or buckets must divide it.
    const int64_t steps = static_cast<int64_t>(state.max_iterations);
    const int64_t total = t + 1 + steps;
    const int64_t max_len = (total + 255) / 256 * 256;
    const lf::AttentionSpec spec{kind, {kDModel, kHeads, max_len, /*causal=*/true, /*dropout=*/0}, options, ""};
    lf::ParamArena<float> arena;
    std::unique_ptr<lf::Attention<float>> layer = lf::make_attention(spec, arena);
    const lf::DecodeMechanism mechanism = layer->decode_mechanism();
    state.SetLabel(lf::decode_mechanism_name(mechanism));
    const bool recompute = mechanism == lf::DecodeMechanism::kRecompute;
    if (recompute && t > kMaxRecomputeContext) {
      state.SkipWithError(("skipped: decodes by recompute (a forward over the whole prefix per token) above t = " +
                           std::to_string(kMaxRecomputeContext)).c_str());
      return;
    }
    if (double(arena.numel()) * sizeof(float) > kMaxParamBytes) {
      state.SkipWithError(("skipped: the layer's parameters at max_len " + std::to_string(max_len) + " take " +
                           std::to_string(int64_t(double(arena.numel()) * sizeof(float) / (1 << 20))) + " MiB").c_str());
      return;
    }
    arena.allocate();
    arena.initialize(kSeed);

    const std::vector<float> x = lf::bench::uniform_input(total * kDModel, 1);
    std::vector<float> out(static_cast<size_t>(total * kDModel));
    std::unique_ptr<lf::DecodeState<float>> decode = layer->begin_decode(1, kDModel);
    const auto advance = [&](int64_t n_new) {
      const int64_t at = decode->length * kDModel;
      layer->decode(*decode, x.data() + at, n_new, out.data() + at);
    };

    const auto start = std::chrono::steady_clock::now();
    const int64_t chunk = recompute ? t : kPrefillChunk;
    for (int64_t done = 0; done < t; done += chunk) advance(std::min(chunk, t - done));
    const double prefill_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    advance(1);  // first-use allocations are no per-token cost

    for (auto _ : state) {
      advance(1);
      benchmark::DoNotOptimize(out.data());
      benchmark::ClobberMemory();
    }

    const double bytes = decode->bytes();
    state.counters["cache_bytes"] = bytes;
    state.counters["cache_MiB"] = bytes / (1 << 20);
    state.counters["prefill_ms"] = prefill_ms;
    state.SetItemsProcessed(state.iterations());
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// Extra variants of kinds, registered when the registry has the kind: the causal Linformer with its
// compressed history capped (cost and cache per token flat in t: issue 17's target) and not (both
// growing with t/c), whatever its bench_options say.
struct Variant {
  const char* kind;
  const char* name;
  lf::json options;
};

void register_one(const std::string& name, const std::string& kind, const lf::json& options) {
  auto* b = benchmark::RegisterBenchmark(name.c_str(), BM_Decode, kind, options);
  b->ArgName("t")->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(kSteps);
  for (const int64_t t : contexts()) b->Arg(t);
}

const bool registered = [] {
  lf::AttentionRegistry& registry = lf::AttentionRegistry::instance();
  for (const std::string& kind : registry.names()) {
    const lf::AttentionKindInfo& info = registry.get(kind).info;
    if (info.support.causal) register_one("BM_Decode/" + kind, kind, info.bench_options);
  }
  const Variant variants[] = {{"causal_linformer", "capped", lf::json{{"max_blocks", 16}}},
                              {"causal_linformer", "uncapped", lf::json{{"max_blocks", 0}}}};
  for (const Variant& v : variants)
    if (registry.has(v.kind)) register_one(std::string("BM_Decode/") + v.kind + "/" + v.name, v.kind, v.options);
  return true;
}();

}  // namespace
