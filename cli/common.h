// Flags shared by the subcommands that build or train a model: the model configuration (from
// --config FILE's "model" object, then individual flags), the training options (from its "train"
// object, then flags), and small helpers. Flags given on the command line override the file.
#pragma once
#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "linformer/config.h"
#include <memory>

#include "linformer/model.h"
#include "linformer/sampling.h"
#include "linformer/trainer.h"

namespace lf::cli {

// `s` as one single-quoted shell word.
std::string shell_quote(const std::string& s);

// A python with matplotlib: $LINFORMER_PYTHON, else the repository's .venv-bench (scripts/bench_all.sh
// makes it), else python3 on the PATH, else Debian's /usr/bin/python3 (python3-matplotlib; a PATH
// python such as pyenv's may lack it); "" when none has it.
std::string find_plot_python();

// Reads a JSON file; lf::IoError if missing, lf::InvalidArgument if not valid JSON.
json read_json_file(const std::string& path);

// A library message names options in backticks by their own names (`seq_len`, `run_dir`); on the
// command line they are flags: each `name` becomes --name with dashes for underscores, or the flag
// whose name differs (`run_dir` → --out, `data_path` → --data, `warmup_steps` → --warmup,
// `n_layers` → --layers). Other text is left as it is.
std::string with_flag_names(const std::string& message);

// The runtime options the commands pass to the library: --threads and --max-memory, whose defaults
// are LINFORMER_NUM_THREADS and LINFORMER_MAX_MEMORY. Set once by main before any command runs.
const RuntimeOptions& runtime_options();
void set_runtime_options(const RuntimeOptions& options);

struct ModelFlags {
  std::string task = "mlm";
  int64_t d_model = 0, layers = 0, heads = 0, d_ff = 0, max_len = 0, classes = 0;
  std::string attention, attention_options, pooling, position;
  bool post_ln = false, scale_tied_output = false;
  int64_t conv_kernel = 0;
  double dropout = -1;

  void add(CLI::App& app);
  // The configuration: defaults, then the file's "model" object, then every flag that was given.
  ModelConfig resolve(const CLI::App& app, const json& file) const;
};

// "64,128,256" → {64, 128, 256}; lf::InvalidArgument naming `flag` for an empty list or an item that
// is not a positive integer.
std::vector<int64_t> parse_list(const std::string& text, const char* flag);

// The sampling flags of `generate` and `predict --generate` (--temperature, --top-k, --top-p,
// --repetition-penalty, --seed, --stop) into `s`; `prefix` starts each help text ("causal LM: ").
void add_sampling_flags(CLI::App* sub, SamplingOptions& s, const std::string& prefix = "");

// The data file eval and spectrum read: --data when given (`given`), else the checkpoint's training
// data (`saved`; old checkpoints hold it relative, read from the current directory). lf::InvalidArgument
// when there is neither, lf::IoError when the saved file is gone, saying where it looked.
std::string checkpoint_data_path(const std::string& saved, const std::string& given);

// Fails now, not after the whole run, when an output file cannot be written: its directory is created
// and a probe file written there and removed. lf::IoError naming `flag` and the path.
void check_writable(const std::string& path, const char* flag);

struct TrainFlags {
  TrainOptions opt;
  void add(CLI::App& app);
  // The training options of the flags given on the command line, as TrainOptions JSON keys.
  json given_options(const CLI::App& app) const;
  // The options of `file`'s "train" object, each flag given overriding it.
  TrainOptions resolve(const CLI::App& app, const json& file) const;
};

}  // namespace lf::cli

namespace lf::cli {

// A trained model read from a checkpoint directory, or from a run directory's latest checkpoint.
struct LoadedModel {
  std::string dir;
  ModelConfig config;
  json trainer_state;
  std::unique_ptr<ParamArena<float>> arena;
  std::unique_ptr<Model<float>> model;
};
// open_model reads config.json and trainer_state.json only; build_model then refuses a model whose
// inference on B sequences of n tokens (plus extra_bytes of data) would exceed the memory limit, and
// only then allocates the parameters and loads the weights.
LoadedModel open_model(const std::string& path);
void build_model(LoadedModel& m, int64_t B, int64_t n, double extra_bytes, const std::string& command,
                 const std::string& advice);

}  // namespace lf::cli
