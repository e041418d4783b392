// `linformer bench` with huge but valid limits: the forked child's alarm is computed in double and
// clamped instead of overflowing int64 or the conversion to unsigned (undefined behaviour that the
// sanitizer build turns into an abort of the child, reported as "failed: killed by signal 6").
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "cli/cli_runner.h"
#include "test_util.h"

namespace lf {
namespace {

namespace fs = std::filesystem;

// Runs a one-configuration bench with `limits` and returns its CSV row ("" when there is none).
std::string bench_row(const std::string& limits) {
  const test::TempDir tmp("lf_cli_bench_limits");
  const fs::path& dir = tmp.path();
  const test::CliResult r = test::run_linformer(
      "cd '" + dir.string() + "' &&",
      "bench --kinds linformer --what layer_forward --n 64 --k 16 --d-model 16 --heads 2 " + limits +
          " --csv out.csv --markdown out.md",
      (dir / "stderr.txt").string());
  EXPECT_EQ(r.status, 0) << r.err;
  std::ifstream csv(dir / "out.csv");
  std::string line, row;
  while (std::getline(csv, line))
    if (line.find(",linformer,layer_forward,") != std::string::npos) row = line;
  return row;
}

TEST(CliBench, HugeMaxSecondsStillMeasures) {
  const std::string row = bench_row("--repeats 1 --warmup 0 --max-seconds 1e300");
  ASSERT_FALSE(row.empty()) << "no row for linformer";
  EXPECT_EQ(row.find("failed"), std::string::npos) << row;  // e.g. "failed: killed by signal 6"
}

TEST(CliBench, HugeWarmupCountIsCutShortByMaxSeconds) {
  // warmup + repeats + 2 overflowed int64 when the alarm was computed; the first warm-up run already
  // exceeds --max-seconds, so the configuration is reported as skipped.
  const std::string row = bench_row("--repeats 1 --warmup 9223372036854775807 --max-seconds 1e-9");
  ASSERT_FALSE(row.empty()) << "no row for linformer";
  EXPECT_NE(row.find("skipped: one run took over --max-seconds"), std::string::npos) << row;
}

}  // namespace
}  // namespace lf
