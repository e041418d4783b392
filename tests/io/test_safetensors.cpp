// safetensors reading and writing: round trips of every dtype family and odd shapes (scalars, empty
// tensors), the on-disk layout, every validation error on crafted files, and atomic writes that leave
// nothing behind when they fail. Reading files written by Python's safetensors library is covered by
// the PyTorch goldens (tests/attention/test_golden_parity.cpp).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "linformer/error.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace lf {
namespace {

class SafeTensors : public test::TempDirTest {
 protected:
  SafeTensors() : TempDirTest("lf_safetensors") {}

  // A file with the given header text and data bytes; the 8-byte length is the header's own unless
  // `length` overrides it.
  std::string craft(const std::string& header, const std::vector<uint8_t>& data = {},
                    std::optional<uint64_t> length = std::nullopt) {
    const std::string p = path("crafted_" + std::to_string(counter_++) + ".safetensors");
    std::ofstream f(p, std::ios::binary);
    const uint64_t n = length.value_or(header.size());
    f.write(reinterpret_cast<const char*>(&n), 8);
    f.write(header.data(), std::streamsize(header.size()));
    f.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size()));
    return p;
  }
  std::string craft_raw(const std::vector<uint8_t>& bytes) {
    const std::string p = path("raw_" + std::to_string(counter_++) + ".safetensors");
    std::ofstream f(p, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    return p;
  }

  // Reading `file` must throw lf::IoError whose message names the file and contains `problem`.
  static void expect_read_error(const std::string& file, const std::string& problem) {
    try {
      SafeTensorsFile::read(file);
      ADD_FAILURE() << "reading " << file << " did not throw (expected: " << problem << ")";
    } catch (const IoError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(file), std::string::npos) << "message does not name the file: " << msg;
      EXPECT_NE(msg.find(problem), std::string::npos) << "message does not mention '" << problem << "': " << msg;
    }
  }

  // Files left in the test directory other than `keep`.
  std::vector<std::string> leftovers(const std::string& keep = "") const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_))
      if (e.path().filename() != keep) out.push_back(e.path().filename().string());
    return out;
  }

  int counter_ = 0;
};

std::vector<uint8_t> bytes_of(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  return std::vector<uint8_t>(b, b + n);
}

// --- round trips ----------------------------------------------------------------------------------

