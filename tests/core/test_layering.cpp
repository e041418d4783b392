// The layering of docs/architecture.md, enforced: a file under src/<layer>/ includes only headers of
// its own layer or of the layers below it (core < cpu < attention < io < model < data < train <
// analysis). A new folder under src/ must be placed in the order here.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>

namespace {

namespace fs = std::filesystem;

const std::map<std::string, int> kLayerRank = {{"core", 0}, {"cpu", 1},   {"attention", 2}, {"io", 3},
                                               {"model", 4}, {"data", 5}, {"train", 6},     {"analysis", 7}};

TEST(Layering, NoIncludeRunsFromALowerLayerToAHigherOne) {
  const fs::path src = fs::path(LINFORMER_SOURCE_DIR) / "src";
  const std::regex include(R"(^\s*#\s*include\s*"([a-z_0-9]+)/)");
  int files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(src)) {
    if (!entry.is_regular_file()) continue;
    const std::string layer = fs::relative(entry.path(), src).begin()->string();
    const auto own = kLayerRank.find(layer);
    ASSERT_NE(own, kLayerRank.end()) << "src/" << layer << "/ is not in the layer order of this test";
    ++files;
    std::ifstream in(entry.path());
    int line_no = 0;
    for (std::string line; std::getline(in, line);) {
      ++line_no;
      std::smatch m;
      if (!std::regex_search(line, m, include)) continue;
      const auto target = kLayerRank.find(m[1].str());
      if (target == kLayerRank.end()) continue;  // a third-party header
      EXPECT_LE(target->second, own->second)
          << entry.path().string() << ":" << line_no << " (" << layer << ") includes a higher layer: " << line;
    }
  }
  EXPECT_GT(files, 50) << "no sources found under " << src;
}

}  // namespace
