// `causal_linformer`: a Linformer that never reads the future, by blockwise compression (the
// long-range part of Transformer-LS, Zhu et al. 2021). The sequence is cut into blocks of c positions;
// each completed block b is compressed along the sequence to r slots, K̂_b = E K_b and V̂_b = F V_b
// with E, F (r, c) shared by every block and head (learned, or fixed mean pooling of r sub-blocks).
// A query at t, in block β = ⌊t/c⌋, attends under one softmax to
//   - exactly, the positions [max(0, β − w)·c, t]   (w = window_blocks whole blocks + its own block),
//   - the r slots of each block b < β − w            (the last max_blocks of them when capped).
// Every block it reads compressed ends before block β − w starts, so nothing after t is ever read and
// the output at t does not depend on n. Without causal the own-block mask is dropped (block-causal:
// a query also sees the later positions of its own block); for bidirectional compression see `linformer`.
// Cost O(n·(n·r/c + (w+1)·c)·d), linear in n with max_blocks. Decoding keeps the compressed slots of
// the completed blocks and the raw K/V of the window (kCompressed): a block is compressed once, when
// it completes. Key padding zeroes the padded keys and values (after their bias) before compression
// and hides them in the exact part.
#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>  // host-side metadata only: the plan of query blocks

#include "attention/options.h"
#include "attention/projections.h"
#include "core/attention_shape.h"
#include "linformer/attention.h"
#include "linformer/tensor.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/norm_act.h"
#include "ops/score_masks.h"
#include "ops/softmax.h"

namespace lf {
namespace {

constexpr const char* kKind = "causal_linformer";

enum class Compression { Learned, Mean };

struct CausalLinformerOptions {
  int64_t block = 64;        // c: positions per block
  int64_t slots = 8;         // r: compressed slots per completed block
  int64_t window_blocks = 1; // w: whole earlier blocks a query also sees exactly
  int64_t max_blocks = 0;    // cap on the compressed blocks a query sees; 0: all
  Compression compression = Compression::Learned;
  bool qkv_bias = false;
};

CausalLinformerOptions parse_causal_linformer(const AttentionDims& dims, const json& options, json* resolved) {
  OptionReader r(kKind, options);
  CausalLinformerOptions o;
  o.block = r.get_int("block", std::min<int64_t>(64, dims.max_len));
  LF_REQUIRE(o.block >= 1 && o.block <= dims.max_len, r.where("block"), " must be in 1 … max_len (", dims.max_len,
             "), got ", o.block);
  o.slots = r.get_int("slots", std::min<int64_t>(8, o.block));
  LF_REQUIRE(o.slots >= 1 && o.slots <= o.block, r.where("slots"), " must be in 1 … block (", o.block,
             "): a block of c positions is compressed to at most c slots, got ", o.slots);
  // Block counts beyond the blocks max_len holds change nothing; the bound keeps positions in range.
  const int64_t blocks = (dims.max_len + o.block - 1) / o.block;
  o.window_blocks = r.get_int("window_blocks", 1);
  LF_REQUIRE(o.window_blocks >= 0 && o.window_blocks <= blocks, r.where("window_blocks"), " must be in 0 … ", blocks,
             " (the blocks of max_len), got ", o.window_blocks);
  o.max_blocks = r.get_int("max_blocks", 0);
  LF_REQUIRE(o.max_blocks >= 0 && o.max_blocks <= blocks, r.where("max_blocks"), " must be in 0 … ", blocks,
             " (0: every completed block), got ", o.max_blocks);
  o.compression = r.get_choice("compression", "learned", {"learned", "mean"}) == "mean" ? Compression::Mean
                                                                                      : Compression::Learned;
  o.qkv_bias = r.get_bool("qkv_bias", false);
  r.finish(resolved);
  return o;
}

const AttentionKindInfo& causal_linformer_info() {
  static const AttentionKindInfo info{
      kKind,
      "causal Linformer: exact window of whole blocks + r slots per earlier block of c, O(n·(n·r/c + (w+1)·c))",
      AttentionSupport{/*causal=*/true, /*key_padding_mask=*/true, /*variable_length=*/true, /*cross_attention=*/false},
      /*quadratic_memory=*/false,
      /*bench_options=*/json{{"block", 64}, {"slots", 8}, {"window_blocks", 1}, {"max_blocks", 16}}};
  return info;
}

// One block of queries and what it reads: rows [t0, t0 + rows) attend to the compressed blocks
// [comp_lo, comp_lo + comp_n) and exactly to positions [ex_lo, t0 + rows). Its probabilities are
// (h, rows, width) at p_off of the sequence's.
struct QueryBlock {
  int64_t t0 = 0, rows = 0, comp_lo = 0, comp_n = 0, ex_lo = 0, ex_n = 0, width = 0, p_off = 0;
};

// Rows of `width` elements for B sequences that advance together: appended at the end, dropped
// from the front. Storage (B, cap, width); a full buffer is re-laid out with at least twice the rows
// it must hold, so an append costs amortised O(1) per row and a bounded use settles at a fixed size.
template <class T>
class SlidingRows {
 public:
  SlidingRows(int64_t B, int64_t width, int64_t reserve = 0) : B_(B), w_(width) {
    if (reserve > 0) relayout(reserve);
  }
  int64_t size() const { return count_; }
  const T* row(int64_t b, int64_t i) const { return buf_.data() + (b * cap_ + start_ + i) * w_; }
  int64_t batch_stride() const { return cap_ * w_; }
  double bytes() const { return double(buf_.size()) * sizeof(T); }

