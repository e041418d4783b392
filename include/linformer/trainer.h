// Training and evaluation. A batch is a pure function of (seed, step), dropout masks of (seed, step,
// micro-batch), and the optimizer state is saved with every checkpoint, so a run resumed from a
// checkpoint continues bit for bit like one that was never interrupted (same thread count).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <tuple>

#include <nlohmann/json.hpp>

#include "linformer/arena.h"
#include "linformer/batches.h"
#include "linformer/checkpoint.h"
#include "linformer/config.h"
#include "linformer/corpus.h"
#include "linformer/memory.h"
#include "linformer/model.h"
#include "linformer/runtime.h"
#include "linformer/schedule.h"

namespace lf {

struct TrainOptions {
  std::string data_path;            // text (plain or gzip) for mlm/clm; a label<TAB>text TSV for classify
  int64_t max_bytes = 0;            // read at most this much of the data file (0 = all)
  double valid_fraction = 0.01;     // held out from the end of the data (before the test part)
  double test_fraction = 0.01;
  std::string run_dir;              // checkpoints/, log.jsonl; required
  int64_t batch_size = 16;
  int64_t seq_len = 128;            // n; at most the model's max_len
  int64_t grad_accum = 1;           // micro-batches per optimizer step
  int64_t steps = 1000;
  int64_t warmup_steps = 100;
  double lr = 1e-3;
  double min_lr_ratio = 0.1;
  double weight_decay = 0.01;       // decoupled; matrices only (not biases, norms)
  double beta1 = 0.9, beta2 = 0.98, eps = 1e-6;
  double clip_norm = 1.0;           // 0 = no clipping
  double mask_prob = 0.15;
  double mask_span = 1.0;           // mlm: mean masked span (1 = per position; > 1 = SpanBERT spans), training only
  double short_seq_prob = 0.0;      // mlm: fraction of training crops cut short and padded (BERT's short_seq_prob)
  int64_t log_every = 10;
  int64_t eval_every = 200;         // 0 = only at the end
  int64_t eval_batches = 20;
  int64_t save_every = 500;         // 0 = only at the end
  int keep_checkpoints = 2;
  uint64_t seed = 1;
  bool checkpoint_activations = false;  // recompute block activations in the backward (less memory)
  // train() only, not saved: train in a `run_dir` holding files of others (left untouched), or start
  // an earlier run in it over (its checkpoints and log removed) instead of refusing.
  bool force = false;

  void validate() const;  // throws lf::InvalidArgument naming the option
  // The options one optimizer step uses (batch and schedule sizes, lr, AdamW, clipping): what
  // Trainer checks, without the data and run directory that only train() needs.
  void validate_step_options() const;
  json to_json() const;
  static TrainOptions from_json(const json& j);  // missing keys keep their defaults; unknown keys refused
};

struct EvalResult {
  double loss = 0;            // mean cross-entropy (nats) over scored positions
  double bits_per_byte = 0;   // loss / ln 2 (bytes are tokens)
  double accuracy = 0;        // top-1 over scored positions (or examples)
  int64_t count = 0;          // scored positions (or examples)
  // Classifiers: C × C counts of the examples scored, row = true class, column = predicted (empty for LMs).
  std::vector<int64_t> confusion;
  json to_json() const;  // the four figures above
};

struct TrainSummary {
  int64_t steps = 0;
  double last_loss = 0;
  EvalResult valid;
  EvalResult train;  // classify: the final model on (up to eval_batches batches of) the training examples
  // classify: the accuracy on the valid examples of always answering the training split's most frequent
  // class (named majority_class); -1 for LMs
  double majority_accuracy = -1;
  std::string majority_class;
  std::string overfit_warning;  // classify: non-empty when train accuracy is ~1 and valid is below majority
  double tokens_per_s = 0;
  double elapsed_s = 0;
  int64_t peak_rss = 0;
  double unigram_bits = 0;  // mlm/clm: byte-unigram entropy of the training split, the baseline to beat
  std::string checkpoint;  // the final checkpoint's directory
};

struct Objective;  // train/objective.h

// The data of a head's training objective, loaded once: a corpus for mlm/clm, TSV examples for classify.
struct TaskData {
  const Objective* objective = nullptr;  // of the head; makes the batches below
  std::unique_ptr<Corpus> corpus;
  std::unique_ptr<ClassificationData> train_examples, valid_examples;
  // classify: the label map the examples' classes follow (class k is the label class_map[k]); empty
  // when loading: the training split's sorted labels (ClassificationData::sorted_classes).
  std::vector<std::string> class_map;

