// The CPU kernels of sparse-pattern attention (the math is in src/core/sparse_pattern.h and
// src/ops/sparse_attention.h): the pattern's construction, the forward and backward over the pattern's
// entries (tile products where the pattern is dense), and the plain reference.
#include "cpu/sparse_attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>

#include "core/attention_shape.h"  // kProbsDropoutStream
#include "cpu/tile_gemm.h"
#include "cpu/vmath.h"
#include "linformer/error.h"
#include "linformer/rng.h"

namespace lf {

// ---- patterns ------------------------------------------------------------------------------------------

namespace {

constexpr int64_t kMaxEntries = std::numeric_limits<int32_t>::max();

// Sorts one row's keys and drops duplicates, keys outside [0, m) and (causal) keys after t.
void normalise_row(int64_t t, int64_t m, bool causal, std::vector<int32_t>& keys) {
  const int64_t end = causal ? std::min(m, t + 1) : m;
  keys.erase(std::remove_if(keys.begin(), keys.end(), [end](int32_t j) { return j < 0 || j >= end; }), keys.end());
  if (!std::is_sorted(keys.begin(), keys.end())) std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
}

void check_pattern_size(int64_t n, int64_t m) {
  LF_REQUIRE(n > 0 && m > 0, "sparse attention: pattern sizes must be positive, got ", n, " x ", m);
  LF_REQUIRE(n <= kMaxEntries && m <= kMaxEntries, "sparse attention: sequence too long for 32-bit positions");
}

// Row t's keys into `keys` (its old contents dropped), normalised.
void pattern_row(int64_t t, int64_t m, bool causal, const RowKeys& row_keys, std::vector<int32_t>& keys) {
  keys.clear();
  row_keys(t, keys);
  normalise_row(t, m, causal, keys);
}

// Rows per parallel task when building (the row functions are pure, so rows build independently).
constexpr int64_t kBuildRows = 256;

// use(t, keys) for every row t < n with its normalised keys, rows in parallel; use must only touch
// row t's own output.
template <class Use>
void for_each_pattern_row(int64_t n, int64_t m, bool causal, const RowKeys& row_keys, Use use) {
#pragma omp parallel if (n >= 4 * kBuildRows)
  {
    std::vector<int32_t> keys;
#pragma omp for schedule(dynamic, 1)
    for (int64_t t0 = 0; t0 < n; t0 += kBuildRows)
      for (int64_t t = t0; t < std::min(n, t0 + kBuildRows); ++t) {
        pattern_row(t, m, causal, row_keys, keys);
        use(t, keys);
      }
  }
}

}  // namespace

// Serial on purpose: estimates run before `linformer bench` forks its measurement processes, and
// libgomp does not survive a fork after its threads have started (the child hangs).
int64_t count_pattern_entries(int64_t n, int64_t m, bool causal, const RowKeys& row_keys) {
  check_pattern_size(n, m);
  int64_t total = 0;
  std::vector<int32_t> keys;
  for (int64_t t = 0; t < n; ++t) {
    pattern_row(t, m, causal, row_keys, keys);
    total += int64_t(keys.size());
  }
  return total;
}

SparsePattern build_sparse_pattern(int64_t n, int64_t m, bool causal, const RowKeys& row_keys, bool with_transpose) {
  check_pattern_size(n, m);
  SparsePattern p;
  p.n = n;
  p.m = m;
  // Two passes (row lengths, then the keys into their place) so that cols is allocated once, exactly.
  p.row_ptr.assign(size_t(n + 1), 0);
  for_each_pattern_row(n, m, causal, row_keys, [&](int64_t t, const std::vector<int32_t>& keys) {
    p.row_ptr[size_t(t + 1)] = int64_t(keys.size());
  });
  for (int64_t t = 0; t < n; ++t) p.row_ptr[size_t(t + 1)] += p.row_ptr[size_t(t)];
  const int64_t nnz = p.row_ptr[size_t(n)];
  LF_REQUIRE(nnz <= kMaxEntries, "sparse attention: the pattern of ", n, " positions has ", nnz,
             " entries, more than 2^31 - 1; use a sparser pattern (a smaller window, fewer global positions) or "
             "'flash' for dense attention");
  p.cols.resize(size_t(nnz));
  for_each_pattern_row(n, m, causal, row_keys, [&](int64_t t, const std::vector<int32_t>& keys) {
    std::copy(keys.begin(), keys.end(), p.cols.begin() + p.row_ptr[size_t(t)]);
  });
  if (with_transpose) add_transpose(p);
  return p;
}

void add_transpose(SparsePattern& p) {
  if (p.has_transpose()) return;
  const int64_t nnz = p.nnz();
  p.col_ptr.assign(size_t(p.m + 1), 0);
  for (int32_t j : p.cols) ++p.col_ptr[size_t(j + 1)];
  for (int64_t j = 0; j < p.m; ++j) p.col_ptr[size_t(j + 1)] += p.col_ptr[size_t(j)];
  p.col_rows.resize(size_t(nnz));
  p.col_entry.resize(size_t(nnz));
  std::vector<int64_t> next(p.col_ptr.begin(), p.col_ptr.end() - 1);
  for (int64_t t = 0; t < p.n; ++t)  // rows in order: each key's queries come out ascending
    for (int64_t e = p.row_ptr[size_t(t)]; e < p.row_ptr[size_t(t + 1)]; ++e) {
      const int64_t c = next[size_t(p.cols[size_t(e)])]++;
      p.col_rows[size_t(c)] = int32_t(t);
      p.col_entry[size_t(c)] = int32_t(e);
    }
}

// ---- the kernels ---------------------------------------------------------------------------------------

// Each parallel task takes a block of kRowsPerTask query rows (forward, backward pass 1) or keys
// (backward pass 2) of one (batch item, head) and runs it one of two ways, chosen from the pattern
// alone (so the result does not depend on the thread count, or on keep_probs):
//   entries: per entry, a dot product over d_h with the gathered key row, and an axpy with the value
//            row (zero weights skipped);
//   tiles:   when the block's entries fill at least `tile_density` of (its rows × the union U of their
//            keys), as in a sliding window or BigBird's blocks: the rows of U are packed once and the
//            block becomes register-blocked tile products (flash_tile_gemm) over |U| × rows, with the
//            softmax still on the entries only (the other cells of the tiles are zero, so values in
//            hidden positions must be finite: 0 · NaN would leak).

namespace {

template <class T>
inline T dot(const T* __restrict a, const T* __restrict b, int64_t len) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t c = 0; c < len; ++c) acc += a[c] * b[c];
  return acc;
}

