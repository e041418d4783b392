// FAVOR+'s orthogonal random features (see linear_core.h): a pure function of the seed, the layer and the
// draw, used to initialise and redraw performer's fixed `features` parameter.
#include "attention/linear_core.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "linformer/error.h"
#include "linformer/rng.h"

namespace lf {

void performer_orthogonal_features(uint64_t seed, const std::string& prefix, int64_t draw, int64_t m, int64_t d_h,
                                   double* out) {
  LF_REQUIRE(m > 0 && d_h > 0 && draw >= 0, "performer features: bad size ", m, "×", d_h, " or draw ", draw);
  const uint64_t stream = stream_id(prefix + "features/draw-" + std::to_string(draw));
  const int64_t blocks = (m + d_h - 1) / d_h, bsize = d_h * d_h;
  std::vector<double> G(static_cast<size_t>(bsize));
  for (int64_t blk = 0; blk < blocks; ++blk) {
    for (int64_t i = 0; i < bsize; ++i) G[size_t(i)] = normal_f64(seed, stream, uint64_t(blk * bsize + i));
    // Modified Gram-Schmidt on the rows, each projection pass done twice (numerically orthogonal).
    for (int64_t i = 0; i < d_h; ++i) {
      double* gi = G.data() + i * d_h;
      for (int pass = 0; pass < 2; ++pass)
        for (int64_t j = 0; j < i; ++j) {
          const double* gj = G.data() + j * d_h;
          double dot = 0;
          for (int64_t e = 0; e < d_h; ++e) dot += gi[e] * gj[e];
          for (int64_t e = 0; e < d_h; ++e) gi[e] -= dot * gj[e];
        }
      double norm = 0;
      for (int64_t e = 0; e < d_h; ++e) norm += gi[e] * gi[e];
      norm = std::sqrt(norm);
      for (int64_t e = 0; e < d_h; ++e) gi[e] /= norm;
    }
    const int64_t rows = std::min(d_h, m - blk * d_h);
    std::copy(G.begin(), G.begin() + rows * d_h, out + blk * bsize);
  }
  // Row norms: those of independent Gaussian vectors (chi with d_h degrees of freedom).
  const uint64_t base = uint64_t(blocks * bsize);
  for (int64_t j = 0; j < m; ++j) {
    double sq = 0;
    for (int64_t e = 0; e < d_h; ++e) {
      const double g = normal_f64(seed, stream, base + uint64_t(j * d_h + e));
      sq += g * g;
    }
    const double norm = std::sqrt(sq);
    for (int64_t e = 0; e < d_h; ++e) out[j * d_h + e] *= norm;
  }
}

void performer_features(PerformerFeatureDraw how, uint64_t seed, const std::string& prefix, int64_t draw, int64_t m,
                        int64_t d_h, double* out) {
  LF_REQUIRE(m > 0 && d_h > 0 && draw >= 0, "performer features: bad size ", m, "×", d_h, " or draw ", draw);
  if (how == PerformerFeatureDraw::kIid) {
    const uint64_t stream = stream_id(prefix + "features/draw-" + std::to_string(draw));
    for (int64_t i = 0; i < m * d_h; ++i) out[i] = normal_f64(seed, stream, uint64_t(i));
    return;
  }
  performer_orthogonal_features(seed, prefix, draw, m, d_h, out);
  if (how == PerformerFeatureDraw::kOrthogonal) return;
  // Every row to norm √d_h: the orthonormal rows times √d_h (the Gaussian norms divided out).
  for (int64_t j = 0; j < m; ++j) {
    double sq = 0;
    for (int64_t e = 0; e < d_h; ++e) sq += out[j * d_h + e] * out[j * d_h + e];
    const double factor = std::sqrt(double(d_h) / sq);
    for (int64_t e = 0; e < d_h; ++e) out[j * d_h + e] *= factor;
  }
}

}  // namespace lf
