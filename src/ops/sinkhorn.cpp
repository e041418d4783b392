#include "ops/sinkhorn.h"

#include <string>
#include <utility>

#include "cpu/sinkhorn.h"
#include "ops/dispatch.h"

namespace lf::ops {
namespace {

// The blocks of x (B, n, d) under valid (B, n_p) cut into n_b blocks: b = n_p / n_b, and n must end in
// the last block.
SinkhornBlocks blocks_of(const char* op, int64_t B, int64_t n, int64_t h, int64_t d_h, Mask valid, int64_t nb) {
  LF_REQUIRE(valid.rank() == 2 && valid.size(0) == B && nb > 0 && valid.size(1) % nb == 0, op, ": `valid` ",
             valid.shape_string(), " must be (", B, ", a multiple of ", nb, " blocks)");
  const int64_t block = valid.size(1) / nb;
  LF_REQUIRE(n <= nb * block && n > (nb - 1) * block, op, ": ", n, " positions do not make ", nb, " blocks of ",
             block);
  SinkhornBlocks s;
  s.B = B, s.n = n, s.h = h, s.d_h = d_h, s.block = block, s.nb = nb, s.valid = valid.data();
  return s;
}

}  // namespace

template <class T>
void sinkhorn_block_means_forward(In<T> x, Mask valid, bool causal, TensorView<T> means) {
  constexpr const char* op = "sinkhorn_block_means_forward";
  LF_REQUIRE(x.rank() == 3 && means.rank() == 3, op, ": x ", x.shape_string(), " and means ", means.shape_string(),
             " must have rank 3");
  SinkhornBlocks s = blocks_of(op, x.size(0), x.size(1), 1, x.size(2), valid, means.size(1));
  s.causal = causal;
  require_shape(op, "x", x, {s.B, s.n, s.d_h});
  require_shape(op, "means", means, {s.B, s.nb, s.d_h});
  LF_DISPATCH(op, device_of(op, x, valid, means), return lf::sinkhorn_block_means_forward<T>(s, x.data(), means.data()));
}

template <class T>
void sinkhorn_block_means_backward(In<T> dmeans, Mask valid, bool causal, TensorView<T> dx) {
  constexpr const char* op = "sinkhorn_block_means_backward";
  LF_REQUIRE(dx.rank() == 3 && dmeans.rank() == 3, op, ": dmeans ", dmeans.shape_string(), " and dx ",
             dx.shape_string(), " must have rank 3");
  SinkhornBlocks s = blocks_of(op, dx.size(0), dx.size(1), 1, dx.size(2), valid, dmeans.size(1));
  s.causal = causal;
  require_shape(op, "dx", dx, {s.B, s.n, s.d_h});
  require_shape(op, "dmeans", dmeans, {s.B, s.nb, s.d_h});
  LF_DISPATCH(op, device_of(op, dmeans, valid, dx),
              return lf::sinkhorn_block_means_backward<T>(s, dmeans.data(), dx.data()));
}

namespace {
// The sort's blocks from perm (B, h, n_b, n_b) and scores (B, n_b, h·N_b); returns N_b.
template <class P, class S>
int64_t sort_shape(const char* op, const P& perm, const S& scores, bool causal, SinkhornBlocks& s) {
  LF_REQUIRE(perm.rank() == 4 && scores.rank() == 3, op, ": perm ", perm.shape_string(), " and scores ",
             scores.shape_string(), " must have rank 4 and 3");
  s.B = perm.size(0), s.h = perm.size(1), s.nb = perm.size(2), s.causal = causal;
  const int64_t nb_max = s.h > 0 ? scores.size(2) / s.h : 0;
  LF_REQUIRE(scores.size(2) == s.h * nb_max && nb_max >= s.nb, op, ": scores ", scores.shape_string(),
             " must hold ", s.h, " heads of at least ", s.nb, " columns");
  require_shape(op, "perm", perm, {s.B, s.h, s.nb, s.nb});
  require_shape(op, "scores", scores, {s.B, s.nb, s.h * nb_max});
  return nb_max;
}

// Checks the per-sample block counts (empty: every sample has n_b) and points the blocks at them.
void set_sample_blocks(const char* op, TensorView<const int64_t> sample_blocks, SinkhornBlocks& s) {
  if (sample_blocks.data() == nullptr) return;
  require_shape(op, "sample_blocks", sample_blocks, {s.B});
  for (int64_t b = 0; b < s.B; ++b)
    LF_REQUIRE(sample_blocks.data()[b] >= 1 && sample_blocks.data()[b] <= s.nb, op, ": sample ", b, " has ",
               sample_blocks.data()[b], " blocks, outside [1, ", s.nb, "]");
  s.sample_blocks = sample_blocks.data();
}
}  // namespace

template <class T>
void sinkhorn_sort_forward(In<T> scores, int64_t iters, double temperature, bool causal, TensorView<T> perm,
                           TensorView<const int64_t> sample_blocks) {
  constexpr const char* op = "sinkhorn_sort_forward";
  SinkhornBlocks s;
  const int64_t nb_max = sort_shape(op, perm, scores, causal, s);
  set_sample_blocks(op, sample_blocks, s);
  LF_REQUIRE(iters >= 0 && temperature > 0, op, ": iters ", iters, " must be >= 0 and temperature ", temperature,
             " must be positive");
  LF_DISPATCH(op, device_of(op, scores, perm),
              return lf::sinkhorn_sort_forward<T>(s, scores.data(), nb_max, iters, temperature, perm.data()));
}

template <class T>
void sinkhorn_sort_backward(In<T> scores, In<T> perm, In<T> dperm, int64_t iters, double temperature, bool causal,
                            TensorView<T> dscores, TensorView<const int64_t> sample_blocks) {
  constexpr const char* op = "sinkhorn_sort_backward";
  SinkhornBlocks s;
  const int64_t nb_max = sort_shape(op, perm, scores, causal, s);
  set_sample_blocks(op, sample_blocks, s);
  require_shape(op, "dperm", dperm, {s.B, s.h, s.nb, s.nb});
  require_shape(op, "dscores", dscores, {s.B, s.nb, s.h * nb_max});
  LF_REQUIRE(iters >= 0 && temperature > 0, op, ": iters ", iters, " must be >= 0 and temperature ", temperature,
             " must be positive");
  LF_DISPATCH(op, device_of(op, scores, perm, dperm, dscores),
              return lf::sinkhorn_sort_backward<T>(s, scores.data(), nb_max, iters, temperature, perm.data(),
                                                   dperm.data(), dscores.data()));
}

namespace {
// The layout of x (B, n, h·d_h) and heads (B, h, n_p, d_h) under valid (B, n_p).
template <class X, class H>
SinkhornBlocks heads_shape(const char* op, const X& x, const H& heads, Mask valid) {
  LF_REQUIRE(x.rank() == 3 && heads.rank() == 4, op, ": x ", x.shape_string(), " and heads ", heads.shape_string(),
             " must have rank 3 and 4");
  const int64_t np = heads.size(2);
  LF_REQUIRE(valid.rank() == 2 && valid.size(0) == x.size(0) && valid.size(1) == np && x.size(1) <= np, op,
             ": `valid` ", valid.shape_string(), " must be (", x.size(0), ", ", np, ") and cover the ", x.size(1),
             " positions");
  SinkhornBlocks s;  // one block per position: the layout knows no blocks
  s.B = x.size(0), s.n = x.size(1), s.h = heads.size(1), s.d_h = heads.size(3), s.block = 1, s.nb = np;
  s.valid = valid.data();
  require_shape(op, "x", x, {s.B, s.n, s.d()});
  require_shape(op, "heads", heads, {s.B, s.h, np, s.d_h});
  return s;
}
}  // namespace

template <class T>
void sinkhorn_split_heads(In<T> x, Mask valid, TensorView<T> heads) {
  constexpr const char* op = "sinkhorn_split_heads";
  const SinkhornBlocks s = heads_shape(op, x, heads, valid);
  LF_DISPATCH(op, device_of(op, x, valid, heads), return lf::sinkhorn_split_heads<T>(s, x.data(), heads.data()));
}

template <class T>
void sinkhorn_merge_heads(In<T> heads, Mask valid, TensorView<T> x) {
  constexpr const char* op = "sinkhorn_merge_heads";
  const SinkhornBlocks s = heads_shape(op, x, heads, valid);
  LF_DISPATCH(op, device_of(op, heads, valid, x), return lf::sinkhorn_merge_heads<T>(s, heads.data(), x.data()));
}

namespace {
// The block attention's blocks from q (B, n, h·d_h), a head-major (B, h, n_p, d_h) view and the masks.
template <class Q, class K>
SinkhornBlocks attention_shape(const char* op, const SinkhornMasks& m, const Q& q, const K& k) {
  LF_REQUIRE(q.rank() == 3 && k.rank() == 4 && m.partner_valid.rank() == 3, op, ": q ", q.shape_string(), ", k ",
             k.shape_string(), " and partner_valid ", m.partner_valid.shape_string(), " must have rank 3, 4 and 3");
  SinkhornBlocks s = blocks_of(op, q.size(0), q.size(1), k.size(1), k.size(3), m.valid, m.partner_valid.size(1));
  LF_REQUIRE(m.dropout >= 0 && m.dropout < 1, op, ": dropout must be in [0, 1), got ", m.dropout);
  s.partner_valid = m.partner_valid.data(), s.causal = m.causal, s.dropout = m.dropout, s.seed = m.seed;
  require_shape(op, "q", q, {s.B, s.n, s.d()});
  require_shape(op, "partner_valid", m.partner_valid, {s.B, s.nb, s.block});
  return s;
}
}  // namespace

template <class T>
void sinkhorn_block_attention_forward(const SinkhornMasks& m, In<T> q, In<T> k, In<T> v, In<T> k_sorted,
                                      In<T> v_sorted, TensorView<T> probs, TensorView<T> o) {
  constexpr const char* op = "sinkhorn_block_attention_forward";
  const SinkhornBlocks s = attention_shape(op, m, q, k);
  for (const auto& [name, view] : {std::pair{"k", k}, {"v", v}, {"k_sorted", k_sorted}, {"v_sorted", v_sorted}})
    require_shape(op, name, view, {s.B, s.h, s.np(), s.d_h});
  require_shape(op, "o", o, {s.B, s.n, s.d()});
  const bool keep = probs.data() != nullptr;
  if (keep) require_shape(op, "probs", probs, {s.B, s.h, s.np(), 2 * s.block});
  LF_DISPATCH(op, device_of(op, q, k, v, k_sorted, v_sorted, m.valid, m.partner_valid, probs, o),
              return lf::sinkhorn_block_attention_forward<T>(s, q.data(), k.data(), v.data(), k_sorted.data(),
                                                             v_sorted.data(), probs.data(), o.data(), keep));
}

template <class T>
void sinkhorn_block_attention_backward(const SinkhornMasks& m, In<T> q, In<T> k, In<T> v, In<T> k_sorted,
                                       In<T> v_sorted, In<T> probs, In<T> d_o, TensorView<T> dq, TensorView<T> dk,
                                       TensorView<T> dv, TensorView<T> dk_sorted, TensorView<T> dv_sorted) {
  constexpr const char* op = "sinkhorn_block_attention_backward";
  const SinkhornBlocks s = attention_shape(op, m, q, k);
  for (const auto& [name, view] : {std::pair{"k", k}, {"v", v}, {"k_sorted", k_sorted}, {"v_sorted", v_sorted},
                                   {"dk", In<T>(dk)}, {"dv", In<T>(dv)}, {"dk_sorted", In<T>(dk_sorted)},
                                   {"dv_sorted", In<T>(dv_sorted)}})
    require_shape(op, name, view, {s.B, s.h, s.np(), s.d_h});
  require_shape(op, "d_o", d_o, {s.B, s.n, s.d()});
  require_shape(op, "dq", dq, {s.B, s.n, s.d()});
  require_shape(op, "probs", probs, {s.B, s.h, s.np(), 2 * s.block});
  LF_DISPATCH(op, device_of(op, q, k, v, k_sorted, v_sorted, probs, d_o, dq, dk, dv, dk_sorted, dv_sorted),
              return lf::sinkhorn_block_attention_backward<T>(
                  s, q.data(), k.data(), v.data(), k_sorted.data(), v_sorted.data(), probs.data(), d_o.data(),
                  dq.data(), dk.data(), dv.data(), dk_sorted.data(), dv_sorted.data()));
}

double sinkhorn_forward_scratch(double block) { return lf::sinkhorn_forward_scratch(block); }
double sinkhorn_backward_scratch(double nb, int64_t iters) { return lf::sinkhorn_backward_scratch(nb, iters); }

#define LF_INSTANTIATE(T)                                                                                          \
  template void sinkhorn_block_means_forward<T>(In<T>, Mask, bool, TensorView<T>);                                 \
  template void sinkhorn_block_means_backward<T>(In<T>, Mask, bool, TensorView<T>);                                \
  template void sinkhorn_sort_forward<T>(In<T>, int64_t, double, bool, TensorView<T>, TensorView<const int64_t>);  \
  template void sinkhorn_sort_backward<T>(In<T>, In<T>, In<T>, int64_t, double, bool, TensorView<T>,              \
                                          TensorView<const int64_t>);                                            \
  template void sinkhorn_split_heads<T>(In<T>, Mask, TensorView<T>);                                               \
  template void sinkhorn_merge_heads<T>(In<T>, Mask, TensorView<T>);                                               \
  template void sinkhorn_block_attention_forward<T>(const SinkhornMasks&, In<T>, In<T>, In<T>, In<T>, In<T>,       \
                                                    TensorView<T>, TensorView<T>);                                 \
  template void sinkhorn_block_attention_backward<T>(const SinkhornMasks&, In<T>, In<T>, In<T>, In<T>, In<T>,      \
                                                     In<T>, In<T>, TensorView<T>, TensorView<T>, TensorView<T>,    \
                                                     TensorView<T>, TensorView<T>);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf::ops