// y += alpha · x
template <class T>
inline void axpy(T alpha, const T* __restrict x, T* __restrict y, int64_t len) {
#pragma omp simd
  for (int64_t c = 0; c < len; ++c) y[c] += alpha * x[c];
}

constexpr int64_t kRowsPerTask = 32;
constexpr int64_t kMaxTileKeys = 8192;  // a larger union (e.g. a global row's) runs entry by entry

// Below about a quarter million multiply-adds a parallel region costs more than it saves.
inline bool worth_threads(const SparseShape& s, const SparsePattern& p) {
  return double(s.B) * double(s.h) * double(p.nnz()) * double(s.d_h) >= double(1 << 18);
}

void check_shape(const SparseShape& s, const SparsePattern& p) {
  LF_REQUIRE(p.n == s.n && p.m == s.m, "sparse attention: the pattern is ", p.n, " x ", p.m, " but the call has ", s.n,
             " queries and ", s.m, " keys");
  LF_REQUIRE(!s.causal || s.n == s.m, "sparse attention: causal masking needs as many keys as queries");
  LF_REQUIRE(s.dropout >= 0 && s.dropout < 1, "sparse attention: dropout must be in [0, 1), got ", s.dropout);
}

inline uint64_t dropout_index(const SparseShape& s, int64_t b, int64_t i, int64_t t, int64_t j) {
  return uint64_t((((b + s.batch_offset) * s.h + i) * s.n + t) * s.m + j);
}

