// The safetensors format (https://github.com/huggingface/safetensors), read and written by our own
// code. A file is:
//   8 bytes   N, the header length, unsigned little-endian
//   N bytes   a JSON object: {"<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]},
//             ..., "__metadata__": {"<key>": "<string value>"}} (metadata optional), which may be
//             padded at the end with spaces
//   the rest  the data buffer; a tensor's bytes are [begin, end) relative to its start, row-major,
//             little-endian
// Reading validates everything (see SafeTensorsFile::read) and throws lf::IoError naming the file and
// the problem. Writing is atomic: a temporary file in the target's directory is written, flushed to
// disk and renamed over the target, so a crash or an error never leaves a half-written file.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "linformer/error.h"

namespace lf {

// Bytes per element of a safetensors dtype ("F32", "BF16", "I64", "BOOL", ...); 0 when the dtype is
// not one we know. Known: BOOL U8 I8 F8_E4M3 F8_E5M2 U16 I16 F16 BF16 U32 I32 F32 U64 I64 F64.
size_t safetensors_dtype_size(const std::string& dtype);

// One tensor of a loaded file. `data` points into the file's buffer (valid while the SafeTensorsFile
// lives) and may be unaligned: read it with memcpy or to_vector().
struct TensorView {
  std::string dtype;
  std::vector<int64_t> shape;  // [] for a scalar
  const uint8_t* data = nullptr;
  size_t nbytes = 0;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
  }
};

// A whole safetensors file in memory.
class SafeTensorsFile {
 public:
  // Loads and validates the file. Throws lf::IoError naming the file and the problem: missing or
  // unreadable file; shorter than 8 bytes; header length beyond the file or above 100 MB; header not
  // JSON or not an object; duplicate keys; an entry that is not an object or lacks dtype, shape or
  // data_offsets or has them with the wrong types; unknown dtype; negative dimensions; a byte size
  // (shape × itemsize) different from end − begin; offsets outside the data buffer; overlapping
  // tensors; __metadata__ that is not an object of strings.
  static SafeTensorsFile read(const std::string& path);
  // The same validation on bytes already in memory; `source` names them in error messages.
  static SafeTensorsFile parse(std::vector<uint8_t> bytes, const std::string& source);

  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  // Throws lf::IoError when the file has no tensor of that name.
  TensorView get(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  size_t size() const { return entries_.size(); }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& source() const { return source_; }

 private:
  struct Entry {
    std::string dtype;
    std::vector<int64_t> shape;
    size_t begin = 0, end = 0;  // into the data buffer
  };
  std::string source_;
  std::vector<uint8_t> bytes_;  // the whole file
  size_t data_start_ = 0;       // 8 + header length
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

// The tensor's elements converted to T. Converts F64, F32, I64, I32, I16, I8, U64, U32, U16, U8 and
// BOOL; throws lf::IoError for any other dtype (F16, BF16, F8: convert those yourself).
template <class T>
std::vector<T> to_vector(const TensorView& t);

// Builds a safetensors file and writes it atomically.
class SafeTensorsWriter {
 public:
  // Adds a tensor (the bytes are copied). Throws lf::InvalidArgument for an empty, reserved
  // (__metadata__) or repeated name, an unknown dtype, a negative dimension, or nbytes different from
  // numel(shape) × itemsize.
  void add(const std::string& name, const std::string& dtype, const std::vector<int64_t>& shape, const void* data,
           size_t nbytes);
  // numel(shape) elements from data.
  void add_f32(const std::string& name, const std::vector<int64_t>& shape, const float* data);
  void add_f64(const std::string& name, const std::vector<int64_t>& shape, const double* data);
  void add_f32(const std::string& name, const std::vector<int64_t>& shape, const std::vector<float>& data);
  void add_f64(const std::string& name, const std::vector<int64_t>& shape, const std::vector<double>& data);
  // A string entry of __metadata__ (set again: replaced).
  void set_metadata(const std::string& key, const std::string& value);

  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  size_t size() const { return tensors_.size(); }

  // The file's bytes: 8-byte length, the header padded with spaces so the data starts at a multiple
  // of 8, then the tensors in name order.
  std::vector<uint8_t> serialize() const;
  // Writes serialize() to `path + ".tmp.<pid>"` in the target's directory, fsyncs it, renames it over
  // `path` and fsyncs the directory. On any failure the temporary file is removed, the target is left
  // as it was, and lf::IoError names the path and the system error.
  void write(const std::string& path) const;

 private:
  struct Tensor {
    std::string dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::map<std::string, Tensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// --- implementation of to_vector ------------------------------------------------------------------

namespace detail {
template <class T, class S>
void convert_elements(const uint8_t* src, size_t count, std::vector<T>& out) {
  out.resize(count);
  for (size_t i = 0; i < count; ++i) {
    S s;
    std::memcpy(&s, src + i * sizeof(S), sizeof(S));
    out[i] = static_cast<T>(s);
  }
}
}  // namespace detail

template <class T>
std::vector<T> to_vector(const TensorView& t) {
  std::vector<T> out;
  const size_t itemsize = safetensors_dtype_size(t.dtype);
  const size_t count = itemsize ? t.nbytes / itemsize : 0;
  const std::string& d = t.dtype;
  if (d == "F64") detail::convert_elements<T, double>(t.data, count, out);
  else if (d == "F32") detail::convert_elements<T, float>(t.data, count, out);
  else if (d == "I64") detail::convert_elements<T, int64_t>(t.data, count, out);
  else if (d == "I32") detail::convert_elements<T, int32_t>(t.data, count, out);
  else if (d == "I16") detail::convert_elements<T, int16_t>(t.data, count, out);
  else if (d == "I8") detail::convert_elements<T, int8_t>(t.data, count, out);
  else if (d == "U64") detail::convert_elements<T, uint64_t>(t.data, count, out);
  else if (d == "U32") detail::convert_elements<T, uint32_t>(t.data, count, out);
  else if (d == "U16") detail::convert_elements<T, uint16_t>(t.data, count, out);
  else if (d == "U8") detail::convert_elements<T, uint8_t>(t.data, count, out);
  else if (d == "BOOL") {
    out.resize(count);
    for (size_t i = 0; i < count; ++i) out[i] = static_cast<T>(t.data[i] != 0 ? 1 : 0);
  } else {
    throw IoError(str_cat("cannot convert a tensor of dtype ", d,
                          " (supported: F64, F32, I64, I32, I16, I8, U64, U32, U16, U8, BOOL)"));
  }
  return out;
}

}  // namespace lf
