// Cross-entropy of integer targets against unnormalised logits, as torch.nn.functional.cross_entropy
// with reduction='mean': the mean of −log softmax(logits)[target] over rows whose target is not
// ignore_index. Computed through log-sum-exp, so large logits neither overflow nor lose the loss.
#pragma once
#include <cstdint>

#include "linformer/tokens.h"  // kIgnoreIndex, PyTorch's default ignore_index

namespace lf {

struct CrossEntropyResult {
  double loss = 0;    // mean over counted rows; 0 when every row is ignored
  int64_t count = 0;  // rows whose target is not ignore_index
};

// logits (N, V), targets (N) in [0, V) or ignore_index. Throws lf::InvalidArgument naming the first
// out-of-range target.
template <class T>
CrossEntropyResult cross_entropy_forward(const T* logits, const int32_t* targets, int64_t N, int64_t V,
                                         int32_t ignore_index = kIgnoreIndex);

// dlogits (N, V) = grad · (softmax(logits) − onehot(target)) / count, overwritten; ignored rows (and
// every row when count = 0) get zeros. grad is the upstream gradient of the scalar loss. dlogits may
// alias logits.
template <class T>
void cross_entropy_backward(const T* logits, const int32_t* targets, T* dlogits, int64_t N, int64_t V,
                            double grad = 1.0, int32_t ignore_index = kIgnoreIndex);

// Plain references (accumulate in double), same contracts.
template <class T>
CrossEntropyResult cross_entropy_forward_ref(const T* logits, const int32_t* targets, int64_t N, int64_t V,
                                             int32_t ignore_index = kIgnoreIndex);
template <class T>
void cross_entropy_backward_ref(const T* logits, const int32_t* targets, T* dlogits, int64_t N, int64_t V,
                                double grad = 1.0, int32_t ignore_index = kIgnoreIndex);

}  // namespace lf