  // Appends n rows per sequence from src (B items `src_stride` apart, rows `w` apart).
  void append(const T* src, int64_t n, int64_t src_stride) {
    if (start_ + count_ + n > cap_) relayout(std::max(cap_, 2 * (count_ + n)));
    ops::copy_strided<T>(matrices(src, B_, src_stride, n, w_),
                         matrices(buf_.data() + (start_ + count_) * w_, B_, cap_ * w_, n, w_));
    count_ += n;
  }
  void drop_front(int64_t n) {
    n = std::min(n, count_);
    start_ += n;
    count_ -= n;
  }

 private:
  void relayout(int64_t cap) {
    Buffer<T> next(B_ * cap * w_);
    if (count_ > 0)
      ops::copy_strided<T>(matrices<const T>(buf_.data() + start_ * w_, B_, cap_ * w_, count_, w_),
                           matrices(next.data(), B_, cap * w_, count_, w_));
    std::swap(buf_, next);
    cap_ = cap;
    start_ = 0;
  }

  int64_t B_, w_, cap_ = 0, start_ = 0, count_ = 0;
  Buffer<T> buf_;
};

// What a causal_linformer layer keeps between decoding steps: the raw K and V of the positions
// [window_start, length) (the window's whole blocks and the current partial one, at most (w+1)·c
// rows) and K̂, V̂ of the completed blocks [first_block, completed) (at most max_blocks + w of them
// when capped: the state's size is then fixed).
template <class T>
struct CompressedState final : DecodeState<T> {
  CompressedState(int64_t B, int64_t d, int64_t window_rows, int64_t slot_rows)
      : k(B, d, window_rows), v(B, d, window_rows), kc(B, d, slot_rows), vc(B, d, slot_rows) {}
  SlidingRows<T> k, v, kc, vc;
  int64_t window_start = 0, first_block = 0;
  double bytes() const override { return k.bytes() + v.bytes() + kc.bytes() + vc.bytes(); }
};

template <class T>
class CausalLinformerAttention final : public Attention<T> {
 public:
  CausalLinformerAttention(const AttentionSpec& spec, const CausalLinformerOptions& o, ParamArena<T>& arena)
      : arena_(arena), dims_(spec.dims), o_(o), maps_(arena, spec.prefix, spec.dims.d_model, o.qkv_bias) {
    d_ = dims_.d_model;
    h_ = dims_.n_heads;
    dh_ = d_ / h_;
    c_ = o_.block;
    r_ = o_.slots;
    scale_ = 1.0 / std::sqrt(double(dh_));
    if (o_.compression == Compression::Learned) {
      // Linformer's init (lucidrains): U(±1/√k) with k = r the compressed length.
      const Init init = Init::uniform(1 / std::sqrt(double(r_)));
      proj_[0] = arena.declare(spec.prefix + "proj_k", {r_, c_}, init);
      proj_[1] = arena.declare(spec.prefix + "proj_v", {r_, c_}, init);
    } else {
      // Slot s averages the positions [⌊s·c/r⌋, ⌊(s+1)·c/r⌋) of its block: r near-equal sub-blocks.
      mean_.resize(r_ * c_);
      for (int64_t s = 0; s < r_; ++s) {
        const int64_t lo = s * c_ / r_, hi = (s + 1) * c_ / r_;
        ops::fill(vector_view(mean_.data() + s * c_ + lo, hi - lo), 1.0 / double(hi - lo));
      }
    }
  }

