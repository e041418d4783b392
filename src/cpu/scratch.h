// A per-thread work buffer, grow-only and uninitialised: a std::vector resized between the model's
// shapes would zero its growth on every call (megabytes per product). Hold it thread_local.
#pragma once
#include <cstddef>
#include <memory>

namespace lf {

template <class T>
struct GrowOnlyBuffer {
  std::unique_ptr<T[]> data;
  size_t capacity = 0;
  T* get(size_t n) {
    if (n > capacity) data.reset(new T[capacity = n]);
    return data.get();
  }
};

}  // namespace lf