  // task: the config's head. class_map (classify): the model's label map, e.g. ModelConfig::class_map();
  // a label outside it is refused (lf::IoError naming the file, line and label). Empty: the training
  // split's labels, stored in the result's class_map.
  static TaskData load(const std::string& task, const TrainOptions& opt, std::vector<std::string> class_map = {});
  // The data of one split (classify: train is the training examples; valid and test share the held-out ones).
  TokenBatch train_batch(int64_t B, int64_t n, uint64_t seed, uint64_t step, const MlmMasking& masking) const;
  int64_t eval_batch_count(Split split, int64_t B, int64_t n, int64_t max_batches) const;
  TokenBatch eval_batch(Split split, int64_t B, int64_t n, int64_t index, double mask_prob) const;
};

// Mean loss, bits per byte and accuracy of the model over the split's fixed evaluation batches.
EvalResult evaluate(Model<float>& model, const TaskData& data, Split split, int64_t B, int64_t n, int64_t max_batches,
                    double mask_prob);

// What one optimizer step did.
struct StepResult {
  int64_t step = 0;      // steps done after it (1-based)
  double loss = 0;       // mean cross-entropy over its micro-batches
  double grad_norm = 0;  // the global gradient norm before clipping
  double lr = 0;         // the rate it used
};

// The step-level trainer: a model of `config` in its own parameter arena, AdamW's moments, and the
// schedule, clipping and micro-batching of `opt` (batch_size and seq_len are the caller's business:
// a step takes whatever batches it is given). It reads no data file and prints nothing: train()
// drives it over a data file with checkpoints and a log, `linformer bench` times its step(), and a
// host program can call it with its own batches. Not copyable (the model refers to the arena).
// Its calls run with its own RuntimeOptions (a RuntimeScope around each), and its memory guard reads
// their limit, so instances with different settings can share a process and a host thread.
class Trainer {
 public:
  // Parameters initialised from opt.seed. Throws lf::InvalidArgument for a bad config, step option or
  // runtime option.
  Trainer(const ModelConfig& config, const TrainOptions& opt, const RuntimeOptions& runtime = {});
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // One optimizer step over opt.grad_accum micro-batches (each: forward with dropout drawn from
  // (seed, step, micro-batch), cross-entropy, backward), the global gradient norm clipped to
  // opt.clip_norm, and AdamW at the schedule's rate. Throws lf::InvalidArgument for a wrong number of
  // micro-batches, lf::Error for a non-finite loss or gradient, naming the step and where it arose
  // (Model::nonfinite_activation_site, nonfinite_gradient_site); the parameters are then unchanged.
  // Before the first step of a batch shape, lf::Error when its estimate exceeds the memory limit.
  // lf::InvalidArgument at precision int8, which is inference-only (evaluate runs there).
  StepResult step(const std::vector<TokenBatch>& micro_batches);

  // Mean loss, bits per byte and accuracy over the split's fixed evaluation batches of B × n; like
  // step(), refused from the estimate when above the memory limit.
  EvalResult evaluate(const TaskData& data, Split split, int64_t B, int64_t n, int64_t max_batches, double mask_prob);

