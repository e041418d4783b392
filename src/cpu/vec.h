// 64-byte vectors (GCC vector extensions) for the kernels that block their work in registers by hand:
// one zmm with AVX-512, two ymm (or four xmm) otherwise; the compiler picks the instructions. Internal
// to src/cpu/.
#pragma once
#include <cstdint>
#include <cstring>
#include <utility>

namespace lf {

template <class T>
struct Vec64Of;
template <>
struct Vec64Of<float> {
  typedef float type __attribute__((vector_size(64)));
  typedef int32_t mask __attribute__((vector_size(64)));  // __builtin_shuffle's lane indices
};
template <>
struct Vec64Of<double> {
  typedef double type __attribute__((vector_size(64)));
  typedef int64_t mask __attribute__((vector_size(64)));
};
template <class T>
using Vec64 = typename Vec64Of<T>::type;
template <class T>
constexpr int kLanes = int(64 / sizeof(T));

// Unaligned load and store.
template <class T>
inline Vec64<T> load64(const T* p) {
  Vec64<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class T>
inline void store64(T* p, Vec64<T> v) {
  std::memcpy(p, &v, sizeof v);
}

namespace vec_detail {
// The lanes of one step of transpose_sum with input segments of S lanes: output lane o is segment
// o / (S/2) of the pair (a's L/S segments, then b's), its (o mod S/2)-th lane of the low half (or of
// the high half, Hi); b's lanes count from L in __builtin_shuffle's indices.
template <class T, int S, bool Hi>
constexpr auto step_lane(int o) {
  constexpr int L = kLanes<T>, per = L / S;
  const int g = o / (S / 2), u = o % (S / 2);
  return (g < per ? 0 : L) + (g % per) * S + u + (Hi ? S / 2 : 0);
}
template <class T, int S, bool Hi, size_t... O>
constexpr typename Vec64Of<T>::mask step_mask(std::index_sequence<O...>) {
  return typename Vec64Of<T>::mask{step_lane<T, S, Hi>(int(O))...};
}
}  // namespace vec_detail

// The sums of L = kLanes<T> vectors in one: lane j of the result is the sum of x[j]'s lanes (x is
// overwritten). log2(L) steps; each adds the low and high halves of every segment of a pair of vectors,
// so a vector holds twice as many partial sums half as wide: L − 1 additions and 2(L − 1) shuffles in
// all, against L − 1 dependent scalar additions per vector for a horizontal sum of each. The order of
// the additions is fixed (a tree), independent of the data and of the threads.
template <class T, int S = kLanes<T>>
inline Vec64<T> transpose_sum(Vec64<T>* x) {
  constexpr int L = kLanes<T>, n = S;  // vectors at this step: as many as their segments' width
  constexpr auto lo = vec_detail::step_mask<T, S, false>(std::make_index_sequence<L>{});
  constexpr auto hi = vec_detail::step_mask<T, S, true>(std::make_index_sequence<L>{});
#pragma GCC unroll 16
  for (int p = 0; p < n / 2; ++p)
    x[p] = __builtin_shuffle(x[2 * p], x[2 * p + 1], lo) + __builtin_shuffle(x[2 * p], x[2 * p + 1], hi);
  if constexpr (S > 2)
    return transpose_sum<T, S / 2>(x);
  else
    return x[0];
}

}  // namespace lf