// A thread's scratch: the union U of a block's keys (or queries) and each one's column in it
// (slot, −1 outside U), and the tiles.
template <class T>
struct BlockScratch {
  std::vector<int32_t> slot, uni;
  std::vector<T> row, S, P, G, packed_t, packed, packed2;  // S: (u × rows); P, G: (rows × u)

  explicit BlockScratch(int64_t positions) : slot(static_cast<size_t>(positions), -1) {}

  // U = the distinct values of idx[0, count), in order of first appearance.
  int64_t collect(const int32_t* idx, int64_t count) {
    uni.clear();
    for (int64_t c = 0; c < count; ++c)
      if (slot[size_t(idx[c])] < 0) {
        slot[size_t(idx[c])] = int32_t(uni.size());
        uni.push_back(idx[c]);
      }
    return int64_t(uni.size());
  }
  void release() {
    for (int32_t j : uni) slot[size_t(j)] = -1;
  }
  // X_U (u × d_h, contiguous) = the rows of U of X (row stride ld): plain row copies.
  void pack_rows(const T* X, int64_t ld, int64_t d_h, std::vector<T>& Xp) const {
    const int64_t u = int64_t(uni.size());
    Xp.resize(size_t(u * d_h));
    for (int64_t c = 0; c < u; ++c) {
      const T* x = X + int64_t(uni[size_t(c)]) * ld;
      std::copy(x, x + d_h, Xp.begin() + c * d_h);
    }
  }
};

// Xt (d_h × rows) = `rows` consecutive rows of X (row stride ld) transposed: the block's own Q, dO
// or V, so that each tile product reads packed rows of the union (copies, not a strided transpose).
template <class T>
void pack_block_transposed(const T* X, int64_t ld, int64_t rows, int64_t d_h, std::vector<T>& Xt) {
  Xt.resize(size_t(d_h * rows));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t e = 0; e < d_h; ++e) Xt[size_t(e * rows + r)] = X[r * ld + e];
}

inline bool use_tiles(const SparseShape& s, int64_t entries, int64_t rows, int64_t u) {
  return u > 0 && u <= kMaxTileKeys && double(entries) >= s.tile_density * double(rows) * double(u);
}

template <class T>
void zero_tile(std::vector<T>& tile, int64_t size) {
  tile.assign(size_t(size), T(0));
}

}  // namespace

