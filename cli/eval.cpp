// `linformer eval`: loss, bits per byte and accuracy of a checkpoint on a split of a data file (by
// default the data and held-out fractions it was trained with).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <functional>

#include "cli/common.h"
#include "linformer/memory.h"
#include "linformer/trainer.h"
#include "model/head.h"

namespace lf::cli {
namespace {

struct EvalCommand {
  std::string checkpoint, data, split = "valid";
  int64_t batch_size = 0, seq_len = 0, batches = 50, max_bytes = -1;
  double valid_fraction = -1, test_fraction = -1, mask_prob = -1;
  bool as_json = false;
};

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
  const TaskData data = TaskData::load(m.config.task, opt);
  require_split_sizes(data, opt, split, /*training=*/false);
  const EvalResult r = evaluate(*m.model, data, split, opt.batch_size, opt.seq_len, c.batches, opt.mask_prob);
  if (c.as_json) {
    json j = r.to_json();
    j["split"] = c.split;
    j["checkpoint"] = m.dir;
    std::printf("%s\n", j.dump().c_str());
  } else if (m.model->head().info().targets == HeadTargets::kClasses) {
    std::printf("%s on %s (held-out examples): loss %.4f nats, accuracy %.4f over %lld examples\n", m.dir.c_str(),
                opt.data_path.c_str(), r.loss, r.accuracy, (long long)r.count);
  } else {
    std::printf("%s on %s (%s split): loss %.4f nats, %.4f bits/byte, accuracy %.4f over %lld scored tokens\n",
                m.dir.c_str(), opt.data_path.c_str(), c.split.c_str(), r.loss, r.bits_per_byte, r.accuracy,
                (long long)r.count);
  }
  return 0;
}

}  // namespace

CLI::App* add_eval_command(CLI::App& app, std::function<int()>& run) {
  auto cmd = std::make_shared<EvalCommand>();
  CLI::App* sub = app.add_subcommand("eval", "Evaluate a checkpoint: loss, bits per byte, accuracy");
  sub->add_option("--checkpoint", cmd->checkpoint, "checkpoint directory, or a run directory (its latest)")->required();
  sub->add_option("--data", cmd->data, "data file (default: the one it was trained on)");
  sub->add_option("--split", cmd->split, "valid | test | train (default valid)")->check(CLI::IsMember({"valid", "test", "train"}));
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
