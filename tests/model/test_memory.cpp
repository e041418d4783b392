// The memory estimate (model/memory.h) against what is really allocated: the parameter count against
// the arena a Model declares, the training estimate against the peak RSS of real training runs of the
// CLI (within a factor stated below), and the guard's comparison with the limit.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/cli_runner.h"
#include "linformer/arena.h"
#include "linformer/memory.h"
#include "linformer/model.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;

lf::ModelConfig make_config(const std::string& kind, const lf::json& options, int64_t d, int64_t layers, int64_t n) {
  lf::ModelConfig c;
  c.d_model = d;
  c.n_layers = layers;
  c.n_heads = 4;
  c.d_ff = 4 * d;
  c.max_len = n;
  c.attention = {lf::LayerAttention{kind, options}};
  c.validate();
  return c;
}

TEST(MemoryEstimate, ParametersAreThoseTheModelDeclares) {
  lf::ModelConfig classify = make_config("full", lf::json::object(), 32, 2, 64);
  classify.task = lf::Task::Classify;
  classify.n_classes = 5;
  lf::ModelConfig clm = make_config("full", lf::json::object(), 32, 3, 64);
  clm.task = lf::Task::CausalLM;
  for (const lf::ModelConfig& c : {make_config("linformer", {{"k", 16}, {"sharing", "none"}}, 64, 2, 128), classify, clm}) {
    lf::ParamArena<float> arena;
    lf::Model<float> model(c, arena);
    EXPECT_EQ(lf::parameter_count(c), double(arena.numel()));
    const lf::MemoryEstimate train = lf::estimate_memory(c, lf::Workload::Training, 4, 32);
    EXPECT_EQ(train.parameters, 4.0 * double(arena.numel()));
    EXPECT_EQ(train.gradients, train.parameters);
    EXPECT_EQ(train.optimizer, 2 * train.parameters);
    const lf::MemoryEstimate infer = lf::estimate_memory(c, lf::Workload::Inference, 4, 32);
    EXPECT_EQ(infer.gradients + infer.optimizer, 0.0);
    EXPECT_LT(infer.activations, train.activations);  // one block at a time, no gradients
  }
}

TEST(MemoryEstimate, AbsurdSizesGiveAHugeFiniteEstimate) {
  lf::ModelConfig c = make_config("linformer", {{"k", 4}}, 16, 1, 16);
  c.d_model = 4'000'000'000;
  c.n_heads = 1;
  c.d_ff = 16'000'000'000;
  c.max_len = 1ll << 40;
  const double bytes = lf::estimate_memory(c, lf::Workload::Training, 1ll << 40, 1ll << 40).total();
  EXPECT_TRUE(std::isfinite(bytes));
  EXPECT_GT(bytes, 1e30);
}

TEST(MemoryEstimate, ParsesSizes) {
  EXPECT_EQ(lf::parse_memory_size("1000", "x"), 1000.0);
  EXPECT_EQ(lf::parse_memory_size("64k", "x"), 65536.0);
  EXPECT_EQ(lf::parse_memory_size("512M", "x"), 512.0 * 1048576);
  EXPECT_EQ(lf::parse_memory_size("1.5GiB", "x"), 1.5 * 1073741824);
  EXPECT_EQ(lf::parse_memory_size("2GB", "x"), 2.0 * 1073741824);
  EXPECT_EQ(lf::parse_memory_size("1T", "x"), 1099511627776.0);
  for (const char* bad : {"", "0", "-1G", "lots", "12Q", "nan", "inf", "1GiBs", "G"})
    EXPECT_THROW(lf::parse_memory_size(bad, "--max-memory"), lf::InvalidArgument) << bad;
}

TEST(MemoryEstimate, GuardComparesWithTheLimit) {
  const lf::ModelConfig c = make_config("linformer", {{"k", 16}}, 64, 2, 128);
  const lf::MemoryEstimate e = lf::estimate_memory(c, lf::Workload::Training, 8, 128);
  EXPECT_NO_THROW(lf::require_memory(e, lf::RuntimeOptions{0, e.total() * 1.01}, "train", "reduce it"));
  const lf::RuntimeOptions below{0, e.total() * 0.99};
  try {
    lf::require_memory(e, below, "train", "reduce --batch-size");
    ADD_FAILURE() << "not refused below the limit";
  } catch (const lf::Error& err) {
    const std::string m = err.what();
    EXPECT_NE(m.find("train needs about " + lf::format_bytes(e.total())), std::string::npos) << m;
    EXPECT_NE(m.find("the memory limit is " + lf::format_bytes(e.total() * 0.99) + " (`max_memory`)"), std::string::npos) << m;
    EXPECT_NE(m.find("reduce --batch-size"), std::string::npos) << m;
  }
  EXPECT_GT(lf::memory_limit_bytes(lf::RuntimeOptions{}), 0.0);  // the environment / available memory
  setenv(lf::kMaxMemoryEnv, "3M", 1);
  EXPECT_EQ(lf::memory_limit_bytes(lf::RuntimeOptions{}), 3.0 * 1048576);
  EXPECT_EQ(lf::memory_limit_source(lf::RuntimeOptions{}), lf::kMaxMemoryEnv);
  EXPECT_EQ(lf::memory_limit_bytes(below), e.total() * 0.99);  // the instance's own limit wins
  setenv(lf::kMaxMemoryEnv, "lots", 1);
  EXPECT_THROW(lf::memory_limit_bytes(lf::RuntimeOptions{}), lf::InvalidArgument);
  unsetenv(lf::kMaxMemoryEnv);
}