  // ---- forward / backward ------------------------------------------------------------------------
  // x (B, n, d) → Q, K, V (B, n, d) → K̂, V̂ (B, nC·r, d) → per query block: P (h, rows, width), O rows
  // → out (B, n, d).
  void forward(const AttentionInput<T>& in, T* out, bool training, uint64_t seed) override {
    validate_input(in, dims_, causal_linformer_info());
    in_ = in;
    kept_ = in.keep_for_backward;
    dropout_ = training ? dims_.dropout : 0.0;
    seed_ = seed;
    const int64_t B = in.B, n = in.n;
    plan(n);
    maps_.project_in(in, q_, k_, v_);
    // A padded key's bias would otherwise reach the compressed slots.
    zero_rows_at_padding(k_.data(), in.key_padding_mask, B, n, d_);
    zero_rows_at_padding(v_.data(), in.key_padding_mask, B, n, d_);
    kc_.resize(B * nc_ * r_ * d_);
    vc_.resize(B * nc_ * r_ * d_);
    for (int64_t b = 0; b < B; ++b) {
      compress(0, k_.data() + b * n * d_, nc_, kc_.data() + b * nc_ * r_ * d_);
      compress(1, v_.data() + b * n * d_, nc_, vc_.data() + b * nc_ * r_ * d_);
    }
    o_buf_.resize(B * n * d_);
    probs_.resize(kept_ ? B * probs_per_seq_ : h_ * c_ * max_width_);
    Buffer<T> dropped(dropout_ > 0 ? h_ * c_ * max_width_ : 0);
    for (int64_t b = 0; b < B; ++b)
      for (const QueryBlock& qb : blocks_) {
        T* P = kept_ ? probs_.data() + b * probs_per_seq_ + qb.p_off : probs_.data();
        attend(seq(b, qb), P, dropped.data(), b * probs_per_seq_ + qb.p_off, o_buf_.data() + (b * n + qb.t0) * d_, dropout_);
      }
    maps_.project_out(o_buf_.data(), out, B * n);
    if (!kept_) release();
  }

  // dout (B, n, d) → dO (B, n, d) → per query block: dP, dS (h, rows, width) → dQ, and dK, dV (B, n, d),
  // dK̂, dV̂ (B, nC·r, d) accumulated → dK += Eᵀ dK̂, dV += Fᵀ dV̂ (dE, dF accumulate) → dx (B, n, d).
  void backward(const T* dout, T* dx, T* dcontext) override {
    require_kept_for_backward(kept_, kKind);
    const int64_t B = in_.B, n = in_.n;
    Buffer<T> d_o(B * n * d_), dq(B * n * d_), dk(B * n * d_), dv(B * n * d_);
    Buffer<T> dkc(B * nc_ * r_ * d_), dvc(B * nc_ * r_ * d_), dP(h_ * c_ * max_width_), dropped(dropout_ > 0 ? dP.size() : 0);
    maps_.backward_out(o_buf_.data(), dout, d_o.data(), B * n);
    for (int64_t b = 0; b < B; ++b)
      for (const QueryBlock& qb : blocks_) {
        const Seq s = seq(b, qb);
        const int64_t kv = b * n * d_, cs = b * nc_ * r_ * d_;
        SeqGrads g{dq.data() + (b * n + qb.t0) * d_, dkc.data() + cs + qb.comp_lo * r_ * d_,
                   dvc.data() + cs + qb.comp_lo * r_ * d_, dk.data() + kv + qb.ex_lo * d_, dv.data() + kv + qb.ex_lo * d_};
        attend_backward(s, probs_.data() + b * probs_per_seq_ + qb.p_off, b * probs_per_seq_ + qb.p_off,
                        d_o.data() + (b * n + qb.t0) * d_, g, dP.data(), dropped.data());
      }
    for (int64_t b = 0; b < B; ++b) {
      const int64_t kv = b * n * d_, cs = b * nc_ * r_ * d_;
      compress_backward(0, k_.data() + kv, dkc.data() + cs, nc_, dk.data() + kv);
      compress_backward(1, v_.data() + kv, dvc.data() + cs, nc_, dv.data() + kv);
    }
    zero_rows_at_padding(dk.data(), in_.key_padding_mask, B, n, d_);  // the select of forward()
    zero_rows_at_padding(dv.data(), in_.key_padding_mask, B, n, d_);
    maps_.backward_in(in_, dq.data(), dk.data(), dv.data(), dx, dcontext, kKind);
    release();
  }

