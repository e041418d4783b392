#include "io/npy.h"

#include <bit>
#include <cstring>

#include "io/atomic_file.h"
#include "linformer/error.h"

namespace lf {

std::string npy_f32_bytes(int64_t rows, int64_t cols, const float* data) {
  static_assert(std::endian::native == std::endian::little, "the values are written as they are in memory: '<f4'");
  LF_REQUIRE(rows >= 0 && cols >= 0, "npy: negative shape (", rows, ", ", cols, ")");
  std::string header = str_cat("{'descr': '<f4', 'fortran_order': False, 'shape': (", rows, ", ", cols, "), }");
  const size_t prefix = 10;  // magic (6), version (2), header length (2)
  const size_t total = (prefix + header.size() + 1 + 63) / 64 * 64;
  header.append(total - prefix - header.size() - 1, ' ');
  header.push_back('\n');
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(char(header.size() & 0xff));
  out.push_back(char(header.size() >> 8));
  out += header;
  const size_t bytes = size_t(rows) * size_t(cols) * sizeof(float);
  out.resize(out.size() + bytes);
  if (bytes) std::memcpy(out.data() + total, data, bytes);
  return out;
}

void write_npy_f32(const std::string& path, int64_t rows, int64_t cols, const float* data) {
  write_file_atomic(path, npy_f32_bytes(rows, cols, data));
}

}  // namespace lf