template <class T>
void sparse_attention_forward(const SparseShape& s, const SparsePattern& p, const T* q, const T* k, const T* v,
                              T* probs, T* out, bool keep_probs) {
  check_shape(s, p);
  const int64_t ld = s.h * s.d_h, d_h = s.d_h, nnz = p.nnz();
  const int64_t blocks = (s.n + kRowsPerTask - 1) / kRowsPerTask, tasks = s.B * s.h * blocks;
  const T scale = T(s.scale), neg_inf = -std::numeric_limits<T>::infinity();
  const bool dropout = s.dropout > 0;
  const float drop_p = float(s.dropout);
  const T drop_scale = T(1.0 / (1.0 - s.dropout));
  const int64_t scratch_len = keep_probs ? 0 : p.max_row();

#pragma omp parallel if (tasks > 1 && worth_threads(s, p))
  {
    BlockScratch<T> sc(s.m);
    sc.row.resize(size_t(scratch_len));  // inference: one row's probabilities
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t blk = task % blocks, bi = task / blocks, b = bi / s.h, i = bi % s.h;
      const int64_t t0 = blk * kRowsPerTask, t1 = std::min(s.n, t0 + kRowsPerTask), rows = t1 - t0;
      const T* Kb = k + b * s.m * ld + i * d_h;
      const T* Vb = v + b * s.m * ld + i * d_h;
      const uint8_t* km = s.key_mask ? s.key_mask + b * s.m : nullptr;
      const int64_t first = p.row_ptr[size_t(t0)];
      const int64_t u = sc.collect(p.cols.data() + first, p.row_ptr[size_t(t1)] - first);
      const bool tiles = use_tiles(s, p.row_ptr[size_t(t1)] - first, rows, u);
      if (tiles) {  // Sᵀ (u × rows) = scale · K_U Qᵀ
        sc.pack_rows(Kb, ld, d_h, sc.packed2);
        sc.pack_rows(Vb, ld, d_h, sc.packed);
        pack_block_transposed(q + (b * s.n + t0) * ld + i * d_h, ld, rows, d_h, sc.packed_t);
        sc.S.resize(size_t(u * rows));
        flash_tile_gemm(false, u, rows, d_h, scale, sc.packed2.data(), d_h, sc.packed_t.data(), rows, false,
                        sc.S.data(), rows);
        zero_tile(sc.P, rows * u);
      }
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t e0 = p.row_ptr[size_t(t)], len = p.row_ptr[size_t(t + 1)] - e0;
        const int32_t* cols = p.cols.data() + e0;
        T* P = keep_probs ? probs + bi * nnz + e0 : sc.row.data();
        const T* qt = q + (b * s.n + t) * ld + i * d_h;
        const T* St = tiles ? sc.S.data() + (t - t0) : nullptr;  // column t − t0 of Sᵀ
        T* ot = out + (b * s.n + t) * ld + i * d_h;
        // Scores of the visible entries (−inf for hidden ones) and their max.
        T mx = neg_inf;
        for (int64_t e = 0; e < len; ++e) {
          const int64_t j = cols[e];
          const bool hidden = (s.causal && j > t) || (km && km[j]);
          P[e] = hidden ? neg_inf : tiles ? St[int64_t(sc.slot[size_t(j)]) * rows] : scale * dot(qt, Kb + j * ld, d_h);
          mx = P[e] > mx ? P[e] : mx;
        }
        if (!tiles) std::fill(ot, ot + d_h, T(0));
        if (mx == neg_inf) {  // no visible key: zero output (tiles: a zero row of P̃) and probabilities
          std::fill(P, P + len, T(0));
          continue;
        }
        T sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t e = 0; e < len; ++e) {
          P[e] = exp_fast<T>(P[e] - mx);
          sum += P[e];
        }
        const T inv = T(1) / sum;
#pragma omp simd
        for (int64_t e = 0; e < len; ++e) P[e] *= inv;
        // O_t = Σ_e dropout(P_e) V_j (rows: zero weights skipped, so padded values never enter).
        T* Pt = tiles ? sc.P.data() + (t - t0) * u : nullptr;
        for (int64_t e = 0; e < len; ++e) {
          T w = P[e];
          if (dropout && w != T(0))
            w = uniform01(s.seed, kProbsDropoutStream, dropout_index(s, b, i, t, cols[e])) >= drop_p ? w * drop_scale
                                                                                                    : T(0);
          if (tiles)
            Pt[sc.slot[size_t(cols[e])]] = w;
          else if (w != T(0))
            axpy(w, Vb + int64_t(cols[e]) * ld, ot, d_h);
        }
      }
      if (tiles)  // O (rows × d_h) = P̃ V_U
        flash_tile_gemm(false, rows, d_h, u, T(1), sc.P.data(), u, sc.packed.data(), d_h, false,
                        out + (b * s.n + t0) * ld + i * d_h, ld);
      sc.release();
    }
  }
}

