// Tensor views: what the ops layer (src/ops/) takes and hands to a backend. A view does not own its
// elements; it carries where they are (a pointer and the device that pointer belongs to), their
// type (from T) and a strided shape of rank 1 to 4, as a PyTorch tensor does, so `k.t()` is a view
// of the same elements with two strides swapped and an op sees a transposed operand without a copy.
// `Buffer<T>` owns the elements of a layer's activation on one device; kinds and the model hold their
// tensors in it and build views from it.
#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "linformer/error.h"

namespace lf {

// Where a view's elements live. Every op dispatches on it (src/ops/dispatch.h); a device without an
// implementation of the op is a clear error, not a crash.
enum class Device : uint8_t { CPU };
inline const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "unknown"; }

enum class DType : uint8_t { F32, F64, I32, U8 };
template <class T>
constexpr DType dtype_of() {
  using U = std::remove_const_t<T>;
  if constexpr (std::is_same_v<U, float>) return DType::F32;
  else if constexpr (std::is_same_v<U, double>) return DType::F64;
  else if constexpr (std::is_same_v<U, int32_t>) return DType::I32;
  else {
    static_assert(std::is_same_v<U, uint8_t>, "views hold float, double, int32 or uint8 elements");
    return DType::U8;
  }
}
inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::F64: return "float64";
    case DType::I32: return "int32";
    case DType::U8: return "uint8";
  }
  return "unknown";
}

inline constexpr int kMaxRank = 4;

template <class T>
class TensorView {
 public:
  TensorView() = default;
  // Contiguous row-major elements of `shape`.
  TensorView(T* data, std::initializer_list<int64_t> shape, Device device = Device::CPU) : data_(data), device_(device) {
    LF_REQUIRE(shape.size() >= 1 && int(shape.size()) <= kMaxRank, "a tensor view has rank 1 to ", kMaxRank, ", not ",
               shape.size());
    rank_ = int(shape.size());
    int i = 0;
    for (int64_t s : shape) sizes_[size_t(i++)] = s;
    int64_t stride = 1;
    for (int d = rank_ - 1; d >= 0; --d) {
      LF_REQUIRE(sizes_[size_t(d)] >= 0, "a tensor view has a negative size in ", shape_string());
      strides_[size_t(d)] = stride;
      stride *= sizes_[size_t(d)];
    }
  }
  // Any strides (elements), e.g. one head's columns of a (B·n, h·d_h) activation.
  static TensorView strided(T* data, std::initializer_list<int64_t> shape, std::initializer_list<int64_t> strides,
                            Device device = Device::CPU) {
    LF_REQUIRE(shape.size() == strides.size(), "a tensor view needs one stride per dimension");
    TensorView v(data, shape, device);
    int i = 0;
    for (int64_t s : strides) v.strides_[size_t(i++)] = s;
    return v;
  }

  // A view of const elements converts implicitly, as T* does to const T*.
  operator TensorView<const T>() const {
    TensorView<const T> v;
    v.data_ = data_;
    v.rank_ = rank_;
    v.sizes_ = sizes_;
    v.strides_ = strides_;
    v.device_ = device_;
    return v;
  }

  T* data() const { return data_; }
  int rank() const { return rank_; }
  int64_t size(int d) const { return sizes_[size_t(axis(d))]; }
  int64_t stride(int d) const { return strides_[size_t(axis(d))]; }
  Device device() const { return device_; }
  static constexpr DType dtype() { return dtype_of<T>(); }
  int64_t numel() const {
    int64_t n = 1;
    for (int d = 0; d < rank_; ++d) n *= sizes_[size_t(d)];
    return n;
  }
  bool contiguous() const {
    int64_t expected = 1;
    for (int d = rank_ - 1; d >= 0; --d) {
      if (sizes_[size_t(d)] != 1 && strides_[size_t(d)] != expected) return false;
      expected *= sizes_[size_t(d)];
    }
    return true;
  }
  // Rows of the last dimension with one uniform stride between them (every leading dimension folds
  // into rows): what row-wise kernels (softmax, layernorm, linear) take.
  bool uniform_rows() const {
    if (strides_[size_t(rank_ - 1)] != 1) return false;
    for (int d = rank_ - 2; d > 0; --d)
      if (sizes_[size_t(d - 1)] > 1 && strides_[size_t(d - 1)] != sizes_[size_t(d)] * strides_[size_t(d)]) return false;
    return true;
  }
  int64_t cols() const { return sizes_[size_t(rank_ - 1)]; }
  int64_t rows() const { return numel() / (cols() ? cols() : 1); }
  int64_t row_stride() const { return rank_ >= 2 ? strides_[size_t(rank_ - 2)] : cols(); }

