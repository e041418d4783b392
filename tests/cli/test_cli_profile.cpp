// `linformer bench --profile FILE.csv`: one more run of each model and layer configuration under the
// op profiler, written op by op with the GEMMs' shapes and rates, closed by "(outside ops)" and
// "(step)"; checked on a tiny model.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "cli/cli_runner.h"
#include "test_util.h"

namespace lf {
namespace {

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> f;
  std::stringstream s(line);
  for (std::string x; std::getline(s, x, ',');) f.push_back(x);
  if (!line.empty() && line.back() == ',') f.push_back("");
  return f;
}

struct Totals {
  double ops_ms = 0, outside_ms = -1, step_ms = -1;
  int gemm_rows = 0, gemm_rows_with_rate = 0;
  std::map<std::string, int64_t> calls;  // by op
};

TEST(CliBenchProfile, WritesEveryOpWithGemmRatesWithinTheStepTime) {
  const test::TempDir tmp("lf_cli_profile");
  const test::CliResult r = test::run_linformer(
      "cd '" + tmp.path().string() + "' &&",
      "bench --kinds linformer --what model_train_step,model_inference,layer_forward_backward --n 64 --k 16 "
      "--d-model 32 --heads 2 --layers 2 --repeats 1 --warmup 1 --csv out.csv --markdown out.md "
      "--profile prof/profile.csv",
      tmp.file("stderr.txt"));
  ASSERT_EQ(r.status, 0) << r.err;
  std::ifstream in(tmp.path() / "prof" / "profile.csv");
  ASSERT_TRUE(in) << "no profile CSV";
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "what,kind,n,k,op,detail,calls,ms,gflops,gflop_per_s");
  std::map<std::string, Totals> by_what;
  while (std::getline(in, line)) {
    const std::vector<std::string> f = split_csv(line);
    ASSERT_EQ(f.size(), 10u) << line;
    EXPECT_EQ(f[1], "linformer");
    EXPECT_EQ(f[2], "64");
    EXPECT_EQ(f[3], "16");
    Totals& t = by_what[f[0]];
    const double ms = std::stod(f[7]);
    if (f[4] == "(outside ops)") {
      t.outside_ms = ms;
    } else if (f[4] == "(step)") {
      t.step_ms = ms;
    } else {
      EXPECT_GE(ms, 0) << line;
      t.ops_ms += ms;
      t.calls[f[4]] += std::stoll(f[6]);
      if (f[4] == "matmul" || f[4] == "linear_forward" || f[4] == "linear_backward") {
        ++t.gemm_rows;
        EXPECT_NE(f[5].find(" K="), std::string::npos) << "the GEMM's shape: " << line;
        EXPECT_GT(std::stod(f[8]), 0) << line;
        if (!f[9].empty() && std::stod(f[9]) > 0) ++t.gemm_rows_with_rate;
      }
    }
  }
  ASSERT_EQ(by_what.size(), 3u);
  for (const auto& [what, t] : by_what) {
    SCOPED_TRACE(what);
    EXPECT_GT(t.gemm_rows, 0);
    EXPECT_GT(t.gemm_rows_with_rate, 0);
    EXPECT_GT(t.ops_ms, 0);
    EXPECT_GT(t.step_ms, 0);
    EXPECT_GE(t.outside_ms, 0);
    EXPECT_LE(t.ops_ms, t.step_ms + 1e-4);  // each ms is printed to 1e-6
    EXPECT_NEAR(t.ops_ms + t.outside_ms, t.step_ms, 1e-4);
  }
  const std::map<std::string, int64_t>& train = by_what["model_train_step"].calls;
  EXPECT_GT(train.count("adamw_step") ? train.at("adamw_step") : 0, 0);
  EXPECT_EQ(train.count("cross_entropy_backward") ? train.at("cross_entropy_backward") : 0, 1);
  EXPECT_EQ(by_what["model_inference"].calls.count("linear_backward"), 0u) << "inference runs no backward";
}

}  // namespace
}  // namespace lf
