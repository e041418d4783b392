// Incremental decoding: the kRecompute fallback every kind inherits (Attention::begin_decode and
// decode's defaults). The state keeps the layer's input rows of each sequence; a call appends the new
// rows and reruns the parallel inference forward over the whole prefix, keeping the last n_new output
// rows. Exact wherever a causal output does not depend on the total length (tested for every kind).
#include <utility>

#include "linformer/attention.h"
#include "linformer/error.h"
#include "ops/elementwise.h"

namespace lf {

const char* decode_mechanism_name(DecodeMechanism m) {
  switch (m) {
    case DecodeMechanism::kRecompute: return "recompute";
    case DecodeMechanism::kKvCache: return "kv_cache";
    case DecodeMechanism::kWindow: return "window";
    case DecodeMechanism::kRecurrent: return "recurrent";
    case DecodeMechanism::kCompressed: return "compressed";
  }
  return "?";
}

namespace {

template <class T>
struct RecomputeState final : DecodeState<T> {
  int64_t d = 0;
  Buffer<T> inputs;  // (B, length, d): the layer's input so far
  double bytes() const override { return double(inputs.size()) * sizeof(T); }
};

}  // namespace

template <class T>
std::unique_ptr<DecodeState<T>> Attention<T>::begin_decode(int64_t B, int64_t d_model) {
  LF_REQUIRE(B > 0 && d_model > 0, "decoding needs a positive batch and width, got B=", B, " d=", d_model);
  auto state = std::make_unique<RecomputeState<T>>();
  state->B = B;
  state->d = d_model;
  return state;
}

template <class T>
void Attention<T>::decode(DecodeState<T>& base, const T* x, int64_t n_new, T* out) {
  auto* state = dynamic_cast<RecomputeState<T>*>(&base);
  LF_REQUIRE(state != nullptr, "decode() was given a state begun by another layer");
  LF_REQUIRE(n_new > 0, "decode() needs at least one new position, got ", n_new);
  const int64_t B = state->B, t0 = state->length, t1 = t0 + n_new, d = state->d;
  // (B, t0, d) + (B, n_new, d) -> (B, t1, d), each sequence's rows kept together.
  Buffer<T> grown(B * t1 * d);
  if (t0 > 0)
    ops::copy_strided<T>(matrices<const T>(state->inputs.data(), B, t0 * d, t0, d), matrices(grown.data(), B, t1 * d, t0, d));
  ops::copy_strided<T>(matrices(x, B, n_new * d, n_new, d), matrices(grown.data() + t0 * d, B, t1 * d, n_new, d));
  std::swap(state->inputs, grown);
  const AttentionInput<T> in = AttentionInput<T>::inference(state->inputs.data(), B, t1);
  Buffer<T> all(B * t1 * d);
  forward(in, all.data(), /*training=*/false, 0);
  ops::copy_strided<T>(matrices<const T>(all.data() + t0 * d, B, t1 * d, n_new, d), matrices(out, B, n_new * d, n_new, d));
  state->length = t1;
}

template class Attention<float>;
template class Attention<double>;

}  // namespace lf
