// libFuzzer entry point for `linformer serve`'s request parser (see tests/fuzz/fuzz_targets.h); built with LINFORMER_FUZZ.
#include "fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lf::fuzz::fuzz_serve_request(data, size);
  return 0;
}
