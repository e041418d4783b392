// `linformer eval`: loss, bits per byte and accuracy of a checkpoint on a split of a data file (by
// default the data and held-out fractions it was trained with).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <functional>

#include "cli/common.h"
#include "linformer/memory.h"
#include "linformer/trainer.h"
#include "model/head.h"
#include "train/metrics.h"

namespace lf::cli {
namespace {

struct EvalCommand {
  std::string checkpoint, data, split = "valid";
  int64_t batch_size = 0, seq_len = 0, batches = 50, max_bytes = -1;
  double valid_fraction = -1, test_fraction = -1, mask_prob = -1;
  bool as_json = false;
};

constexpr size_t kMaxPrintedClasses = 20;

// The majority baseline, per-class precision / recall / F1 with support, macro-F1 and the confusion
// matrix, in columns as wide as the longest class name.
void print_classification_report(const ClassificationReport& r, const std::vector<std::string>& names) {
  int w = 5;  // "class"
  for (const std::string& n : names) w = std::max(w, int(n.size()));
  if (r.majority_class >= 0)
    std::printf("baseline: always answering the most frequent training class '%s' scores %.4f\n",
                names[size_t(r.majority_class)].c_str(), r.majority_accuracy);
  std::printf("macro-F1 %.4f\n", r.macro_f1);
  std::printf("%-*s  %7s  %9s  %6s  %6s\n", w, "class", "support", "precision", "recall", "f1");
  for (size_t k = 0; k < names.size(); ++k) {
    const ClassMetrics& m = r.classes[k];
    std::printf("%-*s  %7lld  %9.4f  %6.4f  %6.4f\n", w, names[k].c_str(), (long long)m.support, m.precision,
                m.recall, m.f1);
  }
  const size_t C = names.size();
  if (C > kMaxPrintedClasses) {
    std::printf("confusion matrix: %zu classes, too wide to print: see --json\n", C);
    return;
  }
  std::printf("confusion matrix (rows: true class, columns: predicted):\n%-*s", w, "");
  int cw = 5;
  for (const std::string& n : names) cw = std::max(cw, int(n.size()));
  for (const std::string& n : names) std::printf("  %*s", cw, n.c_str());
  std::printf("\n");
  for (size_t t = 0; t < C; ++t) {
    std::printf("%-*s", w, names[t].c_str());
    for (size_t p = 0; p < C; ++p) std::printf("  %*lld", cw, (long long)r.confusion[t * C + p]);
    std::printf("\n");
  }
}

int run_eval(const CLI::App& app, const EvalCommand& c) {
  // A flag that was given must be valid: negative or zero values are refused, not read as "default".
  auto given = [&](const char* flag) { return app.get_option(flag)->count() > 0; };
  LF_REQUIRE(!given("--batch-size") || c.batch_size > 0, "--batch-size must be positive, got ", c.batch_size);
  LF_REQUIRE(!given("--seq-len") || c.seq_len > 0, "--seq-len must be positive, got ", c.seq_len);
  LF_REQUIRE(!given("--max-bytes") || c.max_bytes >= 0, "--max-bytes must not be negative, got ", c.max_bytes);
  LF_REQUIRE(!given("--valid-fraction") || c.valid_fraction >= 0, "--valid-fraction must not be negative, got ",
             c.valid_fraction);
  LF_REQUIRE(!given("--test-fraction") || c.test_fraction >= 0, "--test-fraction must not be negative, got ",
             c.test_fraction);
  LF_REQUIRE(!given("--mask-prob") || (c.mask_prob > 0 && c.mask_prob < 1), "--mask-prob must be in (0, 1), got ",
             c.mask_prob);
  LoadedModel m = open_model(c.checkpoint);
  LF_REQUIRE(c.seq_len <= m.config.max_len, "--seq-len ", c.seq_len, " exceeds the model's max_len ", m.config.max_len);
  TrainOptions opt = TrainOptions::from_json(m.trainer_state.value("options", json::object()));
  opt.data_path = checkpoint_data_path(opt.data_path, c.data);
  if (c.max_bytes >= 0) opt.max_bytes = c.max_bytes;
  if (c.valid_fraction >= 0) opt.valid_fraction = c.valid_fraction;
  if (c.test_fraction >= 0) opt.test_fraction = c.test_fraction;
  if (c.batch_size > 0) opt.batch_size = c.batch_size;
  if (c.seq_len > 0) opt.seq_len = c.seq_len;
  if (given("--mask-prob")) opt.mask_prob = c.mask_prob;
  opt.seq_len = std::min(opt.seq_len, m.config.max_len);
  LF_REQUIRE(opt.batch_size > 0 && c.batches > 0, "--batch-size and --batches must be positive");
  build_model(m, opt.batch_size, opt.seq_len, data_file_bytes(opt.data_path, opt.max_bytes), "eval",
              "reduce --batch-size or --seq-len, or evaluate a smaller model");
  const Split split = c.split == "test" ? Split::Test : c.split == "train" ? Split::Train : Split::Valid;
  const bool classifier = m.model->head().info().targets == HeadTargets::kClasses;
  const TaskData data = TaskData::load(m.config.task, opt, classifier ? m.config.class_map() : std::vector<std::string>{});
  require_split_sizes(data, opt, split, /*training=*/false);
  const EvalResult r = evaluate(*m.model, data, split, opt.batch_size, opt.seq_len, c.batches, opt.mask_prob);
  if (!classifier) {
    if (c.as_json) {
      json j = r.to_json();
      j["split"] = c.split;
      j["checkpoint"] = m.dir;
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("%s on %s (%s split): loss %.4f nats, %.4f bits/byte, accuracy %.4f over %lld scored tokens\n",
                  m.dir.c_str(), opt.data_path.c_str(), c.split.c_str(), r.loss, r.bits_per_byte, r.accuracy,
                  (long long)r.count);
    }
    return 0;
  }
  const std::vector<std::string> names = m.config.class_map();
  const ClassificationReport report = classification_report(
      r.confusion, m.config.n_classes, most_frequent_class(data.train_examples->labels(), m.config.n_classes));
  if (c.as_json) {
    json j = r.to_json();
    j["split"] = c.split;
    j["checkpoint"] = m.dir;
    j["classification"] = report_to_json(report, names);
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s on %s (%s split: %s examples): loss %.4f nats, accuracy %.4f over %lld examples\n",
                m.dir.c_str(), opt.data_path.c_str(), c.split.c_str(),
                split == Split::Train ? "the training" : "the held-out", r.loss, r.accuracy, (long long)r.count);
    print_classification_report(report, names);
  }
  // The training accuracy the run saved at its end tells a memorised training set from a hard task.
  const json saved_train = m.trainer_state.value("train", json::object());
  if (split != Split::Train && saved_train.contains("accuracy") && saved_train["accuracy"].is_number() &&
      looks_overfitted(saved_train["accuracy"].get<double>(), r.accuracy, report.majority_accuracy))
    std::fprintf(stderr, "linformer: warning: %s\n",
                 overfitting_warning(saved_train["accuracy"].get<double>(), r.accuracy, report.majority_accuracy,
                                     names[size_t(report.majority_class)], c.split)
                     .c_str());
  return 0;
}

}  // namespace

