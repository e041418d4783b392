// The kernels of reformer.h: hashing by random rotations, the bucket sort, and chunked attention
// forward and backward over the sorted positions; the key normalisation of shared QK.
#include "cpu/reformer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/tile_gemm.h"
#include "cpu/vmath.h"
#include "linformer/error.h"
#include "linformer/rng.h"

namespace lf {
namespace {

constexpr int64_t kQueryBlock = kReformerQueryBlock;
constexpr int64_t kHashBlock = kReformerHashBlock;

// Below about a million multiply-adds a parallel region costs more than it saves.
inline bool worth_threads(const ReformerShape& s) {
  return double(s.B) * s.h * s.n_hashes * s.n * std::min(s.n, 2 * s.chunk) * s.d_h >= double(1 << 20);
}

void check_shape(const ReformerShape& s) {
  LF_REQUIRE(s.B > 0 && s.n > 0 && s.h > 0 && s.d_h > 0, "reformer attention: sizes must be positive");
  LF_REQUIRE(s.n_hashes >= 1, "reformer attention: n_hashes must be at least 1, got ", s.n_hashes);
  LF_REQUIRE(s.n_buckets >= 2 && s.n_buckets % 2 == 0 && s.n_buckets <= (int64_t(1) << 24),
             "reformer attention: n_buckets must be even and in [2, 2^24], got ", s.n_buckets);
  LF_REQUIRE(s.chunk >= 1, "reformer attention: the chunk length must be positive, got ", s.chunk);
  LF_REQUIRE(s.n < (int64_t(1) << 31), "reformer attention: length ", s.n, " too large");
  LF_REQUIRE(s.dropout >= 0 && s.dropout < 1, "reformer attention: dropout must be in [0, 1), got ", s.dropout);
}

// One chunk of one round of one (batch, head): queries at sorted indices [q0, q1); keys at [p0, p1)
// (the previous chunk, possibly empty) followed by [q0, q1).
struct Chunk {
  int64_t bi;  // b·h + i
  int64_t q0, q1, p0, p1;
  int colour;  // backward pass: chunks of one colour share no rows
};

// The sample's real (unpadded) positions: they sort first, the padded ones last (reformer.h).
int64_t real_length(const ReformerShape& s, int64_t b) {
  if (!s.key_mask) return s.n;
  const uint8_t* km = s.key_mask + b * s.n;
  return s.n - int64_t(std::count_if(km, km + s.n, [](uint8_t m) { return m != 0; }));
}

std::vector<Chunk> round_chunks(const ReformerShape& s, const int32_t* buckets, const int32_t* perm, int64_t r) {
  const int64_t n = s.n, L = s.chunk, BH = s.B * s.h;
  std::vector<Chunk> out;
  if (!s.bucket_chunks) {
    // The paper's: chunk c looks back at chunk c − 1, chunk 0 at the last one, over the sample's real
    // positions alone (so that its chunks are those of the sample unpadded). Chunks c and c' share
    // rows only when adjacent (cyclically): colour by parity, and the last chunk alone when the count
    // is odd (it is adjacent to chunk 0).
    out.reserve(size_t(BH * ((n + L - 1) / L)));
    for (int64_t bi = 0; bi < BH; ++bi) {
      const int64_t nr = real_length(s, bi / s.h), nc = (nr + L - 1) / L;
      for (int64_t c = 0; c < nc; ++c) {
        Chunk ch{bi, c * L, std::min(nr, (c + 1) * L), 0, 0, int(c % 2)};
        if (nc > 1) {
          const int64_t pc = (c + nc - 1) % nc;
          ch.p0 = pc * L;
          ch.p1 = std::min(nr, (pc + 1) * L);
          if (nc % 2 == 1 && c == nc - 1) ch.colour = 2;
        }
        out.push_back(ch);
      }
    }
    return out;
  }
  // Bucket chunking: the k-th L sorted positions of each bucket, looking back at the (k−1)-th; the
  // padded positions' bucket (n_buckets) makes none.
  for (int64_t bi = 0; bi < BH; ++bi) {
    const int32_t* P = perm + (r * BH + bi) * n;
    const int32_t* bk = buckets + (r * BH + bi) * n;
    for (int64_t s0 = 0; s0 < n;) {
      int64_t s1 = s0 + 1;
      while (s1 < n && bk[P[s1]] == bk[P[s0]]) ++s1;
      if (bk[P[s0]] == s.n_buckets) break;  // the padded positions, sorted last
      for (int64_t k = 0, q0 = s0; q0 < s1; ++k, q0 += L)
        out.push_back(Chunk{bi, q0, std::min(s1, q0 + L), k > 0 ? q0 - L : q0, q0, int(k % 2)});
      s0 = s1;
    }
  }
  return out;
}

// Every round's chunks and, for the duplicate correction, where each position sits in each round:
// slot (its sorted index) and chunk_of (the index of the chunk where it is a query, −1 for none),
// both (n_hashes, B·h, n).
struct Rounds {
  std::vector<std::vector<Chunk>> chunks;
  std::vector<int32_t> slot, chunk_of;
};

Rounds make_rounds(const ReformerShape& s, const int32_t* buckets, const int32_t* perm) {
  const int64_t n = s.n, BH = s.B * s.h;
  Rounds rd;
  for (int64_t r = 0; r < s.n_hashes; ++r) rd.chunks.push_back(round_chunks(s, buckets, perm, r));
  if (!s.dedup) return rd;
  rd.slot.resize(size_t(s.n_hashes * BH * n));
  rd.chunk_of.assign(rd.slot.size(), -1);
  for (int64_t r = 0; r < s.n_hashes; ++r) {
    for (int64_t l = r * BH; l < (r + 1) * BH; ++l)
      for (int64_t k = 0; k < n; ++k) rd.slot[size_t(l * n + perm[l * n + k])] = int32_t(k);
    const std::vector<Chunk>& cs = rd.chunks[size_t(r)];
    for (size_t c = 0; c < cs.size(); ++c) {
      const int64_t l = r * BH + cs[c].bi;
      for (int64_t k = cs[c].q0; k < cs[c].q1; ++k) rd.chunk_of[size_t(l * n + perm[l * n + k])] = int32_t(c);
    }
  }
  return rd;
}

// N_tj of reformer.h for the keys of one query t, seen in round r (so N ≥ 1): per other round, t's
// two chunks as slot ranges (and its bucket), gathered once per query; then per key one slot look-up
// per round. The masks (padding, causality) are the same in every round.
struct QueryRounds {
  struct Range {
    int64_t list, q0, q1, p0, p1;  // list: the round's offset (r'·B·h + bi)·n
    int32_t bucket;
  };
  std::vector<Range> other;  // the rounds r' ≠ r in which t is a query
  std::vector<double> log_count;  // log k for k ≤ n_hashes