TEST_F(SafeTensors, RoundTripsDtypesShapesScalarsAndEmptyTensors) {
  const std::vector<float> f32 = {1.5f, -2.25f, 3.0f, 0.0f, -0.0f, 1e-30f};
  const double f64_scalar = 3.141592653589793;
  const std::vector<int64_t> i64 = {-1, 0, INT64_MAX, INT64_MIN};
  const std::vector<int32_t> i32 = {7, -8, 9, -10};
  const std::vector<uint8_t> u8 = {0, 1, 255};
  const std::vector<uint8_t> boolean = {1, 0, 0, 1};
  const std::vector<uint16_t> f16_bits = {0x3C00, 0xC000};  // 1.0, -2.0 as raw half bits

  SafeTensorsWriter w;
  w.add_f32("weights.f32", {2, 3}, f32);
  w.add_f64("scalar", {}, &f64_scalar);
  w.add("ints.i64", "I64", {4}, i64.data(), i64.size() * 8);
  w.add("ints.i32", "I32", {2, 2}, i32.data(), i32.size() * 4);
  w.add("bytes", "U8", {3}, u8.data(), u8.size());
  w.add("mask", "BOOL", {2, 1, 2}, boolean.data(), boolean.size());
  w.add("half", "F16", {2}, f16_bits.data(), 4);
  w.add_f32("empty", {0, 5}, std::vector<float>{});
  w.add_f64("empty_too", {3, 0}, std::vector<double>{});
  w.set_metadata("format", "pt");
  w.set_metadata("note", "{\"json\": \"inside a string\"}");
  const std::string p = path("round.safetensors");
  w.write(p);

  const SafeTensorsFile f = SafeTensorsFile::read(p);
  EXPECT_EQ(f.size(), 9u);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"bytes", "empty", "empty_too", "half", "ints.i32", "ints.i64", "mask",
                                                 "scalar", "weights.f32"}));
  EXPECT_EQ(f.metadata().size(), 2u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "{\"json\": \"inside a string\"}");

  StoredTensor t = f.get("weights.f32");
  EXPECT_EQ(t.dtype, "F32");
  EXPECT_EQ(t.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t.nbytes, 24u);
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(bytes_of(t.data, t.nbytes), bytes_of(f32.data(), 24));
  EXPECT_EQ(to_vector<float>(t), f32);

  t = f.get("scalar");
  EXPECT_EQ(t.dtype, "F64");
  EXPECT_TRUE(t.shape.empty());
  EXPECT_EQ(t.numel(), 1);
  ASSERT_EQ(to_vector<double>(t).size(), 1u);
  EXPECT_EQ(to_vector<double>(t)[0], f64_scalar);

  EXPECT_EQ(to_vector<int64_t>(f.get("ints.i64")), i64);
  EXPECT_EQ(to_vector<int32_t>(f.get("ints.i32")), i32);
  EXPECT_EQ(to_vector<double>(f.get("ints.i32")), (std::vector<double>{7, -8, 9, -10}));
  EXPECT_EQ(to_vector<int>(f.get("bytes")), (std::vector<int>{0, 1, 255}));
  EXPECT_EQ(f.get("mask").shape, (std::vector<int64_t>{2, 1, 2}));
  EXPECT_EQ(to_vector<uint8_t>(f.get("mask")), boolean);
  t = f.get("half");
  EXPECT_EQ(t.dtype, "F16");
  EXPECT_EQ(bytes_of(t.data, t.nbytes), bytes_of(f16_bits.data(), 4));
  EXPECT_THROW(to_vector<float>(t), IoError);  // half precision is not converted

  for (const char* name : {"empty", "empty_too"}) {
    t = f.get(name);
    EXPECT_EQ(t.nbytes, 0u) << name;
    EXPECT_EQ(t.numel(), 0) << name;
    EXPECT_TRUE(to_vector<double>(t).empty()) << name;
  }
  EXPECT_EQ(f.get("empty").shape, (std::vector<int64_t>{0, 5}));
  EXPECT_EQ(f.get("empty_too").shape, (std::vector<int64_t>{3, 0}));

  EXPECT_FALSE(f.has("missing"));
  try {
    f.get("missing");
    ADD_FAILURE() << "get() of a missing tensor did not throw";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("no tensor named 'missing'"), std::string::npos) << e.what();
  }
  EXPECT_EQ(leftovers("round.safetensors"), std::vector<std::string>{}) << "temporary files left behind";
}

TEST_F(SafeTensors, EmptyFileWithOnlyMetadataOrNothing) {
  SafeTensorsWriter w;
  w.write(path("nothing.safetensors"));
  EXPECT_EQ(SafeTensorsFile::read(path("nothing.safetensors")).size(), 0u);
  w.set_metadata("k", "v");
  w.write(path("meta.safetensors"));
  const SafeTensorsFile f = SafeTensorsFile::read(path("meta.safetensors"));
  EXPECT_EQ(f.size(), 0u);
  EXPECT_EQ(f.metadata().at("k"), "v");
}