  double forward_flops(int64_t B, int64_t n, int64_t m) const override {
    int64_t nc = 0, area = 0, max_width = 0;
    const std::vector<QueryBlock> blocks = make_plan(n, &nc, &area, &max_width);
    // Compression: K̂, V̂ = E K, F V per block; attention: QK̂ᵀ|QKᵀ and P·[V̂|V] over every head.
    return maps_.flops(B, n, m) + 2.0 * 2.0 * B * nc * r_ * c_ * d_ + 2.0 * 2.0 * B * double(area) / h_ * d_;
  }

  double activation_bytes(int64_t B, int64_t n, int64_t m, bool training) const override {
    int64_t nc = 0, area = 0, max_width = 0;
    make_plan(n, &nc, &area, &max_width);
    const double act = double(B) * n * d_, comp = double(B) * nc * r_ * d_, scratch = double(h_) * c_ * max_width;
    // Q, K, V, O and K̂, V̂; the probabilities (every block's when kept, else one block's scratch).
    double elems = 4 * act + 2 * comp + (training ? double(B) * area : scratch) + (dims_.dropout > 0 ? scratch : 0);
    // Backward: dO, dQ, dK, dV, dK̂, dV̂, dP and a dropped-probabilities scratch, and the maps' copy.
    if (training) elems += 5 * act + 2 * comp + 2 * scratch;
    return elems * sizeof(T);
  }

  // ---- decoding ----------------------------------------------------------------------------------
  DecodeMechanism decode_mechanism() const override { return DecodeMechanism::kCompressed; }

  std::unique_ptr<DecodeState<T>> begin_decode(int64_t B, int64_t d_model) override {
    LF_REQUIRE(B > 0, kKind, " decoding needs a positive batch, got ", B);
    LF_REQUIRE(d_model == d_, kKind, " decoding: width ", d_model, " differs from the layer's d_model ", d_);
    LF_REQUIRE(dims_.causal, kKind, " decoding needs a layer built causal");
    // The window is bounded whatever the options; the slots too with a cap (then reserved at once,
    // so the state never grows).
    const int64_t slot_rows = o_.max_blocks > 0 ? 2 * (o_.max_blocks + o_.window_blocks + 1) * r_ : 0;
    auto state = std::make_unique<CompressedState<T>>(B, d_, 2 * (o_.window_blocks + 1) * c_, slot_rows);
    state->B = B;
    return state;
  }

