// The runtime settings of the compute a host program runs: threads and the memory limit, per
// instance (a Trainer, or a call that takes RuntimeOptions), not per process. One OpenMP runtime
// (GCC's libgomp, which Debian's oneDNN also uses) runs every parallel loop; the GEMM backend's
// thread count is set from the same number. Threaded GEMM is only ever called outside OpenMP
// parallel regions.
#pragma once

namespace lf {

// Environment variables read when a setting is left at 0: the defaults of every instance.
inline constexpr const char* kThreadsEnv = "LINFORMER_NUM_THREADS";
inline constexpr const char* kMaxMemoryEnv = "LINFORMER_MAX_MEMORY";
// The largest thread count accepted.
inline constexpr int kMaxThreads = 4096;

struct RuntimeOptions {
  int threads = 0;        // parallel loops and GEMM; 0: $LINFORMER_NUM_THREADS, else all available cores
  double max_memory = 0;  // bytes the memory guard allows; 0: $LINFORMER_MAX_MEMORY, else the available memory

  void validate() const;  // throws lf::InvalidArgument naming `threads` or `max_memory`
};

// The thread count options.threads stands for: itself when positive, else $LINFORMER_NUM_THREADS,
// else the number of available cores. Throws lf::InvalidArgument for a malformed environment value.
int resolve_threads(int requested);

// The thread count parallel loops and GEMM use on the calling thread now.
int num_threads();

// Runs the calling thread's compute with the options' thread count for the scope's lifetime, then
// restores the previous count. OpenMP's count is an ICV of the calling thread, and oneDNN follows it,
// so instances on different host threads do not interfere; OpenBLAS has one count per process, which
// the scope sets and restores too (with that backend, run one instance at a time). Not copyable.
class RuntimeScope {
 public:
  explicit RuntimeScope(const RuntimeOptions& options);
  ~RuntimeScope();
  RuntimeScope(const RuntimeScope&) = delete;
  RuntimeScope& operator=(const RuntimeScope&) = delete;

  int threads() const { return threads_; }

 private:
  int threads_;
  int saved_threads_;
  int saved_gemm_threads_;
};

}  // namespace lf
