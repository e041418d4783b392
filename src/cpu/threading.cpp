#include "cpu/threading.h"

#include <omp.h>

#include <cstdlib>
#include <string>

#include "core/error.h"
#include "cpu/gemm.h"

namespace lf {
namespace {
int g_threads = 0;
}

int configure_threads(int requested) {
  int n = requested;
  if (n <= 0) {
    if (const char* env = std::getenv(kThreadsEnv); env && *env) {
      char* end = nullptr;
      const long v = std::strtol(env, &end, 10);
      LF_REQUIRE(end && *end == '\0' && v > 0 && v <= kMaxThreads, kThreadsEnv, "='", env,
                 "' is not a positive thread count");
      n = int(v);
    } else {
      n = omp_get_num_procs();
    }
  }
  omp_set_num_threads(n);
  set_gemm_threads(n);
  g_threads = n;
  return n;
}

int num_threads() {
  if (g_threads == 0) configure_threads(0);
  return g_threads;
}

}  // namespace lf
