// The layering of docs/architecture.md, enforced: a file under src/<layer>/ includes only headers of
// its own layer or of the layers below it (core < cpu < ops < attention < io < model < data < train <
// analysis < inference < serve). A public header include/linformer/<name> has the layer listed here and includes only
// other public headers. A new folder under src/ or a new public header must be placed in the order here.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

const std::map<std::string, int> kLayerRank = {{"core", 0},  {"cpu", 1},  {"ops", 2},   {"attention", 3}, {"io", 4},
                                               {"model", 5}, {"data", 6}, {"train", 7}, {"analysis", 8}, {"inference", 9},
                                               {"serve", 10}};

// The layer of each public header: where it lived in src/ before it became public.
const std::map<std::string, std::string> kPublicHeaderLayer = {
    {"error.h", "core"},       {"arena.h", "core"},      {"tensor.h", "core"},      {"rng.h", "core"},         {"tokens.h", "core"},
    {"allocator.h", "core"},   {"registry.h", "core"},   {"profile.h", "core"},    {"runtime.h", "cpu"},
    {"attention.h", "attention"}, {"config.h", "model"},
    {"model.h", "model"},      {"memory.h", "model"},    {"tokenizer.h", "data"},   {"corpus.h", "data"},
    {"batches.h", "data"},     {"schedule.h", "train"},  {"checkpoint.h", "train"}, {"trainer.h", "train"},
    {"linformer.h", "inference"}, {"sampling.h", "inference"}, {"inference.h", "inference"}};

// The rank of an included path ("model/model.h", "linformer/trainer.h"); -1 for a third-party header
// and for an unknown public header (reported separately).
int rank_of_include(const std::string& path) {
  const std::string folder = path.substr(0, path.find('/'));
  if (folder == "linformer") {
    const auto layer = kPublicHeaderLayer.find(path.substr(folder.size() + 1));
    return layer == kPublicHeaderLayer.end() ? -1 : kLayerRank.at(layer->second);
  }
  const auto rank = kLayerRank.find(folder);
  return rank == kLayerRank.end() ? -1 : rank->second;
}

