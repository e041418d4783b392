// The exceptions, JSON conversion and array checks every part of the extension uses (bindings.h).
#include <nanobind/stl/string.h>

#include <limits>

#include "bindings.h"

namespace lf::py {
namespace {

// The Python classes of lf::InvalidArgument, lf::IoError and lf::Error, made once at import.
PyObject* g_error = nullptr;
PyObject* g_invalid_argument = nullptr;
PyObject* g_io_error = nullptr;

PyObject* make_exception(nb::module_& m, const char* name, PyObject* base, PyObject* extra_base, const char* doc) {
  const std::string qualified = std::string("linformer.") + name;
  PyObject* bases = extra_base ? PyTuple_Pack(2, base, extra_base) : PyTuple_Pack(1, base);
  PyObject* type = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, bases, nullptr);
  Py_DECREF(bases);
  if (!type) throw nb::python_error();
  m.attr(name) = nb::handle(type);
  return type;
}

// Reads element i (in elements, strides applied by the caller) of a host array of an integer or bool dtype.
int64_t integer_at(const nb::ndarray<nb::ro>& a, int64_t offset) {
  const char* p = static_cast<const char*>(a.data()) + offset * int64_t(a.itemsize());
  const nb::dlpack::dtype t = a.dtype();
  if (t.code == uint8_t(nb::dlpack::dtype_code::Int)) {
    switch (t.bits) {
      case 8: return *reinterpret_cast<const int8_t*>(p);
      case 16: return *reinterpret_cast<const int16_t*>(p);
      case 32: return *reinterpret_cast<const int32_t*>(p);
      case 64: return *reinterpret_cast<const int64_t*>(p);
    }
  } else if (t.code == uint8_t(nb::dlpack::dtype_code::UInt) || t.code == uint8_t(nb::dlpack::dtype_code::Bool)) {
    switch (t.bits) {
      case 8: return *reinterpret_cast<const uint8_t*>(p);
      case 16: return *reinterpret_cast<const uint16_t*>(p);
      case 32: return *reinterpret_cast<const uint32_t*>(p);
      case 64: {
        const uint64_t v = *reinterpret_cast<const uint64_t*>(p);
        return v > uint64_t(std::numeric_limits<int64_t>::max()) ? std::numeric_limits<int64_t>::max() : int64_t(v);
      }
    }
  }
  throw nb::type_error("unsupported dtype");  // callers check the dtype first
}

bool is_integer_dtype(const nb::dlpack::dtype& t, bool allow_bool) {
  const bool integer = t.code == uint8_t(nb::dlpack::dtype_code::Int) || t.code == uint8_t(nb::dlpack::dtype_code::UInt);
  const bool boolean = t.code == uint8_t(nb::dlpack::dtype_code::Bool);
  return t.lanes == 1 && (t.bits == 8 || t.bits == 16 || t.bits == 32 || t.bits == 64) && (integer || (allow_bool && boolean));
}

void require_host(const nb::ndarray<nb::ro>& a, const char* what) {
  if (a.device_type() != nb::device::cpu::value)
    throw nb::type_error(str_cat("`", what, "` must be on the CPU (device type ", a.device_type(),
                                 "); move it with .cpu() first").c_str());
}

// Visits every element of a 1-D or 2-D array in row-major order: f(index, element offset).
template <class F>
void for_each_element(const nb::ndarray<nb::ro>& a, F&& f) {
  const int64_t rows = a.ndim() == 2 ? int64_t(a.shape(0)) : 1, cols = int64_t(a.shape(a.ndim() - 1));
  const int64_t row_stride = a.ndim() == 2 ? a.stride(0) : 0, col_stride = a.stride(a.ndim() - 1);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) f(r * cols + c, r * row_stride + c * col_stride);
}

}  // namespace

