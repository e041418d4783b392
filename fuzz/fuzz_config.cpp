// libFuzzer entry point for the config loader (see tests/fuzz/fuzz_targets.h); built with LINFORMER_FUZZ.
#include <cstdlib>

#include "fuzz/fuzz_targets.h"

// The per-kind configs come from the attention registry, not from committed files: scripts/fuzz.sh
// names the working corpus in LINFORMER_FUZZ_REGISTRY_SEEDS, and they are written there before
// libFuzzer reads it.
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  if (const char* dir = std::getenv("LINFORMER_FUZZ_REGISTRY_SEEDS")) lf::fuzz::write_registry_seeds("config", dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lf::fuzz::fuzz_config(data, size);
  return 0;
}
