// `linformer generate`: continue a prompt with a causal LM through the library's Predictor::generate,
// which fills the model's decoding state with the prompt once (the prefill, in parallel) and then runs
// one decoding step per byte (docs/generation.md). The bytes go to stdout as they are drawn, flushed
// one by one; the prefill and decoding speeds and the cache memory go to stderr at the end.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>

#include "cli/common.h"
#include "linformer/error.h"
#include "linformer/inference.h"
#include "linformer/memory.h"

namespace lf::cli {
namespace {

struct GenerateCommand {
  std::string checkpoint, prompt, prompt_file;
  SamplingOptions sampling;
  bool quiet = false;
};

// The whole of --prompt-file, or of stdin for "-", byte for byte (a trailing newline is part of it).
std::string read_prompt_file(const std::string& path) {
  if (path == "-") {
    std::ostringstream s;
    s << std::cin.rdbuf();
    return s.str();
  }
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw IoError(str_cat("--prompt-file '", path, "' is a directory, not a file"));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(str_cat("--prompt-file: cannot open '", path, "': no such file or not readable"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw IoError(str_cat("--prompt-file '", path, "': read error"));
  return text;
}

double per_second(int64_t tokens, double seconds) { return seconds > 0 ? double(tokens) / seconds : 0.0; }

int run_generate(GenerateCommand& c, bool from_file) {
  LF_REQUIRE(c.sampling.max_new_tokens >= 0, "--max-new-tokens must be >= 0, got ", c.sampling.max_new_tokens);
  try {
    c.sampling.validate();
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(with_flag_names(e.what()));
  }
  PredictorOptions options;
  options.runtime = runtime_options();
  options.batch_size = 1;
  options.caller = "generate";
  Predictor p(c.checkpoint, options);
  LF_REQUIRE(p.objective() == "causal_lm", "generate needs a causal language model (train one with --task clm), but the "
             "checkpoint's task is '", p.config().task, "'");
  const std::string prompt = from_file ? read_prompt_file(c.prompt_file) : c.prompt;
  if (prompt.empty()) {
    if (from_file) throw IoError(str_cat("--prompt-file '", c.prompt_file, "' is empty: there is no prompt to continue"));
    throw InvalidArgument("--prompt is empty: give the text to continue");
  }
  // Positions are absolute: a longer prompt would have to lose its beginning, which generate does not do
  // silently (the library keeps the last max_len bytes; docs/generation.md).
  LF_REQUIRE(int64_t(prompt.size()) <= p.max_len(), "the prompt has ", prompt.size(), " bytes but the model's max_len is ",
             p.max_len(), ": shorten it to at most ", p.max_len(), " bytes");
  GenerationStats st;
  p.generate(prompt, c.sampling, [](std::string_view piece) {
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    return true;
  }, &st);
  std::fputc('\n', stdout);
  std::fflush(stdout);
  if (!c.quiet) {
    std::fprintf(stderr, "generate: prefill %lld tokens in %.4f s (%.1f tokens/s)%s\n", (long long)st.prefill_tokens,
                 st.prefill_seconds, per_second(st.prefill_tokens, st.prefill_seconds),
                 st.refills > 0 ? str_cat(": the prompt and ", st.refills, " refill", st.refills == 1 ? "" : "s", " at max_len").c_str() : "");
    std::fprintf(stderr, "generate: decode %lld tokens in %.4f s (%.1f tokens/s)\n", (long long)st.decode_tokens,
                 st.decode_seconds, per_second(st.decode_tokens, st.decode_seconds));
    std::fprintf(stderr, "generate: cache %s (the decoding state at its largest), %lld bytes generated\n",
                 format_bytes(st.cache_bytes).c_str(), (long long)st.generated);
  }
  return 0;
}

}  // namespace

CLI::App* add_generate_command(CLI::App& app, std::function<int()>& run) {
  auto cmd = std::make_shared<GenerateCommand>();
  cmd->sampling.max_new_tokens = 256;
  CLI::App* sub = app.add_subcommand("generate", "Continue a prompt with a causal language model, streaming the text");
  sub->add_option("--checkpoint", cmd->checkpoint, "checkpoint directory, or a run directory (its latest)")->required();
  CLI::Option* prompt = sub->add_option("--prompt", cmd->prompt, "the text to continue");
  CLI::Option* file = sub->add_option("--prompt-file", cmd->prompt_file, "read the prompt from this file (- = stdin), byte for byte");
  prompt->excludes(file);
  sub->add_option("--max-new-tokens", cmd->sampling.max_new_tokens, "bytes to generate at most (default 256)");
  add_sampling_flags(sub, cmd->sampling);
  sub->add_flag("--quiet", cmd->quiet, "print no speed and cache lines on stderr");
  run = [cmd, prompt, file] {
    LF_REQUIRE(prompt->count() + file->count() == 1, "generate needs --prompt TEXT or --prompt-file PATH");
    return run_generate(*cmd, file->count() > 0);
  };
  return sub;
}

}  // namespace lf::cli