  explicit QueryRounds(const ReformerShape& s) {
    for (int64_t k = 0; k <= s.n_hashes; ++k) log_count.push_back(k > 0 ? std::log(double(k)) : 0.0);
  }

  void gather(const ReformerShape& s, const Rounds& rd, const int32_t* buckets, int64_t r, int64_t bi, int32_t t) {
    other.clear();
    for (int64_t r2 = 0; r2 < s.n_hashes; ++r2) {
      const int64_t list = (r2 * s.B * s.h + bi) * s.n;
      const int32_t c = rd.chunk_of[size_t(list + t)];
      if (r2 == r || c < 0) continue;
      const Chunk& ch = rd.chunks[size_t(r2)][size_t(c)];
      other.push_back(Range{list, ch.q0, ch.q1, ch.p0, ch.p1, buckets[list + t]});
    }
  }

  // log N for key p of the gathered query.
  double log_rounds(const ReformerShape& s, const Rounds& rd, const int32_t* buckets, int32_t p) const {
    const bool bucket_mask = !s.bucket_chunks && !s.across_buckets;
    int64_t count = 1;  // round r itself
    for (const Range& g : other) {
      const int64_t k = rd.slot[size_t(g.list + p)];
      count += ((k >= g.q0 && k < g.q1) || (k >= g.p0 && k < g.p1)) && (!bucket_mask || buckets[g.list + p] == g.bucket);
    }
    return log_count[size_t(count)];
  }
};

// Per-thread buffers for one chunk: keys (tk ≤ 2L) and one block of queries (tq ≤ kQueryBlock).
template <class T>
struct ChunkScratch {
  std::vector<T> Kt, Kp, Vp, Vt, Qp, dOp, S, Pd, dP, Md, Ob, dKs, dVs, mx, sum;
  std::vector<int32_t> kpos, qpos, self_slot;
  QueryRounds rounds;  // the duplicate correction's per-query ranges
  ChunkScratch(const ReformerShape& s, int64_t L, int64_t d_h, bool backward) : rounds(s) {
    const size_t keys = size_t(2 * L * d_h), block = size_t(kQueryBlock * 2 * L), rows = size_t(kQueryBlock * d_h);
    Kt.resize(keys);
    Vp.resize(keys);
    Qp.resize(rows);
    S.resize(block);
    Ob.resize(rows);
    mx.resize(size_t(kQueryBlock));
    sum.resize(size_t(kQueryBlock));
    kpos.resize(size_t(2 * L));
    qpos.resize(size_t(kQueryBlock));
    self_slot.resize(size_t(kQueryBlock));
    if (backward) {
      Kp.resize(keys);
      Vt.resize(keys);
      dOp.resize(rows);
      Pd.resize(block);
      dP.resize(block);
      Md.resize(block);
      dKs.resize(keys);
      dVs.resize(keys);
    }
  }
};

// kpos (tk) = the chunk's key positions; returns tk.
inline int64_t gather_keys(const Chunk& ch, const int32_t* P, int32_t* kpos) {
  int64_t tk = 0;
  for (int64_t j = ch.p0; j < ch.p1; ++j) kpos[tk++] = P[j];
  for (int64_t j = ch.q0; j < ch.q1; ++j) kpos[tk++] = P[j];
  return tk;
}

// Rows of X (B, n, ld) at positions pos, head columns [c0, c0 + d_h): Xp (rows × d_h) or, transposed,
// Xt (d_h × rows).
template <class T>
inline void pack_rows(const T* Xb, int64_t ld, const int32_t* pos, int64_t rows, int64_t d_h, T* Xp) {
  for (int64_t j = 0; j < rows; ++j) std::copy_n(Xb + int64_t(pos[j]) * ld, d_h, Xp + j * d_h);
}
template <class T>
inline void pack_transposed(const T* Xb, int64_t ld, const int32_t* pos, int64_t rows, int64_t d_h, T* Xt) {
  for (int64_t j = 0; j < rows; ++j) {
    const T* x = Xb + int64_t(pos[j]) * ld;
    for (int64_t c = 0; c < d_h; ++c) Xt[c * rows + j] = x[c];
  }
}

// S (tq × tk) = scale · Qp Ktᵀ with the masks: −inf for padding, (causal) future keys and (without
// across_buckets) keys of another bucket of round r, − log N_tj with dedup, the self score for the
// query's own position; self_slot[a] = the slot of query a's own key, or −1.
template <class T>
void chunk_scores(const ReformerShape& s, const Rounds& rd, const int32_t* buckets, int64_t r, int64_t bi,
                  const uint8_t* km, ChunkScratch<T>& w, int64_t tq, int64_t tk) {
  const int64_t d_h = s.d_h;
  flash_tile_gemm<T>(false, tq, tk, d_h, T(s.scale), w.Qp.data(), d_h, w.Kt.data(), tk, false, w.S.data(), tk);
  const T neg_inf = -std::numeric_limits<T>::infinity(), self = T(kReformerSelfScore);
  const int32_t* bk = buckets + (r * s.B * s.h + bi) * s.n;
  const bool bucket_mask = !s.bucket_chunks && !s.across_buckets, dedup = s.dedup && s.n_hashes > 1;
  for (int64_t a = 0; a < tq; ++a) {
    const int32_t t = w.qpos[size_t(a)];
    T* row = w.S.data() + a * tk;
    w.self_slot[size_t(a)] = -1;
    if (dedup) w.rounds.gather(s, rd, buckets, r, bi, t);
    for (int64_t j = 0; j < tk; ++j) {
      const int32_t p = w.kpos[size_t(j)];
      if ((km && km[p]) || (s.causal && p > t) || (bucket_mask && bk[p] != bk[t])) {
        row[j] = neg_inf;
      } else if (p == t) {
        row[j] = self;
        w.self_slot[size_t(a)] = int32_t(j);
      } else if (dedup) {
        row[j] -= T(w.rounds.log_rounds(s, rd, buckets, p));
      }
    }
  }
}

// Dropout factor of probability (round r, b, head i, query t, key j): the stream and element index of
// sdpa's mask for round 0 ((b·h + i)·n + t)·n + j, so one round over every key draws `full`'s mask.
template <class T>
inline T drop_factor(const ReformerShape& s, int64_t r, int64_t bi, int64_t t, int64_t j, float p, T keep_scale) {
  const uint64_t e = uint64_t(((r * s.B * s.h + bi) * s.n + t) * s.n + j);
  return uniform01(s.seed, kProbsDropoutStream, e) >= p ? keep_scale : T(0);
}

}  // namespace

template <class T>
void reformer_rotations(uint64_t seed, uint64_t stream, int64_t n_hashes, int64_t h, int64_t d_h, int64_t n_buckets,
                        T* R) {
  LF_REQUIRE(n_buckets >= 2 && n_buckets % 2 == 0 && n_buckets <= (int64_t(1) << 24),
             "reformer attention: n_buckets must be even and in [2, 2^24], got ", n_buckets);
  const int64_t half = n_buckets / 2, rows = n_hashes * h * d_h;
#pragma omp parallel for schedule(static) if (rows * half > 65536)
  for (int64_t row = 0; row < rows; ++row)
    for (int64_t j = 0; j < half; ++j)
      R[row * half + j] = T(normal_f64(seed, stream, (uint64_t(row) << 24) + uint64_t(j)));
}

template <class T>
void reformer_hash(const ReformerShape& s, const T* u, const T* R, int32_t* buckets) {
  check_shape(s);
  const int64_t half = s.n_buckets / 2, BH = s.B * s.h, ld = s.h * s.d_h;
  const int64_t blocks = (s.n + kHashBlock - 1) / kHashBlock, tasks = s.n_hashes * BH * blocks;
  const bool parallel = tasks > 1 && double(s.n_hashes) * BH * s.n * half * s.d_h >= double(1 << 20);
#pragma omp parallel if (parallel)
  {
    std::vector<T> H(size_t(kHashBlock * half));  // the block's projections u R
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t blk = task % blocks, rbi = task / blocks, r = rbi / BH, bi = rbi % BH, b = bi / s.h, i = bi % s.h;
      const int64_t t0 = blk * kHashBlock, rows = std::min(kHashBlock, s.n - t0);
      flash_tile_gemm<T>(false, rows, half, s.d_h, T(1), u + (b * s.n + t0) * ld + i * s.d_h, ld,
                         R + (r * s.h + i) * s.d_h * half, half, false, H.data(), half);
      int32_t* out = buckets + rbi * s.n + t0;
      for (int64_t a = 0; a < rows; ++a) {
        const T* hr = H.data() + a * half;
        // argmax over [uR, −uR] in index order, the first on ties.
        T best = hr[0];
        int64_t arg = 0;
        for (int64_t j = 1; j < half; ++j)
          if (hr[j] > best) best = hr[j], arg = j;
        for (int64_t j = 0; j < half; ++j)
          if (-hr[j] > best) best = -hr[j], arg = half + j;
        // A padded position goes to a bucket of its own, after the last, whatever it holds: sorted
        // after every real position it moves no chunk border of theirs.
        out[a] = s.key_mask && s.key_mask[b * s.n + t0 + a] ? int32_t(s.n_buckets) : int32_t(arg);
      }
    }
  }
}

