// Routing attention (Roy et al. 2021; src/cpu/routing.h has the definition): the sizes and options of
// one call, and the groups the routing makes, shared by the ops (src/ops/routing.h) and their kernels.
#pragma once
#include <cstdint>
#include <vector>

namespace lf {

// Layouts: q, k, v, o (B, n, h·d_h); centroids (h, c, d_h).
struct RoutingShape {
  int64_t B = 0, n = 0, h = 0, d_h = 0;
  int64_t clusters = 1;     // c centroids per head
  int64_t window = 1;       // w: queries and keys per cluster (balanced), block length (local heads)
  int64_t local_heads = 0;  // heads [0, local_heads) attend locally, the others by routing
  bool balanced = true;     // top-w per centroid (else: each vector to its nearest centroid)
  bool causal = false;      // key j hidden from query t when j > t
  double scale = 1;
  const uint8_t* key_mask = nullptr;  // (B, n), nonzero = padding, or null
  double dropout = 0;                 // on the probabilities
  uint64_t seed = 0;                  // dropout stream key
};

// The groups of one call. Each (b, head) owns the groups [head_start[b·h + i], head_start[b·h + i + 1]);
// group g attends its queries qidx[qoff[g] .. qoff[g+1]) to its keys kidx[koff[g] .. koff[g+1])
// (positions, ascending within a group). count (B, h, n): in how many groups each position is a query.
struct RoutingGroups {
  std::vector<int32_t> head_start, qoff, koff, qidx, kidx, count;
  int64_t queries() const { return int64_t(qidx.size()); }  // (group, query) entries
};

}  // namespace lf
