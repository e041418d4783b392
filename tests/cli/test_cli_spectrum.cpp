// `linformer spectrum` run as a user runs it, on a tiny exact-attention masked LM trained for a few
// steps here: it writes the CSVs with one row per (layer, index), (layer, head, k) and (layer, k), the
// curves end where they must (c_n = 1, best rank-n error 0), the options reach the files, and when a
// python3 with matplotlib is at hand scripts/plot_spectrum.py draws the three PNGs. Bad input is in
// docs/bad_input.md (test_bad_input.cpp).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/cli_runner.h"

namespace {

namespace fs = std::filesystem;
using lf::test::CliResult;

std::string read_text(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// The rows of a CSV (header first), split into cells.
std::vector<std::vector<std::string>> read_csv(const fs::path& p) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(read_text(p));
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> cells;
    std::istringstream ls(line);
    for (std::string c; std::getline(ls, c, ',');) cells.push_back(c);
    rows.push_back(cells);
  }
  return rows;
}

class CliSpectrum : public ::testing::Test {
 protected:
  static inline fs::path dir_;
  static inline std::string error_;

  static CliResult run(const std::string& args) {
    return lf::test::run_linformer("cd '" + dir_.string() + "' &&", args,
                                   (dir_ / ("stderr_" + std::to_string(::getpid()) + ".txt")).string());
  }

  static void SetUpTestSuite() {
    dir_ = fs::path(::testing::TempDir()) / ("linformer_cli_spectrum_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::string text;
    for (int i = 0; text.size() < 6000; ++i) text += "the quick brown fox " + std::to_string(i % 97) + " jumps; ";
    std::ofstream(dir_ / "text.txt") << text;
    // Two layers of 2 heads: full, then flash (both exact attention).
    std::ofstream(dir_ / "model.json") << R"({"model": {"attention": [{"kind": "full"}, {"kind": "flash"}]}})";
    const CliResult r = run("train --data text.txt --out run --config model.json --d-model 16 --layers 2 --heads 2 "
                            "--steps 4 --warmup 1 --batch-size 2 --seq-len 16 --eval-batches 1 --valid-fraction 0.1 "
                            "--test-fraction 0.1");
    if (r.status != 0) error_ = "training the fixture failed: " + r.err;
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
};

TEST_F(CliSpectrum, WritesTheCsvsWithTheirRows) {
  ASSERT_EQ(error_, "");
  const CliResult r = run("spectrum --checkpoint run --out spec --sequences 3 --no-plots");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("3 sequences of n = 16 from the valid split"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("plots not drawn (--no-plots)"), std::string::npos) << r.out;
  const int L = 2, H = 2, n = 16;
  const std::vector<int> ks = {1, 2, 4, 8, 16};  // the default list at n = 16
  const int K = int(ks.size());

  const auto cum = read_csv(dir_ / "spec" / "cumulative.csv");
  ASSERT_EQ(cum.size(), size_t(1 + L * n));
  EXPECT_EQ(cum[0], (std::vector<std::string>{"layer", "index", "mean", "std", "min", "max"}));
  for (size_t i = 1; i < cum.size(); ++i) {
    ASSERT_EQ(cum[i].size(), 6u);
    const double mean = std::stod(cum[i][2]);
    EXPECT_GT(mean, 0.0);
    EXPECT_LE(mean, 1.0 + 1e-12);
    if (std::stoi(cum[i][1]) == n) {
      EXPECT_EQ(mean, 1.0) << "c_n = 1";
    }
  }

  const auto heat = read_csv(dir_ / "spec" / "heatmap.csv");
  ASSERT_EQ(heat.size(), size_t(1 + L * H * K));
  EXPECT_EQ(heat[0][0], "layer");
  EXPECT_EQ(heat[0][2], "k");

  const auto err = read_csv(dir_ / "spec" / "errors.csv");
  ASSERT_EQ(err.size(), size_t(1 + L * K));
  EXPECT_EQ(err[0][2], "rank_k_mean");
  EXPECT_EQ(err[0][6], "linformer_mean");
  for (size_t i = 1; i < err.size(); ++i) {
    EXPECT_EQ(std::stoi(err[i][1]), ks[(i - 1) % size_t(K)]);
    if (std::stoi(err[i][1]) == n) {
      EXPECT_EQ(std::stod(err[i][2]), 0.0) << "best rank-n error";
    }
    if (i % size_t(K) != 1) {
      EXPECT_LE(std::stod(err[i][2]), std::stod(err[i - 1][2])) << "decreasing in k";
    }
  }
  EXPECT_EQ(read_csv(dir_ / "spec" / "errors_by_head.csv").size(), size_t(1 + L * H * K));

  const nlohmann::json meta = nlohmann::json::parse(read_text(dir_ / "spec" / "spectrum.json"));
  EXPECT_EQ(meta["n"], n);
  EXPECT_EQ(meta["layers"], L);
  EXPECT_EQ(meta["heads"], H);
  EXPECT_EQ(meta["sequences"], 3);
  EXPECT_EQ(meta["heatmap_k"], 4) << "the k nearest n/4";
  EXPECT_EQ(meta["split"], "valid");
}

TEST_F(CliSpectrum, OptionsReachTheFiles) {
  ASSERT_EQ(error_, "");
  const CliResult r = run("spectrum --checkpoint run --out spec2 --sequences 2 --split test --seq-len 8 "
                          "--k-list 2,8 --heatmap-k 8 --delta 0.5 --seed 3 --no-plots");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(read_csv(dir_ / "spec2" / "cumulative.csv").size(), size_t(1 + 2 * 8));
  EXPECT_EQ(read_csv(dir_ / "spec2" / "errors.csv").size(), size_t(1 + 2 * 2));
  const nlohmann::json meta = nlohmann::json::parse(read_text(dir_ / "spec2" / "spectrum.json"));
  EXPECT_EQ(meta["k_list"], nlohmann::json::array({2, 8}));
  EXPECT_EQ(meta["heatmap_k"], 8);
  EXPECT_EQ(meta["delta"], 0.5);
  EXPECT_EQ(meta["seed"], 3);
  EXPECT_EQ(meta["split"], "test");
  // Another seed draws other projections: the Linformer errors change, the spectrum does not.
  ASSERT_EQ(run("spectrum --checkpoint run --out spec3 --sequences 2 --split test --seq-len 8 --k-list 2,8 "
                "--heatmap-k 8 --delta 0.5 --seed 4 --no-plots").status, 0);
  EXPECT_EQ(read_text(dir_ / "spec2" / "cumulative.csv"), read_text(dir_ / "spec3" / "cumulative.csv"));
  EXPECT_NE(read_text(dir_ / "spec2" / "errors.csv"), read_text(dir_ / "spec3" / "errors.csv"));
}

// The PNGs, when this machine has a python3 with matplotlib (LINFORMER_PYTHON, .venv-bench or PATH).
TEST_F(CliSpectrum, DrawsThePlotsWhenMatplotlibIsThere) {
  ASSERT_EQ(error_, "");
  const CliResult r = run("spectrum --checkpoint run --out spec4 --sequences 2");
  ASSERT_EQ(r.status, 0) << r.err;
  if (r.out.find("no python3 with matplotlib found") != std::string::npos)
    GTEST_SKIP() << "no python3 with matplotlib here: " << r.out;
  EXPECT_NE(r.out.find("plots in spec4"), std::string::npos) << r.out;
  for (const char* png : {"cumulative.png", "heatmap.png", "errors.png"})
    EXPECT_GT(fs::file_size(dir_ / "spec4" / png), 1000u) << png;
}

}  // namespace