std::string describe(const nb::ndarray<nb::ro>& a) {
  std::string s = "(";
  for (size_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  if (a.ndim() == 1) s += ",";
  s += ") ";
  const nb::dlpack::dtype t = a.dtype();
  switch (nb::dlpack::dtype_code(t.code)) {
    case nb::dlpack::dtype_code::Int: s += "int"; break;
    case nb::dlpack::dtype_code::UInt: s += "uint"; break;
    case nb::dlpack::dtype_code::Float: s += "float"; break;
    case nb::dlpack::dtype_code::Bool: return s + "bool";
    case nb::dlpack::dtype_code::Complex: s += "complex"; break;
    default: s += "dtype code " + std::to_string(t.code) + "/"; break;
  }
  return s + std::to_string(t.bits);
}

void bind_errors(nb::module_& m) {
  g_error = make_exception(m, "Error", PyExc_RuntimeError, nullptr,
                           "A failure of the linformer engine (a non-finite loss, a memory limit, ...).");
  g_invalid_argument = make_exception(m, "InvalidArgument", g_error, PyExc_ValueError,
                                      "A configuration, shape or argument the caller got wrong.");
  g_io_error = make_exception(m, "IoError", g_error, PyExc_OSError,
                              "A file that is missing, unreadable, truncated or malformed.");
  // Most derived first: lf::InvalidArgument and lf::IoError are lf::Errors.
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const InvalidArgument& e) {
      PyErr_SetString(g_invalid_argument, e.what());
    } catch (const IoError& e) {
      PyErr_SetString(g_io_error, e.what());
    } catch (const Error& e) {
      PyErr_SetString(g_error, e.what());
    }
  });
}

nb::object to_python(const json& j) { return nb::module_::import_("json").attr("loads")(j.dump()); }

json from_python(const nb::handle& obj, const char* what) {
  std::string text;
  try {
    text = nb::cast<std::string>(nb::module_::import_("json").attr("dumps")(obj));
  } catch (const nb::python_error& e) {
    throw nb::type_error(str_cat("`", what, "` must be JSON-serialisable (dicts, lists, str, int, float, bool, None): ",
                                 e.what()).c_str());
  }
  return json::parse(text);
}

nb::str text_to_python(const std::string& bytes) {
  PyObject* s = PyUnicode_DecodeUTF8(bytes.data(), Py_ssize_t(bytes.size()), "replace");
  if (!s) throw nb::python_error();
  return nb::steal<nb::str>(s);
}

nb::ndarray<nb::numpy, float> float_array(const float* values, std::vector<size_t> shape) {
  size_t count = 1;
  for (size_t s : shape) count *= s;
  float* data = new float[count];
  std::copy(values, values + count, data);
  nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<float*>(p); });
  return nb::ndarray<nb::numpy, float>(data, shape.size(), shape.data(), owner);
}

TokenArray token_array(const nb::ndarray<nb::ro>& a, const char* what) {
  require_host(a, what);
  if (!is_integer_dtype(a.dtype(), /*allow_bool=*/false))
    throw nb::type_error(str_cat("`", what, "` must hold integer token ids, got ", describe(a)).c_str());
  if (a.ndim() != 1 && a.ndim() != 2)
    throw nb::value_error(str_cat("`", what, "` must be (batch, length) or (length,), got ", describe(a)).c_str());
  TokenArray t;
  t.batched = a.ndim() == 2;
  t.B = t.batched ? int64_t(a.shape(0)) : 1;
  t.n = int64_t(a.shape(a.ndim() - 1));
  if (t.B == 0 || t.n == 0) throw nb::value_error(str_cat("`", what, "` is empty: ", describe(a)).c_str());
  t.ids.resize(size_t(t.B * t.n));
  for_each_element(a, [&](int64_t i, int64_t at) {
    const int64_t id = integer_at(a, at);
    if (id < std::numeric_limits<int32_t>::min() || id > std::numeric_limits<int32_t>::max())
      throw nb::value_error(str_cat("`", what, "` holds the id ", id, " at flat index ", i, ", outside int32").c_str());
    t.ids[size_t(i)] = int32_t(id);
  });
  return t;
}

std::vector<uint8_t> padding_array(const nb::ndarray<nb::ro>& a, int64_t B, int64_t n, const char* what) {
  require_host(a, what);
  if (!is_integer_dtype(a.dtype(), /*allow_bool=*/true))
    throw nb::type_error(str_cat("`", what, "` must be a bool or integer array (nonzero = padding), got ", describe(a)).c_str());
  const bool matches = a.ndim() == 2 ? int64_t(a.shape(0)) == B && int64_t(a.shape(1)) == n
                                     : a.ndim() == 1 && B == 1 && int64_t(a.shape(0)) == n;
  if (!matches)
    throw nb::value_error(str_cat("`", what, "` must have the tokens' shape (", B, ", ", n, "), got ", describe(a)).c_str());
  std::vector<uint8_t> mask(size_t(B * n));
  for_each_element(a, [&](int64_t i, int64_t at) { mask[size_t(i)] = integer_at(a, at) != 0; });
  return mask;
}

}  // namespace lf::py
