// The sanitizer build (cmake -DLINFORMER_SANITIZE=ON) really checks: an out-of-bounds read, a leak-free
// use-after-free, a signed overflow, an out-of-range float-to-int conversion and a std::vector index
// past its size each end the process with the sanitizer's report. Compiled only in that build.
#ifdef LINFORMER_SANITIZERS
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

namespace lf {
namespace {

// Values the optimiser cannot see through.
template <class T>
T opaque(T v) {
  volatile T x = v;
  return x;
}

class SanitizerDeathTest : public testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_F(SanitizerDeathTest, HeapOverflowIsCaught) {
  EXPECT_DEATH(
      {
        auto block = std::make_unique<int[]>(4);
        volatile int sink = block[opaque(4)];
        (void)sink;
      },
      "heap-buffer-overflow");
}

TEST_F(SanitizerDeathTest, UseAfterFreeIsCaught) {
  EXPECT_DEATH(
      {
        int* p = new int[4];
        delete[] opaque(p);
        volatile int sink = p[opaque(1)];
        (void)sink;
      },
      "heap-use-after-free");
}

TEST_F(SanitizerDeathTest, SignedOverflowIsCaught) {
  EXPECT_DEATH(
      {
        volatile int sink = opaque(std::numeric_limits<int>::max()) + opaque(1);
        (void)sink;
      },
      "signed integer overflow");
}

TEST_F(SanitizerDeathTest, OutOfRangeFloatToIntIsCaught) {
  EXPECT_DEATH(
      {
        volatile int64_t sink = static_cast<int64_t>(opaque(1e30f));
        (void)sink;
      },
      "is outside the range of representable values");
}

TEST_F(SanitizerDeathTest, VectorIndexPastTheSizeIsCaught) {
  // Within the capacity, so only the library's assertions (_GLIBCXX_ASSERTIONS) see it, not ASan.
  EXPECT_DEATH(
      {
        std::vector<int> v;
        v.reserve(8);
        v.resize(2);
        volatile int sink = v[opaque(size_t(3))];
        (void)sink;
      },
      "__n < this->size\\(\\)");
}

}  // namespace
}  // namespace lf
#endif  // LINFORMER_SANITIZERS
