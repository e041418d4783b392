// The `linformer` command line, run as a user runs it (the built binary, LINFORMER_CLI_PATH): what it
// prints and the exit status. Bad input must end in exit status 2 and exactly one line
// `linformer: error: ...` on stderr that names the problem, never an abort or a stack of messages.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "attention/kind_rules.h"
#include "cli/cli_runner.h"
#include "linformer/attention.h"
#include "linformer/runtime.h"

namespace {

using Result = lf::test::CliResult;
using lf::test::split_lines;
std::vector<std::string> lines(const std::string& text) { return split_lines(text); }

// Runs `env LINFORMER_CLI_PATH args`; args are shell words (quote JSON).
Result run_cli(const std::string& args, const std::string& env = "") {
  return lf::test::run_linformer(env, args, ::testing::TempDir() + "linformer_cli_stderr_" + std::to_string(::getpid()) + ".txt");
}

TEST(Cli, ListAttentionPrintsOneKindPerLine) {
  const Result r = run_cli("info --list-attention");
  ASSERT_EQ(r.status, 0) << r.err;
  const std::vector<std::string> kinds = lines(r.out);
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), "full"), kinds.end()) << r.out;
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), "linformer"), kinds.end()) << r.out;
  for (const std::string& k : kinds) EXPECT_EQ(k.find(' '), std::string::npos) << "not a bare name: '" << k << "'";
  EXPECT_EQ(r.err, "");
}

TEST(Cli, ListAttentionVerboseShowsSupports) {
  const Result r = run_cli("info --list-attention --verbose");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("linformer"), std::string::npos);
  EXPECT_NE(r.out.find("supports:"), std::string::npos) << r.out;
}

// The option-dependent rules the validators enforce follow each kind's supports, under its name: each
// one printed is one the validator refuses (checked here by building the refused configuration).
TEST(Cli, ListAttentionVerboseStatesTheOptionDependentRules) {
  const Result r = run_cli("info --list-attention --verbose");
  ASSERT_EQ(r.status, 0) << r.err;
  // The block of one kind: its name's line and the indented lines under it.
  auto block_of = [&](const std::string& kind) {
    size_t at = ("\n" + r.out).find("\n" + kind + "\n");
    if (at == std::string::npos) return std::string();
    size_t end = r.out.find('\n', at);
    while (end != std::string::npos && r.out.compare(end + 1, 2, "  ") == 0) end = r.out.find('\n', end + 1);
    return r.out.substr(at, end == std::string::npos ? std::string::npos : end - at);
  };
  const std::string mixer = block_of("mixer"), linear = block_of("linear"), performer = block_of("performer");
  EXPECT_NE(mixer.find("rule: causal only with hidden = 0"), std::string::npos) << mixer;
  EXPECT_THROW(lf::validate_attention({"mixer", {8, 2, 16, true, 0}, {{"hidden", 4}}, ""}), lf::InvalidArgument);
  EXPECT_NE(block_of("reformer").find("rule: causal only with chunking = bucket"), std::string::npos);
  EXPECT_THROW(lf::validate_attention({"reformer", {8, 2, 16, true, 0}, {{"chunking", "global"}}, ""}), lf::InvalidArgument);
  EXPECT_NE(block_of("bigbird").find("rule: window_blocks odd unless causal"), std::string::npos);
  EXPECT_THROW(lf::validate_attention({"bigbird", {8, 2, 16, false, 0}, {{"window_blocks", 2}}, ""}), lf::InvalidArgument);
  EXPECT_NE(block_of("aft_conv").find("rule: window odd unless causal"), std::string::npos);
  EXPECT_THROW(lf::validate_attention({"aft_conv", {8, 2, 16, false, 0}, {{"window", 4}}, ""}), lf::InvalidArgument);
  EXPECT_NE(block_of("linformer").find("rule: k at most max_len"), std::string::npos);
  const std::vector<std::string> cross_kinds = {linear, performer};
  for (const std::string& kind : cross_kinds)
    EXPECT_NE(kind.find("rule: causal cross-attention needs a context as long as the query (m = n)"),
              std::string::npos) << kind;
  // A kind without rules prints none, and the derived padding rule goes with the flag.
  EXPECT_EQ(block_of("local").find("rule:"), std::string::npos) << block_of("local");
  // Every built-in kind is padding-invariant (AllKinds/PaddedEqualsAlone), so none prints the padding
  // rule; a kind that is not gets it.
  static const std::vector<std::string> invariant_kinds = {"reformer", "sinkhorn", "bigbird"};  // named: no braced list in a range-for (GCC 12 ASan)
  for (const std::string& kind : invariant_kinds)
    EXPECT_EQ(block_of(kind).find("rule: a padded sample's outputs differ"), std::string::npos) << block_of(kind);
  lf::AttentionKindInfo not_invariant = lf::AttentionRegistry::instance().get("local").info;
  not_invariant.support.padding_invariant = false;
  const std::vector<std::string> rules = lf::attention_kind_rules(not_invariant);
  EXPECT_NE(std::find_if(rules.begin(), rules.end(),
                         [](const std::string& rule) { return rule.find("a padded sample's outputs differ") == 0; }),
            rules.end());
}

