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
  bool resume = false;
};

int run_train(const CLI::App& app, const TrainCommand& c) {
  const json file = c.config_path.empty() ? json::object() : read_json_file(c.config_path);
  LF_REQUIRE(file.is_object(), "the config file must hold a JSON object with \"model\" and/or \"train\"");
  for (const auto& [k, v] : file.items())
    LF_REQUIRE(k == "model" || k == "train", "unknown key '", k, "' in the config file (expected \"model\", \"train\")");
  TrainOptions opt = c.train.resolve(app, file);
  const bool steps_given = app.get_option("--steps")->count() > 0 || file.value("train", json::object()).contains("steps");
  if (c.resume && !steps_given) opt.steps = 0;  // resume to the saved step count
  const bool warmup_given =
      app.get_option("--warmup")->count() > 0 || file.value("train", json::object()).contains("warmup_steps");
  if (!warmup_given) opt.warmup_steps = std::min(opt.warmup_steps, opt.steps / 10);  // short runs still warm up
  json model_file = file;
  if (!model_file.contains("model") || !model_file["model"].contains("max_len")) model_file["model"]["max_len"] = opt.seq_len;
  ModelConfig config;
  if (!c.resume) {
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
  }
  // Progress on stderr: a bar on a terminal, a line every log_every steps otherwise.
  std::unique_ptr<Progress> progress;
  TrainCallbacks callbacks;
  callbacks.start = [&](const TrainOptions& resolved) { progress = std::make_unique<Progress>(resolved.log_every); };
  callbacks.message = [&](const std::string& line) { progress->message(line); };
  callbacks.step = [&](const StepResult& r, int64_t total, double tokens_per_s) {
    progress->update(r.step, total, r.loss, tokens_per_s);
  };
  const TrainSummary s = train(config, opt, c.resume, callbacks, runtime_options());
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
  sub->add_flag("--resume", cmd->resume, "continue the latest checkpoint in --out (its model config and options)");
  cmd->model.add(*sub);
  cmd->train.add(*sub);
  run = [sub, cmd] { return run_train(*sub, *cmd); };
  return sub;
}

}  // namespace lf::cli
