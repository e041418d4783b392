// Counter-based random numbers (Philox4x32-10, Salmon et al. 2011). Every draw is a pure function of
// (seed, stream, counter), so results do not depend on the thread count or on the order in which
// threads run: dropout masks can be recomputed in the backward pass instead of being stored.
#pragma once
#include <cmath>
#include <cstdint>
#include <string_view>

namespace lf {

struct Philox {
  // Returns four 32-bit words for the 128-bit counter (c0..c3) under the 64-bit key.
  static inline void block(uint64_t key, uint32_t c[4]) {
    uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
    for (int round = 0; round < 10; ++round) {
      const uint64_t p0 = uint64_t{0xD2511F53u} * c[0];
      const uint64_t p1 = uint64_t{0xCD9E8D57u} * c[2];
      const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
      const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
      c[0] = hi1 ^ c[1] ^ k0;
      c[1] = lo1;
      c[2] = hi0 ^ c[3] ^ k1;
      c[3] = lo0;
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
  }
};

// The i-th uniform number in [0, 1) of the stream (seed, stream). 24 random bits: exact in float.
inline float uniform01(uint64_t seed, uint64_t stream, uint64_t i) {
  uint32_t c[4] = {static_cast<uint32_t>(i), static_cast<uint32_t>(i >> 32),
                   static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)};
  Philox::block(seed, c);
  return static_cast<float>(c[0] >> 8) * (1.0f / 16777216.0f);
}

// The i-th uniform number in [0, 1) with 53 random bits, for initialisation in double precision.
inline double uniform01_f64(uint64_t seed, uint64_t stream, uint64_t i) {
  uint32_t c[4] = {static_cast<uint32_t>(i), static_cast<uint32_t>(i >> 32),
                   static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)};
  Philox::block(seed, c);
  const uint64_t bits = (uint64_t{c[0]} << 21) ^ uint64_t{c[1]};
  return static_cast<double>(bits & ((uint64_t{1} << 53) - 1)) * (1.0 / 9007199254740992.0);
}

// The i-th standard normal number of the stream (Box-Muller on two independent uniforms).
inline double normal_f64(uint64_t seed, uint64_t stream, uint64_t i) {
  const double u1 = 1.0 - uniform01_f64(seed, stream, 2 * i);  // in (0, 1]
  const double u2 = uniform01_f64(seed, stream, 2 * i + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

// A stable 64-bit stream id for a name (FNV-1a), so that a parameter's initial values depend on its
// name and the seed, not on the order in which parameters were declared.
inline uint64_t stream_id(std::string_view name) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : name) h = (h ^ ch) * 1099511628211ull;
  return h;
}

}  // namespace lf