// The include lines of `text` that break the layering for a file of layer `layer`; a public header
// (`is_public`) also may include no internal header.
std::vector<std::string> violations(std::istream& text, const std::string& layer, bool is_public) {
  static const std::regex include(R"(^\s*#\s*include\s*"(([a-z_0-9]+)/[^"]+)\")");
  std::vector<std::string> found;
  int line_no = 0;
  for (std::string line; std::getline(text, line);) {
    ++line_no;
    std::smatch m;
    if (!std::regex_search(line, m, include)) continue;
    const int rank = rank_of_include(m[1].str());
    if (rank > kLayerRank.at(layer))
      found.push_back(std::to_string(line_no) + " (" + layer + ") includes a higher layer: " + line);
    if (is_public && m[2].str() != "linformer")
      found.push_back(std::to_string(line_no) + " (public) includes an internal header: " + line);
  }
  return found;
}

TEST(Layering, TheCheckFindsViolations) {
  std::istringstream up("#include \"model/config.h\"\n#include \"linformer/trainer.h\"\n");
  EXPECT_EQ(violations(up, "attention", false).size(), 2u);
  std::istringstream internal("#include \"linformer/arena.h\"\n#include \"cpu/gemm.h\"\n");
  EXPECT_EQ(violations(internal, "train", true).size(), 1u);
  std::istringstream fine("#include <vector>\n#include \"core/rng.h\"\n#include \"linformer/error.h\"\n");
  EXPECT_TRUE(violations(fine, "cpu", false).empty());
}

TEST(Layering, NoIncludeRunsFromALowerLayerToAHigherOne) {
  const fs::path root = fs::path(LINFORMER_SOURCE_DIR);
  int files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(root / "src")) {
    if (!entry.is_regular_file()) continue;
    const std::string layer = fs::relative(entry.path(), root / "src").begin()->string();
    ASSERT_TRUE(kLayerRank.contains(layer)) << "src/" << layer << "/ is not in the layer order of this test";
    ++files;
    std::ifstream in(entry.path());
    for (const std::string& v : violations(in, layer, false)) ADD_FAILURE() << entry.path().string() << ":" << v;
  }
  EXPECT_GT(files, 50) << "no sources found under " << root / "src";

  int headers = 0;
  for (const auto& entry : fs::directory_iterator(root / "include" / "linformer")) {
    const std::string name = entry.path().filename().string();
    const auto layer = kPublicHeaderLayer.find(name);
    ASSERT_NE(layer, kPublicHeaderLayer.end()) << "include/linformer/" << name << " has no layer in this test";
    ++headers;
    std::ifstream in(entry.path());
    for (const std::string& v : violations(in, layer->second, true)) ADD_FAILURE() << entry.path().string() << ":" << v;
  }
  EXPECT_EQ(headers, int(kPublicHeaderLayer.size())) << "a public header listed here is missing";
}

// The Python extension (python/src/) is a host program of the public API: it includes public headers
// (and its own files), never an internal one, so the package follows what liblinformer.so offers.
TEST(Layering, ThePythonBindingsUseThePublicApiAlone) {
  const fs::path root = fs::path(LINFORMER_SOURCE_DIR);
  static const std::regex include(R"re(^\s*#\s*include\s*"([^"]+)")re");
  int files = 0;
  for (const auto& entry : fs::directory_iterator(root / "python" / "src")) {
    ++files;
    std::ifstream in(entry.path());
    for (std::string line; std::getline(in, line);) {
      std::smatch m;
      if (!std::regex_search(line, m, include)) continue;
      const std::string path = m[1].str();
      const bool own = path.find('/') == std::string::npos && fs::exists(root / "python" / "src" / path);
      EXPECT_TRUE(own || path.rfind("linformer/", 0) == 0)
          << entry.path().filename().string() << " includes an internal header: " << line;
    }
  }
  EXPECT_GT(files, 3) << "no bindings found under " << root / "python" / "src";
}

}  // namespace

namespace {

// Everything above the ops layer (the kinds, the model and its heads, I/O, data, training, analysis,
// the public headers and the CLI) reaches kernels only through ops (src/ops/): no backend header, no
// OpenMP loop of its own, so a second backend beside src/cpu/ needs no change to any of them.
TEST(Layering, EverythingAboveTheOpsReachesKernelsOnlyThroughThem) {
  const fs::path root = fs::path(LINFORMER_SOURCE_DIR);
  const std::regex backend(R"(^\s*#\s*(include\s*"cpu/|pragma\s+omp))");
  int files = 0;
  for (const char* folder : {"src/attention", "src/io", "src/model", "src/data", "src/train", "src/analysis", "src/inference",
                             "include/linformer", "cli"})
    for (const auto& entry : fs::recursive_directory_iterator(root / folder)) {
      if (!entry.is_regular_file()) continue;
      ++files;
      std::ifstream in(entry.path());
      std::string first;
      for (std::string line; std::getline(in, line);)
        if (std::regex_search(line, backend)) {
          first = line;
          break;
        }
      EXPECT_TRUE(first.empty()) << fs::relative(entry.path(), root).string() << " bypasses the ops layer: " << first;
    }
  EXPECT_GT(files, 80);
}

}  // namespace

namespace {

// The kinds, the model and its heads keep their activations and scratch in Buffer<T> (linformer/tensor.h),
// on the device of their views, never in a std::vector<T> (host memory): no `std::vector<T>` in their
// files (std::vectors of host-side metadata, such as index tables and masks built from the call's
// host input, have other element types).
TEST(Layering, KindsAndTheModelKeepActivationsInBuffers) {
  const fs::path root = fs::path(LINFORMER_SOURCE_DIR);
  const std::regex host_vector(R"(std::vector<\s*T\s*>)");
  std::vector<fs::path> files = {root / "include/linformer/attention.h", root / "include/linformer/model.h"};
  for (const char* folder : {"src/attention", "src/model"})
    for (const auto& entry : fs::recursive_directory_iterator(root / folder))
      if (entry.is_regular_file()) files.push_back(entry.path());
  for (const fs::path& file : files) {
    const std::string name = fs::relative(file, root).string();
    std::ifstream in(file);
    int line_no = 0;
    for (std::string line; std::getline(in, line);) {
      ++line_no;
      EXPECT_FALSE(std::regex_search(line, host_vector))
          << name << ":" << line_no << " keeps elements in a std::vector<T> (host memory), not a Buffer<T>: " << line;
    }
  }
  EXPECT_GT(files.size(), 30u);
}

}  // namespace
