// What the layer benchmarks (bench_attention.cpp, bench_decode.cpp) share: the paper's layer shape,
// the seed, the thread setting and the inputs.
#pragma once

#include <cstdint>
#include <vector>

#include "linformer/rng.h"
#include "linformer/runtime.h"

namespace lf::bench {

constexpr int64_t kDModel = 512;
constexpr int64_t kHeads = 8;
constexpr uint64_t kSeed = 1234;

// Honours LINFORMER_NUM_THREADS once, on first use (not at static initialisation, before main), on the
// thread that runs the benchmarks, for the rest of the process.
inline void configure_threads_once() { static const RuntimeScope scope{RuntimeOptions{}}; }

// `count` values uniform in [-1, 1) from the counter RNG's `stream`.
inline std::vector<float> uniform_input(int64_t count, uint64_t stream) {
  std::vector<float> v(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) v[size_t(i)] = 2 * uniform01(kSeed, stream, uint64_t(i)) - 1;
  return v;
}

}  // namespace lf::bench
