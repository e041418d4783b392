// `linformer convert`: resizes or converts a trained checkpoint (max_len, Linformer's k and sharing,
// exact attention → Linformer) into a new run directory that `train --resume` fine-tunes. The rules
// live in src/train/convert.cpp; docs/convert.md says what each preserves.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <functional>

#include "cli/common.h"
#include "train/convert.h"

namespace lf::cli {
namespace {

struct ConvertCommand {
  std::string checkpoint, attention_options;
  ConvertOptions opt;
  TrainFlags train;
};

int run_convert(const CLI::App& app, ConvertCommand& c) {
  auto given = [&](const char* flag) { return app.get_option(flag)->count() > 0; };
  LF_REQUIRE(!given("--max-len") || c.opt.max_len > 0, "--max-len must be positive, got ", c.opt.max_len);
  LF_REQUIRE(!given("--k") || c.opt.k > 0, "--k must be positive, got ", c.opt.k);
  if (!c.attention_options.empty()) {
    try {
      c.opt.attention_options = json::parse(c.attention_options);
    } catch (const json::parse_error& e) {
      throw InvalidArgument(str_cat("--attention-options is not valid JSON: ", e.what()));
    }
  }
  // The training options given as flags override the source's; --out names the new run instead.
  const TrainOptions all = c.train.resolve(app, json::object());
  json overrides = c.train.given_options(app);
  overrides.erase("run_dir");
  const ConvertResult r = convert_checkpoint(c.checkpoint, all.run_dir, c.opt, overrides, runtime_options());
  std::printf("converted %s\n", r.source_dir.c_str());
  for (const std::string& note : r.report.notes) std::printf("  %s\n", note.c_str());
  std::printf("every other parameter copied unchanged\n");
  std::printf("checkpoint: %s (step 0, fresh optimizer state)\n", r.checkpoint.c_str());
  std::printf("fine-tune: linformer train --resume --out %s --steps N\n", all.run_dir.c_str());
  return 0;
}

}  // namespace

CLI::App* add_convert_command(CLI::App& app, std::function<int()>& run) {
  auto cmd = std::make_shared<ConvertCommand>();
  CLI::App* sub = app.add_subcommand(
      "convert", "Resize or convert a trained model (max_len, Linformer k and sharing, exact → Linformer) into a new run");
  sub->add_option("--checkpoint", cmd->checkpoint, "checkpoint directory, or a run directory (its latest)")->required();
  sub->add_option("--max-len", cmd->opt.max_len, "new max_len (positions and E/F columns; default: keep)");
  sub->add_option("--k", cmd->opt.k, "new Linformer k of every linformer layer (default: keep)");
  sub->add_option("--sharing", cmd->opt.sharing, "new E/F sharing of every linformer layer")
      ->check(CLI::IsMember({"none", "headwise", "kv", "layerwise"}));
  sub->add_option("--attention", cmd->opt.attention, "new kind of every layer: full/flash layers become linformer, full or flash");
  sub->add_option("--attention-options", cmd->attention_options, "options merged over every layer's, as JSON");
  sub->add_option("--extend", cmd->opt.extend,
                  "rows/columns a longer max_len adds to positions and learned E/F: tile (default) | init")
      ->check(CLI::IsMember({"tile", "init"}));
  sub->add_option("--init-projection", cmd->opt.init_projection,
                  "E/F of an exact layer made linformer: pool (mean pooling; identity at k = max_len; default) | init")
      ->check(CLI::IsMember({"pool", "init"}));
  cmd->train.add(*sub);  // --out NEW_RUN and the converted run's training options (default: the source's)
  sub->get_option("--out")->required();
  run = [sub, cmd] { return run_convert(*sub, *cmd); };
  return sub;
}

}  // namespace lf::cli