void reformer_single_bucket(const ReformerShape& s, int32_t* buckets) {
  check_shape(s);
  for (int64_t l = 0; l < s.n_hashes * s.B * s.h; ++l) {
    const int64_t b = (l % (s.B * s.h)) / s.h;
    for (int64_t t = 0; t < s.n; ++t)
      buckets[l * s.n + t] = s.key_mask && s.key_mask[b * s.n + t] ? int32_t(s.n_buckets) : 0;
  }
}

void reformer_sort(const ReformerShape& s, const int32_t* buckets, int32_t* perm) {
  check_shape(s);
  const int64_t lists = s.n_hashes * s.B * s.h, n = s.n, nb = s.n_buckets;
#pragma omp parallel if (lists > 1 && lists * n >= 65536)
  {
    std::vector<int64_t> start(static_cast<size_t>(nb + 1));  // + the padded positions'
#pragma omp for schedule(static)
    for (int64_t l = 0; l < lists; ++l) {
      const int32_t* bk = buckets + l * n;
      int32_t* P = perm + l * n;
      std::fill(start.begin(), start.end(), 0);
      for (int64_t t = 0; t < n; ++t) ++start[size_t(bk[t])];
      int64_t sum = 0;
      for (int64_t& c : start) {
        const int64_t count = c;
        c = sum;
        sum += count;
      }
      for (int64_t t = 0; t < n; ++t) P[start[size_t(bk[t])]++] = int32_t(t);  // positions in order: stable
    }
  }
}