  // Saves the weights, the optimizer moments and `state` (a JSON object; "step" is set to steps_done())
  // as run_dir/checkpoints/step-<steps_done> (atomic), keeping the newest `keep` (0: all); returns its
  // directory.
  std::string save(const std::string& run_dir, json state, int keep = 0) const;
  // Restores the weights and moments of a checkpoint of the same model configuration and continues
  // from `steps_done` (trainer_state.json's "step").
  void load(const std::string& checkpoint_dir, int64_t steps_done);

  int64_t steps_done() const { return steps_done_; }
  const ModelConfig& config() const { return config_; }
  const TrainOptions& options() const { return opt_; }
  // The runtime options its calls run with, the thread count resolved (never 0).
  const RuntimeOptions& runtime() const { return runtime_; }
  Model<float>& model() { return *model_; }
  ParamArena<float>& arena() { return arena_; }

 private:
  // Refuses B × n sequences of `workload` above the memory limit; each shape is estimated once.
  void require_memory_for(Workload workload, int64_t B, int64_t n);

  ModelConfig config_;
  TrainOptions opt_;
  RuntimeOptions runtime_;
  std::set<std::tuple<Workload, int64_t, int64_t>> memory_checked_;
  LrSchedule schedule_;
  ParamArena<float> arena_;
  std::unique_ptr<Model<float>> model_;
  OptimizerMoments moments_;
  int64_t steps_done_ = 0;
  std::vector<float> dlogits_;
};

// What train() reports while it runs; every callback is optional (none: train() prints nothing).
struct TrainCallbacks {
  // Once, with the options the run follows (on resume, the saved ones with the new step count).
  std::function<void(const TrainOptions& resolved)> start;
  std::function<void(const std::string& line)> message;  // resuming, the model and data, each evaluation
  // After every step: its result, the run's step count and the tokens per second since the last log line.
  std::function<void(const StepResult& step, int64_t total_steps, double tokens_per_s)> step;
};

// The splits a run reads must hold what it takes: the training split one sequence (when `training`),
// `eval_split` one evaluation batch. lf::InvalidArgument naming the split, its size and what to change.
// Checked for the LM corpora; a classifier's examples are checked when they are loaded.
void require_split_sizes(const TaskData& data, const TrainOptions& opt, Split eval_split, bool training);

// The run directory: run_dir/checkpoints/, run_dir/log.jsonl, the marker run_dir/.linformer-run and
// the lock file run_dir/.linformer-lock. train() holds an exclusive lock (flock) on the lock file for
// the whole run: a second run on the same directory is refused at once (lf::IoError naming the
// holder's pid); the kernel releases it when the process ends, however it ends. A fresh run refuses a
// directory that holds a run (use resume, or opt.force to start it over) or files it did not write
// (opt.force: train beside them; they are never removed or overwritten). The directory is created only
// after the options, configuration and data have been checked.
//
// Trains `config` (or, with resume, continues the latest checkpoint in opt.run_dir, whose model
// configuration then wins) with a Trainer over opt.data_path, writing the log and checkpoints to
// opt.run_dir, and returns the summary. Runs with `runtime`'s threads and refuses a run above its memory
// limit before loading anything. Throws lf::InvalidArgument / lf::IoError for bad options and files
// (and for `runtime`'s precision int8, which does not train),
// lf::Error for a non-finite loss or gradient (Trainer::step).
// With resume, the saved options govern; opt.steps (when not 0) and the keys of `resume_changes`
// (TrainOptions JSON keys) that differ from the saved values may change only steps, log_every,
// eval_every, eval_batches, save_every, keep_checkpoints, checkpoint_activations and data_path (the
// same data at another path, or a new path when the saved one is gone); any other change is refused
// with lf::InvalidArgument naming each. Every change made is reported through callbacks.message.
TrainSummary train(const ModelConfig& config, const TrainOptions& opt, bool resume, const TrainCallbacks& callbacks = {},
                   const RuntimeOptions& runtime = {}, const json& resume_changes = json::object());

}  // namespace lf
