// Bytes held through operator new in the `linformer` binary (see heap_accounting.cpp).
#pragma once
#include <cstdint>

namespace lf::cli {
int64_t heap_current_bytes();
int64_t heap_peak_bytes();
void heap_reset_peak();  // the peak restarts from what is in use now
}  // namespace lf::cli