template <class T>
void reformer_forward(const ReformerShape& s, const T* q, const T* kn, const T* v, const int32_t* buckets,
                      const int32_t* perm, T* out, T* stats) {
  check_shape(s);
  const int64_t n = s.n, d_h = s.d_h, ld = s.h * d_h, BH = s.B * s.h;
  const T neg_inf = -std::numeric_limits<T>::infinity();
  const float drop_p = float(s.dropout);
  const T keep_scale = T(1.0 / (1.0 - s.dropout));
  // Running over the rounds, per query: the largest score M, ℓ = Σ exp(s − M) over the (round, key)
  // pairs so far, and out = Σ exp(s − M) dropout(v) (divided by ℓ at the end). Kept apart rather than
  // as one log-sum-exp: a query alone in its chunk has the score −1e5, where a float log-sum-exp
  // would carry an error of 1e5·2⁻²⁴ ≈ 0.006 into its weights.
  T* M = stats;
  T* ell = stats + BH * n;
  std::fill(out, out + s.B * n * ld, T(0));
  std::fill(M, M + BH * n, neg_inf);
  std::fill(ell, ell + BH * n, T(0));
  const bool parallel = worth_threads(s);
  const Rounds rd = make_rounds(s, buckets, perm);

  for (int64_t r = 0; r < s.n_hashes; ++r) {
    const std::vector<Chunk>& chunks = rd.chunks[size_t(r)];
    const int64_t tasks = int64_t(chunks.size());
#pragma omp parallel if (parallel && tasks > 1)
    {
      ChunkScratch<T> w(s, s.chunk, d_h, false);
#pragma omp for schedule(dynamic, 4)
      for (int64_t task = 0; task < tasks; ++task) {
        const Chunk& ch = chunks[size_t(task)];
        const int64_t b = ch.bi / s.h, i = ch.bi % s.h;
        const int32_t* P = perm + (r * BH + ch.bi) * n;
        const uint8_t* km = s.key_mask ? s.key_mask + b * n : nullptr;
        const T* qb = q + b * n * ld + i * d_h;
        const int64_t tk = gather_keys(ch, P, w.kpos.data());
        pack_transposed(kn + b * n * ld + i * d_h, ld, w.kpos.data(), tk, d_h, w.Kt.data());
        pack_rows(v + b * n * ld + i * d_h, ld, w.kpos.data(), tk, d_h, w.Vp.data());
        for (int64_t a0 = ch.q0; a0 < ch.q1; a0 += kQueryBlock) {
          const int64_t tq = std::min(kQueryBlock, ch.q1 - a0);
          std::copy_n(P + a0, tq, w.qpos.data());
          pack_rows(qb, ld, w.qpos.data(), tq, d_h, w.Qp.data());
          chunk_scores(s, rd, buckets, r, ch.bi, km, w, tq, tk);
          // Per row: the max (masked keys are −inf), exp(S − max), their sum, and dropout.
          for (int64_t a = 0; a < tq; ++a) {
            T* row = w.S.data() + a * tk;
            T mx = neg_inf;
            int64_t end = 0;  // one past the last visible key
            for (int64_t j = 0; j < tk; ++j)
              if (row[j] != neg_inf) mx = std::max(mx, row[j]), end = j + 1;
            w.mx[size_t(a)] = mx;
            if (mx == neg_inf) {  // no key in this round
              std::fill(row, row + tk, T(0));
              continue;
            }
#pragma omp simd
            for (int64_t j = 0; j < tk; ++j) row[j] = exp_fast<T>(row[j] - mx);
            // The sum stops at the last visible key: with causal bucket chunking the visible keys are a
            // prefix of the slots, so the rounding of a query's sum depends on no later position.
            T sum = 0;
#pragma omp simd reduction(+ : sum)
            for (int64_t j = 0; j < end; ++j) sum += row[j];
            w.sum[size_t(a)] = sum;
            if (s.dropout > 0)
              for (int64_t j = 0; j < tk; ++j)
                row[j] *= drop_factor<T>(s, r, ch.bi, w.qpos[size_t(a)], w.kpos[size_t(j)], drop_p, keep_scale);
          }
          // This round's Σ exp(S − mx) dropout(V) (tq × d_h), merged into the running sums.
          flash_tile_gemm<T>(false, tq, d_h, tk, T(1), w.S.data(), tk, w.Vp.data(), d_h, false, w.Ob.data(), d_h);
          for (int64_t a = 0; a < tq; ++a) {
            const T mr = w.mx[size_t(a)];
            if (mr == neg_inf) continue;
            const int64_t t = w.qpos[size_t(a)];
            T* o = out + (b * n + t) * ld + i * d_h;
            const T* ob = w.Ob.data() + a * d_h;
            T& Mt = M[ch.bi * n + t];
            T& lt = ell[ch.bi * n + t];
            if (Mt == neg_inf) {
              std::copy_n(ob, d_h, o);
              Mt = mr;
              lt = w.sum[size_t(a)];
            } else if (mr > Mt) {  // rescale the earlier rounds
              const T alpha = std::exp(Mt - mr);
#pragma omp simd
              for (int64_t c = 0; c < d_h; ++c) o[c] = alpha * o[c] + ob[c];
              lt = alpha * lt + w.sum[size_t(a)];
              Mt = mr;
            } else {
              const T beta = std::exp(mr - Mt);
#pragma omp simd
              for (int64_t c = 0; c < d_h; ++c) o[c] += beta * ob[c];
              lt += beta * w.sum[size_t(a)];
            }
          }
        }
      }
    }
  }
  // out /= ℓ; stats become (M, log ℓ). A query with no key at all: output 0, M = +inf, so that
  // P = exp(s − M − log ℓ) = 0 in the backward.
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t e = 0; e < BH * n; ++e) {
    const int64_t bi = e / n, t = e % n;
    T* o = out + ((bi / s.h) * n + t) * ld + (bi % s.h) * d_h;
    if (M[e] == neg_inf) {
      M[e] = std::numeric_limits<T>::infinity();
      ell[e] = 0;
      continue;
    }
    const T inv = T(1) / ell[e];
    for (int64_t c = 0; c < d_h; ++c) o[c] *= inv;
    ell[e] = std::log(ell[e]);
  }
}

