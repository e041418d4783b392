// The op profiler: where a training step or an inference spends its time, op by op. While a
// `ProfileScope` lives, every op (src/ops/) the thread that made it runs is timed: per (op name,
// detail) the calls, the seconds and the FLOPs where the op knows them (matrix products: the detail is
// the GEMM's shape, "M=4096 N=1536 K=512 tA=0 tB=1 batch=1"). Seconds are exclusive: an op called
// inside another op counts in the inner one only, so the ops' seconds add up to at most the scope's
// wall time. Off (no scope) an op pays one relaxed atomic load.
//
//   lf::ProfileScope scope;
//   trainer.step(batches);
//   const lf::OpProfile profile = scope.stop();   // profile.ops, profile.wall_seconds
//
// One scope at a time in a process; ops run by other threads, or inside an OpenMP parallel region,
// are not counted (their time would overlap the owner's).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lf {

// One (op, detail) of a profile.
struct OpStat {
  std::string op;      // the op's name, e.g. "matmul", "layernorm_forward"
  std::string detail;  // what distinguishes its calls (a GEMM's shape); empty for most ops
  int64_t calls = 0;
  double seconds = 0;  // exclusive wall time of all its calls
  double flops = 0;    // floating-point operations of all its calls; 0 when the op does not count them
};

struct OpProfile {
  std::vector<OpStat> ops;  // the longest first
  double wall_seconds = 0;  // from the scope's start to stop()

  double op_seconds() const;  // the sum of ops[i].seconds (≤ wall_seconds)
};

// Collects a profile of the calling thread's ops from construction to stop() (or destruction, which
// discards it). A second scope while one is active is an lf::Error.
class ProfileScope {
 public:
  ProfileScope();
  ~ProfileScope();
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

  // Stops collecting and returns the profile; a second call returns an empty one.
  OpProfile stop();

 private:
  bool active_ = true;
};

// Whether a ProfileScope is collecting now.
bool profiling();

}  // namespace lf