TEST_F(SafeTensors, LayoutIsAlignedPaddedAndInNameOrder) {
  SafeTensorsWriter w;
  const std::vector<float> b = {1, 2, 3}, a = {4};
  w.add_f32("b", {3}, b);  // added first, laid out second
  w.add_f32("a", {1}, a);
  const std::vector<uint8_t> bytes = w.serialize();
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u) << "data buffer must start 8-byte aligned";
  ASSERT_EQ(bytes.size(), 8 + n + 16);
  const std::string header(bytes.begin() + 8, bytes.begin() + 8 + std::ptrdiff_t(n));
  EXPECT_EQ(header.front(), '{');
  const size_t last = header.find_last_not_of(' ');
  EXPECT_EQ(header[last], '}');
  EXPECT_LT(header.size() - last - 1, 8u) << "padding is spaces, fewer than 8";
  float first = 0;
  std::memcpy(&first, bytes.data() + 8 + n, 4);
  EXPECT_EQ(first, 4.0f) << "tensor 'a' comes first in the data buffer";

  const SafeTensorsFile f = SafeTensorsFile::parse(bytes, "in-memory");
  EXPECT_EQ(to_vector<float>(f.get("a")), a);
  EXPECT_EQ(to_vector<float>(f.get("b")), b);
}

TEST_F(SafeTensors, WriteReplacesAnExistingFile) {
  const std::string p = path("model.safetensors");
  SafeTensorsWriter first;
  first.add_f64("x", {2}, std::vector<double>{1, 2});
  first.write(p);
  SafeTensorsWriter second;
  second.add_f64("y", {1}, std::vector<double>{3});
  second.write(p);
  const SafeTensorsFile f = SafeTensorsFile::read(p);
  EXPECT_FALSE(f.has("x"));
  EXPECT_EQ(to_vector<double>(f.get("y")), std::vector<double>{3});
  EXPECT_EQ(leftovers("model.safetensors"), std::vector<std::string>{});
}

TEST_F(SafeTensors, WriterRefusesBadTensors) {
  SafeTensorsWriter w;
  const float x[4] = {};
  w.add("x", "F32", {2, 2}, x, 16);
  EXPECT_THROW(w.add("x", "F32", {2, 2}, x, 16), InvalidArgument);             // twice
  EXPECT_THROW(w.add("", "F32", {1}, x, 4), InvalidArgument);                  // empty name
  EXPECT_THROW(w.add("__metadata__", "F32", {1}, x, 4), InvalidArgument);      // reserved
  EXPECT_THROW(w.add("y", "F128", {1}, x, 16), InvalidArgument);               // unknown dtype
  EXPECT_THROW(w.add("y", "F32", {2, 2}, x, 12), InvalidArgument);             // size mismatch
  EXPECT_THROW(w.add("y", "F32", {-1, 2}, x, 8), InvalidArgument);             // negative dim
  EXPECT_THROW(w.add_f32("y", {-2, -2}, x), InvalidArgument);                  // negative dims
  EXPECT_THROW(w.add_f32("y", {3}, std::vector<float>{1, 2}), InvalidArgument);  // vector too short
  EXPECT_EQ(w.size(), 1u);
}

// --- validation on read ---------------------------------------------------------------------------

TEST_F(SafeTensors, RefusesMissingAndUnreadableFiles) {
  expect_read_error(path("does_not_exist.safetensors"), "cannot open");
  expect_read_error(path("does_not_exist.safetensors"), "No such file");
  fs::create_directories(path("a_directory"));
  expect_read_error(path("a_directory"), "not a regular file");
}

TEST_F(SafeTensors, RefusesShortFilesAndBadHeaderLengths) {
  expect_read_error(craft_raw({}), "shorter than the 8-byte header length");
  expect_read_error(craft_raw({1, 0, 0, 0, 0}), "shorter than the 8-byte header length");
  expect_read_error(craft("{}", {}, 3), "larger than the file");  // "{}" with length 3
  expect_read_error(craft("{}", {}, 1000), "larger than the file");
  expect_read_error(craft("{}", {}, uint64_t(200) * 1000 * 1000), "exceeds the limit");
  expect_read_error(craft("{}", {}, UINT64_MAX), "exceeds the limit");
}

