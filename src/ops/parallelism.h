// What a device runs ops with: how many workers run an op's tiles (the memory estimates of the kinds
// count one scratch per worker) and which library computes matrix products.
#pragma once
#include "linformer/tensor.h"

namespace lf::ops {

// The threads of the CPU backend (lf::configure_threads).
int workers(Device device = Device::CPU);

// What computes the matrix products on a device, for reports ("dnnl", "openblas" or "mkl" on the CPU).
const char* matmul_backend(Device device = Device::CPU);

}  // namespace lf::ops
