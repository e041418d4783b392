// Threads of the CPU backend. One OpenMP runtime (GCC's libgomp, which Debian's oneDNN also uses) runs every parallel
// loop; the GEMM backend's thread count is set from the same number. Threaded GEMM is only ever
// called outside OpenMP parallel regions.
#pragma once

namespace lf {

// Environment variable read when no explicit count is given.
inline constexpr const char* kThreadsEnv = "LINFORMER_NUM_THREADS";
// The largest count accepted (from the environment or the CLI's --threads).
inline constexpr int kMaxThreads = 4096;

// Sets the thread count for OpenMP loops and the GEMM backend and returns it. requested > 0 wins;
// otherwise LINFORMER_NUM_THREADS if set; otherwise the number of available cores. Throws
// lf::InvalidArgument for a malformed environment value.
int configure_threads(int requested = 0);

// The thread count configured last (configure_threads is called lazily on first use).
int num_threads();

}  // namespace lf