TEST_F(SafeTensors, RefusesHeadersThatAreNotJsonObjects) {
  expect_read_error(craft("{\"a\": "), "not valid JSON");
  expect_read_error(craft("not json"), "not valid JSON");
  expect_read_error(craft(""), "not valid JSON");
  expect_read_error(craft("{} {}"), "not valid JSON");  // trailing garbage
  expect_read_error(craft("[1, 2]"), "not a JSON object");
  expect_read_error(craft("\"text\""), "not a JSON object");
}

TEST_F(SafeTensors, RefusesEntriesWithMissingOrMistypedFields) {
  const std::vector<uint8_t> data(8);
  expect_read_error(craft(R"({"t": {"shape": [2], "data_offsets": [0, 8]}})", data), "tensor 't': missing \"dtype\"");
  expect_read_error(craft(R"({"t": {"dtype": "F32", "data_offsets": [0, 8]}})", data), "tensor 't': missing \"shape\"");
  expect_read_error(craft(R"({"t": {"dtype": "F32", "shape": [2]}})", data), "tensor 't': missing \"data_offsets\"");
  expect_read_error(craft(R"({"t": [1, 2]})", data), "entry must be an object");
  expect_read_error(craft(R"({"t": {"dtype": 5, "shape": [2], "data_offsets": [0, 8]}})", data),
                    "dtype must be a string");
  expect_read_error(craft(R"({"t": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}})", data),
                    "shape must be an array of integers");
  expect_read_error(craft(R"({"t": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}})", data),
                    "shape must be an array of integers");
  expect_read_error(craft(R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [8]}})", data),
                    "data_offsets must be an array [begin, end]");
  expect_read_error(craft(R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": {"begin": 0}}})", data),
                    "data_offsets must be an array [begin, end]");
  expect_read_error(craft(R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}})", data),
                    "data_offsets must be two non-negative integers");
  expect_read_error(craft(R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, "8"]}})", data),
                    "data_offsets must be two non-negative integers");
}

TEST_F(SafeTensors, RefusesUnknownDtypesAndBadShapes) {
  const std::vector<uint8_t> data(16);
  expect_read_error(craft(R"({"t": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}})", data),
                    "unknown dtype 'F128'");
  expect_read_error(craft(R"({"t": {"dtype": "f32", "shape": [4], "data_offsets": [0, 16]}})", data),
                    "unknown dtype 'f32'");
  expect_read_error(craft(R"({"t": {"dtype": "F32", "shape": [-2, -2], "data_offsets": [0, 16]}})", data),
                    "negative dimension -2");
  // shape × itemsize must equal end − begin
  expect_read_error(craft(R"({"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}})", data),
                    "= 12 bytes but data_offsets [0,16] hold 16 bytes");
  expect_read_error(craft(R"({"t": {"dtype": "F64", "shape": [], "data_offsets": [0, 16]}})", data),
                    "= 8 bytes but data_offsets [0,16] hold 16 bytes");
  expect_read_error(craft(R"({"t": {"dtype": "F32", "shape": [0], "data_offsets": [0, 4]}})", data),
                    "= 0 bytes but data_offsets [0,4] hold 4 bytes");
  expect_read_error(
      craft(R"({"t": {"dtype": "F64", "shape": [4294967296, 4294967296], "data_offsets": [0, 16]}})", data),
      "is too large");
}

TEST_F(SafeTensors, RefusesOffsetsOutsideTheBufferAndOverlaps) {
  const std::vector<uint8_t> data(16);
  expect_read_error(craft(R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}})", data),
                    "outside the data buffer of 16 bytes");
  expect_read_error(craft(R"({"t": {"dtype": "F32", "shape": [0], "data_offsets": [17, 17]}})", data),
                    "outside the data buffer");
  expect_read_error(craft(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})", data),
                    "begin after end");
  expect_read_error(craft(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                              "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                          data),
                    "overlap");
  expect_read_error(craft(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                              "b": {"dtype": "U8", "shape": [1], "data_offsets": [15, 16]}})",
                          data),
                    "tensors 'a' [0, 16) and 'b' [15, 16) overlap");
  // Empty tensors own no bytes: sharing an offset with anything is fine. Holes are tolerated.
  const SafeTensorsFile ok = SafeTensorsFile::read(craft(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                              "e1": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},
                              "e2": {"dtype": "F64", "shape": [0, 3], "data_offsets": [4, 4]},
                              "c": {"dtype": "U8", "shape": [2], "data_offsets": [12, 14]}})",
                                                         data));
  EXPECT_EQ(ok.size(), 4u);
}