  // Per chunk: Q, K, V of the n_new positions at once; then, one block's segment at a time, its K/V
  // appended to the window and its queries attended in one batched product (a prompt's prefill runs
  // block by block, as forward() does); a block that completes is compressed then, once.
  void decode(DecodeState<T>& base, const T* x, int64_t n_new, T* out) override {
    auto* st = dynamic_cast<CompressedState<T>*>(&base);
    LF_REQUIRE(st != nullptr, kKind, " decode() was given a state begun by another layer");
    LF_REQUIRE(n_new > 0, kKind, " decode() needs at least one new position, got ", n_new);
    LF_REQUIRE(x != nullptr && out != nullptr, kKind, " decode(): input or output is null");
    const int64_t B = st->B, t0 = st->length, t1 = t0 + n_new;
    const AttentionInput<T> in = AttentionInput<T>::inference(x, B, n_new);
    Buffer<T> q, k, v, o(B * n_new * d_), P, slots(B * r_ * d_);
    maps_.project_in(in, q, k, v);
    for (int64_t pos = t0; pos < t1;) {
      const int64_t beta = pos / c_, end = std::min(t1, (beta + 1) * c_), rows = end - pos;
      if (pos % c_ == 0) {  // entering block β: forget what no query of it (or later) reads
        const int64_t ws = std::max<int64_t>(0, beta - o_.window_blocks) * c_;
        st->k.drop_front(ws - st->window_start);
        st->v.drop_front(ws - st->window_start);
        st->window_start = ws;
        if (o_.max_blocks > 0) {
          const int64_t first = std::max<int64_t>(0, beta - o_.window_blocks - o_.max_blocks);
          st->kc.drop_front((first - st->first_block) * r_);
          st->vc.drop_front((first - st->first_block) * r_);
          st->first_block = first;
        }
      }
      st->k.append(k.data() + (pos - t0) * d_, rows, n_new * d_);
      st->v.append(v.data() + (pos - t0) * d_, rows, n_new * d_);
      const QueryBlock qb = query_block(pos, rows);
      P.resize(h_ * rows * qb.width);
      for (int64_t b = 0; b < B; ++b) {
        const int64_t slot = (qb.comp_lo - st->first_block) * r_;
        const Seq s{qb, q.data() + (b * n_new + pos - t0) * d_,
                    qb.comp_n > 0 ? st->kc.row(b, slot) : nullptr, qb.comp_n > 0 ? st->vc.row(b, slot) : nullptr,
                    st->k.row(b, 0), st->v.row(b, 0), nullptr, pos - st->window_start};
        attend(s, P.data(), nullptr, 0, o.data() + (b * n_new + pos - t0) * d_, /*p=*/0.0);
      }
      if (end % c_ == 0) {  // block β is complete: its slots, computed once
        const int64_t from = end - c_ - st->window_start;
        compress_rows(0, st->k.row(0, from), st->k.batch_stride(), B, slots.data(), r_ * d_);
        st->kc.append(slots.data(), r_, r_ * d_);
        compress_rows(1, st->v.row(0, from), st->v.batch_stride(), B, slots.data(), r_ * d_);
        st->vc.append(slots.data(), r_, r_ * d_);
      }
      pos = end;
    }
    maps_.project_out(o.data(), out, B * n_new);
    st->length = t1;
  }

 private:
  // One query block of one sequence: its queries, the slots and raw rows it reads (all rows d apart),
  // its exact part's padding (ex_n bytes) and where, in its exact part, its own block's rows begin.
  struct Seq {
    QueryBlock qb;
    const T *q, *kc, *vc, *k, *v;
    const uint8_t* mask;
    int64_t own_from;
  };
  struct SeqGrads {
    T *dq, *dkc, *dvc, *dk, *dv;
  };

  // The query block [t0, t0 + rows) of block ⌊t0/c⌋ (rows within it).
  QueryBlock query_block(int64_t t0, int64_t rows) const {
    QueryBlock qb;
    const int64_t beta = t0 / c_, hi = std::max<int64_t>(0, beta - o_.window_blocks);
    qb.t0 = t0;
    qb.rows = rows;
    qb.comp_lo = o_.max_blocks > 0 ? std::max<int64_t>(0, hi - o_.max_blocks) : 0;
    qb.comp_n = hi - qb.comp_lo;
    qb.ex_lo = hi * c_;
    qb.ex_n = t0 + rows - qb.ex_lo;
    qb.width = qb.comp_n * r_ + qb.ex_n;
    return qb;
  }

  // The query blocks of a length-n call; *nc: the compressed blocks they read (all complete),
  // *area: Σ h·rows·width (the probabilities), *max_width: the widest.
  std::vector<QueryBlock> make_plan(int64_t n, int64_t* nc, int64_t* area, int64_t* max_width) const {
    std::vector<QueryBlock> blocks;
    *nc = *area = *max_width = 0;
    for (int64_t t0 = 0; t0 < n; t0 += c_) {
      QueryBlock qb = query_block(t0, std::min(c_, n - t0));
      qb.p_off = *area;
      *area += h_ * qb.rows * qb.width;
      *nc = std::max(*nc, qb.comp_lo + qb.comp_n);
      *max_width = std::max(*max_width, qb.width);
      blocks.push_back(qb);
    }
    return blocks;
  }
  void plan(int64_t n) { blocks_ = make_plan(n, &nc_, &probs_per_seq_, &max_width_); }