// Peak RSS (from the run's log.jsonl summary) of `linformer train` with these flags, one step.
double train_peak_rss(const fs::path& dir, const std::string& name, const std::string& flags) {
  const lf::test::CliResult r = lf::test::run_linformer(
      "cd '" + dir.string() + "' &&",
      "--threads 1 train --data data.txt --out " + name + " " + flags +
          " --steps 1 --warmup 0 --eval-batches 1 --valid-fraction 0.1 --test-fraction 0.1",
      (dir / "stderr.txt").string());
  EXPECT_EQ(r.status, 0) << r.err;
  std::ifstream log(dir / name / "log.jsonl");
  double peak = 0;
  for (std::string line; std::getline(log, line);) {
    const lf::json j = lf::json::parse(line);
    if (j.at("type") == "summary") peak = j.at("peak_rss_bytes").get<double>();
  }
  return peak;
}

// The training estimate against the measured peak RSS growth over a tiny run of the same binary
// (which holds the code, the libraries and the runtime): within a factor of 1.5 either way, on
// configurations of 50-100 MB whose memory is dominated by activations (measured 0.97-1.14; larger
// runs by hand, 230-730 MB: 0.9-1.4).
TEST(MemoryEstimate, TrainingEstimateMatchesPeakRss) {
  LF_SKIP_MEMORY_TEST_UNDER_SANITIZERS();
  const fs::path dir = fs::path(::testing::TempDir()) / ("linformer_memory_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    std::ofstream f(dir / "data.txt");
    static const char* words[] = {"the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "home"};
    for (int i = 0; i < 60000; ++i) f << words[(i * 7919) % 10] << (i % 13 ? ' ' : '\n');
  }
  const double data = lf::data_file_bytes((dir / "data.txt").string(), 0);
  const lf::ModelConfig tiny = make_config("linformer", {{"k", 4}}, 16, 1, 16);
  const double tiny_rss = train_peak_rss(dir, "tiny", "--d-model 16 --layers 1 --heads 4 --seq-len 16 --batch-size 2 "
                                                      "--attention-options '{\"k\": 4}'");
  const double tiny_est = lf::estimate_memory(tiny, lf::Workload::Training, 2, 16, false, data).total();
  struct Case {
    const char* flags;
    lf::ModelConfig config;
    bool checkpointing;
  };
  const Case cases[] = {
      {"--d-model 64 --layers 2 --heads 4 --seq-len 256 --batch-size 16 --attention-options '{\"k\": 64}'",
       make_config("linformer", {{"k", 64}}, 64, 2, 256), false},
      {"--d-model 64 --layers 2 --heads 4 --seq-len 256 --batch-size 16 --attention full",
       make_config("full", lf::json::object(), 64, 2, 256), false},
      {"--d-model 64 --layers 3 --heads 4 --seq-len 256 --batch-size 16 --attention full --checkpoint-activations",
       make_config("full", lf::json::object(), 64, 3, 256), true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.flags);
    const double rss = train_peak_rss(dir, "run" + std::to_string(&c - cases), c.flags) - tiny_rss;
    const double est =
        lf::estimate_memory(c.config, lf::Workload::Training, 16, 256, c.checkpointing, data).total() - tiny_est;
    ASSERT_GT(rss, 0);
    EXPECT_GT(est / rss, 1 / 1.5) << "estimate " << lf::format_bytes(est) << ", measured " << lf::format_bytes(rss);
    EXPECT_LT(est / rss, 1.5) << "estimate " << lf::format_bytes(est) << ", measured " << lf::format_bytes(rss);
    std::printf("[ measured ] %s: estimate %s, peak RSS growth %s (ratio %.2f)\n", c.flags, lf::format_bytes(est).c_str(),
                lf::format_bytes(rss).c_str(), est / rss);
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
}

}  // namespace
