// The fuzz targets over their committed inputs: every seed of tests/fuzz/corpus/<target>/ and every
// regression input of tests/fuzz/regressions/<target>/ (inputs that once crashed a fuzzer) runs
// without an escaping exception, abort or (under LINFORMER_SANITIZE) a sanitizer report. Seeds named
// ok-* must be accepted and bad-* refused with lf::Error, and the committed seeds must be exactly what
// seed_corpus() generates (those derived from the attention registry run from memory, uncommitted). To regenerate them after changing the generator:
//   LINFORMER_WRITE_FUZZ_SEEDS=1 build-h/linformer_tests --gtest_filter='FuzzInputs/*.SeedsMatchGenerator*'
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <ostream>
#include <string>
#include <vector>

#include "fuzz/fuzz_targets.h"

namespace fs = std::filesystem;

namespace lf::fuzz {

void PrintTo(const Target& t, std::ostream* os) { *os << t.name; }  // for gtest's test names

namespace {

const fs::path kFuzzDir = LINFORMER_FUZZ_DIR;

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<fs::path> files_in(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file() && e.path().filename() != ".gitkeep") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

class FuzzInputs : public ::testing::TestWithParam<Target> {};

TEST_P(FuzzInputs, SeedsMatchGenerator) {
  const Target t = GetParam();
  const fs::path dir = kFuzzDir / "corpus" / t.name;
  const std::vector<Seed> seeds = seed_corpus(t.name);
  ASSERT_GE(seeds.size(), 3u);
  if (std::getenv("LINFORMER_WRITE_FUZZ_SEEDS")) {
    fs::create_directories(dir);
    for (const Seed& s : seeds)
      if (!s.from_registry)
        std::ofstream(dir / s.name, std::ios::binary)
            .write(reinterpret_cast<const char*>(s.bytes.data()), std::streamsize(s.bytes.size()));
  }
  for (const Seed& s : seeds) {
    if (s.from_registry) {
      EXPECT_FALSE(fs::exists(dir / s.name)) << dir / s.name << " comes from the registry: it must not be committed";
      continue;
    }
    ASSERT_TRUE(fs::exists(dir / s.name)) << dir / s.name << " is missing; regenerate the seeds (see this file's header)";
    EXPECT_EQ(read_bytes(dir / s.name), s.bytes) << dir / s.name << " differs from the generator";
  }
}

TEST_P(FuzzInputs, SeedCorpusRunsAndIsJudgedRight) {
  const Target t = GetParam();
  const std::vector<fs::path> files = files_in(kFuzzDir / "corpus" / t.name);
  ASSERT_FALSE(files.empty()) << "no seed corpus for target " << t.name;
  int ok = 0, bad = 0;
  for (const fs::path& f : files) {
    const std::vector<uint8_t> bytes = read_bytes(f);
    const int accepted = t.run(bytes.data(), bytes.size());
    const std::string name = f.filename().string();
    if (starts_with(name, "ok-")) {
      EXPECT_EQ(accepted, 1) << f << " should be accepted";
      ++ok;
    } else if (starts_with(name, "bad-")) {
      EXPECT_EQ(accepted, 0) << f << " should be refused";
      ++bad;
    }
  }
  for (const Seed& s : seed_corpus(t.name)) {  // the seeds derived from the registry, in memory
    if (!s.from_registry) continue;
    EXPECT_EQ(t.run(s.bytes.data(), s.bytes.size()), starts_with(s.name, "ok-") ? 1 : 0) << s.name;
  }
  EXPECT_GT(ok, 0) << "the seed corpus of " << t.name << " has no input known to be valid";
  EXPECT_GT(bad, 0) << "the seed corpus of " << t.name << " has no input known to be invalid";
}

TEST_P(FuzzInputs, RegressionInputsRun) {
  const Target t = GetParam();
  const fs::path dir = kFuzzDir / "regressions" / t.name;
  ASSERT_TRUE(fs::is_directory(dir)) << dir;
  for (const fs::path& f : files_in(dir)) {
    const std::vector<uint8_t> bytes = read_bytes(f);
    const int accepted = t.run(bytes.data(), bytes.size());  // reaching the next line is the check
    EXPECT_TRUE(accepted == 0 || accepted == 1) << f;
  }
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzInputs, ::testing::ValuesIn(targets()),
                         [](const ::testing::TestParamInfo<Target>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace lf::fuzz
