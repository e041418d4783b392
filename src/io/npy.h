// NumPy's .npy format, version 1.0, for a float32 matrix: the magic "\x93NUMPY", version bytes 1 0,
// a little-endian uint16 header length, the header (a Python dict literal: descr '<f4', C order,
// the shape) padded with spaces and a final '\n' so the data starts at a multiple of 64 bytes, then
// the values row-major in little-endian order. numpy.load reads it
// (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html).
#pragma once
#include <cstdint>
#include <string>

namespace lf {

// The file's bytes for a (rows, cols) float32 matrix.
std::string npy_f32_bytes(int64_t rows, int64_t cols, const float* data);

// Written atomically (write_file_atomic); lf::IoError naming the path on failure.
void write_npy_f32(const std::string& path, int64_t rows, int64_t cols, const float* data);

}  // namespace lf
