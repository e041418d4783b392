// The hyper-parameters of one AdamW step (the kernel in cpu/adamw.h and its op in ops/optimizer.h).
#pragma once

namespace lf {

// PyTorch's defaults.
struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

}  // namespace lf
