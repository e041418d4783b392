// `linformer bench` with a huge but valid --max-seconds: the forked child's alarm is clamped instead of
// overflowing the conversion to unsigned (undefined behaviour that the sanitizer build turns into an
// abort), so the configuration is measured.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "cli/cli_runner.h"

namespace lf {
namespace {

namespace fs = std::filesystem;

TEST(CliBench, HugeMaxSecondsStillMeasures) {
  const fs::path dir = fs::temp_directory_path() / ("lf_cli_bench_limits_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const test::CliResult r = test::run_linformer(
      "cd '" + dir.string() + "' &&",
      "bench --kinds linformer --what layer_forward --n 64 --k 16 --d-model 16 --heads 2 --repeats 1 --warmup 0"
      " --max-seconds 1e300 --csv out.csv --markdown out.md",
      (dir / "stderr.txt").string());
  ASSERT_EQ(r.status, 0) << r.err;
  std::ifstream csv(dir / "out.csv");
  std::string line, row;
  while (std::getline(csv, line))
    if (line.find(",linformer,layer_forward,") != std::string::npos) row = line;
  fs::remove_all(dir);
  ASSERT_FALSE(row.empty()) << "no row for linformer";
  EXPECT_EQ(row.find("failed"), std::string::npos) << row;  // e.g. "failed: killed by signal 6"
}

}  // namespace
}  // namespace lf