template <class T>
void sparse_attention_backward(const SparseShape& s, const SparsePattern& p, const T* q, const T* k, const T* v,
                               const T* out, const T* probs, const T* dout, T* dq, T* dk, T* dv) {
  check_shape(s, p);
  LF_REQUIRE(p.has_transpose(), "sparse attention: the backward needs the pattern's transpose");
  const int64_t ld = s.h * s.d_h, d_h = s.d_h, nnz = p.nnz();
  const T scale = T(s.scale);
  const bool dropout = s.dropout > 0;
  const float drop_p = float(s.dropout);
  const T drop_scale = T(1.0 / (1.0 - s.dropout));
  const bool parallel = worth_threads(s, p);

  // D (B, h, n) = rowsum(dO ∘ O) = Σ_e P_e dP_e: the softmax backward's row term.
  std::vector<T> D(static_cast<size_t>(s.B * s.h * s.n));
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t bt = 0; bt < s.B * s.n; ++bt)
    for (int64_t i = 0; i < s.h; ++i)
      D[size_t(((bt / s.n) * s.h + i) * s.n + bt % s.n)] = dot(dout + bt * ld + i * d_h, out + bt * ld + i * d_h, d_h);

  // dP_e = dropout'(dO_t · V_j), dS_e = P_e (dP_e − D_t); recomputed in both passes rather than kept.
  // Pass 1, over blocks of query rows: dQ_t = scale · Σ_e dS_e K_j.
  const int64_t qblocks = (s.n + kRowsPerTask - 1) / kRowsPerTask, qtasks = s.B * s.h * qblocks;
#pragma omp parallel if (parallel && qtasks > 1)
  {
    BlockScratch<T> sc(s.m);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < qtasks; ++task) {
      const int64_t blk = task % qblocks, bi = task / qblocks, b = bi / s.h, i = bi % s.h;
      const int64_t t0 = blk * kRowsPerTask, t1 = std::min(s.n, t0 + kRowsPerTask), rows = t1 - t0;
      const T* Kb = k + b * s.m * ld + i * d_h;
      const T* Vb = v + b * s.m * ld + i * d_h;
      const T* P = probs + bi * nnz;
      const int64_t first = p.row_ptr[size_t(t0)];
      const int64_t u = sc.collect(p.cols.data() + first, p.row_ptr[size_t(t1)] - first);
      const bool tiles = use_tiles(s, p.row_ptr[size_t(t1)] - first, rows, u);
      if (tiles) {  // dP̃ᵀ (u × rows) = V_U dOᵀ
        sc.pack_rows(Vb, ld, d_h, sc.packed2);
        sc.pack_rows(Kb, ld, d_h, sc.packed);
        pack_block_transposed(dout + (b * s.n + t0) * ld + i * d_h, ld, rows, d_h, sc.packed_t);
        sc.S.resize(size_t(u * rows));
        flash_tile_gemm(false, u, rows, d_h, T(1), sc.packed2.data(), d_h, sc.packed_t.data(), rows, false,
                        sc.S.data(), rows);
        zero_tile(sc.G, rows * u);
      }
      for (int64_t t = t0; t < t1; ++t) {
        const T* dOt = dout + (b * s.n + t) * ld + i * d_h;
        const T Dt = D[size_t(bi * s.n + t)];
        T* dqt = dq + (b * s.n + t) * ld + i * d_h;
        if (!tiles) std::fill(dqt, dqt + d_h, T(0));
        for (int64_t e = p.row_ptr[size_t(t)]; e < p.row_ptr[size_t(t + 1)]; ++e) {
          const T pe = P[e];
          if (pe == T(0)) continue;  // hidden or underflowed: dS = 0
          const int64_t j = p.cols[size_t(e)];
          T dp = tiles ? sc.S[size_t(int64_t(sc.slot[size_t(j)]) * rows + (t - t0))] : dot(dOt, Vb + j * ld, d_h);
          if (dropout)
            dp = uniform01(s.seed, kProbsDropoutStream, dropout_index(s, b, i, t, j)) >= drop_p ? dp * drop_scale : T(0);
          if (tiles)
            sc.G[size_t((t - t0) * u + sc.slot[size_t(j)])] = pe * (dp - Dt);
          else
            axpy(scale * pe * (dp - Dt), Kb + j * ld, dqt, d_h);
        }
      }
      if (tiles)  // dQ (rows × d_h) = scale · dS K_U
        flash_tile_gemm(false, rows, d_h, u, scale, sc.G.data(), u, sc.packed.data(), d_h, false,
                        dq + (b * s.n + t0) * ld + i * d_h, ld);
      sc.release();
    }
  }

  // Pass 2, over blocks of keys through the transpose: dV_j = Σ dropout(P_e) dO_t, dK_j = scale · Σ dS_e Q_t.
  const int64_t kblocks = (s.m + kRowsPerTask - 1) / kRowsPerTask, ktasks = s.B * s.h * kblocks;
