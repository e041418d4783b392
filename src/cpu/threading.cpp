#include "linformer/runtime.h"

#include <omp.h>

#include <cmath>
#include <cstdlib>

#include "cpu/gemm.h"
#include "linformer/error.h"

namespace lf {

void RuntimeOptions::validate() const {
  LF_REQUIRE(threads >= 0 && threads <= kMaxThreads, "`threads` must be a thread count from 1 to ", kMaxThreads,
             " (0: the default), got ", threads);
  LF_REQUIRE(std::isfinite(max_memory) && max_memory >= 0,
             "`max_memory` must be a positive size in bytes (0: the default), got ", max_memory);
}

int resolve_threads(int requested) {
  if (requested > 0) return requested;
  if (const char* env = std::getenv(kThreadsEnv); env && *env) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    LF_REQUIRE(end && *end == '\0' && v > 0 && v <= kMaxThreads, kThreadsEnv, "='", env,
               "' is not a positive thread count");
    return int(v);
  }
  return omp_get_num_procs();
}

int num_threads() { return omp_get_max_threads(); }

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::bf16: return "bf16";
    case Precision::int8: return "int8";
    case Precision::fp32: break;
  }
  return "fp32";
}

Precision parse_precision(const std::string& name) {
  if (name == "fp32" || name == "float32") return Precision::fp32;
  if (name == "bf16" || name == "bfloat16") return Precision::bf16;
  if (name == "int8") return Precision::int8;
  throw InvalidArgument(str_cat("`precision` must be fp32, bf16 or int8, got '", name, "'"));
}

std::string precision_unsupported_reason(Precision p) {
  switch (p) {
    case Precision::bf16: return gemm_bf16_unsupported_reason();
    case Precision::int8: return gemm_int8_unsupported_reason();
    case Precision::fp32: break;
  }
  return {};
}

bool precision_trains(Precision p) { return p != Precision::int8; }

void require_precision_trains(Precision p, const char* what) {
  LF_REQUIRE(precision_trains(p), what, " cannot run at `precision` ", precision_name(p),
             ": int8 quantises the linear layers for inference and has no backward; train in fp32 or bf16, then "
             "evaluate or predict with the checkpoint in int8");
}

Precision current_precision() { return gemm_precision(); }

RuntimeScope::RuntimeScope(const RuntimeOptions& options)
    : threads_(0),
      saved_threads_(omp_get_max_threads()),
      saved_gemm_threads_(gemm_threads()),
      saved_precision_(gemm_precision()) {
  options.validate();
  if (const std::string why = precision_unsupported_reason(options.precision); !why.empty())
    throw Error(str_cat("precision ", precision_name(options.precision), " is not available here: ", why));
  threads_ = resolve_threads(options.threads);
  omp_set_num_threads(threads_);
  set_gemm_threads(threads_);
  set_gemm_precision(options.precision);
}

RuntimeScope::~RuntimeScope() {
  omp_set_num_threads(saved_threads_);
  set_gemm_threads(saved_gemm_threads_);
  set_gemm_precision(saved_precision_);
}

}  // namespace lf
