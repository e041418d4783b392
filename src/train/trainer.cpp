#include "linformer/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <set>

#include "core/join.h"
#include "core/json_value.h"
#include "io/atomic_file.h"
#include "io/file_lock.h"
#include "linformer/checkpoint.h"
#include "linformer/error.h"
#include "linformer/memory.h"
#include "linformer/schedule.h"
#include "linformer/tokenizer.h"
#include "model/head.h"
#include "ops/elementwise.h"
#include "ops/optimizer.h"
#include "train/metrics.h"
#include "train/objective.h"
#include "train/optimizer_step.h"
#include "train/run_log.h"

namespace lf {

// ---- options ------------------------------------------------------------------------------------

void TrainOptions::validate() const {
  LF_REQUIRE(!data_path.empty(), "no training data: give `data_path` FILE");
  LF_REQUIRE(!run_dir.empty(), "no run directory: give `run_dir` DIR");
  LF_REQUIRE(max_bytes >= 0, "`max_bytes` must not be negative, got ", max_bytes);
  validate_step_options();
  LF_REQUIRE(mask_prob > 0 && mask_prob < 1, "`mask_prob` must be in (0, 1), got ", mask_prob);
  LF_REQUIRE(mask_span >= 1 && mask_span <= kMaxMaskSpan, "`mask_span` must be in [1, ", kMaxMaskSpan, "], got ",
             mask_span);
  LF_REQUIRE(short_seq_prob >= 0 && short_seq_prob <= 1, "`short_seq_prob` must be in [0, 1], got ", short_seq_prob);
  LF_REQUIRE(log_every > 0, "`log_every` must be positive, got ", log_every);
  LF_REQUIRE(eval_every >= 0 && save_every >= 0, "`eval_every` and `save_every` must be >= 0");
  LF_REQUIRE(eval_batches > 0, "`eval_batches` must be positive, got ", eval_batches);
  LF_REQUIRE(keep_checkpoints > 0, "`keep_checkpoints` must be positive, got ", keep_checkpoints);
}

void TrainOptions::validate_step_options() const {
  LF_REQUIRE(batch_size > 0, "`batch_size` must be positive, got ", batch_size);
  LF_REQUIRE(seq_len > 0, "`seq_len` must be positive, got ", seq_len);
  LF_REQUIRE(grad_accum > 0, "`grad_accum` must be positive, got ", grad_accum);
  LF_REQUIRE(steps > 0, "`steps` must be positive, got ", steps);
  LF_REQUIRE(warmup_steps >= 0 && warmup_steps <= steps, "`warmup_steps` must be in [0, steps], got ", warmup_steps);
  LF_REQUIRE(std::isfinite(lr) && lr > 0, "`lr` must be a positive number, got ", lr);
  LF_REQUIRE(std::isfinite(min_lr_ratio) && min_lr_ratio >= 0 && min_lr_ratio <= 1, "`min_lr_ratio` must be in [0, 1], got ",
             min_lr_ratio);
  LF_REQUIRE(std::isfinite(weight_decay) && weight_decay >= 0, "`weight_decay` must be >= 0, got ", weight_decay);
  LF_REQUIRE(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, "AdamW betas must be in [0, 1)");
  LF_REQUIRE(std::isfinite(eps) && eps > 0, "AdamW eps must be positive, got ", eps);
  LF_REQUIRE(std::isfinite(clip_norm) && clip_norm >= 0, "`clip_norm` must be >= 0, got ", clip_norm);
}

json TrainOptions::to_json() const {
  return {{"data_path", data_path}, {"run_dir", run_dir}, {"max_bytes", max_bytes}, {"valid_fraction", valid_fraction},
          {"test_fraction", test_fraction}, {"batch_size", batch_size}, {"seq_len", seq_len},
          {"grad_accum", grad_accum}, {"steps", steps}, {"warmup_steps", warmup_steps}, {"lr", lr},
          {"min_lr_ratio", min_lr_ratio}, {"weight_decay", weight_decay}, {"beta1", beta1}, {"beta2", beta2},
          {"eps", eps}, {"clip_norm", clip_norm}, {"mask_prob", mask_prob}, {"mask_span", mask_span},
          {"short_seq_prob", short_seq_prob}, {"log_every", log_every},
          {"eval_every", eval_every}, {"eval_batches", eval_batches}, {"save_every", save_every},
          {"keep_checkpoints", keep_checkpoints}, {"seed", seed}, {"checkpoint_activations", checkpoint_activations}};
}

TrainOptions TrainOptions::from_json(const json& j) {
  LF_REQUIRE(j.is_object(), "training options must be a JSON object");
  TrainOptions o;
  const json known = o.to_json();
  for (const auto& [k, v] : j.items()) LF_REQUIRE(known.contains(k), "unknown training option '", k, "'");
  auto get = [&](const char* key, auto& field) {
    if (!j.contains(key)) return;
    if (!json_value_to(j.at(key), field))
      throw InvalidArgument(
          str_cat("training option '", key, "' has the wrong type or is out of range: ", j.at(key).dump()));
  };
  get("data_path", o.data_path);
  get("run_dir", o.run_dir);
  get("max_bytes", o.max_bytes);
  get("valid_fraction", o.valid_fraction);
  get("test_fraction", o.test_fraction);
  get("batch_size", o.batch_size);
  get("seq_len", o.seq_len);
  get("grad_accum", o.grad_accum);
  get("steps", o.steps);
  get("warmup_steps", o.warmup_steps);
  get("lr", o.lr);
  get("min_lr_ratio", o.min_lr_ratio);
  get("weight_decay", o.weight_decay);
  get("beta1", o.beta1);
  get("beta2", o.beta2);
  get("eps", o.eps);
  get("clip_norm", o.clip_norm);
  get("mask_prob", o.mask_prob);
  get("mask_span", o.mask_span);
  get("short_seq_prob", o.short_seq_prob);
  get("log_every", o.log_every);
  get("eval_every", o.eval_every);
  get("eval_batches", o.eval_batches);
  get("save_every", o.save_every);
  get("keep_checkpoints", o.keep_checkpoints);
  get("seed", o.seed);
  get("checkpoint_activations", o.checkpoint_activations);
  return o;
}

json EvalResult::to_json() const {
  return {{"loss", loss}, {"bits_per_byte", bits_per_byte}, {"accuracy", accuracy}, {"count", count}};
}

// ---- data ---------------------------------------------------------------------------------------

TaskData TaskData::load(const std::string& task, const TrainOptions& opt, std::vector<std::string> class_map) {
  TaskData d;
  d.objective = &head_objective(task);
  d.class_map = std::move(class_map);
  d.objective->load(opt, d);
  if (d.train_examples) d.class_map = d.train_examples->classes();
  return d;
}

TokenBatch TaskData::train_batch(int64_t B, int64_t n, uint64_t seed, uint64_t step, const MlmMasking& masking) const {
  return objective->train_batch(*this, B, n, seed, step, masking);
}

int64_t TaskData::eval_batch_count(Split split, int64_t B, int64_t n, int64_t max_batches) const {
  return objective->eval_batch_count(*this, split, B, n, max_batches);
}

TokenBatch TaskData::eval_batch(Split split, int64_t B, int64_t n, int64_t index, double mask_prob) const {
  return objective->eval_batch(*this, split, B, n, index, mask_prob);
}

EvalResult evaluate(Model<float>& model, const TaskData& data, Split split, int64_t B, int64_t n, int64_t max_batches,
                    double mask_prob) {
  const int64_t batches = data.eval_batch_count(split, B, n, max_batches);
  LF_REQUIRE(batches > 0, "the ", split_name(split), " split is too small for one evaluation batch of ", B, " × ", n,
             " tokens: lower `seq_len` or `batch_size`, or hold out more data");
  const int64_t V = model.logits_per_row();
  const bool classes = model.head().info().targets == HeadTargets::kClasses;
  EvalResult e;
  if (classes) e.confusion.assign(size_t(V * V), 0);
  double loss_sum = 0;
  int64_t count = 0, correct = 0;
  for (int64_t i = 0; i < batches; ++i) {
    const TokenBatch b = data.eval_batch(split, B, n, i, mask_prob);
    const float* logits = model.forward(b.tokens.data(), b.padding.empty() ? nullptr : b.padding.data(), b.B, b.n, false, 0,
                                        /*keep_for_backward=*/false);
    const ObjectiveLoss l = data.objective->loss(logits, b, V, nullptr, 1.0);
    loss_sum += l.loss * double(l.count);
    count += l.count;
    correct += l.correct;
    if (classes)
      for (size_t r = 0; r < b.targets.size(); ++r) {
        const float* row = logits + int64_t(r) * V;
        ++e.confusion[size_t(b.targets[r] * V + (std::max_element(row, row + V) - row))];
      }
  }
  e.count = count;
  e.loss = count ? loss_sum / double(count) : 0;
  e.bits_per_byte = e.loss / std::log(2.0);
  e.accuracy = count ? double(correct) / double(count) : 0;
  return e;
}

// ---- training -----------------------------------------------------------------------------------

namespace {

uint64_t mix64(uint64_t x) {  // splitmix64's finaliser: distinct dropout seeds per (seed, step, micro)
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

template <class T>
void adamw_step_params(ParamArena<T>& arena, T* m, T* v, int64_t t, const AdamWOptions& options) {
  for (const ParamInfo& p : arena.params()) {
    if (!p.trainable) continue;  // fixed projections stay as drawn (no weight decay either)
    AdamWOptions a = options;
    if (p.shape.size() < 2) a.weight_decay = 0;
    ops::adamw_step<T>(vector_view(arena.values() + p.offset, p.numel), vector_view(arena.grads() + p.offset, p.numel),
                       vector_view(m + p.offset, p.numel), vector_view(v + p.offset, p.numel), t, a);
  }
}
template void adamw_step_params<float>(ParamArena<float>&, float*, float*, int64_t, const AdamWOptions&);
template void adamw_step_params<double>(ParamArena<double>&, double*, double*, int64_t, const AdamWOptions&);

std::string nonfinite_gradient_site(const ParamArena<float>& arena) {
  // Backward order: the head (final norm, mlm_head.*, lm_head.*, classifier.*), the layers top down,
  // parameters shared by all layers (e.g. linformer's shared_proj), then the embeddings. The first
  // group holding a NaN or Inf is where it entered the backward.
  constexpr int64_t kShared = int64_t(1) << 40, kEmbeddings = kShared + 1;
  auto layer_of = [](const std::string& name) -> int64_t {  // -1 unless "layers.<digits>."
    if (name.rfind("layers.", 0) != 0) return -1;
    const size_t dot = name.find('.', 7);
    if (dot == std::string::npos || dot == 7 || dot > 7 + 9) return -1;
    for (size_t i = 7; i < dot; ++i)
      if (name[i] < '0' || name[i] > '9') return -1;
    return std::stoll(name.substr(7, dot - 7));
  };
  auto rank_of = [&](const std::string& name) -> int64_t {
    if (const int64_t layer = layer_of(name); layer >= 0) return kShared - 1 - layer;
    if (name.rfind("embeddings.", 0) == 0) return kEmbeddings;
    if (name.rfind("final_norm.", 0) == 0 || name.rfind("mlm_head.", 0) == 0 || name.rfind("lm_head.", 0) == 0 ||
        name.rfind("classifier.", 0) == 0)
      return 0;
    return kShared;
  };
  const ParamInfo* found = nullptr;
  int64_t found_rank = 0;
  for (const ParamInfo& p : arena.params()) {
    const int64_t rank = rank_of(p.name);
    if (found && rank >= found_rank) continue;
    const float* g = arena.grads() + p.offset;
    for (int64_t i = 0; i < p.numel; ++i)
      if (!std::isfinite(g[i])) {
        found = &p, found_rank = rank;
        break;
      }
  }
  if (!found) return "";
  const std::string& name = found->name;
  const std::string where = found_rank == 0            ? std::string("the output head")
                            : found_rank == kEmbeddings ? std::string("the embeddings")
                            : found_rank == kShared     ? std::string("the parameters shared by all layers")
                                                        : str_cat("layer ", layer_of(name));
  return str_cat(where, " (parameter '", name, "')");
}

// ---- the step-level trainer ----------------------------------------------------------------------

Trainer::Trainer(const ModelConfig& config, const TrainOptions& opt, const RuntimeOptions& runtime)
    : config_(config), opt_(opt), runtime_(runtime), schedule_{opt.lr, opt.warmup_steps, opt.steps, opt.min_lr_ratio} {
  config_.validate();
  opt_.validate_step_options();
  runtime_.validate();
  runtime_.threads = resolve_threads(runtime_.threads);  // settled now: a malformed environment is refused here
  const RuntimeScope scope(runtime_);
  model_ = std::make_unique<Model<float>>(config_, arena_);
  model_->set_activation_checkpointing(opt_.checkpoint_activations);
  arena_.allocate();
  arena_.initialize(opt_.seed);
  moments_.m.assign(size_t(arena_.numel()), 0.f);
  moments_.v.assign(size_t(arena_.numel()), 0.f);
}

StepResult Trainer::step(const std::vector<TokenBatch>& micro_batches) {
  LF_REQUIRE(int64_t(micro_batches.size()) == opt_.grad_accum, "a training step takes ", opt_.grad_accum,
             " micro-batches (grad_accum), got ", micro_batches.size());
  require_precision_trains(runtime_.precision, "a training step");  // before any work, not at the backward
  const RuntimeScope scope(runtime_);  // first: attention kinds size their per-thread buffers by it
  for (const TokenBatch& b : micro_batches) require_memory_for(Workload::Training, b.B, b.n);
  const int64_t step = steps_done_, V = model_->logits_per_row();
  const Objective& objective = head_objective(config_.task);
  model_->set_training_step(step);  // e.g. Performer's feature redraw; also right after a resume
  arena_.zero_grad();
  StepResult r;
  for (int64_t micro = 0; micro < opt_.grad_accum; ++micro) {
    const TokenBatch& b = micro_batches[size_t(micro)];
    const uint64_t counter = uint64_t(step * opt_.grad_accum + micro);
    const float* logits = model_->forward(b.tokens.data(), b.padding.empty() ? nullptr : b.padding.data(), b.B, b.n,
                                          true, mix64(opt_.seed ^ mix64(counter)));
    dlogits_.resize(b.targets.size() * size_t(V));
    const ObjectiveLoss l = objective.loss(logits, b, V, dlogits_.data(), 1.0 / double(opt_.grad_accum));
    if (!std::isfinite(l.loss)) {
      const std::string site = model_->nonfinite_activation_site();
      throw Error(str_cat("non-finite loss (", l.loss, ") at step ", step,
                          site.empty() ? "" : str_cat(", first non-finite activation in ", site),
                          ": training diverged; lower `lr` or set `clip_norm`"));
    }
    model_->backward(dlogits_.data());
    r.loss += l.loss / double(opt_.grad_accum);
  }
  const TensorView<float> grads = vector_view(arena_.grads(), arena_.numel());
  r.grad_norm = ops::global_norm<float>(grads);
  if (!std::isfinite(r.grad_norm))
    throw Error(str_cat("non-finite gradient at step ", step, ", first in ", nonfinite_gradient_site(arena_),
                        ": training diverged; lower `lr` or set `clip_norm`"));
  if (opt_.clip_norm > 0 && r.grad_norm > opt_.clip_norm)
    ops::scale(grads, opt_.clip_norm / r.grad_norm);
  r.lr = schedule_.lr(step);
  adamw_step_params(arena_, moments_.m.data(), moments_.v.data(), step + 1,
                    AdamWOptions{r.lr, opt_.beta1, opt_.beta2, opt_.eps, opt_.weight_decay});
  r.step = ++steps_done_;
  return r;
}

EvalResult Trainer::evaluate(const TaskData& data, Split split, int64_t B, int64_t n, int64_t max_batches,
                             double mask_prob) {
  const RuntimeScope scope(runtime_);
  require_memory_for(Workload::Inference, B, n);
  return lf::evaluate(*model_, data, split, B, n, max_batches, mask_prob);
}

void Trainer::require_memory_for(Workload workload, int64_t B, int64_t n) {
  if (memory_checked_.contains({workload, B, n})) return;
  const bool training = workload == Workload::Training;
  require_memory(estimate_memory(config_, workload, B, n, training && opt_.checkpoint_activations), runtime_,
                 str_cat(training ? "a training step" : "an evaluation", " of ", B, " × ", n, " tokens"),
                 "reduce the batch size, the sequence length or the model, or use `checkpoint_activations`");
  memory_checked_.emplace(workload, B, n);
}

std::string Trainer::save(const std::string& run_dir, json state, int keep) const {
  LF_REQUIRE(state.is_object(), "the trainer state must be a JSON object");
  state["step"] = steps_done_;
  return save_step_checkpoint(run_dir, steps_done_, config_, arena_, &moments_, state, keep);
}

void Trainer::load(const std::string& checkpoint_dir, int64_t steps_done) {
  LF_REQUIRE(steps_done >= 0, "a checkpoint's step count must not be negative, got ", steps_done);
  load_checkpoint_weights(checkpoint_dir, arena_, &moments_);
  steps_done_ = steps_done;
}

// ---- train(): the trainer over a data file, with a log and checkpoints -----------------------------

namespace {

// A classifier's end of training: the training examples' accuracy, the majority-class baseline on the
// valid examples and, when the first is ~1 and the second beats the model, the overfitting warning.
void classifier_summary(Trainer& trainer, const TaskData& data, const EvalResult& valid, TrainSummary& summary,
                        const std::function<void(const std::string&)>& message) {
  const TrainOptions& opt = trainer.options();
  summary.train = trainer.evaluate(data, Split::Train, opt.batch_size, opt.seq_len, opt.eval_batches, opt.mask_prob);
  const int64_t C = trainer.config().n_classes;
  const int64_t majority = most_frequent_class(data.train_examples->labels(), C);
  const ClassificationReport r = classification_report(valid.confusion, C, majority);
  summary.majority_accuracy = r.majority_accuracy;
  summary.majority_class = trainer.config().class_name(majority);
  if (looks_overfitted(summary.train.accuracy, valid.accuracy, r.majority_accuracy)) {
    summary.overfit_warning = overfitting_warning(summary.train.accuracy, valid.accuracy, r.majority_accuracy,
                                                  summary.majority_class, "valid");
    message("warning: " + summary.overfit_warning);
  }
}

namespace fs = std::filesystem;

// The run directory's own files besides checkpoints/ and the log: the marker says a directory is a
// run of ours (so its log and checkpoints may be replaced), the lock file keeps a second run out.
constexpr const char* kRunMarker = ".linformer-run";
constexpr const char* kRunLock = ".linformer-lock";
constexpr const char* kLogFile = "log.jsonl";
constexpr const char* kCheckpointsDir = "checkpoints";

// The options a resumed run takes from its caller: they change what is logged, evaluated and kept,
// or how memory is spent, not the run's trajectory (data order, schedule, batches).
constexpr const char* kResumeHonoured[] = {"steps",      "log_every",        "eval_every",
                                           "eval_batches", "save_every",    "keep_checkpoints",
                                           "checkpoint_activations", "data_path"};

FileLock lock_run_dir(const std::string& run_dir) {
  pid_t holder = 0;
  FileLock lock = FileLock::try_lock((fs::path(run_dir) / kRunLock).string(), &holder);
  if (!lock.locked())
    throw IoError(str_cat("`run_dir` '", run_dir, "' is in use by another training run (",
                          holder > 0 ? str_cat("pid ", holder) : std::string("a running process"),
                          "): wait for it to finish, or stop it", holder > 0 ? str_cat(" (kill ", holder, ")") : "",
                          ", or choose another `run_dir`"));
  return lock;
}

bool exists_nothrow(const fs::path& p) {
  std::error_code ec;
  return fs::exists(fs::symlink_status(p, ec));
}

// Refuses a run directory the run must not write into, under its lock. Returns true when a fresh
// run with `force` starts an earlier run of ours over (its checkpoints are then removed).
bool check_run_dir(const std::string& run_dir, bool resume, bool force) {
  const fs::path dir(run_dir);
  std::error_code ec;
  if (!exists_nothrow(dir)) return false;
  if (!fs::is_directory(dir, ec)) throw IoError(str_cat("`run_dir` '", run_dir, "' exists and is not a directory"));
  if (resume) return false;  // a checkpoint must be there (checked by the caller); other files are left alone
  const bool ours = exists_nothrow(dir / kRunMarker);
  if (const std::string latest = latest_checkpoint(run_dir); !latest.empty()) {
    if (!force)
      throw IoError(str_cat("`run_dir` '", run_dir, "' already holds a training run (latest checkpoint '",
                            fs::path(latest).filename().string(), "'): continue it with `resume`, start it over with "
                            "`force` (its checkpoints and log are removed), or choose a new directory"));
    if (ours || !exists_nothrow(dir / kLogFile)) return true;
  } else if (ours) {
    return false;  // a run of ours that saved nothing: its log is replaced
  }
  std::vector<std::string> entries;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name != kRunLock && name != kRunMarker) entries.push_back(name);
  }
  if (entries.empty()) return false;
  std::sort(entries.begin(), entries.end());
  if (!force)
    throw IoError(str_cat("`run_dir` '", run_dir, "' is not empty (", join(entries, ", "), ") and is not a run "
                          "directory of linformer train (it has no ", kRunMarker, "): choose a new or empty directory, "
                          "or pass `force` to train there anyway (nothing in it is deleted or overwritten)"));
  for (const char* name : {kLogFile, kCheckpointsDir})
    if (exists_nothrow(dir / name))
      throw IoError(str_cat("`force`: '", (dir / name).string(), "' exists in a directory linformer train did not "
                            "make, and the run would write there: move it away, or choose another `run_dir`"));
  return false;
}

// The options of a resumed run: the saved ones, with the caller's `steps` (when more) and the
// honoured keys of `changes`; every other key of `changes` that differs from the saved value is
// refused, all named in one message. `notices` gets a line per honoured change.
TrainOptions resumed_options(const json& saved_json, int64_t step, const TrainOptions& given, const json& changes,
                             std::vector<std::string>& notices) {
  TrainOptions opt = TrainOptions::from_json(saved_json);
  const json saved = opt.to_json();
  LF_REQUIRE(changes.is_object(), "the resumed run's changes must be a JSON object");
  json merged = saved;
  std::vector<std::string> refused;
  for (const auto& [key, value] : changes.items()) {
    LF_REQUIRE(saved.contains(key), "unknown training option '", key, "'");
    if (key == "run_dir" || key == "steps" || value == saved.at(key)) continue;  // steps: `given` below
    const bool honoured = std::find_if(std::begin(kResumeHonoured), std::end(kResumeHonoured),
                                       [&](const char* k) { return key == k; }) != std::end(kResumeHonoured);
    if (!honoured) {
      refused.push_back(str_cat("`", key, "` (saved ", saved.at(key).dump(), ", given ", value.dump(), ")"));
      continue;
    }
    if (key == "data_path") {
      // Only the same data may come from elsewhere: the file moved, or named by another path.
      const std::string was = saved.at(key).get<std::string>(), now = value.get<std::string>();
      std::error_code ec;
      const bool same = fs::exists(was, ec) && fs::equivalent(was, now, ec);
      if (same) continue;
      if (exists_nothrow(was)) {
        refused.push_back(str_cat("`data_path` (saved '", was, "', given '", now, "')"));
        continue;
      }
    }
    merged[key] = value;
    notices.push_back(str_cat("resume: `", key, "` ", saved.at(key).dump(), " -> ", value.dump()));
  }
  if (!refused.empty())
    throw InvalidArgument(str_cat("`resume` continues the run as it was saved, so ", join(refused, ", "),
                                  " cannot change; drop ",
                                  refused.size() == 1 ? "it" : "them", ", or start a new run in another `run_dir`. "
                                  "A resumed run takes `steps`, `log_every`, `eval_every`, `eval_batches`, "
                                  "`save_every`, `keep_checkpoints`, `checkpoint_activations` and `data_path` "
                                  "(the same data, moved)"));
  opt = TrainOptions::from_json(merged);
  // 0: unchanged. Fewer steps than saved end the run sooner (the schedule follows the new count).
  if (given.steps != 0 && given.steps != opt.steps) {
    LF_REQUIRE(given.steps >= step, "`steps` ", given.steps, " is below the checkpoint's step ", step,
               ": a resumed run can only go on (give `steps` of at least ", step, ")");
    notices.push_back(str_cat("resume: `steps` ", opt.steps, " -> ", given.steps));
    opt.steps = given.steps;
  }
  return opt;
}

// One split of an LM corpus must hold what a run takes from it (`what`: `need` bytes); said in the
// user's terms: which split, its size, and what to change.
void require_corpus_split(const Corpus& corpus, Split split, int64_t need, const std::string& what,
                          const TrainOptions& opt) {
  const int64_t have = int64_t(corpus.split(split).size());
  if (have >= need) return;
  const bool train_split = split == Split::Train;
  const char* fraction = split == Split::Valid ? "valid_fraction" : "test_fraction";
  throw InvalidArgument(str_cat(
      "the ", split_name(split), " split of '", corpus.source(), "' has ", have, " bytes (",
      train_split ? std::string("what the held-out splits leave of ")
                  : str_cat("`", fraction, "` ", split == Split::Valid ? opt.valid_fraction : opt.test_fraction, " of "),
      corpus.size(), " bytes), fewer than ", what, ": ",
      train_split ? std::string("hold out less (`valid_fraction`, `test_fraction`), lower `seq_len`, or give more data")
                  : str_cat("raise `", fraction, "`, lower `batch_size` or `seq_len`, or give more data")));
}

}  // namespace

void require_split_sizes(const TaskData& data, const TrainOptions& opt, Split eval_split, bool training) {
  if (!data.corpus) return;  // classification: load_labelled and eval_batch_count say it in examples
  const bool causal = data.objective && data.objective->name == "causal_lm";
  const int64_t window = opt.seq_len + (causal ? 1 : 0);
  if (training)
    require_corpus_split(*data.corpus, Split::Train, window, str_cat("one training sequence (", window, " bytes)"), opt);
  require_corpus_split(*data.corpus, eval_split, opt.batch_size * window,
                       str_cat("one evaluation batch (", opt.batch_size, " × ", window, " = ", opt.batch_size * window,
                               " bytes)"),
                       opt);
}

TrainSummary train(const ModelConfig& config_in, const TrainOptions& opt_in, bool resume, const TrainCallbacks& callbacks,
                   const RuntimeOptions& runtime, const json& resume_changes) {
  require_precision_trains(runtime.precision, "training");
  const RuntimeScope scope(runtime);  // loading the data too runs with the caller's threads
  TrainOptions opt = opt_in;
  LF_REQUIRE(!opt.run_dir.empty(), "no run directory: give `run_dir` DIR");
  // A directory that exists is locked at once, so a second run is refused before it reads anything;
  // one that does not is made (and locked) only once the data and configuration are known to be good.
  FileLock lock;
  bool start_over = false;
  // (Resuming a directory without a checkpoint is refused below, without leaving a lock file in it.)
  if (exists_nothrow(opt.run_dir) && !(resume && latest_checkpoint(opt.run_dir).empty())) {
    // A directory that is not ours is refused before a lock file is left in it.
    if (!exists_nothrow(fs::path(opt.run_dir) / kRunMarker) && !exists_nothrow(fs::path(opt.run_dir) / kRunLock))
      check_run_dir(opt.run_dir, resume, opt.force);
    lock = lock_run_dir(opt.run_dir);
    start_over = check_run_dir(opt.run_dir, resume, opt.force);  // again under the lock: it may have changed
  }
  if (!resume) {
    opt.validate();  // with resume, the saved options are validated once merged
    // Stored absolute, so that `eval` of the checkpoint finds it from any directory.
    opt.data_path = fs::absolute(opt.data_path).lexically_normal().string();
  }
  ModelConfig config = config_in;
  json state = json::object();
  std::string resume_from;
  std::vector<std::string> notices;
  if (resume) {
    resume_from = latest_checkpoint(opt.run_dir);
    LF_REQUIRE(!resume_from.empty(), "`resume`: no checkpoint found in '", opt.run_dir,
               "/checkpoints' (a run stopped before its first checkpoint was saved has none): start the run "
               "again without `resume`");
    config = read_checkpoint_config(resume_from);
    state = read_trainer_state(resume_from);
    LF_REQUIRE(state.contains("step") && state.contains("options"), resume_from,
               ": trainer_state.json lacks step/options: not a training checkpoint");
    // The saved options govern the run (data order, schedule); see kResumeHonoured for what may change.
    json changes = resume_changes;
    if (!opt.data_path.empty() && !changes.contains("data_path")) changes["data_path"] = opt.data_path;
    if (changes.contains("data_path") && changes["data_path"].is_string())
      changes["data_path"] = fs::absolute(changes["data_path"].get<std::string>()).lexically_normal().string();
    const std::string run_dir = opt.run_dir;
    opt = resumed_options(state.at("options"), state.at("step").get<int64_t>(), opt, changes, notices);
    opt.run_dir = run_dir;
    opt.validate();
    // An old checkpoint may hold a relative path: it is read from the current directory.
    if (!exists_nothrow(opt.data_path))
      throw IoError(str_cat("the run's training data '", opt.data_path, "' is missing",
                            fs::path(opt.data_path).is_relative()
                                ? str_cat(" (a relative path in the checkpoint: looked for '",
                                          fs::absolute(opt.data_path).string(), "')")
                                : std::string(),
                            ": give its new path with `data_path`"));
  }
  config.validate();
  LF_REQUIRE(opt.seq_len <= config.max_len, "`seq_len` ", opt.seq_len, " exceeds the model's max_len ", config.max_len);
  {  // Refused from an estimate before anything is allocated (resuming also reads the checkpoint's files whole).
    MemoryEstimate need = estimate_memory(config, Workload::Training, opt.batch_size, opt.seq_len,
                                          opt.checkpoint_activations, data_file_bytes(opt.data_path, opt.max_bytes));
    if (resume) need.buffers += 3 * need.parameters;  // model.safetensors and optimizer.safetensors
    require_memory(need, runtime, "train", "reduce `batch_size`, `seq_len`, `d_model`, `d_ff` or `n_layers`, or use "
                   "`checkpoint_activations`");
  }
  const bool classifier = head_info(config.task).targets == HeadTargets::kClasses;
  // A classifier's label map: the checkpoint's (identity for one saved without), the config's, or else
  // the training split's labels, saved in config.json so eval and predict name the classes.
  const TaskData data = TaskData::load(config.task, opt, classifier && (resume || !config.class_names.empty())
                                                             ? config.class_map() : std::vector<std::string>{});
  if (classifier && !resume && config.class_names.empty()) {
    LF_REQUIRE(int64_t(data.class_map.size()) == config.n_classes, "`n_classes` is ", config.n_classes, " but the ",
               "training split of ", opt.data_path, " has ", data.class_map.size(), " labels: set `n_classes` to ",
               data.class_map.size(), " (or give `class_names`)");
    config.class_names = data.class_map;
  }
  // Every evaluation must have data: find out now, not after the last step.
  require_split_sizes(data, opt, Split::Valid, /*training=*/true);
  LF_REQUIRE(data.eval_batch_count(Split::Valid, opt.batch_size, opt.seq_len, opt.eval_batches) > 0,
             "the validation split of ", opt.data_path, " is too small for one batch of ", opt.batch_size, " × ",
             opt.seq_len, " tokens: lower `seq_len` or `batch_size`, or raise `valid_fraction`");

  Trainer trainer(config, opt, runtime);
  int64_t start_step = 0;
  double elapsed_before = 0;
  if (!resume_from.empty()) {
    start_step = state.at("step").get<int64_t>();
    trainer.load(resume_from, start_step);
    elapsed_before = state.value("elapsed_s", 0.0);
  }
  if (!lock.locked()) {
    std::error_code ec;
    fs::create_directories(opt.run_dir, ec);
    if (ec || !fs::is_directory(opt.run_dir))
      throw IoError(str_cat("cannot create the run directory `run_dir` '", opt.run_dir, "': ", ec ? ec.message() : "not a directory"));
    lock = lock_run_dir(opt.run_dir);
    start_over = check_run_dir(opt.run_dir, resume, opt.force);  // another run may have come first
  }
  if (!exists_nothrow(fs::path(opt.run_dir) / kRunMarker))
    write_file_atomic((fs::path(opt.run_dir) / kRunMarker).string(),
                      json{{"format", "linformer-run"}, {"version", 1}}.dump() + "\n");

  auto message = [&](const std::string& line) {
    if (callbacks.message) callbacks.message(line);
  };
  // Checkpoint housekeeping's warnings (a user's file kept in place) reach the caller as messages.
  struct WarningScope {
    CheckpointWarningHandler previous;
    ~WarningScope() { set_checkpoint_warning_handler(std::move(previous)); }
  } warnings{set_checkpoint_warning_handler([&](const std::string& m) { message("warning: " + m); })};
  if (callbacks.start) callbacks.start(opt);
  for (const std::string& line : notices) message(line);
  if (start_over) {
    message(str_cat("`force`: starting '", opt.run_dir, "' over: its earlier checkpoints and log are removed"));
    remove_run_checkpoints(opt.run_dir);
  }

  const std::string log_path = opt.run_dir + "/log.jsonl";
  // After a kill the log may run ahead of the checkpoint (and end in a torn line): cut it back.
  if (!resume_from.empty()) rewind_jsonl_log(log_path, start_step);
  JsonlLog log(log_path, /*append=*/!resume_from.empty());
  if (!resume_from.empty()) message(str_cat("resuming from ", resume_from, " at step ", start_step));
  message(str_cat(trainer.runtime().threads, " threads, ", precision_name(trainer.runtime().precision),
                  " products; model: ", config.task, ", ", config.n_layers, " layers, d_model ",
                  config.d_model, ", ", trainer.arena().numel(), " parameters; data: ", opt.data_path));

  const int64_t B = opt.batch_size, n = opt.seq_len;
  const int64_t tokens_per_step = B * n * opt.grad_accum;
  TrainSummary summary;
  EvalResult last_eval;
  bool have_eval = false;
  const auto t0 = std::chrono::steady_clock::now();
  auto make_state = [&] {
    json s = {{"options", opt.to_json()}, {"elapsed_s", elapsed_before + seconds_since(t0)},
              {"tokens_seen", trainer.steps_done() * tokens_per_step}};
    if (have_eval) s["valid"] = last_eval.to_json();
    return s;
  };
  auto run_eval = [&](int64_t step) {
    last_eval = trainer.evaluate(data, Split::Valid, B, n, opt.eval_batches, opt.mask_prob);
    have_eval = true;
    log.write({{"type", "eval"}, {"step", step}, {"split", "valid"}, {"loss", last_eval.loss},
               {"bits_per_byte", last_eval.bits_per_byte}, {"accuracy", last_eval.accuracy}});
    message(str_cat("step ", step, ": valid loss ", last_eval.loss, ", ",
                    head_info(config.task).targets == HeadTargets::kClasses
                        ? ""
                        : str_cat(last_eval.bits_per_byte, " bits/byte, "),
                    "accuracy ",
                    last_eval.accuracy));
  };

  double window_loss = 0;
  int64_t window_steps = 0;
  auto window_start = std::chrono::steady_clock::now();
  std::vector<TokenBatch> micro(size_t(opt.grad_accum));
  for (int64_t step = start_step; step < opt.steps; ++step) {
    for (int64_t m = 0; m < opt.grad_accum; ++m)
      micro[size_t(m)] = data.train_batch(B, n, opt.seed, uint64_t(step * opt.grad_accum + m),
                                          {opt.mask_prob, opt.mask_span, opt.short_seq_prob});
    const StepResult r = trainer.step(micro);
    summary.last_loss = r.loss;
    window_loss += r.loss;
    ++window_steps;
    const int64_t done = r.step;
    const double tps = double(window_steps * tokens_per_step) / std::max(1e-9, seconds_since(window_start));
    if (callbacks.step) callbacks.step(r, opt.steps, tps);
    if (done % opt.log_every == 0 || done == opt.steps) {
      log.write({{"type", "train"}, {"step", done}, {"loss", window_loss / double(window_steps)}, {"lr", r.lr},
                 {"grad_norm", r.grad_norm}, {"tokens_per_s", tps}, {"elapsed_s", elapsed_before + seconds_since(t0)}});
      window_loss = 0;
      window_steps = 0;
      window_start = std::chrono::steady_clock::now();
    }
    if (opt.eval_every > 0 && done % opt.eval_every == 0 && done != opt.steps) run_eval(done);
    if (opt.save_every > 0 && done % opt.save_every == 0 && done != opt.steps)
      trainer.save(opt.run_dir, make_state(), opt.keep_checkpoints);
  }
  if (start_step < opt.steps || !have_eval) run_eval(opt.steps);
  if (classifier) classifier_summary(trainer, data, last_eval, summary, message);
  json final_state = make_state();
  if (classifier) final_state["train"] = summary.train.to_json();  // eval's overfitting check reads it
  summary.checkpoint = trainer.save(opt.run_dir, final_state, opt.keep_checkpoints);
  summary.steps = opt.steps;
  summary.valid = last_eval;
  summary.elapsed_s = seconds_since(t0);
  summary.tokens_per_s = double((opt.steps - start_step) * tokens_per_step) / std::max(1e-9, summary.elapsed_s);
  summary.peak_rss = peak_rss_bytes();
  if (data.corpus) summary.unigram_bits = unigram_entropy_bits(data.corpus->split(Split::Train));
  json record = {{"type", "summary"}, {"precision", precision_name(trainer.runtime().precision)},
                 {"steps", summary.steps}, {"tokens_per_s", summary.tokens_per_s}, {"elapsed_s", summary.elapsed_s},
                 {"peak_rss_bytes", summary.peak_rss}, {"valid", last_eval.to_json()},
                 {"unigram_bits_per_byte", summary.unigram_bits}, {"checkpoint", summary.checkpoint}};
  if (classifier) {
    record["train"] = summary.train.to_json();
    record["majority_class"] = summary.majority_class;
    record["majority_accuracy"] = summary.majority_accuracy;
  }
  log.write(record);
  return summary;
}

}  // namespace lf
