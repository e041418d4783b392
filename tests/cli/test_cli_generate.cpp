// `linformer generate` run as a user runs it: its stdout is the Predictor's generation for the same
// sampling flags (from --prompt, --prompt-file and stdin alike), then a newline; stderr holds the
// prefill, decoding and cache lines (none with --quiet); a stop string ends it. Its refusals are rows
// of docs/bad_input.md (tests/cli/test_bad_input.cpp).
#include <gtest/gtest.h>

#include <cctype>
#include <filesystem>
#include <regex>
#include <string>

#include "cli/cli_runner.h"
#include "linformer/inference.h"
#include "test_util.h"
#include "tiny_model_config.h"

namespace lf {
namespace {

using test::CliResult;
using test::write_file;

class CliGenerate : public test::TempDirTest {
 protected:
  CliGenerate() : TempDirTest("cli_generate") {}
  void SetUp() override {
    TempDirTest::SetUp();
    ModelConfig c = test::small_byte_model_config("clm", "full", 2, 24);
    c.conv_kernel = 5;
    test::save_random_checkpoint((dir_ / "clm").string(), c, 3);
  }
  CliResult run(const std::string& args, const std::string& prefix = "") {
    return test::run_linformer("cd '" + dir_.string() + "' && " + prefix, args, path("stderr.txt"));
  }
  std::string library(const std::string& prompt, const SamplingOptions& s) {
    PredictorOptions o;
    o.batch_size = 1;
    Predictor p((dir_ / "clm").string(), o);
    return p.generate(prompt, s);
  }
};

TEST_F(CliGenerate, StreamsThePredictorsTextAndReportsItsSpeed) {
  SamplingOptions s;
  s.temperature = 20;  // a random model's logits are peaked: spread them so the seed matters
  s.seed = 5;
  s.max_new_tokens = 40;  // past max_len 24 from a 4-byte prompt: refills after tokens 21 and 34
  const std::string want = library("once", s);
  ASSERT_EQ(want.size(), 40u);
  const std::string flags = " --max-new-tokens 40 --temperature 20 --seed 5";
  const CliResult r = run("generate --checkpoint clm --prompt once" + flags);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, want + "\n");
  // prefill: the 4-byte prompt and two refills of 12 bytes; decode: the other 40 − 1 − 2 tokens.
  EXPECT_TRUE(std::regex_search(r.err, std::regex(R"(generate: prefill 28 tokens in [0-9.]+ s \([0-9.]+ tokens/s\): the prompt and 2 refills at max_len)")))
      << r.err;
  EXPECT_TRUE(std::regex_search(r.err, std::regex(R"(generate: decode 37 tokens in [0-9.]+ s \([0-9.]+ tokens/s\))"))) << r.err;
  EXPECT_TRUE(std::regex_search(r.err, std::regex(R"(generate: cache [0-9.]+ [KMG]?i?B .*, 40 bytes generated)"))) << r.err;

  write_file(dir_ / "prompt.txt", "once");
  const CliResult from_file = run("generate --checkpoint clm --prompt-file prompt.txt --quiet" + flags);
  ASSERT_EQ(from_file.status, 0) << from_file.err;
  EXPECT_EQ(from_file.out, r.out);
  EXPECT_EQ(from_file.err, "");  // --quiet
  const CliResult from_stdin = run("generate --checkpoint clm --prompt-file - --quiet" + flags, "printf once |");
  ASSERT_EQ(from_stdin.status, 0) << from_stdin.err;
  EXPECT_EQ(from_stdin.out, r.out);
}

TEST_F(CliGenerate, StopStringsAndGreedy) {
  SamplingOptions greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = 20;
  const std::string g = library("the cat", greedy);
  const CliResult r = run("generate --checkpoint clm --prompt 'the cat' --max-new-tokens 20 --temperature 0 --seed 9 --quiet");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, g + "\n");
  // A stop string the shell passes as it is: the first letter or digit the model drew after the second.
  size_t at = 2;
  while (at < g.size() && !std::isalnum(static_cast<unsigned char>(g[at]))) ++at;
  if (at == g.size()) GTEST_SKIP() << "the random model drew no letter or digit to stop at";
  const std::string stop = g.substr(at, 1);
  greedy.stop = {stop};
  const CliResult stopped =
      run("generate --checkpoint clm --prompt 'the cat' --max-new-tokens 20 --temperature 0 --quiet --stop '" + stop + "'");
  ASSERT_EQ(stopped.status, 0) << stopped.err;
  EXPECT_EQ(stopped.out, library("the cat", greedy) + "\n");
  EXPECT_EQ(stopped.out, g.substr(0, g.find(stop) + stop.size()) + "\n");
  const CliResult none = run("generate --checkpoint clm --prompt 'the cat' --max-new-tokens 0 --quiet");
  ASSERT_EQ(none.status, 0) << none.err;
  EXPECT_EQ(none.out, "\n");
}

}  // namespace
}  // namespace lf