TEST(Cli, DescribesALinformerLayer) {
  const Result r = run_cli("info --kind linformer --d-model 64 --heads 4 --max-len 128 --n 64 --options '{\"k\": 32}'");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("\"k\":32"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"sharing\":"), std::string::npos) << "defaults not filled in:\n" << r.out;
  EXPECT_NE(r.out.find("parameters: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("forward FLOPs (B=1, n=64)"), std::string::npos) << r.out;
}

TEST(Cli, DescribesAFullLayer) {
  const Result r = run_cli("info --kind full --d-model 32 --heads 2 --max-len 16");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("kind: full"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("parameters: "), std::string::npos) << r.out;
}

TEST(Cli, VersionAndHelpExitZero) {
  const Result v = run_cli("--version");
  EXPECT_EQ(v.status, 0) << v.err;
  EXPECT_EQ(v.out.rfind("linformer ", 0), 0u) << v.out;
  const Result h = run_cli("info --help");
  EXPECT_EQ(h.status, 0) << h.err;
  EXPECT_NE(h.out.find("--list-attention"), std::string::npos) << h.out;
}

TEST(Cli, ThreadsFlagOverridesEnvironment) {
  const Result r = run_cli("--threads 3 info", "LINFORMER_NUM_THREADS=abc");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("3 threads"), std::string::npos) << r.out;
  const Result after = run_cli("info --threads 2");  // global options may follow the subcommand
  ASSERT_EQ(after.status, 0) << after.err;
  EXPECT_NE(after.out.find("2 threads"), std::string::npos) << after.out;
}

TEST(Cli, InfoNamesThePrecisionAndBf16Support) {
  const Result r = run_cli("info");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("fp32 products"), std::string::npos) << r.out;
  const bool bf16 = lf::precision_unsupported_reason(lf::Precision::bf16).empty();
  EXPECT_NE(r.out.find(bf16 ? "bf16: available" : "bf16: not available"), std::string::npos) << r.out;
  const Result off = run_cli("info", "ONEDNN_MAX_CPU_ISA=AVX2");
  ASSERT_EQ(off.status, 0) << off.err;
  EXPECT_NE(off.out.find("bf16: not available"), std::string::npos) << off.out;
  if (bf16) {
    const Result on = run_cli("--precision bf16 info");
    ASSERT_EQ(on.status, 0) << on.err;
    EXPECT_NE(on.out.find("bf16 products"), std::string::npos) << on.out;
  }
}