template <class T>
void reformer_backward(const ReformerShape& s, const T* q, const T* kn, const T* v, const int32_t* buckets,
                       const int32_t* perm, const T* out, const T* stats, const T* dout, T* dq, T* dkn, T* dv) {
  check_shape(s);
  const T* M = stats;                       // (B, h, n) the largest score
  const T* log_ell = stats + s.B * s.h * s.n;  // (B, h, n) log Σ exp(s − M)
  const int64_t n = s.n, d_h = s.d_h, ld = s.h * d_h, BH = s.B * s.h;
  const float drop_p = float(s.dropout);
  const T keep_scale = T(1.0 / (1.0 - s.dropout));
  const T scale = T(s.scale);
  const bool dropout = s.dropout > 0, parallel = worth_threads(s);

  // D (B, h, n) = dO · O per query and head: Σ over every (round, key) of P̃ dP̃.
  std::vector<T> D(size_t(BH * n));
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t bt = 0; bt < s.B * n; ++bt)
    for (int64_t i = 0; i < s.h; ++i) {
      const T* o = out + bt * ld + i * d_h;
      const T* g = dout + bt * ld + i * d_h;
      T acc = 0;
      for (int64_t c = 0; c < d_h; ++c) acc += o[c] * g[c];
      D[size_t(((bt / n) * s.h + i) * n + bt % n)] = acc;
    }
  std::fill(dq, dq + s.B * n * ld, T(0));
  std::fill(dkn, dkn + s.B * n * ld, T(0));
  std::fill(dv, dv + s.B * n * ld, T(0));

  // Every (round, key) pair of query t has probability P = exp(s − Z_t) in the combined softmax, so
  // per chunk: dV += P̃ᵀ dO, dP̃ = dO Vᵀ, dS = scale · P ∘ (dropout'(dP̃) − D) (0 for the constant self
  // score), dQ += dS Kn, dKn += dSᵀ Q.
  const Rounds rd = make_rounds(s, buckets, perm);
  for (int64_t r = 0; r < s.n_hashes; ++r) {
    const std::vector<Chunk>& chunks = rd.chunks[size_t(r)];
    for (int colour = 0; colour < 3; ++colour) {
      std::vector<int64_t> ids;
      for (int64_t c = 0; c < int64_t(chunks.size()); ++c)
        if (chunks[size_t(c)].colour == colour) ids.push_back(c);
      const int64_t tasks = int64_t(ids.size());
      if (tasks == 0) continue;
#pragma omp parallel if (parallel && tasks > 1)
      {
        ChunkScratch<T> w(s, s.chunk, d_h, true);
        std::vector<T> dQb(size_t(kQueryBlock * d_h));
#pragma omp for schedule(dynamic, 4)
        for (int64_t task = 0; task < tasks; ++task) {
          const Chunk& ch = chunks[size_t(ids[size_t(task)])];
          const int64_t b = ch.bi / s.h, i = ch.bi % s.h;
          const int32_t* P = perm + (r * BH + ch.bi) * n;
          const uint8_t* km = s.key_mask ? s.key_mask + b * n : nullptr;
          const int64_t off = b * n * ld + i * d_h;  // head i of sample b
          const int64_t tk = gather_keys(ch, P, w.kpos.data());
          pack_transposed(kn + off, ld, w.kpos.data(), tk, d_h, w.Kt.data());
          pack_rows(kn + off, ld, w.kpos.data(), tk, d_h, w.Kp.data());
          pack_transposed(v + off, ld, w.kpos.data(), tk, d_h, w.Vt.data());
          std::fill_n(w.dKs.data(), tk * d_h, T(0));
          std::fill_n(w.dVs.data(), tk * d_h, T(0));
          for (int64_t a0 = ch.q0; a0 < ch.q1; a0 += kQueryBlock) {
            const int64_t tq = std::min(kQueryBlock, ch.q1 - a0);
            std::copy_n(P + a0, tq, w.qpos.data());
            pack_rows(q + off, ld, w.qpos.data(), tq, d_h, w.Qp.data());
            pack_rows(dout + off, ld, w.qpos.data(), tq, d_h, w.dOp.data());
            chunk_scores(s, rd, buckets, r, ch.bi, km, w, tq, tk);
            for (int64_t a = 0; a < tq; ++a) {  // P = exp(S − M − log ℓ): −inf − M and x − ∞ give 0
              T* p = w.S.data() + a * tk;
              const T Ma = M[ch.bi * n + w.qpos[size_t(a)]], la = log_ell[ch.bi * n + w.qpos[size_t(a)]];
#pragma omp simd
              for (int64_t j = 0; j < tk; ++j) p[j] = exp_fast<T>((p[j] - Ma) - la);
              if (dropout) {
                T* md = w.Md.data() + a * tk;
                T* pd = w.Pd.data() + a * tk;
                for (int64_t j = 0; j < tk; ++j) {
                  md[j] = drop_factor<T>(s, r, ch.bi, w.qpos[size_t(a)], w.kpos[size_t(j)], drop_p, keep_scale);
                  pd[j] = p[j] * md[j];
                }
              }
            }
            // dV (tk × d_h) += P̃ᵀ dO;  dP̃ (tq × tk) = dO Vᵀ.
            flash_tile_gemm<T>(true, tk, d_h, tq, T(1), dropout ? w.Pd.data() : w.S.data(), tk, w.dOp.data(), d_h, true,
                               w.dVs.data(), d_h);
            flash_tile_gemm<T>(false, tq, tk, d_h, T(1), w.dOp.data(), d_h, w.Vt.data(), tk, false, w.dP.data(), tk);
            for (int64_t a = 0; a < tq; ++a) {
              const T* p = w.S.data() + a * tk;
              T* ds = w.dP.data() + a * tk;
              const T Da = D[size_t(ch.bi * n + w.qpos[size_t(a)])];
              if (dropout) {
                const T* md = w.Md.data() + a * tk;
#pragma omp simd
                for (int64_t j = 0; j < tk; ++j) ds[j] = scale * p[j] * (ds[j] * md[j] - Da);
              } else {
#pragma omp simd
                for (int64_t j = 0; j < tk; ++j) ds[j] = scale * p[j] * (ds[j] - Da);
              }
              if (w.self_slot[size_t(a)] >= 0) ds[w.self_slot[size_t(a)]] = 0;  // a constant score
            }
            // dQ (tq × d_h) = dS Kn into the queries' rows (this chunk's alone in this round);
            // dKn (tk × d_h) += dSᵀ Q.
            flash_tile_gemm<T>(false, tq, d_h, tk, T(1), w.dP.data(), tk, w.Kp.data(), d_h, false, dQb.data(), d_h);
            for (int64_t a = 0; a < tq; ++a) {
              T* g = dq + off + int64_t(w.qpos[size_t(a)]) * ld;
              const T* src = dQb.data() + a * d_h;
#pragma omp simd
              for (int64_t c = 0; c < d_h; ++c) g[c] += src[c];
            }
            flash_tile_gemm<T>(true, tk, d_h, tq, T(1), w.dP.data(), tk, w.Qp.data(), d_h, true, w.dKs.data(), d_h);
          }
          for (int64_t j = 0; j < tk; ++j) {
            T* gk = dkn + off + int64_t(w.kpos[size_t(j)]) * ld;
            T* gv = dv + off + int64_t(w.kpos[size_t(j)]) * ld;
            const T* sk = w.dKs.data() + j * d_h;
            const T* sv = w.dVs.data() + j * d_h;
#pragma omp simd
            for (int64_t c = 0; c < d_h; ++c) {
              gk[c] += sk[c];
              gv[c] += sv[c];
            }
          }
        }
      }
    }
  }
}

