// The ops' side of the profiler (linformer/profile.h): an OpTimer lives for one op call (LF_DISPATCH,
// src/ops/dispatch.h, makes it) and, when a ProfileScope is collecting on this thread, adds the call's
// exclusive time to it. Without a scope it costs one relaxed atomic load.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

namespace lf::profile_detail {

extern std::atomic<bool> g_collecting;  // a ProfileScope is active (somewhere)

// What distinguishes an op's calls in a profile, and their FLOPs (0: not counted).
struct Detail {
  std::string text;
  double flops = 0;
};

// The detail of a matrix product (M × K) · (K × N), `batch` times.
Detail gemm_detail(int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b, int64_t batch = 1);

class OpTimer {
 public:
  explicit OpTimer(const char* op) {
    if (g_collecting.load(std::memory_order_relaxed)) begin(op);
  }
  ~OpTimer() {
    if (on_) end();
  }
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

  // Whether this call is being timed (only then is a detail worth computing).
  bool on() const { return on_; }
  void set_detail(Detail d) { detail_ = std::move(d); }

 private:
  void begin(const char* op);
  void end();

  bool on_ = false;
  const char* op_ = nullptr;
  uint64_t session_ = 0;
  OpTimer* parent_ = nullptr;
  std::chrono::steady_clock::time_point t0_;
  double child_seconds_ = 0;  // time of the ops nested in this one
  Detail detail_;
};

}  // namespace lf::profile_detail