TEST(Cli, InfoSaysWhetherInt8IsAvailable) {
  const bool int8 = lf::precision_unsupported_reason(lf::Precision::int8).empty();
  const Result r = run_cli("info");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find(int8 ? "int8: available for inference" : "int8: not available"), std::string::npos) << r.out;
  // oneDNN's own switch: a CPU below AVX512-VNNI (AVX512_CORE has no VNNI) has none.
  for (const char* isa : {"ONEDNN_MAX_CPU_ISA=AVX2", "ONEDNN_MAX_CPU_ISA=AVX512_CORE"}) {
    const Result off = run_cli("info", isa);
    ASSERT_EQ(off.status, 0) << off.err;
    EXPECT_NE(off.out.find("int8: not available: int8 products need a CPU with AVX512-VNNI"), std::string::npos)
        << isa << ":\n" << off.out;
  }
  if (int8) {
    const Result on = run_cli("--precision int8 info");
    ASSERT_EQ(on.status, 0) << on.err;
    EXPECT_NE(on.out.find("int8 products"), std::string::npos) << on.out;
  }
}

// The CLI re-executes itself with 1000 spins unless the environment chose a policy (cli/main.cpp).
TEST(Cli, PassiveWaitUnlessTheEnvironmentSetsOne) {
  const Result plain = run_cli("info", "env -u GOMP_SPINCOUNT -u OMP_WAIT_POLICY");
  ASSERT_EQ(plain.status, 0) << plain.err;
  EXPECT_NE(plain.out.find("GOMP_SPINCOUNT=1000, OMP_WAIT_POLICY=(unset)"), std::string::npos) << plain.out;
  const Result own = run_cli("info", "env -u OMP_WAIT_POLICY GOMP_SPINCOUNT=300000");
  ASSERT_EQ(own.status, 0) << own.err;
  EXPECT_NE(own.out.find("GOMP_SPINCOUNT=300000, OMP_WAIT_POLICY=(unset)"), std::string::npos) << own.out;
  const Result passive = run_cli("info", "env -u GOMP_SPINCOUNT OMP_WAIT_POLICY=passive");
  ASSERT_EQ(passive.status, 0) << passive.err;
  EXPECT_NE(passive.out.find("GOMP_SPINCOUNT=(unset), OMP_WAIT_POLICY=passive"), std::string::npos) << passive.out;
}

struct BadInput {
  const char* what;
  const char* args;
  const char* env;
  std::vector<const char*> mentions;  // each must appear in the error line
};

// Each case: exit status 2, one error line on stderr naming what it must, nothing on stdout.
void expect_bad_input(const std::vector<BadInput>& cases);

TEST(Cli, BadInputExitsTwoWithOneErrorLine) {
  const std::vector<BadInput> cases = {
      {"unknown flag", "info --bogus", "", {"--bogus"}},
      {"unknown global flag", "--bogus info", "", {"--bogus"}},
      {"no subcommand", "", "", {"subcommand"}},
      {"unknown subcommand", "frobnicate", "", {"frobnicate"}},
      {"unknown kind", "info --kind nosuch", "", {"nosuch", "full", "linformer"}},
      {"heads do not divide d", "info --kind full --d-model 32 --heads 3", "", {"32", "3", "divisible"}},
      {"zero heads", "info --kind full --d-model 32 --heads 0", "", {"heads"}},
      {"negative dropout", "info --kind full --dropout -0.5", "", {"dropout"}},
      {"bad JSON", "info --kind linformer --options '{\"k\": 3'", "", {"--options", "JSON"}},
      {"options not an object", "info --kind linformer --options '[1, 2]'", "", {"options", "object"}},
      {"threads zero", "--threads 0 info", "", {"--threads", "'0'"}},
      {"threads not a number", "--threads abc info", "", {"--threads", "'abc'"}},
      {"threads negative", "--threads -4 info --list-attention", "", {"--threads"}},
      {"bad thread environment", "info --list-attention", "LINFORMER_NUM_THREADS=lots", {"LINFORMER_NUM_THREADS", "lots"}},
      {"d-model not a number", "info --kind full --d-model wide", "", {"--d-model", "wide"}},
      {"n beyond max-len", "info --kind linformer --max-len 64 --n 65", "", {"--n", "65", "64"}},
      {"linformer k beyond max_len", "info --kind linformer --max-len 16 --options '{\"k\": 64}'", "", {"'k'", "64", "16"}},
      {"linformer k not positive", "info --kind linformer --max-len 16 --options '{\"k\": 0}'", "", {"'k'"}},
      {"linformer k not an integer", "info --kind linformer --options '{\"k\": \"many\"}'", "", {"'k'", "integer"}},
      {"linformer bad sharing", "info --kind linformer --options '{\"sharing\": \"bogus\"}'", "", {"sharing", "bogus"}},
      {"linformer unknown option", "info --kind linformer --options '{\"kk\": 8}'", "", {"unknown option", "kk"}},
      {"list and kind together", "info --list-attention --kind full", "", {"--list-attention", "--kind"}},
      {"unknown precision", "--precision fp16 info", "", {"--precision", "fp16"}},
      // A CPU without AVX512-BF16, as oneDNN's own switch makes any machine look (the refusal, not a crash
      // or a silent fp32 run, on every machine the suite runs on).
      {"bf16 without the instructions", "--precision bf16 train --steps 1", "ONEDNN_MAX_CPU_ISA=AVX2",
       {"--precision bf16", "not available", "bf16 products need"}},
      {"int8 without the instructions", "--precision int8 eval --checkpoint nowhere", "ONEDNN_MAX_CPU_ISA=AVX2",
       {"--precision int8", "not available", "AVX512-VNNI"}},
  };
  expect_bad_input(cases);
}

