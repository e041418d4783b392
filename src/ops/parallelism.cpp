#include "ops/parallelism.h"

#include "linformer/runtime.h"
#include "ops/dispatch.h"

namespace lf::ops {

int workers(Device device) { LF_DISPATCH("workers", device, return num_threads()); }

}  // namespace lf::ops