TEST_F(SafeTensors, RefusesDuplicateNamesAndKeys) {
  const std::vector<uint8_t> data(8);
  expect_read_error(craft(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                              "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                          data),
                    "duplicate tensor name 'a'");
  expect_read_error(craft(R"({"a": {"dtype": "F32", "dtype": "F64", "shape": [1], "data_offsets": [0, 4]}})", data),
                    "duplicate key 'dtype'");
  expect_read_error(craft(R"({"__metadata__": {"k": "1", "k": "2"}})"), "duplicate key 'k'");
  expect_read_error(craft(R"({"__metadata__": {}, "__metadata__": {}})"), "duplicate tensor name '__metadata__'");
}

TEST_F(SafeTensors, RefusesMetadataThatIsNotStrings) {
  expect_read_error(craft(R"({"__metadata__": {"epoch": 3}})"), "__metadata__ value of 'epoch' must be a string");
  expect_read_error(craft(R"({"__metadata__": {"nested": {"a": "b"}}})"), "__metadata__ value of 'nested' must be a string");
  expect_read_error(craft(R"({"__metadata__": ["a", "b"]})"), "__metadata__ must be an object");
}

TEST_F(SafeTensors, ParseNamesTheSourceInErrors) {
  try {
    SafeTensorsFile::parse({1, 2, 3}, "my-buffer");
    ADD_FAILURE() << "parse of 3 bytes did not throw";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("my-buffer"), std::string::npos) << e.what();
  }
}

// --- failing writes -------------------------------------------------------------------------------

TEST_F(SafeTensors, WriteIntoAMissingDirectoryThrowsAndLeavesNothing) {
  SafeTensorsWriter w;
  w.add_f32("x", {1}, std::vector<float>{1});
  const std::string target = path("no/such/dir/model.safetensors");
  try {
    w.write(target);
    ADD_FAILURE() << "write into a missing directory did not throw";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find(target), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No such file or directory"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(target));
  EXPECT_EQ(leftovers(), std::vector<std::string>{});
}

TEST_F(SafeTensors, WriteIntoAReadOnlyDirectoryThrowsAndLeavesNothing) {
  if (::geteuid() == 0) GTEST_SKIP() << "running as root: directory permissions are not enforced";
  const fs::path ro = dir_ / "read_only";
  fs::create_directories(ro);
  fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
  SafeTensorsWriter w;
  w.add_f32("x", {1}, std::vector<float>{1});
  EXPECT_THROW(w.write((ro / "model.safetensors").string()), IoError);
  fs::permissions(ro, fs::perms::owner_all);
  EXPECT_TRUE(fs::is_empty(ro));
}

TEST_F(SafeTensors, FailedRenameRemovesTheTemporaryAndKeepsTheTarget) {
  // The target is a non-empty directory: the temporary file is written, the rename fails.
  const fs::path target = dir_ / "target";
  fs::create_directories(target / "inside");
  SafeTensorsWriter w;
  w.add_f32("x", {1}, std::vector<float>{1});
  try {
    w.write(target.string());
    ADD_FAILURE() << "write over a directory did not throw";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("renaming"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::is_directory(target / "inside"));
  EXPECT_EQ(leftovers(), std::vector<std::string>{"target"}) << "the temporary file was left behind";
}

}  // namespace
}  // namespace lf