  // The same elements with the last two dimensions swapped (no copy).
  TensorView t() const {
    LF_REQUIRE(rank_ >= 2, "t() needs a view of rank 2 or more, not ", shape_string());
    TensorView v = *this;
    std::swap(v.sizes_[size_t(rank_ - 1)], v.sizes_[size_t(rank_ - 2)]);
    std::swap(v.strides_[size_t(rank_ - 1)], v.strides_[size_t(rank_ - 2)]);
    return v;
  }
  // A range [start, start + length) of dimension d.
  TensorView narrow(int d, int64_t start, int64_t length) const {
    d = axis(d);
    LF_REQUIRE(start >= 0 && length >= 0 && start + length <= sizes_[size_t(d)], "narrow(", d, ", ", start, ", ", length,
               ") is outside ", shape_string());
    TensorView v = *this;
    v.data_ = data_ + start * strides_[size_t(d)];
    v.sizes_[size_t(d)] = length;
    return v;
  }

  std::string shape_string() const {
    std::string s = "(";
    for (int d = 0; d < rank_; ++d) s += (d ? ", " : "") + std::to_string(sizes_[size_t(d)]);
    return s + ")";
  }

 private:
  template <class>
  friend class TensorView;
  int axis(int d) const {
    const int a = d < 0 ? d + rank_ : d;
    LF_REQUIRE(a >= 0 && a < rank_, "dimension ", d, " of a view of rank ", rank_);
    return a;
  }

  T* data_ = nullptr;
  int rank_ = 1;
  std::array<int64_t, kMaxRank> sizes_{};
  std::array<int64_t, kMaxRank> strides_{1, 1, 1, 1};
  Device device_ = Device::CPU;
};

// The (rows, cols) matrix at `data` whose rows are `ld` elements apart (ld = cols when dense), on the
// CPU: how the kinds address one head of a (B·n, h·d_h) activation.
template <class T>
TensorView<T> matrix(T* data, int64_t rows, int64_t cols, int64_t ld = 0) {
  return TensorView<T>::strided(data, {rows, cols}, {ld ? ld : cols, 1});
}
// `count` such matrices, `batch_stride` elements apart (0: one matrix shared by every item).
template <class T>
TensorView<T> matrices(T* data, int64_t count, int64_t batch_stride, int64_t rows, int64_t cols, int64_t ld = 0) {
  return TensorView<T>::strided(data, {count, rows, cols}, {batch_stride, ld ? ld : cols, 1});
}
// n contiguous elements.
template <class T>
TensorView<T> vector_view(T* data, int64_t n) {
  return TensorView<T>(data, {n});
}

// The elements of one activation or scratch, owned, on one device: what the kinds, the heads and the
// model keep their tensors in (never a std::vector, which is host memory). On the CPU a std::vector;
// the interface is all the layers use, so another device's storage slots in behind it: resize /
// assign / release, data() and size(), and views (`view(shape)`, or matrix() / matrices() over
// data()). It has no element access: elements are read and written by ops only.
// resize() keeps the elements and the allocation when the size does not change (a layer calls it
// every forward) and value-initialises (zeros) new elements, as std::vector does; release() frees the
// memory itself, as an inference forward must.
template <class T>
class Buffer {
 public:
  explicit Buffer(Device device = Device::CPU) : device_(device) {}
  // n elements, zeros.
  explicit Buffer(int64_t n, Device device = Device::CPU) : storage_(size_t(n)), device_(device) {}
  void resize(int64_t n) { storage_.resize(size_t(n)); }
  // n elements, each `value`.
  void assign(int64_t n, T value) { storage_.assign(size_t(n), value); }
  // Frees the elements (not only clears them): an inference forward returns its memory this way.
  void release() { std::vector<T>().swap(storage_); }
  T* data() { return storage_.data(); }
  const T* data() const { return storage_.data(); }
  int64_t size() const { return int64_t(storage_.size()); }
  bool empty() const { return storage_.empty(); }
  Device device() const { return device_; }
  // The first elements as a contiguous view of `shape` on the buffer's device.
  TensorView<T> view(std::initializer_list<int64_t> shape) { return checked_view(data(), shape); }
  TensorView<const T> view(std::initializer_list<int64_t> shape) const { return checked_view(data(), shape); }

 private:
  template <class P>
  TensorView<P> checked_view(P* data, std::initializer_list<int64_t> shape) const {
    TensorView<P> v(data, shape, device_);
    LF_REQUIRE(v.numel() <= size(), "a view of shape ", v.shape_string(), " over a buffer of ", size(), " elements");
    return v;
  }

  std::vector<T> storage_;
  Device device_;
};

}  // namespace lf
