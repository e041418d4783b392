#include "ops/parallelism.h"

#include "cpu/gemm.h"
#include "linformer/runtime.h"
#include "ops/dispatch.h"

namespace lf::ops {

int workers(Device device) { LF_DISPATCH("workers", device, return num_threads()); }

const char* matmul_backend(Device device) { LF_DISPATCH("matmul_backend", device, return gemm_backend()); }

}  // namespace lf::ops
