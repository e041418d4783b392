// The runtime settings of the compute a host program runs: threads and the memory limit, per
// instance (a Trainer, or a call that takes RuntimeOptions), not per process. One OpenMP runtime
// (GCC's libgomp, which Debian's oneDNN also uses) runs every parallel loop; the GEMM backend's
// thread count is set from the same number. Threaded GEMM is only ever called outside OpenMP
// parallel regions.
#pragma once
#include <string>

namespace lf {

// Environment variables read when a setting is left at 0: the defaults of every instance.
inline constexpr const char* kThreadsEnv = "LINFORMER_NUM_THREADS";
inline constexpr const char* kMaxMemoryEnv = "LINFORMER_MAX_MEMORY";
// The largest thread count accepted.
inline constexpr int kMaxThreads = 4096;

// The precision of the float matrix products (ops::matmul, the linear layers; not the kinds' own
// tiled kernels): fp32; bf16 mixed precision as PyTorch's CPU autocast: the products' operands are
// rounded to bfloat16, accumulated and returned in fp32; parameters, activations, gradients and the
// optimizer's state stay fp32 (so no loss scaling: bf16 has fp32's exponent range); or int8, dynamic
// quantisation of the linear layers only, as PyTorch's quantize_dynamic(model, {nn.Linear}, qint8):
// each linear layer's weight is quantised to s8 per output channel and its input to u8 per call, the
// product accumulated in s32 and returned in fp32; every other product stays fp32. int8 is for
// inference: a backward under it throws.
enum class Precision { fp32, bf16, int8 };

// "fp32", "bf16" or "int8".
const char* precision_name(Precision p);
// Parses "fp32" / "bf16" / "int8" (also "float32", "bfloat16"); throws lf::InvalidArgument naming `precision`.
Precision parse_precision(const std::string& name);
// Empty when this build and CPU can run `p`, else why not (bf16 needs AVX512-BF16, int8 AVX512-VNNI,
// both the dnnl GEMM backend; $ONEDNN_MAX_CPU_ISA below what they need counts as a CPU without it).
std::string precision_unsupported_reason(Precision p);
// Whether a model can train at `p` (a backward exists): false for int8, which is inference-only.
bool precision_trains(Precision p);
// Throws lf::InvalidArgument saying that `what` (e.g. "training") cannot run at `p`, when it cannot train.
void require_precision_trains(Precision p, const char* what);

struct RuntimeOptions {
  int threads = 0;        // parallel loops and GEMM; 0: $LINFORMER_NUM_THREADS, else all available cores
  double max_memory = 0;  // bytes the memory guard allows; 0: $LINFORMER_MAX_MEMORY, else the available memory
  Precision precision = Precision::fp32;  // of the matrix products

  void validate() const;  // throws lf::InvalidArgument naming `threads` or `max_memory`
};

// The thread count options.threads stands for: itself when positive, else $LINFORMER_NUM_THREADS,
// else the number of available cores. Throws lf::InvalidArgument for a malformed environment value.
int resolve_threads(int requested);

// The thread count parallel loops and GEMM use on the calling thread now.
int num_threads();
// The precision of the calling thread's matrix products now.
Precision current_precision();

// Runs the calling thread's compute with the options' thread count and precision for the scope's
// lifetime, then restores the previous ones (a precision the machine cannot run is an lf::Error).
// OpenMP's count is an ICV of the calling thread, and oneDNN follows it, so instances on different host
// threads do not interfere; OpenBLAS has one count per process, which the scope sets and restores too
// (with that backend, run one instance at a time). Not copyable.
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
  Precision saved_precision_;
};

}  // namespace lf