#pragma omp parallel if (parallel && ktasks > 1)
  {
    BlockScratch<T> sc(s.n);  // unions of queries
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < ktasks; ++task) {
      const int64_t blk = task % kblocks, bi = task / kblocks, b = bi / s.h, i = bi % s.h;
      const int64_t j0 = blk * kRowsPerTask, j1 = std::min(s.m, j0 + kRowsPerTask), rows = j1 - j0;
      const T* P = probs + bi * nnz;
      const T* Qb = q + b * s.n * ld + i * d_h;
      const T* dOb = dout + b * s.n * ld + i * d_h;
      const int64_t first = p.col_ptr[size_t(j0)];
      const int64_t u = sc.collect(p.col_rows.data() + first, p.col_ptr[size_t(j1)] - first);
      const bool tiles = use_tiles(s, p.col_ptr[size_t(j1)] - first, rows, u);
      if (tiles) {  // dP̃ (u × rows) = dO_U Vᵀ over the block's keys
        sc.pack_rows(dOb, ld, d_h, sc.packed);
        sc.pack_rows(Qb, ld, d_h, sc.packed2);
        pack_block_transposed(v + (b * s.m + j0) * ld + i * d_h, ld, rows, d_h, sc.packed_t);
        sc.S.resize(size_t(u * rows));
        flash_tile_gemm(false, u, rows, d_h, T(1), sc.packed.data(), d_h, sc.packed_t.data(), rows, false, sc.S.data(),
                        rows);
        zero_tile(sc.P, rows * u);
        zero_tile(sc.G, rows * u);
      }
      for (int64_t j = j0; j < j1; ++j) {
        const T* vj = v + (b * s.m + j) * ld + i * d_h;
        T* dkj = dk + (b * s.m + j) * ld + i * d_h;
        T* dvj = dv + (b * s.m + j) * ld + i * d_h;
        if (!tiles) {
          std::fill(dkj, dkj + d_h, T(0));
          std::fill(dvj, dvj + d_h, T(0));
        }
        for (int64_t c = p.col_ptr[size_t(j)]; c < p.col_ptr[size_t(j + 1)]; ++c) {
          const T pe = P[p.col_entry[size_t(c)]];
          if (pe == T(0)) continue;
          const int64_t t = p.col_rows[size_t(c)];
          const T* dOt = dOb + t * ld;
          const size_t cell = tiles ? size_t((j - j0) * u + sc.slot[size_t(t)]) : 0;
          T dp = tiles ? sc.S[size_t(int64_t(sc.slot[size_t(t)]) * rows + (j - j0))] : dot(dOt, vj, d_h), pd = pe;
          if (dropout) {
            const bool keep = uniform01(s.seed, kProbsDropoutStream, dropout_index(s, b, i, t, j)) >= drop_p;
            dp = keep ? dp * drop_scale : T(0);
            pd = keep ? pe * drop_scale : T(0);
          }
          const T ds = pe * (dp - D[size_t(bi * s.n + t)]);
          if (tiles) {
            sc.P[cell] = pd;
            sc.G[cell] = ds;
          } else {
            if (pd != T(0)) axpy(pd, dOt, dvj, d_h);
            axpy(scale * ds, Qb + t * ld, dkj, d_h);
          }
        }
      }
      if (tiles) {  // dV (rows × d_h) = P̃ᵀ dO_U, dK = scale · dSᵀ Q_U
        flash_tile_gemm(false, rows, d_h, u, T(1), sc.P.data(), u, sc.packed.data(), d_h, false,
                        dv + (b * s.m + j0) * ld + i * d_h, ld);
        flash_tile_gemm(false, rows, d_h, u, scale, sc.G.data(), u, sc.packed2.data(), d_h, false,
                        dk + (b * s.m + j0) * ld + i * d_h, ld);
      }
      sc.release();
    }
  }
}