template <class T>
void l2_normalize_rows(const T* u, int64_t rows, int64_t d_h, double floor, T* kn, T* norms) {
#pragma omp parallel for schedule(static) if (rows * d_h > 32768)
  for (int64_t row = 0; row < rows; ++row) {
    const T* x = u + row * d_h;
    T ss = 0;
    for (int64_t c = 0; c < d_h; ++c) ss += x[c] * x[c];
    const T norm = std::sqrt(ss), inv = T(1) / std::max(norm, T(floor));
    norms[row] = norm;
    for (int64_t c = 0; c < d_h; ++c) kn[row * d_h + c] = x[c] * inv;
  }
}

template <class T>
void l2_normalize_rows_backward(const T* kn, const T* norms, const T* dkn, int64_t rows, int64_t d_h, double floor,
                                T* du) {
#pragma omp parallel for schedule(static) if (rows * d_h > 32768)
  for (int64_t row = 0; row < rows; ++row) {
    const T* k = kn + row * d_h;
    const T* g = dkn + row * d_h;
    T* o = du + row * d_h;
    const T norm = norms[row];
    if (norm > T(floor)) {
      T dot = 0;
      for (int64_t c = 0; c < d_h; ++c) dot += k[c] * g[c];
      for (int64_t c = 0; c < d_h; ++c) o[c] += (g[c] - k[c] * dot) / norm;
    } else {
      for (int64_t c = 0; c < d_h; ++c) o[c] += g[c] / T(floor);
    }
  }
}

#define LF_INSTANTIATE(T)                                                                                            \
  template void reformer_rotations<T>(uint64_t, uint64_t, int64_t, int64_t, int64_t, int64_t, T*);                   \
  template void reformer_hash<T>(const ReformerShape&, const T*, const T*, int32_t*);                                \
  template void reformer_forward<T>(const ReformerShape&, const T*, const T*, const T*, const int32_t*, const int32_t*, \
                                    T*, T*);                                                                         \
  template void reformer_backward<T>(const ReformerShape&, const T*, const T*, const T*, const int32_t*,              \
                                     const int32_t*, const T*, const T*, const T*, T*, T*, T*);                      \
  template void l2_normalize_rows<T>(const T*, int64_t, int64_t, double, T*, T*);                                    \
  template void l2_normalize_rows_backward<T>(const T*, const T*, const T*, int64_t, int64_t, double, T*);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
