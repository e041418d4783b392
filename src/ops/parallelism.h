// How many workers a device runs an op's tiles on: the memory estimates of the kinds count one
// scratch per worker.
#pragma once
#include "linformer/tensor.h"

namespace lf::ops {

// The threads of the CPU backend (lf::configure_threads).
int workers(Device device = Device::CPU);

}  // namespace lf::ops
