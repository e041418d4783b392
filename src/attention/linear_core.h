// What `linear` (Katharopoulos et al. 2020) and `performer` (FAVOR+, Choromanski et al. 2021) share beside
// the linear-attention ops (ops/linear_attention.h): their `chunk` option and performer's random features.
#pragma once
#include <cstdint>
#include <limits>
#include <string>

#include "attention/options.h"
#include "linformer/attention.h"

namespace lf {

// The `chunk` option (C, ops/linear_attention.h) of the kinds on this core, with its default and range.
inline int64_t read_linear_chunk(OptionReader& r) {
  const int64_t chunk = r.get_int("chunk", 64);
  LF_REQUIRE(chunk >= 1 && chunk <= 1024, r.where("chunk"), " must be in [1, 1024], got ", chunk);
  return chunk;
}

// The kRecurrent decoding state of `linear` and `performer` (ops::linear_attention_decode's): per (batch,
// head) H = Σ_s φk_sᵀ v_s (r × d_v) and z = Σ_s φk_s (r), with performer's key shifts also the running max R
// they are scaled to. Constant in the context: r·(d_v + 1) (+1) numbers per head and sequence.
template <class T>
class LinearDecodeState final : public DecodeState<T> {
 public:
  LinearDecodeState(int64_t B, int64_t h, int64_t r, int64_t dv, bool scaled)
      : H(B * h * r * dv), z(B * h * r), R(scaled ? B * h : 0) {
    this->B = B;
    R.assign(R.size(), -std::numeric_limits<T>::infinity());  // no key yet
  }
  Buffer<T> H, z, R;  // (B, h, r, d_v), (B, h, r), (B, h) or empty
  double bytes() const override { return double(H.size() + z.size() + R.size()) * sizeof(T); }

  // `state` as a LinearDecodeState of these sizes (begun by a layer like the caller), or a clear error.
  static LinearDecodeState& of(DecodeState<T>& state, const char* kind, int64_t n_new, int64_t h, int64_t r,
                               int64_t dv, bool scaled) {
    auto* s = dynamic_cast<LinearDecodeState*>(&state);
    LF_REQUIRE(s != nullptr && s->H.size() == s->B * h * r * dv && (s->R.size() > 0) == scaled, kind,
               " attention: decode() was given a state begun by another kind of layer");
    LF_REQUIRE(n_new > 0, kind, " attention: decode() needs at least one new position, got ", n_new);
    return *s;
  }
};

// Checks begin_decode's arguments for a kind on this core.
inline void check_begin_decode(const AttentionDims& dims, int64_t B, int64_t d_model, const char* kind) {
  LF_REQUIRE(dims.causal, kind, " attention: incremental decoding needs a causal layer");
  LF_REQUIRE(B > 0 && d_model == dims.d_model, kind, " attention: decoding needs B > 0 and d = ", dims.d_model,
             ", got B=", B, " d=", d_model);
}

// ---- FAVOR+ random features (performer)
// ----------------------------------------------------------

// W (m × d_h, row-major) for draw `draw` of the layer `prefix`: ⌈m/d_h⌉ blocks of d_h orthonormal rows
// (Gram-Schmidt of a d_h×d_h standard Gaussian matrix, i.e. the Q of its QR with R's diagonal
// positive: Haar-distributed), the last block truncated, then each row scaled by the norm of an
// independent standard Gaussian vector of d_h entries (so each row is marginally N(0, I), as in the
// paper and performer-pytorch's gaussian_orthogonal_random_matrix with scaling 0). A pure function
// of (seed, prefix, draw): the counter RNG's stream is named after the prefix and the draw.
void performer_orthogonal_features(uint64_t seed, const std::string& prefix, int64_t draw, int64_t m, int64_t d_h,
                                   double* out);

// How performer draws its features (the options ortho_features and ortho_scaling).
enum class PerformerFeatureDraw {
  kOrthogonal,        // the above: orthogonal blocks, rows of Gaussian-vector norms (the paper's)
  kOrthogonalSqrtD,   // orthogonal blocks, every row of norm √d_h (performer-pytorch's scaling 1)
  kIid,               // i.i.d. N(0, 1) entries, W_jc = normal(seed, stream, j·d_h + c) (the paper's IID)
};
// W (m × d_h) drawn the given way, a pure function of (seed, prefix, draw), like the above.
void performer_features(PerformerFeatureDraw how, uint64_t seed, const std::string& prefix, int64_t draw, int64_t m,
                        int64_t d_h, double* out);

}  // namespace lf
