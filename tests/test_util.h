// Shared test helpers: random tensors, closeness checks, finite-difference gradient checks in
// double precision, temporary directories, and the process's memory from /proc/self/status.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "linformer/rng.h"
#include "train/run_log.h"  // proc_status_bytes

namespace lf::test {

// True in the sanitizer build (cmake -DLINFORMER_SANITIZE=ON, see scripts/test_sanitizers.sh).
#ifdef LINFORMER_SANITIZERS
inline constexpr bool kSanitizerBuild = true;
#else
inline constexpr bool kSanitizerBuild = false;
#endif

// Ends a test that measures the process's memory when it runs under ASan, whose shadow memory and
// quarantine of freed blocks inflate the RSS. Only such tests may skip there.
#define LF_SKIP_MEMORY_TEST_UNDER_SANITIZERS()                                                   \
  if (::lf::test::kSanitizerBuild)                                                              \
  GTEST_SKIP() << "measures peak RSS, which ASan's shadow memory and quarantine distort"

// n numbers uniform in [lo, hi), deterministic for the seed.
template <class T = double>
std::vector<T> random_vector(int64_t n, uint64_t seed, double lo = -1, double hi = 1) {
  std::vector<T> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = T(lo + (hi - lo) * uniform01_f64(seed, 7, uint64_t(i)));
  return v;
}

template <class To, class From>
std::vector<To> cast_vector(const std::vector<From>& v) {
  return std::vector<To>(v.begin(), v.end());
}

// How far a kernel may stray from its plain reference at the small, odd sizes of the ops' tests, as a
// max_rel_error (or an absolute error on entries of order one): rounding in float, next to none in double.
template <class T>
constexpr double tolerance() {
  return std::is_same_v<T, float> ? 2e-5 : 1e-12;
}

// max |a - b| / max(max |b|, floor): a norm-wise relative error that does not blow up on tiny entries.
template <class A, class B>
double max_rel_error(const A* a, const B* b, int64_t n, double floor = 1e-12) {
  double num = 0, den = floor;
  for (int64_t i = 0; i < n; ++i) {
    num = std::max(num, std::abs(double(a[i]) - double(b[i])));
    den = std::max(den, std::abs(double(b[i])));
  }
  return num / den;
}

#define LF_EXPECT_CLOSE(a, b, n, tol) \
  EXPECT_LE(::lf::test::max_rel_error((a), (b), (n)), (tol)) << "comparing " #a " with " #b

// Central differences of loss() with respect to x[0..n), compared with the analytic gradient entry by
// entry: |analytic − numeric| ≤ tol · max(|numeric|, 1e-3 · G) + the difference's own rounding error,
// G the gradient's largest |numeric| entry. The bound is relative to the gradient's size, so a gradient
// whose entries are all around 1e-4 is held to tol of them (an absolute floor of 1 would let a 1 %
// error through); entries a thousand times below the largest share its floor, since a difference of
// two nearly equal losses cannot resolve them further. The rounding term is 64 ulp of max(|loss|, 1)
// over 2·eps: a loss summed from O(1) terms carries their rounding even when it is small itself. The
// loss must be computed in double precision from the current contents of x. One failure is reported
// per call, naming the first entries that differ.
inline void expect_gradient_matches(const std::function<double()>& loss, double* x, int64_t n,
                                    const double* analytic, const std::string& what, double tol = 1e-6,
                                    double eps = 1e-6) {
  std::vector<double> numeric(static_cast<size_t>(n)), rounding(static_cast<size_t>(n));
  double largest = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double saved = x[i];
    x[i] = saved + eps;
    const double up = loss();
    x[i] = saved - eps;
    const double down = loss();
    x[i] = saved;
    numeric[size_t(i)] = (up - down) / (2 * eps);
    const double scale = std::max({std::abs(up), std::abs(down), 1.0});
    rounding[size_t(i)] = 64 * std::numeric_limits<double>::epsilon() * scale / (2 * eps);
    largest = std::max(largest, std::abs(numeric[size_t(i)]));
  }
  int failures = 0;
  std::string first;
  for (int64_t i = 0; i < n; ++i) {
    const double num = numeric[size_t(i)];
    const double bound = tol * std::max(std::abs(num), 1e-3 * largest) + rounding[size_t(i)];
    if (std::abs(analytic[i] - num) > bound && failures++ < 5)
      first += (std::ostringstream() << std::setprecision(10) << "\n  " << what << "[" << i << "]: analytic "
                                     << analytic[i] << " vs numeric " << num << " (difference "
                                     << std::abs(analytic[i] - num) << ", bound " << bound << ")")
                   .str();
  }
  if (failures > 0)
    ADD_FAILURE() << what << ": " << failures << " of " << n << " entries differ (largest entry " << largest << "):" << first;
}

