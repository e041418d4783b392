// What `linear` (Katharopoulos et al. 2020) and `performer` (FAVOR+, Choromanski et al. 2021) share beside
// the linear-attention ops (ops/linear_attention.h): their `chunk` option and performer's random features.
#pragma once
#include <cstdint>
#include <string>

#include "attention/options.h"

namespace lf {

// The `chunk` option (C, ops/linear_attention.h) of the kinds on this core, with its default and range.
inline int64_t read_linear_chunk(OptionReader& r) {
  const int64_t chunk = r.get_int("chunk", 64);
  LF_REQUIRE(chunk >= 1 && chunk <= 1024, r.where("chunk"), " must be in [1, 1024], got ", chunk);
  return chunk;
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

}  // namespace lf
