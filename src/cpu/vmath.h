// Call-free, vectorisable math for the float fast paths. libm's expf is a call that GCC vectorises
// only under -ffast-math (which the project does not use), so loops that need e^x on every element
// (GELU, the online softmax of flash attention) use these inline approximations instead; double
// paths keep libm.
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>

namespace lf {

// e^x: x = k·ln2 + r with |r| ≤ ln2/2 (Cody-Waite split of ln2), e^r by Cephes' expf polynomial
// (about 1 ulp), 2^k written into the exponent bits. 0 below −87 (no denormals; also for −inf),
// +inf above 88.
inline float exp_f32(float x) {
  const float xc = std::min(std::max(x, -87.f), 88.f);
  const float f = xc * 1.44269504088896341f + 12582912.f;  // adding 1.5·2²³ rounds to an integer k
  const float k = f - 12582912.f;
  const int32_t ki = std::bit_cast<int32_t>(f) - 0x4B400000;  // k, read from the low mantissa bits
  const float r = (xc - k * 0.693359375f) + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = (p * r * r + r + 1.f) * std::bit_cast<float>((ki + 127) << 23);
  return x < -87.f ? 0.f : x > 88.f ? HUGE_VALF : y;
}

// e^x for the kernels templated on the element type: exp_f32 for float (vectorisable; 0 for −inf),
// libm for double (the reference precision of the gradient checks).
template <class T>
inline T exp_fast(T x) {
  if constexpr (std::is_same_v<T, float>)
    return exp_f32(x);
  else
    return std::exp(x);
}

// The logistic sigmoid 1 / (1 + e^{−x}) through exp_fast.
template <class T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + exp_fast<T>(-x));
}

}  // namespace lf
