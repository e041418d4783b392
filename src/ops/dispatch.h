// How an op reaches its backend. Every op in src/ops/ checks its views (shapes, layouts), finds the
// one device they are on and calls that device's implementation through LF_DISPATCH: today
// src/cpu/; a src/cuda/ folder adds a case here and its own implementations, and no kind or model
// changes. A device the op has no implementation for is an lf::Error naming both. Every dispatch is
// also where the op profiler (linformer/profile.h) times the op by its name.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "core/op_timer.h"
#include "cpu/gemm.h"
#include "linformer/error.h"
#include "linformer/runtime.h"
#include "linformer/tensor.h"

namespace lf::ops {

[[noreturn]] inline void no_backend(const char* op, Device device) {
  throw Error(str_cat(op, ": no implementation for device ", device_name(device)));
}

// The device of an op's views (empty views, data() == null, are ignored); views on different devices
// are refused.
template <class... Views>
Device device_of(const char* op, const Views&... views) {
  Device found = Device::CPU;
  bool any = false;
  auto visit = [&](const auto& v) {
    if (!v.data()) return;
    LF_REQUIRE(!any || v.device() == found, op, ": views on different devices (", device_name(found), " and ",
               device_name(v.device()), ")");
    found = v.device();
    any = true;
  };
  (visit(views), ...);
  return found;
}

// Checks that a view holds uniformly strided rows of its last dimension (what row-wise kernels take).
template <class View>
void require_rows(const char* op, const char* name, const View& v) {
  LF_REQUIRE(v.uniform_rows(), op, ": `", name, "` ", v.shape_string(), " must be rows with unit column stride");
}

// Checks that two views have the same rows × cols.
template <class A, class B>
void require_same_matrix(const char* op, const A& a, const B& b) {
  LF_REQUIRE(a.rows() == b.rows() && a.cols() == b.cols(), op, ": shapes ", a.shape_string(), " and ",
             b.shape_string(), " differ");
}

// Checks that a view is contiguous and, given n, that it holds n elements whatever its shape (the kernel
// reads it as one flat array).
template <class View>
void require_contiguous(const char* op, const char* name, const View& v, int64_t n = -1) {
  LF_REQUIRE(v.contiguous() && (n < 0 || v.numel() == n), op, ": `", name, "` ", v.shape_string(),
             " must be contiguous", n < 0 ? "" : str_cat(" with ", n, " elements"));
}

// Checks that a view is contiguous with exactly these sizes (the kernel addresses it by offsets).
template <class View>
void require_shape(const char* op, const char* name, const View& v, std::initializer_list<int64_t> sizes) {
  bool same = v.contiguous() && v.rank() == int(sizes.size());
  int d = 0;
  for (int64_t size : sizes) same = same && v.size(d++) == size;
  if (same) return;
  std::string want;
  for (int64_t size : sizes) want += (want.empty() ? "(" : ", ") + std::to_string(size);
  throw InvalidArgument(str_cat(op, ": `", name, "` ", v.shape_string(), " must be contiguous ", want, ")"));
}

// Checks that an optional view (null = absent) is contiguous with n elements.
template <class View>
void require_vector_or_empty(const char* op, const char* name, const View& v, int64_t n) {
  if (v.data()) require_contiguous(op, name, v, n);
}

// The profile's detail of a matrix product, marked " bf16" when it runs in bf16 (the calling
// thread's precision, and a shape above gemm's size bound): the same shape is another row, at another rate.
inline profile_detail::Detail product_detail(int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b,
                                             int64_t batch = 1) {
  profile_detail::Detail d = profile_detail::gemm_detail(M, N, K, trans_a, trans_b, batch);
  if (gemm_runs_bf16(M, N, K)) d.text += " bf16";
  return d;
}

// A linear layer's forward product (y = x·Wᵀ), marked " int8" when it is quantised: float, with the
// calling thread's precision at int8 (the other products stay fp32 there and are not marked).
template <class T>
profile_detail::Detail linear_product_detail(int64_t M, int64_t N, int64_t K) {
  profile_detail::Detail d = product_detail(M, N, K, false, true);
  if (std::is_same_v<T, float> && current_precision() == Precision::int8) d.text += " int8";
  return d;
}

}  // namespace lf::ops

// The device's implementation: `call` is a return statement on the CPU's function, e.g.
// LF_DISPATCH("softmax", device, return softmax_forward(x, y, rows, cols)). The call is timed under
// the op's name while a ProfileScope collects (an RAII timer, since `call` returns).
#define LF_DISPATCH(op, device, call) LF_DISPATCH_DETAIL(op, device, ::lf::profile_detail::Detail{}, call)

// The same with the detail the profile keeps of this call (a profile_detail::Detail: text and FLOPs),
// e.g. ::lf::profile_detail::gemm_detail(M, N, K, ta, tb). `detail` is evaluated only while profiling.
#define LF_DISPATCH_DETAIL(op, device, detail, call)                       \
  do {                                                                     \
    ::lf::profile_detail::OpTimer lf_op_timer_(op);                        \
    if (lf_op_timer_.on()) lf_op_timer_.set_detail(detail);                \
    switch (device) {                                                      \
      case ::lf::Device::CPU: call;                                        \
    }                                                                      \
    ::lf::ops::no_backend(op, device);                                     \
  } while (0)