  Seq seq(int64_t b, const QueryBlock& qb) const {
    const int64_t n = in_.n, kv = b * n * d_, cs = b * nc_ * r_ * d_ + qb.comp_lo * r_ * d_;
    return Seq{qb, q_.data() + (b * n + qb.t0) * d_, kc_.data() + cs, vc_.data() + cs,
               k_.data() + kv + qb.ex_lo * d_, v_.data() + kv + qb.ex_lo * d_,
               in_.key_padding_mask ? in_.key_padding_mask + b * n + qb.ex_lo : nullptr, qb.t0 - qb.ex_lo};
  }

  // Every head's (rows, d_h) columns of rows `d` apart: (h, rows, d_h).
  template <class P>
  TensorView<P> heads(P* p, int64_t rows) const {
    return matrices(p, h_, dh_, rows, dh_, d_);
  }
  // Columns [from, from + cols) of every head's (rows, width) probabilities.
  template <class P>
  TensorView<P> part(P* S, const QueryBlock& qb, int64_t from, int64_t cols) const {
    return matrices(S + from, h_, qb.rows * qb.width, qb.rows, cols, qb.width);
  }

  // P (h, rows, width) = softmax(scale·Q [K̂ | K]ᵀ, masked); O (rows, d) = dropout(P) [V̂ | V].
  // `offset`: P's place in the call's probabilities, for the dropout stream.
  void attend(const Seq& s, T* P, T* dropped, int64_t offset, T* o, double p) const {
    const QueryBlock& qb = s.qb;
    const int64_t ncr = qb.comp_n * r_, rows = qb.rows;
    if (ncr > 0) ops::matmul(heads(s.q, rows), heads(s.kc, ncr).t(), part(P, qb, 0, ncr), scale_);
    ops::matmul(heads(s.q, rows), heads(s.k, qb.ex_n).t(), part(P, qb, ncr, qb.ex_n), scale_);
    for (int64_t i = 0; i < h_; ++i) {
      T* S = P + i * rows * qb.width + ncr;
      if (s.mask) ops::mask_scores(matrix(S, rows, qb.ex_n, qb.width), vector_view(s.mask, qb.ex_n), false);
      if (dims_.causal) ops::mask_scores(matrix(S + s.own_from, rows, qb.ex_n - s.own_from, qb.width), {}, true);
    }
    const auto all = matrix(P, h_ * rows, qb.width);
    ops::softmax_forward<T>(all, all);
    const T* Pd = dropped_probs(P, dropped, qb, offset, p);
    if (ncr > 0) ops::matmul(part(Pd, qb, 0, ncr), heads(s.vc, ncr), heads(o, rows));
    ops::matmul(part(Pd, qb, ncr, qb.ex_n), heads(s.v, qb.ex_n), heads(o, rows), 1, ncr > 0 ? 1 : 0);
  }

  // From dO (rows, d): dQ (overwritten), dK̂, dV̂, dK, dV (accumulated) of one query block.
  void attend_backward(const Seq& s, const T* P, int64_t offset, const T* d_o, const SeqGrads& g, T* dP,
                       T* dropped) const {
    const QueryBlock& qb = s.qb;
    const int64_t ncr = qb.comp_n * r_, rows = qb.rows, size = h_ * rows * qb.width;
    if (ncr > 0) ops::matmul(heads(d_o, rows), heads(s.vc, ncr).t(), part(dP, qb, 0, ncr));
    ops::matmul(heads(d_o, rows), heads(s.v, qb.ex_n).t(), part(dP, qb, ncr, qb.ex_n));
    if (dropout_ > 0)
      ops::dropout_backward<T>(vector_view(dP, size), vector_view(dP, size), dropout_, seed_, kProbsDropoutStream,
                               uint64_t(offset));
    const T* Pd = dropped_probs(P, dropped, qb, offset, dropout_);
    if (ncr > 0) ops::matmul(part(Pd, qb, 0, ncr).t(), heads(d_o, rows), heads(g.dvc, ncr), 1, 1);
    ops::matmul(part(Pd, qb, ncr, qb.ex_n).t(), heads(d_o, rows), heads(g.dv, qb.ex_n), 1, 1);
    const auto dS = matrix(dP, h_ * rows, qb.width);
    ops::softmax_backward<T>(matrix(P, h_ * rows, qb.width), dS, dS);
    if (ncr > 0) {
      ops::matmul(part<const T>(dP, qb, 0, ncr), heads(s.kc, ncr), heads(g.dq, rows), scale_);
      ops::matmul(part<const T>(dP, qb, 0, ncr).t(), heads(s.q, rows), heads(g.dkc, ncr), scale_, 1);
    }
    ops::matmul(part<const T>(dP, qb, ncr, qb.ex_n), heads(s.k, qb.ex_n), heads(g.dq, rows), scale_, ncr > 0 ? 1 : 0);
    ops::matmul(part<const T>(dP, qb, ncr, qb.ex_n).t(), heads(s.q, rows), heads(g.dk, qb.ex_n), scale_, 1);
  }

