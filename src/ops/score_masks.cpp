#include "ops/score_masks.h"

#include "cpu/score_masks.h"
#include "ops/dispatch.h"

namespace lf::ops {

template <class T>
void mask_scores(TensorView<T> scores, TensorView<const uint8_t> key_mask, bool causal, int64_t q_start) {
  LF_REQUIRE(scores.rank() == 2 && scores.stride(1) == 1, "mask_scores: scores must be an (n, mk) matrix, not ",
             scores.shape_string());
  require_vector_or_empty("mask_scores", "key_mask", key_mask, scores.size(1));
  LF_DISPATCH("mask_scores", device_of("mask_scores", scores, key_mask),
              return lf::mask_scores<T>(scores.data(), scores.size(0), scores.size(1), scores.stride(0),
                                        key_mask.data(), causal, q_start));
}

template void mask_scores<float>(TensorView<float>, TensorView<const uint8_t>, bool, int64_t);
template void mask_scores<double>(TensorView<double>, TensorView<const uint8_t>, bool, int64_t);

}  // namespace lf::ops
