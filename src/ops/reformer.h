// LSH attention with shared QK (Reformer; the definition is in cpu/reformer.h): the random rotations,
// hashing, the bucket sort, chunked attention over the sorted positions (forward and backward), and
// the normalisation of the shared QK's keys. `s` gives the sizes and options
// (core/attention_shape.h); the views must match it: u, q, kn, v, out and their gradients
// (B, n, h·d_h); R (n_hashes, h, d_h, n_buckets/2); buckets and perm (n_hashes, B, h, n) int32;
// stats (2, B, h, n); all contiguous.
#pragma once
#include <cstdint>
#include <string>

#include "core/attention_shape.h"
#include "linformer/rng.h"
#include "ops/view_args.h"

namespace lf::ops {

// The Philox stream of a layer's rotations: each layer (parameter prefix) hashes differently.
inline uint64_t reformer_rotation_stream(const std::string& prefix) { return stream_id(prefix + "lsh_rotations"); }
// The stream of the rotations drawn per training step (keyed by the step's seed): another for every
// option seed.
inline uint64_t reformer_step_rotation_stream(const std::string& prefix, uint64_t option_seed) {
  return reformer_rotation_stream(prefix) ^ (option_seed * 0x9E3779B97F4A7C15ull + 1);
}

// R (n_hashes, h, d_h, n_buckets/2): seeded standard normals; those for fewer buckets are the first
// columns of those for more.
template <class T>
void lsh_rotations(uint64_t seed, uint64_t stream, TensorView<T> R);

// buckets = argmax of [u R; −u R] per round and head (padded positions: n_buckets, after the last).
template <class T>
void lsh_hash(const ReformerShape& s, In<T> u, In<T> R, TensorView<int32_t> buckets);

// buckets = 0 for every real position (n_buckets for the padded): exact attention through the same
// kernels when the chunk holds the whole sequence (full_attn_thres).
void lsh_single_bucket(const ReformerShape& s, TensorView<int32_t> buckets);

// perm: each list's positions sorted by (bucket, position).
void lsh_sort(const ReformerShape& s, TensorView<const int32_t> buckets, TensorView<int32_t> perm);

// out and stats (M, log ℓ per query) of the rounds combined by their log-sum-exp.
template <class T>
void lsh_attention_forward(const ReformerShape& s, In<T> q, In<T> kn, In<T> v, TensorView<const int32_t> buckets,
                           TensorView<const int32_t> perm, TensorView<T> out, Out<T> stats);

// dq, dkn, dv (overwritten) from dout, with out and stats of the forward.
template <class T>
void lsh_attention_backward(const ReformerShape& s, In<T> q, In<T> kn, In<T> v, TensorView<const int32_t> buckets,
                            TensorView<const int32_t> perm, In<T> out, In<T> stats, In<T> dout, TensorView<T> dq,
                            Out<T> dkn, Out<T> dv);

// kn (rows, d) = u / max(‖u‖, floor) row by row, norms (rows) kept for the backward.
template <class T>
void l2_normalize_rows(In<T> u, TensorView<T> kn, Out<T> norms, double floor);
// du (rows, d) += the gradient through it from dkn.
template <class T>
void l2_normalize_rows_backward(In<T> kn, In<T> norms, In<T> dkn, TensorView<T> du, double floor);

}  // namespace lf::ops