template <class T>
void sparse_attention_forward_ref(const SparseShape& s, const SparsePattern& p, const T* q, const T* k, const T* v,
                                  T* out) {
  const int64_t ld = s.h * s.d_h;
  std::vector<double> w(size_t(s.m));
  std::vector<uint8_t> allowed(size_t(s.m));
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t i = 0; i < s.h; ++i)
      for (int64_t t = 0; t < s.n; ++t) {
        std::fill(allowed.begin(), allowed.end(), uint8_t(0));
        for (int64_t e = p.row_ptr[size_t(t)]; e < p.row_ptr[size_t(t + 1)]; ++e) allowed[size_t(p.cols[size_t(e)])] = 1;
        double mx = -INFINITY;
        for (int64_t j = 0; j < s.m; ++j) {
          const bool visible = allowed[size_t(j)] && !(s.causal && j > t) && !(s.key_mask && s.key_mask[b * s.m + j]);
          double dot = 0;
          for (int64_t c = 0; c < s.d_h; ++c)
            dot += double(q[(b * s.n + t) * ld + i * s.d_h + c]) * double(k[(b * s.m + j) * ld + i * s.d_h + c]);
          w[size_t(j)] = visible ? dot * s.scale : -INFINITY;
          mx = std::max(mx, w[size_t(j)]);
        }
        double sum = 0;
        for (double& e : w) sum += (e = mx == -INFINITY ? 0.0 : std::exp(e - mx));
        for (int64_t c = 0; c < s.d_h; ++c) {
          double acc = 0;
          for (int64_t j = 0; j < s.m; ++j) {
            if (w[size_t(j)] == 0) continue;
            const bool keep = s.dropout == 0 || double(uniform01(s.seed, kProbsDropoutStream, dropout_index(s, b, i, t, j))) >=
                                                    double(float(s.dropout));
            if (keep) acc += w[size_t(j)] / sum / (1 - s.dropout) * double(v[(b * s.m + j) * ld + i * s.d_h + c]);
          }
          out[(b * s.n + t) * ld + i * s.d_h + c] = T(acc);
        }
      }
}

double sparse_attention_workspace_bytes(int64_t n, int64_t d_h, size_t element) {
  // Per thread: the tiles of a block, at most three packed unions (u × d_h) and three (u × 32)
  // tiles, u ≤ min(n, kMaxTileKeys), and the union's slot map.
  const double u = double(std::min(n, kMaxTileKeys));
  return omp_get_max_threads() * (double(element) * 3.0 * u * (double(d_h) + double(kRowsPerTask)) + 4.0 * n);
}

#define LF_INSTANTIATE(T)                                                                                          \
  template void sparse_attention_forward<T>(const SparseShape&, const SparsePattern&, const T*, const T*, const T*, \
                                            T*, T*, bool);                                                         \
  template void sparse_attention_backward<T>(const SparseShape&, const SparsePattern&, const T*, const T*, const T*, \
                                             const T*, const T*, const T*, T*, T*, T*);                            \
  template void sparse_attention_forward_ref<T>(const SparseShape&, const SparsePattern&, const T*, const T*,      \
                                                const T*, T*);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
