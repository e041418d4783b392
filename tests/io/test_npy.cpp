// The .npy writer: the exact header bytes numpy.load expects (magic, version 1.0, little-endian
// header length, the dict, padding to 64 bytes ending in '\n') and the values row-major.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "io/npy.h"
#include "linformer/error.h"
#include "test_util.h"

namespace lf {
namespace {

TEST(Npy, HeaderBytesAndValues) {
  const float v[6] = {1.0f, -2.5f, 3.0f, 0.0f, 1e-8f, 7.0f};
  const std::string b = npy_f32_bytes(2, 3, v);
  // 10 bytes, the 60-byte dict and '\n' are 71: padded to 128.
  ASSERT_EQ(b.size(), 128u + sizeof v);
  EXPECT_EQ(b.substr(0, 6), "\x93NUMPY");
  EXPECT_EQ(b[6], '\x01');
  EXPECT_EQ(b[7], '\x00');
  const size_t header_len = uint8_t(b[8]) | size_t(uint8_t(b[9])) << 8;
  EXPECT_EQ(header_len, 128u - 10u);
  const std::string header = b.substr(10, header_len);
  EXPECT_EQ(header.rfind("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 0), 0u) << header;
  EXPECT_EQ(header.back(), '\n');
  EXPECT_EQ(header.find_first_not_of(' ', header.find('}') + 1), header.size() - 1) << "padded with spaces";
  float back[6];
  std::memcpy(back, b.data() + 128, sizeof back);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(back[i], v[i]) << i;
}

TEST(Npy, LongShapesPadToTheNextMultipleOf64AndZeroRowsHaveNoData) {
  const std::string b = npy_f32_bytes(123456789012, 0, nullptr);
  EXPECT_EQ(b.size() % 64, 0u);
  EXPECT_NE(b.find("'shape': (123456789012, 0), }"), std::string::npos);
  EXPECT_EQ(b.back(), '\n');
  EXPECT_THROW(npy_f32_bytes(-1, 2, nullptr), InvalidArgument);
}

class NpyFile : public test::TempDirTest {
 protected:
  NpyFile() : TempDirTest("npy") {}
};

TEST_F(NpyFile, WrittenFileHoldsTheBytes) {
  const float v[2] = {0.5f, 4.0f};
  write_npy_f32(path("x.npy"), 1, 2, v);
  std::ifstream f(path("x.npy"), std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  EXPECT_EQ(s.str(), npy_f32_bytes(1, 2, v));
  EXPECT_THROW(write_npy_f32(path("no/such/dir/x.npy"), 1, 2, v), IoError);
}

}  // namespace
}  // namespace lf