CLI::App* add_eval_command(CLI::App& app, std::function<int()>& run) {
  auto cmd = std::make_shared<EvalCommand>();
  CLI::App* sub = app.add_subcommand("eval", "Evaluate a checkpoint: loss, bits per byte, accuracy");
  sub->add_option("--checkpoint", cmd->checkpoint, "checkpoint directory, or a run directory (its latest)")->required();
  sub->add_option("--data", cmd->data, "data file (default: the one it was trained on)");
  sub->add_option("--split", cmd->split, "valid | test | train (default valid; classify: valid and test are the held-out examples)")->check(CLI::IsMember({"valid", "test", "train"}));
  sub->add_option("--batch-size", cmd->batch_size, "sequences per batch (default: training's)");
  sub->add_option("--seq-len", cmd->seq_len, "tokens per sequence (default: training's)");
  sub->add_option("--batches", cmd->batches, "at most this many batches (default 50)");
  sub->add_option("--max-bytes", cmd->max_bytes, "read at most this many bytes of the data");
  sub->add_option("--valid-fraction", cmd->valid_fraction, "held-out fraction for validation (default: training's)");
  sub->add_option("--test-fraction", cmd->test_fraction, "held-out fraction for test (default: training's)");
  sub->add_option("--mask-prob", cmd->mask_prob,
                  "MLM: fraction of positions masked and scored (default: training's; give 0.15 to compare models "
                  "trained at other rates)");
  sub->add_flag("--json", cmd->as_json, "print one JSON object");
  run = [sub, cmd] { return run_eval(*sub, *cmd); };
  return sub;
}

}  // namespace lf::cli
