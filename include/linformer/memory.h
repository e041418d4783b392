// The memory a command will need, estimated from the configuration before anything is allocated, and
// the guard that refuses a configuration above the memory limit with a one-line reason. Everything
// is computed in double, so absurd sizes give a huge estimate instead of an overflow.
//
// The limit is the instance's: RuntimeOptions::max_memory, else $LINFORMER_MAX_MEMORY, else
// MemAvailable from /proc/meminfo, else none.
#pragma once
#include <cstdint>
#include <string>

#include "linformer/config.h"
#include "linformer/runtime.h"

namespace lf {

enum class Workload { Training, Inference };

// Bytes, by what holds them.
struct MemoryEstimate {
  double parameters = 0;   // values (float)
  double gradients = 0;    // training
  double optimizer = 0;    // AdamW's two moments (training)
  double activations = 0;  // kept by the forward (training) or one block's at a time (inference), logits
  double buffers = 0;      // the batch, the data, files read whole (checkpoint weights)
  double total() const { return parameters + gradients + optimizer + activations + buffers; }
  std::string breakdown() const;  // "parameters 32.7 KiB, gradients ..., activations ..."
};

// Parameters of the model as declared (an arena that is never allocated), as a double. Refuses
// (lf::InvalidArgument) a parameter with more elements than int64 holds.
double parameter_count(const ModelConfig& config);

// What one training step (forward, backward, AdamW) or one inference forward of B sequences of n
// tokens needs. extra_bytes: buffers the caller holds besides (the data, a checkpoint file).
// The config must be valid (validate() it first).
MemoryEstimate estimate_memory(const ModelConfig& config, Workload workload, int64_t B, int64_t n,
                               bool checkpoint_activations = false, double extra_bytes = 0);

// Bytes a data file takes once read: its size (gzip: the uncompressed size from the trailer),
// at most max_bytes when that is positive; 0 when the file cannot be read (the loader reports it).
// lf::IoError for a directory.
double data_file_bytes(const std::string& path, int64_t max_bytes);

// "512M", "2G", "1.5GiB", "64k", "1000000" (bytes; K/M/G/T are powers of 1024, an optional
// trailing "B" or "iB" is accepted). Throws lf::InvalidArgument naming `what` for anything else,
// zero, negative or non-finite sizes.
double parse_memory_size(const std::string& text, const std::string& what);

double available_memory_bytes();  // MemAvailable; 0 when unknown
// The limit of `runtime` in bytes (+inf when none is known) and where it comes from, for messages.
// Throws lf::InvalidArgument for a malformed $LINFORMER_MAX_MEMORY.
double memory_limit_bytes(const RuntimeOptions& runtime);
std::string memory_limit_source(const RuntimeOptions& runtime);

// Throws lf::Error when estimate.total() exceeds the limit of `runtime`: "<command> needs about X
// (breakdown) but the memory limit is Y (source); <advice>".
void require_memory(const MemoryEstimate& estimate, const RuntimeOptions& runtime, const std::string& command,
                    const std::string& advice);

std::string format_bytes(double bytes);  // "1.5 GiB"

}  // namespace lf
