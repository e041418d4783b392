// `linformer convert`: resizes or converts a trained checkpoint (max_len, Linformer's k and sharing,
// exact attention → Linformer) into a new run directory that `train --resume` fine-tunes. The rules
// live in src/train/convert.cpp; docs/convert.md says what each preserves. With --from it converts a
// peer's checkpoint (lucidrains, tatp22, fairseq) instead, by running the Python package's converter
// (python/linformer/convert.py), which owns those mappings.
#include <CLI/CLI.hpp>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "cli/common.h"
#include "train/convert.h"

namespace lf::cli {
namespace {

struct ConvertCommand {
  std::string checkpoint, attention_options;
  ConvertOptions opt;
  TrainFlags train;
  // --from: a peer's checkpoint, converted by `python3 -m linformer.convert` with these arguments
  std::string from, input;
  int heads = 0, input_size = 0, padding_idx = 0;
  double dropout = 0;
  bool force = false;
};

// Runs argv (argv[0] looked up in PATH) with this process's stdio; returns its exit status, or -1
// when it could not be started.
int spawn_and_wait(const std::vector<std::string>& args, bool quiet) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (quiet) {
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  }
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), ::environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return -1;
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

int run_from_peer(const CLI::App& app, const ConvertCommand& c) {
  auto given = [&](const char* flag) { return app.get_option(flag)->count() > 0; };
  LF_REQUIRE(given("--input"), "--from ", c.from, " needs --input (the peer's state dict: .safetensors, .pt or .bin)");
  for (const char* flag : {"--checkpoint", "--max-len", "--k", "--attention", "--attention-options", "--extend",
                           "--init-projection"})
    LF_REQUIRE(!given(flag), flag, " resizes our own checkpoints; with --from, convert first, then run convert "
               "--checkpoint on the result");
  const char* env = std::getenv("LINFORMER_PYTHON");
  const std::string python = env && *env ? env : "python3";
  if (spawn_and_wait({python, "-c", "import linformer.convert"}, /*quiet=*/true) != 0)
    throw Error(str_cat("convert --from needs the Python package linformer, and '", python,
                        "' cannot import linformer.convert (pip install . in the repository, or set "
                        "LINFORMER_PYTHON to an interpreter that has it)"));
  std::vector<std::string> args = {python, "-m", "linformer.convert", "--from", c.from, "--input", c.input,
                                   "--out", c.train.opt.run_dir};
  if (given("--heads")) args.insert(args.end(), {"--heads", std::to_string(c.heads)});
  if (given("--input-size")) args.insert(args.end(), {"--input-size", std::to_string(c.input_size)});
  if (given("--padding-idx")) args.insert(args.end(), {"--padding-idx", std::to_string(c.padding_idx)});
  if (given("--sharing")) args.insert(args.end(), {"--sharing", c.opt.sharing});
  if (given("--dropout")) args.insert(args.end(), {"--dropout", str_cat(c.dropout)});
  if (c.force) args.push_back("--force");
  const int status = spawn_and_wait(args, /*quiet=*/false);
  if (status < 0) throw Error(str_cat("could not run '", python, "'"));
  return status;  // the converter printed its own error line
}

int run_convert(const CLI::App& app, ConvertCommand& c) {
  auto given = [&](const char* flag) { return app.get_option(flag)->count() > 0; };
  if (given("--from")) {
    json training = c.train.given_options(app);
    training.erase("run_dir");
    LF_REQUIRE(training.empty(), "--from writes a model-only checkpoint: training options (",
               training.begin().key(), ") belong to a later train run");
    return run_from_peer(app, c);
  }
  LF_REQUIRE(given("--checkpoint"), "convert needs --checkpoint (our checkpoint to resize) or --from PEER --input "
             "FILE (a peer's checkpoint)");
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
  sub->add_option("--checkpoint", cmd->checkpoint, "checkpoint directory, or a run directory (its latest)");
  sub->add_option("--from", cmd->from, "convert a peer's checkpoint instead (runs python3 -m linformer.convert, or "
                  "$LINFORMER_PYTHON's): lucidrains | tatp22 | fairseq")
      ->check(CLI::IsMember({"lucidrains", "tatp22", "fairseq"}));
  sub->add_option("--input", cmd->input, "with --from: the peer's state dict (.safetensors, or .pt/.bin with torch)");
  sub->add_option("--heads", cmd->heads, "with --from lucidrains (required) or fairseq (without saved args): heads");
  sub->add_option("--input-size", cmd->input_size, "with --from tatp22 method=convolution: its input_size");
  sub->add_option("--padding-idx", cmd->padding_idx, "with --from fairseq: the dictionary's padding index (default 1)");
  sub->add_option("--dropout", cmd->dropout, "with --from: the converted model's dropout rates (default 0)");
  sub->add_flag("--force", cmd->force, "with --from: replace a non-empty --out");
  sub->add_option("--max-len", cmd->opt.max_len, "new max_len (positions and E/F columns; default: keep)");
  sub->add_option("--k", cmd->opt.k, "new Linformer k of every linformer layer (default: keep)");
  sub->add_option("--sharing", cmd->opt.sharing, "new E/F sharing of every linformer layer (with --from tatp22: its "
                  "parameter_sharing)")
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