  // P itself, or its dropped-out copy in `dropped` when training with dropout.
  const T* dropped_probs(const T* P, T* dropped, const QueryBlock& qb, int64_t offset, double p) const {
    if (p <= 0) return P;
    const int64_t size = h_ * qb.rows * qb.width;
    ops::dropout_forward<T>(vector_view(P, size), vector_view(dropped, size), p, seed_, kProbsDropoutStream,
                            uint64_t(offset));
    return dropped;
  }

  // E (p = 0) or F (p = 1): (r, c).
  const T* projection(int p) const { return proj_[p] >= 0 ? arena_.value(proj_[p]) : mean_.data(); }

  // dst (count, r, d) = E_p · src (count, c, d): `count` blocks, items `src_stride` / `dst_stride` apart.
  void compress_rows(int p, const T* src, int64_t src_stride, int64_t count, T* dst, int64_t dst_stride) const {
    if (count == 0) return;
    ops::matmul(matrix(projection(p), r_, c_), matrices(src, count, src_stride, c_, d_),
                matrices(dst, count, dst_stride, r_, d_));
  }
  // The first `count` blocks of one sequence's (n, d) rows, compressed to (count·r, d).
  void compress(int p, const T* src, int64_t count, T* dst) const {
    compress_rows(p, src, c_ * d_, count, dst, r_ * d_);
  }
  // d_src (count·c, d) += E_pᵀ d_dst; dE_p += Σ_blocks d_dst_b src_bᵀ (learned only).
  void compress_backward(int p, const T* src, const T* d_dst, int64_t count, T* d_src) {
    if (count == 0) return;
    ops::matmul(matrix(projection(p), r_, c_).t(), matrices(d_dst, count, r_ * d_, r_, d_),
                matrices(d_src, count, c_ * d_, c_, d_), 1, 1);
    if (proj_[p] < 0) return;
    const auto dE = matrix(arena_.grad(proj_[p]), r_, c_);
    for (int64_t i = 0; i < count; ++i)
      ops::matmul(matrix(d_dst + i * r_ * d_, r_, d_), matrix(src + i * c_ * d_, c_, d_).t(), dE, 1, 1);
  }

  void release() {
    release_buffers(q_, k_, v_, kc_, vc_, o_buf_, probs_);
    maps_.release();
    kept_ = false;
  }

  ParamArena<T>& arena_;
  AttentionDims dims_;
  CausalLinformerOptions o_;
  QkvoProjections<T> maps_;
  int64_t d_ = 0, h_ = 0, dh_ = 0, c_ = 0, r_ = 0;
  double scale_ = 1;
  int proj_[2] = {-1, -1};  // E, F (learned); -1 with mean pooling, which reads mean_
  Buffer<T> mean_;          // (r, c) the fixed averages

  // The last forward's plan and what its backward needs (the caller keeps in_.x alive).
  AttentionInput<T> in_;
  bool kept_ = false;
  double dropout_ = 0;
  uint64_t seed_ = 0;
  std::vector<QueryBlock> blocks_;
  int64_t nc_ = 0, probs_per_seq_ = 0, max_width_ = 0;
  Buffer<T> q_, k_, v_, kc_, vc_, o_buf_, probs_;
};

}  // namespace

void register_causal_linformer_attention(AttentionRegistry& registry) {
  register_kind<CausalLinformerAttention>(registry, causal_linformer_info(), parse_causal_linformer);
}

}  // namespace lf
