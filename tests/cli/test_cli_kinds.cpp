// Every registered attention kind, through the command line: it is listed by `info --list-attention`,
// a tiny masked LM (and a causal LM when the kind supports causality) trains with it, and, unless
// its definition is an n×n matrix, `linformer bench` measures its forward+backward at n = 16384 with
// our allocator's peak below the size of one n×n float matrix (no O(n²) buffer).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "cli/cli_runner.h"
#include "linformer/attention.h"
#include "test_util.h"

namespace lf {
namespace {

namespace fs = std::filesystem;

class CliKind : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = test::make_temp_dir("lf_cli_kind", GetParam());  // (the test's name holds a '/')
    std::ofstream text(dir_ / "text.txt");
    for (int i = 0; i < 400; ++i) text << "the cat sat on the mat while a dog ran to the park. ";
  }
  void TearDown() override { fs::remove_all(dir_); }
  test::CliResult run(const std::string& args) {
    return test::run_linformer("cd '" + dir_.string() + "' &&", args, (dir_ / "stderr.txt").string());
  }
  fs::path dir_;
};

TEST_P(CliKind, IsListed) {
  const test::CliResult r = run("info --list-attention");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find(GetParam()), std::string::npos) << r.out;
}

TEST_P(CliKind, TrainsAMaskedLmAndACausalLmWhenSupported) {
  const std::string kind = GetParam();
  const std::string common = " --data text.txt --attention " + kind +
                             " --d-model 16 --layers 2 --heads 2 --max-len 32 --seq-len 32 --batch-size 2 --steps 3"
                             " --eval-batches 1 --log-every 1";
  test::CliResult r = run("train --out mlm" + common);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir_ / "mlm" / "checkpoints" / "step-00000003" / "model.safetensors"));
  r = run("eval --checkpoint mlm --data text.txt --batches 1");
  EXPECT_EQ(r.status, 0) << r.err;
  if (AttentionRegistry::instance().get(kind).info.support.causal) {
    r = run("train --task clm --out clm" + common);
    EXPECT_EQ(r.status, 0) << r.err;
  } else {
    r = run("train --task clm --out clm" + common);
    EXPECT_EQ(r.status, 2) << "a kind without causal support must be refused for clm";
  }
}

TEST_P(CliKind, NoQuadraticBufferAtSixteenThousandTokens) {
  const std::string kind = GetParam();
  if (AttentionRegistry::instance().get(kind).info.quadratic_memory)
    GTEST_SKIP() << kind << " holds an n×n matrix by definition";
  // A memory measurement at full size: under ASan the O(n²)-time kinds take minutes here (flash outlives
  // the bench's alarm) and the small-n CLI tests above already run every kind under the sanitizers.
  if (test::kSanitizerBuild) GTEST_SKIP() << "a memory measurement at n = 16384, too slow under ASan";
  const int64_t n = 16384;
  const test::CliResult r = run("bench --kinds " + kind + " --what layer_forward_backward --n " + std::to_string(n) +
                                " --k 64 --d-model 64 --heads 2 --repeats 1 --warmup 0 --csv mem.csv --markdown mem.md");
  ASSERT_EQ(r.status, 0) << r.err;
  std::ifstream csv(dir_ / "mem.csv");
  std::string header, line, row;
  std::getline(csv, header);
  while (std::getline(csv, line))
    if (line.find("," + kind + ",layer_forward_backward,") != std::string::npos) row = line;
  ASSERT_FALSE(row.empty()) << "no row for " << kind;
  // Columns: impl,kind,what,n,k,d_model,heads,batch,threads,time_ms,peak_mem_bytes,repeats,heap_peak_bytes,...
  std::vector<std::string> cells;
  std::stringstream s(row);
  for (std::string cell; std::getline(s, cell, ',');) cells.push_back(cell);
  ASSERT_GT(cells.size(), 12u) << row;
  ASSERT_FALSE(cells[12].empty()) << "not measured: " << row;
  const double heap = std::stod(cells[12]);
  EXPECT_LT(heap, double(n) * double(n) * sizeof(float)) << kind << " allocated an n×n-sized peak: " << row;
}

INSTANTIATE_TEST_SUITE_P(AllKinds, CliKind, testing::ValuesIn(AttentionRegistry::instance().names()),
                         [](const testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace lf
