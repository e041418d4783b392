// Heap accounting for `linformer bench`: the global operator new/delete of the `linformer` binary
// count the bytes in use and their peak, so that a benchmark can report the memory its buffers took
// (every tensor of the library lives in a std::vector) apart from the process's RSS. The cost is one
// relaxed atomic add per allocation.
#include <malloc.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "cli/heap_accounting.h"

namespace {
std::atomic<int64_t> g_current{0}, g_peak{0};

void* counted_alloc(std::size_t size) {
  void* p = std::malloc(size ? size : 1);
  if (!p) throw std::bad_alloc();
  const int64_t now = g_current.fetch_add(int64_t(malloc_usable_size(p)), std::memory_order_relaxed) +
                      int64_t(malloc_usable_size(p));
  int64_t peak = g_peak.load(std::memory_order_relaxed);
  while (now > peak && !g_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
  return p;
}

void counted_free(void* p) noexcept {
  if (!p) return;
  g_current.fetch_sub(int64_t(malloc_usable_size(p)), std::memory_order_relaxed);
  std::free(p);
}
}  // namespace

void* operator new(std::size_t size) { return counted_alloc(size); }
void* operator new[](std::size_t size) { return counted_alloc(size); }
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_free(p); }
// The nothrow forms too (std::stable_sort's temporary buffer uses them): otherwise a sanitizer's own
// nothrow new would hand out memory that the counted delete above frees with free().
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return counted_alloc(size);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}
void* operator new[](std::size_t size, const std::nothrow_t& tag) noexcept { return operator new(size, tag); }
void operator delete(void* p, const std::nothrow_t&) noexcept { counted_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { counted_free(p); }

namespace lf::cli {
int64_t heap_current_bytes() { return g_current.load(std::memory_order_relaxed); }
int64_t heap_peak_bytes() { return g_peak.load(std::memory_order_relaxed); }
void heap_reset_peak() { g_peak.store(g_current.load(std::memory_order_relaxed), std::memory_order_relaxed); }
}  // namespace lf::cli
