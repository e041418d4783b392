// Checkpoints. A checkpoint is a directory:
//   config.json             ModelConfig::to_json(), pretty-printed
//   model.safetensors       every tensor of the ParamArena<float> under its own (PyTorch-style) name,
//                           F32, metadata {"format": "linformer", "version": "1"}
//   optimizer.safetensors   training checkpoints only: AdamW's moments as exp_avg.<name> and
//                           exp_avg_sq.<name>, shaped like the parameter
//   trainer_state.json      training checkpoints only: a JSON object the trainer owns (step, seeds,
//                           data position, best metric, options, ...)
// Saving never leaves a half-written checkpoint under the final name: the directory is built as
// <dir>.tmp-<pid> and renamed into place. Overwriting renames the old one to <dir>.old-<pid> first,
// renames the new one in, then deletes the old, so at every instant a complete checkpoint exists under
// <dir> or <dir>.old-<pid>. Recovery is automatic: every reader below, given <dir>, falls back to the
// newest complete <dir>.old-* when <dir> itself is missing (a crash between the two renames).
//
// Deleting one (pruning, dropping an .old-* copy) renames it to <name>.del-<pid> first, so no crash
// leaves a partial directory under a name that readers use.
//
// A run keeps rolling checkpoints in <run_dir>/checkpoints/step-00001000 ..., with the file
// <run_dir>/checkpoints/latest naming the newest ("step-00001000\n"). A step's save is committed when
// `latest` names it: a process killed before that resumes from the previous one. Every step save
// also removes what killed processes left behind (.tmp-* of dead pids, .del-*, stale .old-* copies).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "linformer/arena.h"
#include "linformer/config.h"

namespace lf {


// AdamW's first (m) and second (v) moments, laid out like the arena's flat value buffer: parameter p
// occupies [p.offset, p.offset + p.numel) of each, and both have arena.numel() elements.
struct OptimizerMoments {
  std::vector<float> m, v;
};

// Saves a checkpoint to directory `dir` (its parent is created if needed). moments null: a model-only
// checkpoint (no optimizer.safetensors). trainer_state.json is written unless trainer_state is null;
// otherwise it must be a JSON object. Throws lf::InvalidArgument for an invalid config, an arena that
// is not allocated or moments of the wrong size, and lf::IoError when writing fails (the previous
// checkpoint at `dir`, if any, is then still there).
void save_checkpoint(const std::string& dir, const ModelConfig& config, const ParamArena<float>& arena,
                     const OptimizerMoments* moments, const json& trainer_state);

// What a checkpoint holds besides the tensors, read before the model is built.
struct LoadedCheckpoint {
  ModelConfig config;
  json trainer_state;          // an empty object when the checkpoint has no trainer_state.json
  bool has_optimizer = false;  // optimizer.safetensors present: training can resume from it
  std::string dir;             // the directory actually read (<dir>, or a <dir>.old-* it fell back to)
};

// The directory the readers use for `dir`: `dir` itself when it exists, else the newest complete
// <dir>.old-* left by an interrupted overwrite. Throws lf::IoError when neither exists, and when
// `dir` exists but lacks config.json ("not a linformer checkpoint directory").
std::string resolve_checkpoint_dir(const std::string& dir);

// Reads config.json, trainer_state.json (if any) and whether optimizer state is present. Load the
// tensors with load_checkpoint_weights(result.dir, ...) once the model is built from result.config.
LoadedCheckpoint load_checkpoint(const std::string& dir);

// config.json, parsed and validated. lf::IoError naming the file when it is missing, not JSON or not
// a valid model configuration.
ModelConfig read_checkpoint_config(const std::string& dir);
// The same on config.json's text already in memory; `source` names the file in messages.
ModelConfig parse_checkpoint_config(std::string_view text, const std::string& source);

// Fills the arena's values from model.safetensors and, when moments is not null, moments (resized to
// arena.numel()) from optimizer.safetensors. Every arena parameter must be in the file as F32 with the
// same shape, and the file must hold no tensor the arena lacks; otherwise lf::IoError lists the
// offending tensors with their expected and found shapes, and nothing is modified. Also lf::IoError
// for a missing, truncated or corrupt file, or for moments requested from a model-only checkpoint.
void load_checkpoint_weights(const std::string& dir, ParamArena<float>& arena, OptimizerMoments* moments);

// trainer_state.json (a JSON object). lf::IoError when missing (a model-only checkpoint) or corrupt.
json read_trainer_state(const std::string& dir);

// --- rolling checkpoints of a run -----------------------------------------------------------------

// <run_dir>/checkpoints/step-<step zero-padded to 8 digits>. Throws lf::InvalidArgument for step < 0.
std::string checkpoint_dir_for_step(const std::string& run_dir, int64_t step);

// save_checkpoint into checkpoint_dir_for_step(run_dir, step), then points
// <run_dir>/checkpoints/latest at it, removes leftovers of killed processes, then (keep > 0)
// prune_checkpoints(run_dir, keep). Returns the checkpoint's directory.
std::string save_step_checkpoint(const std::string& run_dir, int64_t step, const ModelConfig& config,
                                 const ParamArena<float>& arena, const OptimizerMoments* moments,
                                 const json& trainer_state, int keep = 0);

// The newest checkpoint of the run as a directory path, or "" when the run has none. Reads
// <run_dir>/checkpoints/latest; if that is missing, malformed or names a checkpoint that does not
// exist, falls back to the highest-numbered complete step-* directory (ignoring .tmp-* directories of
// interrupted saves).
std::string latest_checkpoint(const std::string& run_dir);

// Removes all step-* checkpoints of the run but the `keep` newest (by step number), never removing the
// one `latest` names. Throws lf::InvalidArgument for keep < 1 and lf::IoError when a removal fails.
// Only the files a checkpoint consists of are removed (config.json, model.safetensors,
// optimizer.safetensors, trainer_state.json): a directory that also holds other files (a user's)
// stays in place with them, and the warning handler is told. The same holds for every other removal
// of the checkpoint code (an overwritten checkpoint, leftovers of killed processes).
void prune_checkpoints(const std::string& run_dir, int keep);

// Removes every checkpoint of the run and its `latest` pointer (a fresh run starting the run over),
// by the same rule: only checkpoint files go, a user's files stay where they are.
void remove_run_checkpoints(const std::string& run_dir);

// Receives the checkpoint code's warnings (a directory left in place because it holds files
// linformer did not write). The default prints "linformer: warning: ..." on stderr. Returns the
// previous handler; not thread-safe (set it before training starts).
using CheckpointWarningHandler = std::function<void(const std::string& message)>;
CheckpointWarningHandler set_checkpoint_warning_handler(CheckpointWarningHandler handler);

}  // namespace lf
