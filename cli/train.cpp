// `linformer train`: trains a model from flags and/or a JSON config ({"model": {...}, "train": {...}};
// flags override the file), or continues the latest checkpoint of --out with --resume. Prints
// progress, then the held-out metrics, throughput and peak memory.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <functional>
#include <memory>

#include "cli/common.h"
#include "core/join.h"
#include "linformer/runtime.h"
#include "linformer/trainer.h"
#include "model/head.h"
#include "train/run_log.h"

namespace lf::cli {
namespace {

struct TrainCommand {
  ModelFlags model;
  TrainFlags train;
  std::string config_path;
  bool resume = false, force = false;
};

// The flags that shape the model: a resumed run takes its model from the checkpoint.
constexpr const char* kModelFlags[] = {"--task", "--d-model", "--layers", "--heads", "--d-ff", "--max-len",
                                       "--attention", "--attention-options", "--post-ln", "--dropout", "--position",
                                       "--conv-kernel", "--scale-tied-output", "--classes", "--pooling"};

// A --config file: {"model": {...}, "train": {...}}, or a checkpoint's own config.json (the model
// object itself, recognised by its "d_model"), which is taken as {"model": <it>}.
json read_train_config(const std::string& path) {
  if (path.empty()) return json::object();
  json file = read_json_file(path);
  if (!file.contains("model") && !file.contains("train") && file.contains("d_model")) return json{{"model", file}};
  for (const auto& [k, v] : file.items())
    LF_REQUIRE(k == "model" || k == "train", "unknown key '", k, "' in the config file (expected \"model\", \"train\", "
               "or a checkpoint's config.json, which has \"d_model\")");
  return file;
}

// Options of one task only: given as flags for another task they are refused, set by a config file
// (which may serve several tasks) they are warned about.
void check_task_options(const CLI::App& app, const json& file, const std::string& task) {
  const HeadInfo& head = head_info(task);
  struct Rule {
    const char* flag;
    const char* key;  // in the config file's "train" or "model" object
    bool model;
    bool applies;
    const char* why;
  };
  const bool mlm = head.objective == "masked_lm", classes = head.targets == HeadTargets::kClasses;
  const Rule rules[] = {
      {"--mask-prob", "mask_prob", false, mlm, "masking is the masked LM's (--task mlm) objective"},
      {"--mask-span", "mask_span", false, mlm, "masking is the masked LM's (--task mlm) objective"},
      {"--short-seq-prob", "short_seq_prob", false, mlm, "short sequences are cut for the masked LM (--task mlm) only"},
      {"--classes", "n_classes", true, classes, "only a classifier (--task classify) has classes"},
      {"--pooling", "pooling", true, classes, "only a classifier (--task classify) pools the sequence"}};
  std::vector<std::string> refused;
  for (const Rule& r : rules) {
    if (r.applies) continue;
    if (app.get_option(r.flag)->count() > 0) {
      refused.push_back(str_cat(r.flag, " (", r.why, ")"));
    } else if (file.value(r.model ? "model" : "train", json::object()).contains(r.key)) {
      std::fprintf(stderr, "linformer: warning: the config file's \"%s\" does not apply to --task %s and is ignored\n",
                   r.key, task.c_str());
    }
  }
  LF_REQUIRE(refused.empty(), join(refused, ", "), refused.size() == 1 ? " does" : " do", " not apply to --task ", task,
             ": drop ", refused.size() == 1 ? "it" : "them");
}

int run_train(const CLI::App& app, const TrainCommand& c) {
  const json file = read_train_config(c.config_path);
  LF_REQUIRE(!(c.resume && c.force), "--force does not apply to --resume, which continues the run in --out as it "
             "is: drop --force (to start the run over, drop --resume instead)");
  if (c.resume) {
    std::vector<std::string> model_flags;
    for (const char* flag : kModelFlags)
      if (app.get_option(flag)->count() > 0) model_flags.push_back(flag);
    if (file.contains("model")) model_flags.push_back("--config's \"model\"");
    LF_REQUIRE(model_flags.empty(), "--resume continues the checkpoint's model, so ", join(model_flags, ", "),
               " cannot change it: drop ", model_flags.size() == 1 ? "it" : "them",
               ", or start a new run in another --out");
  }
  TrainOptions opt = c.train.resolve(app, file);
  opt.force = c.force;
  const bool steps_given = app.get_option("--steps")->count() > 0 || file.value("train", json::object()).contains("steps");
  if (c.resume && !steps_given) opt.steps = 0;  // resume to the saved step count
  const bool warmup_given =
      app.get_option("--warmup")->count() > 0 || file.value("train", json::object()).contains("warmup_steps");
  if (!warmup_given) opt.warmup_steps = std::min(opt.warmup_steps, opt.steps / 10);  // short runs still warm up
  json model_file = file;
  if (!model_file.contains("model") || !model_file["model"].contains("max_len")) model_file["model"]["max_len"] = opt.seq_len;
  ModelConfig config;
  json resume_changes = json::object();
  if (c.resume) {
    // Everything the user set, to be checked against the saved options (train() refuses what cannot change).
    resume_changes = file.value("train", json::object());
    resume_changes.update(c.train.given_options(app));
    resume_changes.erase("run_dir");
    resume_changes.erase("steps");  // opt.steps
  } else {
    const json& fm = model_file["model"];
    const std::string task = app.get_option("--task")->count() > 0 || !fm.contains("task") || !fm["task"].is_string()
                                 ? c.model.task
                                 : fm["task"].get<std::string>();
    if (HeadRegistry::instance().has(task)) check_task_options(app, file, task);  // else resolve names it
    if (head_info(c.model.task).targets == HeadTargets::kClasses && !model_file["model"].contains("class_names")) {
      // The classes are the training split's labels (saved as the label map); --classes may only confirm them.
      opt.validate();
      const std::vector<std::string> classes = TaskData::load(c.model.task, opt).class_map;
      const int64_t given = app.get_option("--classes")->count() ? app.get_option("--classes")->as<int64_t>()
                                                                 : model_file["model"].value("n_classes", int64_t(0));
      LF_REQUIRE(given == 0 || given == int64_t(classes.size()), "--classes ", given, " but the training split of ",
                 opt.data_path, " has ", classes.size(), " labels (", join(classes),
                 "): leave --classes out, the classes are the labels");
      model_file["model"]["n_classes"] = classes.size();
      model_file["model"]["class_names"] = classes;
    }
    config = c.model.resolve(app, model_file);
    // A new masked LM also learns texts shorter than its sequences, which predict runs at their own
    // length: without short crops the default model filled every mask of a short sentence with a space.
    if (head_info(config.task).objective == "masked_lm" && app.get_option("--short-seq-prob")->count() == 0 &&
        !file.value("train", json::object()).contains("short_seq_prob"))
      opt.short_seq_prob = 0.1;
  }
  // Progress on stderr: a bar on a terminal, a line every log_every steps otherwise.
  std::unique_ptr<Progress> progress;
  TrainCallbacks callbacks;
  callbacks.start = [&](const TrainOptions& resolved) { progress = std::make_unique<Progress>(resolved.log_every); };
  callbacks.message = [&](const std::string& text) {
    const std::string line = with_flag_names(text);  // the library's `lr` is --lr here
    if (progress)
      progress->message(line);
    else
      std::fprintf(stderr, "%s\n", line.c_str());
  };
  callbacks.step = [&](const StepResult& r, int64_t total, double tokens_per_s) {
    progress->update(r.step, total, r.loss, tokens_per_s);
  };
  const TrainSummary s = train(config, opt, c.resume, callbacks, runtime_options(), resume_changes);
  progress->finish();
  std::printf("trained %lld steps in %s: %.0f tokens/s, peak memory %s (RSS)\n", (long long)s.steps,
              format_hms(s.elapsed_s).c_str(), s.tokens_per_s, human_bytes(s.peak_rss).c_str());
  // The summary tells a classifier (it has a majority baseline) from an LM, also for a resumed run,
  // whose config is the checkpoint's and not read here; only an LM's corpus has a unigram baseline.
  if (s.majority_accuracy >= 0) {
    std::printf("valid: loss %.4f nats, accuracy %.4f over %lld examples\n", s.valid.loss, s.valid.accuracy,
                (long long)s.valid.count);
    std::printf("train: accuracy %.4f over %lld examples\n", s.train.accuracy, (long long)s.train.count);
    std::printf("baseline: always answering the most frequent class '%s' scores %.4f on valid\n",
                s.majority_class.c_str(), s.majority_accuracy);
  } else
    std::printf("valid: loss %.4f nats, %.4f bits/byte, accuracy %.4f over %lld scored tokens\n", s.valid.loss,
                s.valid.bits_per_byte, s.valid.accuracy, (long long)s.valid.count);
  if (s.unigram_bits > 0)
    std::printf("baseline: the training text's byte-unigram entropy is %.4f bits/byte\n", s.unigram_bits);
  std::printf("checkpoint: %s\n", s.checkpoint.c_str());
  return 0;
}

}  // namespace

CLI::App* add_train_command(CLI::App& app, std::function<int()>& run) {
  auto cmd = std::make_shared<TrainCommand>();
  CLI::App* sub = app.add_subcommand("train", "Train a model (masked LM, causal LM or classifier) on a data file");
  sub->add_option("--config", cmd->config_path, "JSON file: {\"model\": {...}, \"train\": {...}}; flags override it");
  sub->add_flag("--resume", cmd->resume,
                "continue the latest checkpoint in --out (its model config and options; --steps, --log-every, "
                "--eval-every, --eval-batches, --save-every, --keep-checkpoints, --checkpoint-activations and --data "
                "(the same data, moved) may change)");
  sub->add_flag("--force", cmd->force,
                "train in an --out holding files linformer did not write (they are left untouched), or start the run "
                "in --out over (its checkpoints and log are removed) instead of refusing");
  cmd->model.add(*sub);
  cmd->train.add(*sub);
  run = [sub, cmd] { return run_train(*sub, *cmd); };
  return sub;
}

}  // namespace lf::cli
