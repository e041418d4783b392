// Parity with PyTorch: every golden file in tests/data/golden/ (written by scripts/make_goldens.py,
// see docs/goldens.md) holds a layer's parameters, an input, PyTorch's output and its gradients with
// respect to the input and every parameter for a random upstream gradient. Each file becomes one
// test that builds the same layer from the file's "spec" metadata, loads the parameters by name, and
// compares forward and backward in float and double.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "golden_util.h"
#include "io/safetensors.h"
#include "linformer/attention.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace lf {
namespace {

const std::string kGoldenDir = LINFORMER_TEST_DATA "/golden";

std::vector<std::string> golden_files() {
  std::vector<std::string> files;
  std::error_code ec;
  if (!fs::is_directory(kGoldenDir, ec)) return files;
  for (const auto& entry : fs::directory_iterator(kGoldenDir, ec))
    if (entry.is_regular_file() && entry.path().extension() == ".safetensors") files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

// What the file says to build and run.
struct GoldenSpec {
  AttentionSpec attention;
  int64_t B = 0, n = 0;
};

GoldenSpec parse_spec(const SafeTensorsFile& f) {
  const auto it = f.metadata().find("spec");
  if (it == f.metadata().end()) throw IoError(str_cat(f.source(), ": no \"spec\" in __metadata__"));
  const json j = json::parse(it->second);
  GoldenSpec g;
  g.attention.kind = j.at("kind").get<std::string>();
  if (!AttentionRegistry::instance().has(g.attention.kind))
    throw IoError(str_cat(f.source(), ": the golden's attention kind '", g.attention.kind, "' is not registered"));
  const json& dims = j.at("dims");
  g.attention.dims.d_model = dims.at("d_model").get<int64_t>();
  g.attention.dims.n_heads = dims.at("n_heads").get<int64_t>();
  g.attention.dims.max_len = dims.at("max_len").get<int64_t>();
  g.attention.dims.causal = dims.value("causal", false);
  g.attention.options = j.value("options", json::object());
  g.B = j.at("B").get<int64_t>();
  g.n = j.at("n").get<int64_t>();
  return g;
}

// The tensor `name` of the file, which must exist with the given shape, converted to T.
template <class T>
std::vector<T> load(const SafeTensorsFile& f, const std::string& name, const std::vector<int64_t>& shape) {
  if (!f.has(name)) throw IoError(str_cat(f.source(), ": golden tensor '", name, "' is missing"));
  const StoredTensor v = f.get(name);
  if (v.shape != shape)
    throw IoError(str_cat(f.source(), ": golden tensor '", name, "' has shape ", shape_str(v.shape), ", expected ",
                          shape_str(shape)));
  return to_vector<T>(v);
}

template <class T>
const char* type_name() {
  return sizeof(T) == sizeof(float) ? "float" : "double";
}

template <class T>
void check_parity(const SafeTensorsFile& f, const GoldenSpec& g, double forward_tol, double grad_tol) {
  SCOPED_TRACE(type_name<T>());
  const int64_t B = g.B, n = g.n, d = g.attention.dims.d_model;
  const std::vector<int64_t> act_shape = {B, n, d};

  ParamArena<T> arena;
  std::unique_ptr<Attention<T>> layer = make_attention<T>(g.attention, arena);
  arena.allocate();

  // Every parameter of the file goes into the arena by name; every arena parameter must get one.
  const std::string prefix = "param.";
  std::vector<bool> loaded(size_t(arena.count()), false);
  int problems = 0;
  for (const std::string& name : f.names()) {
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string pname = name.substr(prefix.size());
    const int id = arena.find(pname);
    if (id < 0) {
      ADD_FAILURE() << "the golden has parameter '" << pname << "' but the layer declares none of that name";
      ++problems;
      continue;
    }
    const StoredTensor v = f.get(name);
    if (v.shape != arena.info(id).shape) {
      ADD_FAILURE() << "parameter '" << pname << "': golden shape " << shape_str(v.shape) << ", layer shape "
                    << shape_str(arena.info(id).shape);
      ++problems;
      continue;
    }
    const std::vector<T> values = to_vector<T>(v);
    std::copy(values.begin(), values.end(), arena.value(id));
    loaded[size_t(id)] = true;
  }
  for (int id = 0; id < arena.count(); ++id)
    if (!loaded[size_t(id)]) {
      ADD_FAILURE() << "layer parameter '" << arena.info(id).name << "' has no value in the golden";
      ++problems;
    }
  if (problems) return;

  const std::vector<T> x = load<T>(f, "input.x", act_shape);
  std::vector<uint8_t> mask;
  if (f.has("input.key_padding_mask")) mask = load<uint8_t>(f, "input.key_padding_mask", {B, n});
  const std::vector<double> want_out = load<double>(f, "output", act_shape);
  const std::vector<T> grad_out = load<T>(f, "grad_output", act_shape);
  const std::vector<double> want_dx = load<double>(f, "grad.input.x", act_shape);

  AttentionInput<T> in;
  in.x = x.data();
  in.B = B;
  in.n = n;
  in.key_padding_mask = mask.empty() ? nullptr : mask.data();
  std::vector<T> out(size_t(B * n * d));
  layer->forward(in, out.data(), /*training=*/false, /*seed=*/0);
  const double out_err = test::max_rel_error(out.data(), want_out.data(), int64_t(out.size()));
  EXPECT_LE(out_err, forward_tol) << "output";

  // Every gradient the golden holds, and the largest magnitude among them.
  std::vector<std::vector<double>> want_grads;
  double grad_scale = 0;
  for (const double v : want_dx) grad_scale = std::max(grad_scale, std::abs(v));
  for (const ParamInfo& p : arena.params()) {
    const std::string gname = "grad.param." + p.name;
    want_grads.push_back(f.has(gname) ? load<double>(f, gname, p.shape) : std::vector<double>{});
    for (const double v : want_grads.back()) grad_scale = std::max(grad_scale, std::abs(v));
  }
  // A gradient is measured against max(its own largest entry, 1e-3 × the largest gradient entry of
  // the file). Without that floor a gradient that is zero in exact arithmetic (the key bias: softmax
  // ignores a shift shared by all keys, so d/db_k = 0 and PyTorch stores rounding noise ~1e-16) would
  // be judged relative to its own noise.
  const double floor = std::max(1e-12, 1e-3 * grad_scale);

  arena.zero_grad();
  std::vector<T> dx(size_t(B * n * d));
  layer->backward(grad_out.data(), dx.data());
  double worst_grad = test::max_rel_error(dx.data(), want_dx.data(), int64_t(dx.size()), floor);
  EXPECT_LE(worst_grad, grad_tol) << "grad.input.x";
  std::string worst_name = "input.x";
  for (size_t i = 0; i < arena.params().size(); ++i) {
    const ParamInfo& p = arena.params()[i];
    const std::string gname = "grad.param." + p.name;
    if (want_grads[i].empty() && p.numel > 0) {
      ADD_FAILURE() << "the golden has no gradient '" << gname << "'";
      continue;
    }
    const std::vector<double>& want = want_grads[i];
    const double err = test::max_rel_error(arena.grads() + p.offset, want.data(), p.numel, floor);
    EXPECT_LE(err, grad_tol) << gname;
    if (err > worst_grad) worst_grad = err, worst_name = p.name;
  }
  std::printf("[ golden   ] %-8s %s: output max_rel_error %.3g, worst gradient %.3g (%s)\n", type_name<T>(),
              fs::path(f.source()).stem().string().c_str(), out_err, worst_grad, worst_name.c_str());
}

class GoldenParity : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenParity, MatchesPyTorch) {
  const SafeTensorsFile f = SafeTensorsFile::read(GetParam());
  test::expect_golden_versions(f);
  const GoldenSpec g = parse_spec(f);
  check_parity<float>(f, g, 1e-5, 1e-4);
  check_parity<double>(f, g, 1e-10, 1e-10);
}

INSTANTIATE_TEST_SUITE_P(PyTorch, GoldenParity, ::testing::ValuesIn(golden_files()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = fs::path(info.param).stem().string();
                           for (char& c : name)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(GoldenParity);

// An empty or missing golden directory must fail, not silently run zero parity tests.
TEST(GoldenParityFiles, ArePresent) {
  EXPECT_FALSE(golden_files().empty()) << "no *.safetensors goldens in " << kGoldenDir
                                       << " (regenerate them: docs/goldens.md)";
}

// The provenance check itself must be able to fail: a golden without the version fields, or with a
// package listed but not its version, is refused.
TEST(GoldenParityFiles, MetadataWithoutVersionsFails) {
  auto file_with = [](const std::map<std::string, std::string>& meta) {
    SafeTensorsWriter w;
    w.add_f64("output", {1}, std::vector<double>{1.0});
    for (const auto& [k, v] : meta) w.set_metadata(k, v);
    return SafeTensorsFile::parse(w.serialize(), "in-memory golden");
  };
  const std::map<std::string, std::string> full = {{"spec", "{}"},
                                                   {"reference", "r"},
                                                   {"torch_version", "2.15.0"},
                                                   {"python_version", "3.11.7"},
                                                   {"packages", "[\"torch\", \"linformer\"]"},
                                                   {"linformer_version", "0.2.3"}};
  test::expect_golden_versions(file_with(full));  // complete: no failure
  for (const char* drop : {"torch_version", "python_version", "linformer_version", "packages", "reference"}) {
    std::map<std::string, std::string> meta = full;
    meta.erase(drop);
    SCOPED_TRACE(std::string("without ") + drop);
    const SafeTensorsFile f = file_with(meta);
    EXPECT_NONFATAL_FAILURE(test::expect_golden_versions(f), "lacks");
  }
}

// Every file under the directory, as what a golden means depends on its place.
TEST(GoldenParityFiles, EveryGoldenCarriesItsVersions) {
  for (const std::string& path : golden_files()) test::expect_golden_versions(SafeTensorsFile::read(path));
}

}  // namespace
}  // namespace lf