// int8 is for inference: training is refused before it reads anything (the data file is missing here,
// which would be the error otherwise), and so are bench's training passes when asked for; by default
// bench runs the passes that do not train.
TEST(Cli, Int8TrainingIsRefused) {
  if (const std::string why = lf::precision_unsupported_reason(lf::Precision::int8); !why.empty()) GTEST_SKIP() << why;
  expect_bad_input({
      {"int8 training", "--precision int8 train --data /nonexistent --out /nonexistent/run", "",
       {"--precision int8", "inference only", "train in fp32 or bf16"}},
      {"int8 training after the subcommand", "train --precision int8 --data /nonexistent --out /nonexistent/run", "",
       {"--precision int8", "inference only"}},
      {"int8 bench training passes", "--precision int8 bench --kinds linformer --what layer_forward_backward "
                                     "--n 64 --k 16 --csv ''", "",
       {"--precision int8", "inference only", "layer_forward_backward"}},
      {"int8 bench training step", "--precision int8 bench --kinds linformer --what model_inference,model_train_step "
                                   "--n 64 --k 16 --csv ''", "",
       {"--precision int8", "inference only", "model_train_step"}},
  });
}

TEST(Cli, Int8BenchDefaultsToThePassesThatDoNotTrain) {
  if (const std::string why = lf::precision_unsupported_reason(lf::Precision::int8); !why.empty()) GTEST_SKIP() << why;
  const std::string csv = ::testing::TempDir() + "/int8_bench.csv";
  const Result r = run_cli("--precision int8 bench --kinds linformer --n 64 --k 16 --layers 1 --repeats 1 --warmup 0 "
                           "--csv " + csv + " --markdown ''");
  ASSERT_EQ(r.status, 0) << r.err;
  std::ifstream in(csv);
  std::string line, whats;
  std::getline(in, line);  // header
  while (std::getline(in, line))
    if (line.rfind("linformer-cpp-int8,linformer,", 0) == 0) whats += line.substr(29, line.find(',', 29) - 29) + " ";
  EXPECT_EQ(whats, "layer_forward model_inference ") << "the int8 rows of " << csv;
}

void expect_bad_input(const std::vector<BadInput>& cases) {
  for (const BadInput& c : cases) {
    SCOPED_TRACE(std::string(c.what) + ": linformer " + c.args);
    const Result r = run_cli(c.args, c.env);
    EXPECT_EQ(r.status, 2) << "stderr: " << r.err;
    const std::vector<std::string> err = lines(r.err);
    ASSERT_EQ(err.size(), 1u) << "stderr: " << r.err;
    EXPECT_EQ(err[0].rfind("linformer: error: ", 0), 0u) << err[0];
    for (const char* m : c.mentions) EXPECT_NE(err[0].find(m), std::string::npos) << "missing '" << m << "' in: " << err[0];
    EXPECT_EQ(r.out, "") << "nothing on stdout for bad input";
  }
}

}  // namespace
