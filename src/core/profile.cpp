// The op profiler's collector (linformer/profile.h) and the ops' timer (core/op_timer.h).
#include "linformer/profile.h"

#include <omp.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <utility>

#include "core/op_timer.h"
#include "linformer/error.h"

namespace lf {
namespace profile_detail {

std::atomic<bool> g_collecting{false};

namespace {

struct Totals {
  int64_t calls = 0;
  double seconds = 0, flops = 0;
};

// The collector. A session is one ProfileScope; only the thread that made it records into it.
std::mutex g_mutex;
uint64_t g_last_session = 0;                   // under g_mutex
std::atomic<uint64_t> g_active_session{0};     // 0: none
std::chrono::steady_clock::time_point g_start;  // under g_mutex
std::map<std::pair<std::string, std::string>, Totals> g_totals;  // under g_mutex
thread_local uint64_t t_session = 0;      // the session this thread records into
thread_local OpTimer* t_current = nullptr;  // the innermost op being timed on this thread

}  // namespace

Detail gemm_detail(int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b, int64_t batch) {
  return {str_cat("M=", M, " N=", N, " K=", K, " tA=", int(trans_a), " tB=", int(trans_b), " batch=", batch),
          2.0 * double(M) * double(N) * double(K) * double(batch)};
}

void OpTimer::begin(const char* op) {
  if (t_session == 0 || t_session != g_active_session.load(std::memory_order_acquire) || omp_in_parallel()) return;
  on_ = true;
  op_ = op;
  session_ = t_session;
  parent_ = t_current;
  t_current = this;
  t0_ = std::chrono::steady_clock::now();
}

void OpTimer::end() {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  t_current = parent_;
  if (parent_) parent_->child_seconds_ += elapsed;
  const std::lock_guard<std::mutex> lock(g_mutex);
  if (g_active_session.load(std::memory_order_relaxed) != session_) return;  // stopped meanwhile
  Totals& t = g_totals[{op_, detail_.text}];
  t.calls += 1;
  t.seconds += std::max(0.0, elapsed - child_seconds_);
  t.flops += detail_.flops;
}

}  // namespace profile_detail

using namespace profile_detail;

double OpProfile::op_seconds() const {
  double s = 0;
  for (const OpStat& o : ops) s += o.seconds;
  return s;
}

ProfileScope::ProfileScope() {
  const std::lock_guard<std::mutex> lock(g_mutex);
  if (g_active_session.load(std::memory_order_relaxed) != 0)
    throw Error("ProfileScope: a profile is already being collected (one at a time per process)");
  g_totals.clear();
  t_session = ++g_last_session;
  g_start = std::chrono::steady_clock::now();
  g_active_session.store(t_session, std::memory_order_release);
  g_collecting.store(true, std::memory_order_relaxed);
}

ProfileScope::~ProfileScope() {
  try {
    stop();
  } catch (...) {  // the profile is discarded anyway
  }
}

OpProfile ProfileScope::stop() {
  OpProfile p;
  if (!active_) return p;
  active_ = false;
  const auto now = std::chrono::steady_clock::now();
  std::map<std::pair<std::string, std::string>, Totals> totals;
  {
    const std::lock_guard<std::mutex> lock(g_mutex);
    g_collecting.store(false, std::memory_order_relaxed);
    g_active_session.store(0, std::memory_order_release);
    p.wall_seconds = std::chrono::duration<double>(now - g_start).count();
    totals.swap(g_totals);
  }
  t_session = 0;
  for (auto& [key, t] : totals) p.ops.push_back({key.first, key.second, t.calls, t.seconds, t.flops});
  std::stable_sort(p.ops.begin(), p.ops.end(), [](const OpStat& a, const OpStat& b) { return a.seconds > b.seconds; });
  return p;
}

bool profiling() { return g_active_session.load(std::memory_order_relaxed) != 0; }

}  // namespace lf
