// What the parts of the extension linformer._core share: one bind_<part>() per file (module.cpp calls
// them in order), JSON ⇄ Python conversion, and the checks that turn a wrong array into a clear Python
// exception instead of a crash. Arrays come in as nanobind ndarrays, so numpy arrays (buffer protocol)
// and torch tensors (DLPack) are both accepted; a float array that matches is used in place, never copied.
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <string>
#include <vector>

#include "linformer/linformer.h"

namespace lf::py {

namespace nb = nanobind;

// The parts of the API, in the order module.cpp binds them (errors first: the others' docstrings
// name the exception classes).
void bind_errors(nb::module_& m);
void bind_model(nb::module_& m);
void bind_trainer(nb::module_& m);

// nlohmann::json <-> Python objects (through Python's json module: configs are small).
nb::object to_python(const json& j);
json from_python(const nb::handle& obj, const char* what);

// Text from the engine (bytes of a byte-level model) as a str: bytes that are not UTF-8 (a model may cut
// or invent a character) become U+FFFD.
nb::str text_to_python(const std::string& bytes);

// A C-contiguous float32 array on the host owning `values` (copied): what the API returns.
nb::ndarray<nb::numpy, float> float_array(const float* values, std::vector<size_t> shape);

// Token ids of an integer array (B, n) or (n,) (then B = 1): any integer dtype, any strides; the ids are
// copied to int32 (every id must fit). `what` names the argument in errors: TypeError for a non-integer
// dtype or a device array, ValueError for a wrong rank, an empty array or an id outside int32.
struct TokenArray {
  std::vector<int32_t> ids;
  int64_t B = 0, n = 0;
  bool batched = true;  // false: the caller passed (n,)
};
TokenArray token_array(const nb::ndarray<nb::ro>& a, const char* what);

// A key padding mask (B, n), nonzero = padding (PyTorch's convention): bool or any integer dtype,
// copied to bytes; ValueError unless its shape is (B, n).
std::vector<uint8_t> padding_array(const nb::ndarray<nb::ro>& a, int64_t B, int64_t n, const char* what);

// "(2, 3) int64" for error messages.
std::string describe(const nb::ndarray<nb::ro>& a);

}  // namespace lf::py
