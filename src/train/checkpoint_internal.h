// What the checkpoint code shares with the fuzz targets and the crash tests beyond its public API:
// the tensor checks on a file already read, and the crash hook.
#pragma once

#include "io/safetensors.h"
#include "linformer/arena.h"
#include "linformer/checkpoint.h"

namespace lf {

// The checks load_checkpoint_weights makes on model.safetensors (our format marker, if any, and
// exactly the arena's parameters as F32 of their shapes), on a file already read. lf::IoError.
void check_model_tensors(const SafeTensorsFile& file, const ParamArena<float>& arena);

// Test-only: when set, called at the points of a save where a crash leaves a distinct state on disk
// ("tmp-written", "moved-aside", "renamed-in", "saved", "latest-written", "discarding"); crash tests
// end the process there. Null otherwise.
inline void (*checkpoint_crash_hook)(const char* point) = nullptr;

}  // namespace lf
