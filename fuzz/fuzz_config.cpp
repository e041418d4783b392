// libFuzzer entry point for the config loader (see tests/fuzz/fuzz_targets.h); built with LINFORMER_FUZZ.
#include "fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lf::fuzz::fuzz_config(data, size);
  return 0;
}