inline double weighted_sum(const double* y, const double* w, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += y[i] * w[i];
  return s;
}

// ---- temporary directories -------------------------------------------------------------------------

// The running test's name ("" outside a test). A parameterised test's name holds a '/': callers that
// put it in a path use their parameter instead.
inline std::string current_test_name() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return info ? info->name() : "";
}

// A fresh, empty directory temp_directory_path()/<prefix>_<pid>_<suffix> (emptied first if it exists).
inline std::filesystem::path make_temp_dir(const std::string& prefix, const std::string& suffix = current_test_name()) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / (prefix + "_" + std::to_string(::getpid()) + "_" + suffix);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// make_temp_dir as an object: the directory goes with it.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix, const std::string& suffix = current_test_name())
      : dir_(make_temp_dir(prefix, suffix)) {}
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return dir_; }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

 private:
  std::filesystem::path dir_;
};

// A fixture with a fresh directory dir_ (make_temp_dir(prefix), named after the test) made in SetUp
// and removed in TearDown — kept for inspection after a failure where keep_on_failure. A derived
// SetUp that writes files calls TempDirTest::SetUp() first.
class TempDirTest : public ::testing::Test {
 protected:
  explicit TempDirTest(std::string prefix, bool keep_on_failure = false)
      : prefix_(std::move(prefix)), keep_on_failure_(keep_on_failure) {}
  void SetUp() override { dir_ = make_temp_dir(prefix_); }
  void TearDown() override {
    if (!(keep_on_failure_ && HasFailure())) std::filesystem::remove_all(dir_);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  std::filesystem::path dir_;

 private:
  std::string prefix_;
  bool keep_on_failure_;
};

// ---- the process's memory ----------------------------------------------------------------------------

// A "Vm...:" line of /proc/self/status in bytes, or -1 where there is none (the library's reader).
using ::lf::proc_status_bytes;

// How far the peak RSS (VmHWM) rises above the current RSS while `work` runs, in bytes. The
// high-water mark is first reset to the current RSS (clear_refs 5, Linux ≥ 4.0); where it cannot be,
// the growth is measured from the old peak. A test calls LF_SKIP_MEMORY_TEST_UNDER_SANITIZERS() and
// LF_SKIP_WITHOUT_PROC_STATUS() first.
inline int64_t peak_rss_growth(const std::function<void()>& work) {
  { std::ofstream("/proc/self/clear_refs") << "5"; }
  const int64_t before = std::max(proc_status_bytes("VmRSS"), int64_t(0));
  const int64_t hwm_before = proc_status_bytes("VmHWM");
  work();
  return proc_status_bytes("VmHWM") - std::max(before, hwm_before);
}

// Ends a test that reads the peak RSS where /proc/self/status has none.
#define LF_SKIP_WITHOUT_PROC_STATUS() \
  if (::lf::test::proc_status_bytes("VmHWM") < 0) GTEST_SKIP() << "no /proc/self/status"

// Runs f and expects it to throw E with `fragment` in its message.
template <class E, class F>
void expect_throw_containing(F&& f, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one containing '" << fragment << "'";
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << "'" << fragment << "' not in: " << e.what();
  }
}

}  // namespace lf::test
