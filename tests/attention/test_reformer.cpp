// Reformer (LSH) attention: the rotations, the hash (argmax of [uR; −uR], known buckets under scaling
// and negation) and the sort; the chunked kernel against a dense double-loop reference of the
// definition in reformer.h given the same buckets (global and bucket chunking, wrap-around, causal,
// key padding, dropout, several rounds, chunks longer than a query block); the whole layer against the
// same reference end to end; equality with dense shared-QK attention (self only when alone) when every
// key is visible, and with block attention when the buckets are known; identical rounds equal one
// round; finite-difference gradients in double for every option; causality (outputs and the Jacobian);
// results independent of the thread count; no n×n buffer at n = 16384; variable length; bad options.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "attention/sdpa.h"
#include "attention_test_util.h"
#include "cpu/reformer.h"
#include "linformer/error.h"
#include "linformer/rng.h"
#include "linformer/runtime.h"
#include "ops/reformer.h"

namespace lf {
namespace {

using test::AttentionCase;
using test::AttentionRig;
using test::describe;
using test::with_dropout;

AttentionCase reformer_case(int64_t n, json options, bool causal = false, int64_t heads = 2, int64_t d = 8,
                            int64_t B = 2, int64_t max_len = 0) {
  AttentionCase c;
  c.kind = "reformer";
  c.dims = AttentionDims{d, heads, max_len > 0 ? max_len : n, causal, 0};
  c.options = std::move(options);
  c.B = B;
  c.n = n;
  return c;
}

// Sample 0 pads its last two keys; sample 1 pads position 0 (with a causal mask its first query sees
// no key at all) and every third position.
AttentionCase with_mask(AttentionCase c) {
  c.mask.assign(size_t(c.B * c.n), 0);
  for (int64_t j = std::max<int64_t>(0, c.n - 2); j < c.n; ++j) c.mask[size_t(j)] = 1;
  if (c.B > 1)
    for (int64_t j = 0; j < c.n; ++j) c.mask[size_t(c.n + j)] = j % 3 == 0;
  return c;
}

// ---- the dense reference of the definition ------------------------------------------------------

// visible[(r·n + t)·n + j]: key j is in one of query t's two chunks in round r (before the causal
// mask; no chunk holds a padded position), computed from the buckets of one (batch, head) alone, the
// way reformer.h defines it.
std::vector<uint8_t> chunk_visibility(const ReformerShape& s, const int32_t* buckets, int64_t bi) {
  const int64_t n = s.n, L = s.chunk, BH = s.B * s.h, b = bi / s.h;
  const auto padded = [&](int64_t t) { return s.key_mask && s.key_mask[b * n + t]; };
  int64_t nr = 0;  // the sample's real positions
  for (int64_t t = 0; t < n; ++t) nr += !padded(t);
  std::vector<uint8_t> vis(size_t(s.n_hashes * n * n), 0);
  for (int64_t r = 0; r < s.n_hashes; ++r) {
    const int32_t* bk = buckets + (r * BH + bi) * n;
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t c) { return bk[a] < bk[c]; });
    std::vector<int64_t> chunk(static_cast<size_t>(n)), rank(static_cast<size_t>(n));
    for (int64_t k = 0; k < n; ++k) chunk[size_t(order[size_t(k)])] = k / L;
    for (int64_t t = 0; t < n; ++t) {
      rank[size_t(t)] = 0;
      for (int64_t j = 0; j < t; ++j) rank[size_t(t)] += bk[j] == bk[t];
    }
    const int64_t nc = (nr + L - 1) / L;
    for (int64_t t = 0; t < n; ++t)
      for (int64_t j = 0; j < n; ++j) {
        if (padded(t) || padded(j)) continue;
        bool v;
        if (s.bucket_chunks) {
          const int64_t ct = rank[size_t(t)] / L, cj = rank[size_t(j)] / L;
          v = bk[j] == bk[t] && (cj == ct || cj == ct - 1);
        } else {
          const int64_t ct = chunk[size_t(t)], cj = chunk[size_t(j)];
          v = (cj == ct || (nc > 1 && cj == (ct + nc - 1) % nc)) && (s.across_buckets || bk[j] == bk[t]);
        }
        vis[size_t((r * n + t) * n + j)] = v;
      }
  }
  return vis;
}

// out (B, n, h·d_h): one softmax per query over every visible (round, key) pair, self score −1e5,
// − log N_tj with dedup, dropout drawn like the kernel. With `union_of_rounds`, instead one softmax
// over the keys visible in any round, each once (what dedup amounts to, without dropout). Double loops.
void dense_reference(const ReformerShape& s, const double* q, const double* kn, const double* v,
                     const int32_t* buckets, double* out, bool union_of_rounds = false) {
  const int64_t n = s.n, d_h = s.d_h, ld = s.h * d_h;
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t i = 0; i < s.h; ++i) {
      const int64_t bi = b * s.h + i;
      const std::vector<uint8_t> vis = chunk_visibility(s, buckets, bi);
      for (int64_t t = 0; t < n; ++t) {
        std::vector<double> score, factor;
        std::vector<int64_t> key;
        for (int64_t j = 0; j < n; ++j) {
          int64_t rounds = 0;
          for (int64_t r = 0; r < s.n_hashes; ++r) rounds += vis[size_t((r * n + t) * n + j)];
          for (int64_t r = 0; r < s.n_hashes; ++r) {
            if (!vis[size_t((r * n + t) * n + j)]) continue;
            if (s.causal && j > t) continue;
            double dot = 0;
            for (int64_t c = 0; c < d_h; ++c) dot += q[(b * n + t) * ld + i * d_h + c] * kn[(b * n + j) * ld + i * d_h + c];
            const double correction = s.dedup && j != t ? std::log(double(rounds)) : 0.0;
            score.push_back(j == t ? kReformerSelfScore : s.scale * dot - correction);
            const uint64_t e = uint64_t(((r * s.B * s.h + bi) * n + t) * n + j);
            factor.push_back(s.dropout == 0 ? 1.0
                             : uniform01(s.seed, kProbsDropoutStream, e) >= float(s.dropout) ? 1.0 / (1.0 - s.dropout)
                                                                                             : 0.0);
            key.push_back(j);
            if (union_of_rounds) {
              score.back() = j == t ? kReformerSelfScore : s.scale * dot;
              break;
            }
          }
        }
        double* o = out + (b * n + t) * ld + i * d_h;
        std::fill(o, o + d_h, 0.0);
        if (score.empty()) continue;
        const double mx = *std::max_element(score.begin(), score.end());
        double sum = 0;
        for (double x : score) sum += std::exp(x - mx);
        for (size_t e = 0; e < score.size(); ++e) {
          const double p = std::exp(score[e] - mx) / sum * factor[e];
          for (int64_t c = 0; c < d_h; ++c) o[c] += p * v[(b * n + key[e]) * ld + i * d_h + c];
        }
      }
    }
}

// Buckets by plain loops: argmax over [uR; −uR], the first index on ties.
std::vector<int32_t> reference_buckets(const ReformerShape& s, const double* u, const double* R) {
  const int64_t half = s.n_buckets / 2, ld = s.h * s.d_h, BH = s.B * s.h;
  std::vector<int32_t> out(size_t(s.n_hashes * BH * s.n));
  for (int64_t r = 0; r < s.n_hashes; ++r)
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t i = 0; i < s.h; ++i)
        for (int64_t t = 0; t < s.n; ++t) {
          std::vector<double> proj;
          for (int64_t sign : {1, -1})
            for (int64_t j = 0; j < half; ++j) {
              double acc = 0;
              for (int64_t c = 0; c < s.d_h; ++c)
                acc += u[(b * s.n + t) * ld + i * s.d_h + c] * R[((r * s.h + i) * s.d_h + c) * half + j];
              proj.push_back(double(sign) * acc);
            }
          // Padded positions go to a bucket after the last, whatever they hold (reformer.h).
          const bool padded = s.key_mask && s.key_mask[b * s.n + t];
          out[size_t((r * BH + b * s.h + i) * s.n + t)] =
              padded ? int32_t(s.n_buckets) : int32_t(std::max_element(proj.begin(), proj.end()) - proj.begin());
        }
  return out;
}

// Each head's slice of u (rows × h·d_h) scaled to unit length.
std::vector<double> normalise_heads(const std::vector<double>& u, int64_t d_h) {
  std::vector<double> kn(u.size());
  for (size_t row = 0; row < u.size() / size_t(d_h); ++row) {
    double ss = 0;
    for (int64_t c = 0; c < d_h; ++c) ss += u[row * size_t(d_h) + size_t(c)] * u[row * size_t(d_h) + size_t(c)];
    for (int64_t c = 0; c < d_h; ++c)
      kn[row * size_t(d_h) + size_t(c)] = u[row * size_t(d_h) + size_t(c)] / std::max(std::sqrt(ss), 1e-12);
  }
  return kn;
}

// y (rows × d) = x Wᵀ + b, in double.
std::vector<double> linear(const std::vector<double>& x, const double* W, const double* bias, int64_t d) {
  const int64_t rows = int64_t(x.size()) / d;
  std::vector<double> y(x.size());
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t o = 0; o < d; ++o) {
      double acc = bias ? bias[o] : 0.0;
      for (int64_t c = 0; c < d; ++c) acc += x[size_t(t * d + c)] * W[o * d + c];
      y[size_t(t * d + o)] = acc;
    }
  return y;
}

const double* param(const AttentionRig<double>& rig, const std::string& name) {
  const int id = rig.arena.find(name);
  return id < 0 ? nullptr : rig.arena.value(id);
}

// The layer's projections in double: u = x W_qkᵀ (+ b), v = x W_vᵀ (+ b).
struct Projected {
  std::vector<double> u, kn, v;
};
Projected project(const AttentionRig<double>& rig, const AttentionCase& c) {
  const int64_t d = c.dims.d_model;
  Projected p;
  p.u = linear(rig.x, param(rig, "to_qk.weight"), param(rig, "to_qk.bias"), d);
  p.v = linear(rig.x, param(rig, "to_v.weight"), param(rig, "to_v.bias"), d);
  p.kn = normalise_heads(p.u, d / c.dims.n_heads);
  return p;
}

// The resolved shape the layer builds for the case (n_buckets derived as documented, from max_len;
// full_attn_thres: one round, one bucket, one chunk).
ReformerShape layer_shape(const AttentionCase& c) {
  const json o = validate_attention({"reformer", c.dims, c.options, ""});
  ReformerShape s;
  s.B = c.B;
  s.n = c.n;
  s.h = c.dims.n_heads;
  s.d_h = c.dims.d_model / s.h;
  s.n_hashes = o["n_hashes"].get<int64_t>();
  s.chunk = o["bucket_size"].get<int64_t>();
  const int64_t chunks = (c.dims.max_len + s.chunk - 1) / s.chunk;
  s.n_buckets = o["n_buckets"].get<int64_t>() > 0 ? o["n_buckets"].get<int64_t>() : std::max<int64_t>(2, chunks + chunks % 2);
  s.bucket_chunks = o["chunking"].get<std::string>() == "bucket";
  s.across_buckets = o["attend_across_buckets"].get<bool>();
  s.dedup = !o["allow_duplicate_attention"].get<bool>();
  s.causal = c.dims.causal;
  s.scale = 1 / std::sqrt(double(s.d_h));
  s.key_mask = c.mask.empty() ? nullptr : c.mask.data();
  s.dropout = c.training ? c.dims.dropout : 0.0;
  s.seed = 1234;  // AttentionRig::forward's
  if (c.dims.max_len <= o["full_attn_thres"].get<int64_t>()) {
    s.n_hashes = 1, s.n_buckets = 2, s.chunk = c.n;
    s.bucket_chunks = false, s.across_buckets = true;
  }
  return s;
}

// The layer's output computed by the dense reference: projections, buckets by plain loops from the
// documented rotations (the option seed's, or in training with 'per_step' the step seed's), the dense
// attention, the output map.
std::vector<double> reference_layer(const AttentionRig<double>& rig, const AttentionCase& c) {
  const ReformerShape s = layer_shape(c);
  const json o = validate_attention({"reformer", c.dims, c.options, ""});
  const Projected p = project(rig, c);
  std::vector<int32_t> buckets;
  if (c.dims.max_len <= o["full_attn_thres"].get<int64_t>()) {
    for (int64_t bi = 0; bi < s.B * s.h; ++bi)
      for (int64_t t = 0; t < s.n; ++t) buckets.push_back(s.key_mask && s.key_mask[(bi / s.h) * s.n + t] ? 2 : 0);
  } else {
    std::vector<double> R(size_t(s.n_hashes * s.h * s.d_h * s.n_buckets / 2));
    const uint64_t option_seed = o["seed"].get<uint64_t>();
    if (c.training && o["rotations"].get<std::string>() == "per_step")
      reformer_rotations(s.seed, ops::reformer_step_rotation_stream("", option_seed), s.n_hashes, s.h, s.d_h,
                         s.n_buckets, R.data());
    else
      reformer_rotations(option_seed, ops::reformer_rotation_stream(""), s.n_hashes, s.h, s.d_h, s.n_buckets, R.data());
    buckets = reference_buckets(s, p.kn.data(), R.data());
  }
  std::vector<double> attn(p.u.size());
  dense_reference(s, p.u.data(), p.kn.data(), p.v.data(), buckets.data(), attn.data());
  return linear(attn, param(rig, "to_out.weight"), param(rig, "to_out.bias"), c.dims.d_model);
}

// ---- rotations, hash, sort ----------------------------------------------------------------------

TEST(ReformerAttention, RotationsAreSeededStandardNormals) {
  const int64_t R = 2, h = 3, d_h = 5, nb = 8, half = nb / 2;
  std::vector<double> rot(size_t(R * h * d_h * half)), fewer(size_t(R * h * d_h * 2)), other(rot.size());
  reformer_rotations(7, 11, R, h, d_h, nb, rot.data());
  reformer_rotations(7, 11, R, h, d_h, 4, fewer.data());
  reformer_rotations(8, 11, R, h, d_h, nb, other.data());
  for (int64_t row = 0; row < R * h * d_h; ++row)
    for (int64_t j = 0; j < half; ++j) {
      EXPECT_EQ(rot[size_t(row * half + j)], normal_f64(7, 11, (uint64_t(row) << 24) + uint64_t(j)));
      if (j < 2) {
        EXPECT_EQ(fewer[size_t(row * 2 + j)], rot[size_t(row * half + j)]);  // nested in n_buckets
      }
    }
  EXPECT_NE(rot, other);
  // N(0, 1): the mean and variance of many draws.
  std::vector<double> many(size_t(4 * 8 * 64 * 512));
  reformer_rotations(1, 2, 4, 8, 64, 1024, many.data());
  double mean = 0, var = 0;
  for (double x : many) mean += x;
  mean /= double(many.size());
  for (double x : many) var += (x - mean) * (x - mean);
  var /= double(many.size());
  EXPECT_NEAR(mean, 0.0, 0.01);
  EXPECT_NEAR(var, 1.0, 0.01);
}

template <class T>
void check_hash(int64_t nb) {
  SCOPED_TRACE(str_cat("n_buckets=", nb, " double=", sizeof(T) == 8));
  ReformerShape s;
  s.B = 2, s.n = 70, s.h = 2, s.d_h = 8, s.n_hashes = 3, s.n_buckets = nb;
  const int64_t size = s.B * s.n * s.h * s.d_h;
  const std::vector<double> u = test::random_vector<double>(size, 5);
  std::vector<double> R(size_t(s.n_hashes * s.h * s.d_h * nb / 2));
  reformer_rotations(3, 4, s.n_hashes, s.h, s.d_h, nb, R.data());
  const std::vector<int32_t> expected = reference_buckets(s, u.data(), R.data());
  const std::vector<T> ut = test::cast_vector<T>(u), Rt = test::cast_vector<T>(R);
  std::vector<int32_t> got(expected.size());
  reformer_hash(s, ut.data(), Rt.data(), got.data());
  EXPECT_EQ(got, expected);
  // Known buckets: a positive multiple hashes the same; the negation to the opposite bucket.
  std::vector<T> scaled(ut), negated(ut);
  for (size_t e = 0; e < ut.size(); ++e) scaled[e] = T(2.5) * ut[e], negated[e] = -ut[e];
  std::vector<int32_t> b_scaled(got.size()), b_negated(got.size());
  reformer_hash(s, scaled.data(), Rt.data(), b_scaled.data());
  reformer_hash(s, negated.data(), Rt.data(), b_negated.data());
  EXPECT_EQ(b_scaled, got);
  for (size_t e = 0; e < got.size(); ++e) ASSERT_EQ(b_negated[e], (got[e] + nb / 2) % nb) << e;
  // Every bucket is used.
  for (int32_t bucket = 0; bucket < nb; ++bucket) EXPECT_NE(std::count(got.begin(), got.end(), bucket), 0) << bucket;
}

TEST(ReformerAttention, HashIsTheArgmaxOfTheRotations) {
  for (int64_t nb : {2, 6, 16}) {
    check_hash<double>(nb);
    check_hash<float>(nb);
  }
}

TEST(ReformerAttention, SortIsStableByBucket) {
  ReformerShape s;
  s.B = 2, s.n = 50, s.h = 3, s.n_hashes = 2, s.n_buckets = 6, s.d_h = 1;
  std::vector<int32_t> buckets(size_t(s.n_hashes * s.B * s.h * s.n)), perm(buckets.size());
  for (size_t e = 0; e < buckets.size(); ++e) buckets[e] = int32_t(uniform01(1, 2, e) * 6);
  reformer_sort(s, buckets.data(), perm.data());
  for (int64_t l = 0; l < s.n_hashes * s.B * s.h; ++l) {
    std::vector<int32_t> expected(size_t(s.n));
    std::iota(expected.begin(), expected.end(), 0);
    const int32_t* bk = buckets.data() + l * s.n;
    std::stable_sort(expected.begin(), expected.end(), [&](int32_t a, int32_t b) { return bk[a] < bk[b]; });
    EXPECT_EQ(std::vector<int32_t>(perm.begin() + l * s.n, perm.begin() + (l + 1) * s.n), expected) << l;
  }
}

// ---- the kernel against the dense reference ------------------------------------------------------

struct KernelCase {
  int64_t n, chunk, n_buckets, n_hashes;
  bool bucket_chunks, causal, mask;
  double dropout;
  int64_t d_h = 4, h = 2, B = 2;
  bool dedup = false, across = true;
};

template <class T>
void check_kernel(const KernelCase& k, double tol) {
  SCOPED_TRACE(str_cat("n=", k.n, " chunk=", k.chunk, " nb=", k.n_buckets, " R=", k.n_hashes, " bucket=", k.bucket_chunks,
                       " causal=", k.causal, " mask=", k.mask, " dropout=", k.dropout, " d_h=", k.d_h,
                       " dedup=", k.dedup, " across=", k.across));
  ReformerShape s{k.B, k.n, k.h, k.d_h, k.n_hashes, k.n_buckets, k.chunk, k.bucket_chunks, k.causal,
                  1 / std::sqrt(double(k.d_h)), nullptr, k.dropout, 99, k.across, k.dedup};
  std::vector<uint8_t> mask(size_t(k.B * k.n), 0);
  for (int64_t j = 0; j < k.n; ++j) mask[size_t(k.n + j)] = j % 3 == 0;  // sample 1; its position 0 too
  if (k.mask) s.key_mask = mask.data();
  const int64_t size = k.B * k.n * k.h * k.d_h;
  const std::vector<double> q = test::random_vector<double>(size, 1, -2, 2);
  const std::vector<double> kn = normalise_heads(test::random_vector<double>(size, 2), k.d_h);
  const std::vector<double> v = test::random_vector<double>(size, 3);
  // Any bucket assignment will do: the kernel only sorts and chunks by it (n_buckets for the padded).
  std::vector<int32_t> buckets(size_t(k.n_hashes * k.B * k.h * k.n)), perm(buckets.size());
  for (size_t e = 0; e < buckets.size(); ++e) {
    const int64_t b = int64_t(e / size_t(k.n)) % (k.B * k.h) / k.h, t = int64_t(e % size_t(k.n));
    buckets[e] = k.mask && mask[size_t(b * k.n + t)] ? int32_t(k.n_buckets) : int32_t(uniform01(4, 5, e) * float(k.n_buckets));
  }
  reformer_sort(s, buckets.data(), perm.data());
  std::vector<double> ref(static_cast<size_t>(size));
  dense_reference(s, q.data(), kn.data(), v.data(), buckets.data(), ref.data());
  if (k.dedup && k.dropout == 0) {  // the correction makes every key count once: one softmax over the union
    std::vector<double> once(ref.size());
    dense_reference(s, q.data(), kn.data(), v.data(), buckets.data(), once.data(), /*union_of_rounds=*/true);
    LF_EXPECT_CLOSE(once.data(), ref.data(), size, 1e-12);
  }
  const std::vector<T> qt = test::cast_vector<T>(q), kt = test::cast_vector<T>(kn), vt = test::cast_vector<T>(v);
  std::vector<T> out(static_cast<size_t>(size)), stats(size_t(2 * k.B * k.h * k.n));
  reformer_forward(s, qt.data(), kt.data(), vt.data(), buckets.data(), perm.data(), out.data(), stats.data());
  LF_EXPECT_CLOSE(out.data(), ref.data(), size, tol);
  if (k.mask && k.causal)  // sample 1, position 0: no key in any round, output 0 and M = +inf
    for (int64_t i = 0; i < k.h; ++i) {
      EXPECT_EQ(stats[size_t((k.h + i) * k.n)], std::numeric_limits<T>::infinity());
      for (int64_t c = 0; c < k.d_h; ++c) EXPECT_EQ(out[size_t((k.n * k.h + i) * k.d_h + c)], T(0));
    }
}

TEST(ReformerAttention, KernelMatchesDenseDefinition) {
  std::vector<KernelCase> cases = {
      {13, 4, 4, 1, false, false, false, 0.0},   // four chunks, the last partial
      {13, 5, 4, 2, false, false, true, 0.0},    // three chunks: chunk 0 looks back at the last
      {12, 6, 2, 3, false, false, false, 0.0},   // two chunks: each looks at the other
      {9, 9, 2, 2, false, true, true, 0.0},      // one chunk (every key), causal
      {13, 3, 4, 3, true, true, true, 0.0},      // bucket chunking, causal
      {20, 4, 4, 2, true, false, false, 0.3},    // bucket chunking, dropout
      {20, 4, 6, 2, false, true, true, 0.3},     // global chunking (the kernel allows causal), dropout
      {150, 70, 2, 2, false, false, true, 0.0},  // chunks longer than a query block
      {150, 70, 2, 2, true, true, false, 0.2},
  };
  std::vector<KernelCase> corrected;  // the duplicate correction and the bucket mask of global chunking
  for (KernelCase k : cases) {
    k.dedup = true;
    corrected.push_back(k);
    if (!k.bucket_chunks) {
      k.across = false;
      corrected.push_back(k);
      k.dedup = false;
      corrected.push_back(k);
    }
  }
  corrected.push_back({13, 3, 2, 4, false, false, true, 0.0, 4, 2, 2, true, true});  // keys seen 1 to 4 times
  cases.insert(cases.end(), corrected.begin(), corrected.end());
  for (const KernelCase& k : cases) {
    check_kernel<double>(k, 1e-12);
    check_kernel<float>(k, 2e-5);
  }
  KernelCase wide{70, 16, 4, 2, false, false, true, 0.0};
  wide.d_h = 32;  // the tile product's full register blocks
  check_kernel<double>(wide, 1e-12);
  check_kernel<float>(wide, 2e-5);
}

// ---- the layer -----------------------------------------------------------------------------------

void expect_layer_matches_reference(const AttentionCase& c) {
  SCOPED_TRACE(describe(c));
  AttentionRig<double> rig(c);
  rig.forward(c);
  const std::vector<double> ref = reference_layer(rig, c);
  LF_EXPECT_CLOSE(rig.out.data(), ref.data(), int64_t(ref.size()), 1e-12);
  // float: the same buckets for these inputs, so the same result up to rounding.
  AttentionRig<float> frig(c);
  frig.forward(c);
  LF_EXPECT_CLOSE(frig.out.data(), ref.data(), int64_t(ref.size()), 1e-5);
}

TEST(ReformerAttention, LayerMatchesDenseReference) {
  expect_layer_matches_reference(reformer_case(12, {{"bucket_size", 4}}));
  expect_layer_matches_reference(reformer_case(12, {{"bucket_size", 4}, {"n_hashes", 3}, {"qkv_bias", true}}));
  expect_layer_matches_reference(with_mask(reformer_case(13, {{"bucket_size", 3}, {"chunking", "bucket"}})));
  expect_layer_matches_reference(with_mask(reformer_case(13, {{"bucket_size", 3}, {"n_hashes", 4}}, true)));
  expect_layer_matches_reference(with_dropout(reformer_case(12, {{"bucket_size", 4}, {"seed", 5}}), 0.3));
  expect_layer_matches_reference(reformer_case(40, {{"bucket_size", 8}, {"n_buckets", 6}}, false, 4, 16));
  expect_layer_matches_reference(reformer_case(10, {{"bucket_size", 4}}, true, 2, 8, 2, 16));  // n < max_len
  // The new options: no duplicate correction, the bucket mask of global chunking, fixed rotations.
  expect_layer_matches_reference(
      with_mask(reformer_case(13, {{"bucket_size", 3}, {"n_hashes", 3}, {"allow_duplicate_attention", true}})));
  expect_layer_matches_reference(
      with_mask(reformer_case(13, {{"bucket_size", 3}, {"n_hashes", 3}, {"attend_across_buckets", false}})));
  expect_layer_matches_reference(with_dropout(reformer_case(12, {{"bucket_size", 4}, {"rotations", "fixed"}}), 0.3));
  expect_layer_matches_reference(with_dropout(reformer_case(12, {{"bucket_size", 4}, {"n_hashes", 3}}), 0.0));
}

// A padded sample's real outputs are those of the sample alone (padding sorts last, joins no chunk,
// and the bucket count comes from max_len), for every chunking, option and mask layout.
TEST(ReformerAttention, PaddedSampleEqualsItsUnpaddedRun) {
  const std::vector<std::pair<json, bool>> configs = {
      {{{"bucket_size", 4}}, false},
      {{{"bucket_size", 4}, {"n_hashes", 3}, {"attend_across_buckets", false}}, false},
      {{{"bucket_size", 3}, {"n_hashes", 3}, {"allow_duplicate_attention", true}}, false},
      {{{"bucket_size", 3}, {"chunking", "bucket"}}, false},
      {{{"bucket_size", 4}, {"n_hashes", 3}}, true},
      {{{"bucket_size", 3}, {"full_attn_thres", 24}}, false},
      {{{"bucket_size", 3}, {"full_attn_thres", 24}}, true},
  };
  const int64_t n = 20, d = 8, real = 11;
  for (const auto& [options, causal] : configs) {
    AttentionCase padded = reformer_case(n, options, causal, 2, d, 2, 24);
    padded.mask.assign(size_t(2 * n), 0);
    for (int64_t j = real; j < n; ++j) padded.mask[size_t(j)] = 1;  // sample 0: its last n − real positions
    SCOPED_TRACE(describe(padded));
    AttentionRig<double> rig(padded);
    rig.forward(padded);
    AttentionCase alone = reformer_case(real, options, causal, 2, d, 1, 24);
    AttentionRig<double> arig(alone);
    std::copy_n(rig.x.begin(), real * d, arig.x.begin());
    std::copy_n(rig.arena.values(), rig.arena.numel(), arig.arena.values());  // the same parameters
    arig.forward(alone);
    LF_EXPECT_CLOSE(rig.out.data(), arig.out.data(), real * d, 1e-12);
  }
}

// Training draws the rotations from the step's seed (a forward and its rerun hash alike); inference
// and 'fixed' use the option seed's whatever the step.
TEST(ReformerAttention, RotationsAreDrawnPerTrainingStep) {
  for (const std::string rotations : {"per_step", "fixed"}) {
    const AttentionCase c = reformer_case(32, {{"bucket_size", 4}, {"rotations", rotations}});
    SCOPED_TRACE(rotations);
    AttentionRig<double> rig(c);
    const auto run = [&](bool training, uint64_t seed) {
      std::vector<double> out(rig.out.size());
      rig.layer->forward(rig.input(c), out.data(), training, seed);
      return out;
    };
    const std::vector<double> step1 = run(true, 1), step2 = run(true, 2), infer = run(false, 1);
    EXPECT_EQ(run(true, 1), step1);
    EXPECT_EQ(run(false, 7), infer);
    if (rotations == "per_step") {
      EXPECT_NE(step1, step2);
      EXPECT_NE(step1, infer);
    } else {
      EXPECT_EQ(step1, step2);
      EXPECT_EQ(step1, infer);
    }
  }
}


// Dense shared-QK attention with the diagonal mask (self only when alone; padded queries 0), written
// without chunks or buckets: what the layer computes when every key is in view.
std::vector<double> dense_shared_qk(const AttentionRig<double>& rig, const AttentionCase& c,
                                    const std::vector<int64_t>& group = {}) {
  const int64_t d = c.dims.d_model, h = c.dims.n_heads, d_h = d / h, n = c.n;
  const Projected p = project(rig, c);
  std::vector<double> attn(p.u.size(), 0.0);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t i = 0; i < h; ++i)
      for (int64_t t = 0; t < n; ++t) {
        if (!c.mask.empty() && c.mask[size_t(b * n + t)]) continue;  // a padded query outputs 0
        std::vector<double> w(size_t(n), -std::numeric_limits<double>::infinity());
        for (int64_t j = 0; j < n; ++j) {
          if ((!c.mask.empty() && c.mask[size_t(b * n + j)]) || (c.dims.causal && j > t)) continue;
          if (!group.empty() && group[size_t(b * n + j)] != group[size_t(b * n + t)]) continue;
          double dot = 0;
          for (int64_t e = 0; e < d_h; ++e) dot += p.u[size_t((b * n + t) * d + i * d_h + e)] * p.kn[size_t((b * n + j) * d + i * d_h + e)];
          w[size_t(j)] = j == t ? -1e5 : dot / std::sqrt(double(d_h));
        }
        const double mx = *std::max_element(w.begin(), w.end());
        if (mx == -std::numeric_limits<double>::infinity()) continue;
        double sum = 0;
        for (double& x : w) sum += x = std::exp(x - mx);
        for (int64_t j = 0; j < n; ++j)
          for (int64_t e = 0; e < d_h; ++e)
            attn[size_t((b * n + t) * d + i * d_h + e)] += w[size_t(j)] / sum * p.v[size_t((b * n + j) * d + i * d_h + e)];
      }
  return linear(attn, param(rig, "to_out.weight"), param(rig, "to_out.bias"), d);
}

// The layer's output for c (double) against dense_shared_qk, every key in view; returns the reference.
std::vector<double> expect_equals_dense_shared_qk(const AttentionCase& c) {
  AttentionRig<double> rig(c);
  rig.forward(c);
  std::vector<double> ref = dense_shared_qk(rig, c);
  LF_EXPECT_CLOSE(rig.out.data(), ref.data(), int64_t(ref.size()), 1e-12);
  return ref;
}

TEST(ReformerAttention, EqualsDenseSharedQkAttentionWhenEveryKeyIsVisible) {
  // Global chunking with bucket_size = n: one chunk, every key in view in every round, whatever the
  // buckets; n_hashes identical rounds give one round's result.
  for (int64_t rounds : {1, 2, 4})
    for (bool mask : {false, true}) {
      AttentionCase c = reformer_case(11, {{"bucket_size", 11}, {"n_hashes", rounds}, {"chunking", "global"}});
      if (mask) c = with_mask(c);
      SCOPED_TRACE(describe(c));
      expect_equals_dense_shared_qk(c);
    }
}

TEST(ReformerAttention, KnownBucketsGiveBlockAttention) {
  // W_qk = a e_0ᵀ: U_t = x_t0 · a, so every position with x_t0 > 0 falls in one bucket and every one
  // with x_t0 < 0 in the opposite bucket (per head and round), whatever the rotations. With bucket
  // chunking and bucket_size = n each query sees exactly the keys of its sign group: dense attention
  // with that block mask (causal too). All rounds are identical, so n_hashes does not matter.
  for (bool causal : {false, true})
    for (int64_t rounds : {1, 3}) {
      AttentionCase c = reformer_case(12, {{"bucket_size", 12}, {"n_hashes", rounds}, {"chunking", "bucket"}}, causal);
      SCOPED_TRACE(describe(c));
      AttentionRig<double> rig(c);
      const int64_t d = c.dims.d_model;
      double* W = rig.arena.value(rig.arena.find("to_qk.weight"));
      const std::vector<double> a = test::random_vector<double>(d, 17);
      for (int64_t o = 0; o < d; ++o)
        for (int64_t e = 0; e < d; ++e) W[o * d + e] = e == 0 ? a[size_t(o)] : 0.0;
      std::vector<int64_t> group(size_t(c.B * c.n));
      for (int64_t bt = 0; bt < c.B * c.n; ++bt) {
        const bool negative = (bt * 7) % 3 == 0;
        rig.x[size_t(bt * d)] = (negative ? -1.0 : 1.0) * (0.5 + 0.05 * double(bt));
        group[size_t(bt)] = negative;
      }
      rig.forward(c);
      const std::vector<double> ref = dense_shared_qk(rig, c, group);
      LF_EXPECT_CLOSE(rig.out.data(), ref.data(), int64_t(ref.size()), 1e-12);
    }
}

// full_attn_thres: exact shared-QK attention (self only when alone) when max_len is at most the
// threshold, LSH above it, whatever the call's length.
TEST(ReformerAttention, FullAttentionAtOrBelowTheThreshold) {
  for (bool causal : {false, true})
    for (bool mask : {false, true}) {
      AttentionCase c = reformer_case(16, {{"bucket_size", 2}, {"n_hashes", 2}, {"full_attn_thres", 16}}, causal);
      if (mask) c = with_mask(c);
      SCOPED_TRACE(describe(c));
      const std::vector<double> ref = expect_equals_dense_shared_qk(c);
      expect_layer_matches_reference(c);
      AttentionCase above = c;  // one past the threshold: LSH, far from dense with chunks of 2
      above.options["full_attn_thres"] = 15;
      AttentionRig<double> arig(above);
      arig.forward(above);
      double diff = 0;
      for (size_t e = 0; e < ref.size(); ++e) diff = std::max(diff, std::abs(arig.out[e] - ref[e]));
      EXPECT_GT(diff, 1e-3);
      expect_layer_matches_reference(above);
    }
  // Decided by max_len: a short call still hashes when max_len is above the threshold, and a call
  // shorter than max_len is exact when max_len is at or below it.
  for (bool causal : {false, true}) {
    expect_layer_matches_reference(reformer_case(8, {{"bucket_size", 2}, {"full_attn_thres", 8}}, causal, 2, 8, 2, 16));
    AttentionCase c = with_mask(reformer_case(9, {{"bucket_size", 2}, {"full_attn_thres", 16}}, causal, 2, 8, 2, 16));
    expect_equals_dense_shared_qk(c);
  }
}

TEST(ReformerAttention, GradientsMatchFiniteDifferences) {
  const std::vector<AttentionCase> cases = {
      reformer_case(12, {{"bucket_size", 4}}),  // three chunks with wrap-around, two rounds
      reformer_case(12, {{"bucket_size", 4}, {"n_hashes", 1}, {"qkv_bias", true}}),
      reformer_case(12, {{"bucket_size", 3}, {"n_hashes", 3}, {"chunking", "bucket"}}),
      reformer_case(12, {{"bucket_size", 3}}, true),  // causal (bucket chunking)
      with_mask(reformer_case(12, {{"bucket_size", 4}, {"qkv_bias", true}})),
      with_mask(reformer_case(12, {{"bucket_size", 3}, {"n_hashes", 3}}, true)),  // a query with no key
      with_dropout(reformer_case(12, {{"bucket_size", 4}}), 0.3),
      with_dropout(with_mask(reformer_case(12, {{"bucket_size", 3}}, true)), 0.3),
      reformer_case(12, {{"bucket_size", 4}, {"n_buckets", 2}, {"seed", 9}}),
      reformer_case(12, {{"bucket_size", 12}, {"n_hashes", 2}}),  // one chunk
      reformer_case(10, {{"bucket_size", 4}}, true, 2, 8, 2, 16),  // n < max_len
      reformer_case(9, {{"bucket_size", 2}, {"n_buckets", 4}}, false, 1, 4),  // one head
      with_mask(reformer_case(12, {{"bucket_size", 3}, {"n_hashes", 3}, {"attend_across_buckets", false}})),
      reformer_case(12, {{"bucket_size", 3}, {"n_hashes", 3}, {"allow_duplicate_attention", true}}),
      with_dropout(reformer_case(12, {{"bucket_size", 4}, {"rotations", "fixed"}}), 0.3),
      with_mask(reformer_case(12, {{"bucket_size", 3}, {"full_attn_thres", 12}})),
      with_mask(reformer_case(12, {{"bucket_size", 3}, {"full_attn_thres", 12}}, true)),
  };
  for (const AttentionCase& c : cases) {
    SCOPED_TRACE(describe(c));
    test::check_attention_gradients(c);
  }
}

TEST(ReformerAttention, CausalOutputAndGradientIgnoreTheFuture) {
  AttentionCase c = with_mask(reformer_case(40, {{"bucket_size", 4}, {"n_hashes", 3}}, true));
  const int64_t d = c.dims.d_model;
  for (int64_t t : {0, 5, 17, 38}) {
    SCOPED_TRACE(t);
    AttentionRig<float> a(c), b(c);
    // Every input after t changes (so their buckets, ranks and chunks change too).
    const std::vector<float> noise = test::random_vector<float>(c.B * c.n * d, 77, -3, 3);
    for (int64_t s = 0; s < c.B; ++s)
      for (int64_t p = t + 1; p < c.n; ++p)
        for (int64_t e = 0; e < d; ++e) b.x[size_t((s * c.n + p) * d + e)] = noise[size_t((s * c.n + p) * d + e)];
    a.forward(c);
    b.forward(c);
    for (int64_t s = 0; s < c.B; ++s)
      for (int64_t p = 0; p <= t; ++p)
        for (int64_t e = 0; e < d; ++e)
          ASSERT_EQ(a.out[size_t((s * c.n + p) * d + e)], b.out[size_t((s * c.n + p) * d + e)]) << s << " " << p;
    // The Jacobian: d out_{≤t} / d x_{>t} is exactly zero.
    std::vector<float> dout(a.out.size(), 0.f), dx(a.x.size());
    for (int64_t s = 0; s < c.B; ++s)
      for (int64_t p = 0; p <= t; ++p)
        for (int64_t e = 0; e < d; ++e) dout[size_t((s * c.n + p) * d + e)] = float(1 + (p + e) % 3);
    a.layer->backward(dout.data(), dx.data());
    for (int64_t s = 0; s < c.B; ++s)
      for (int64_t p = t + 1; p < c.n; ++p)
        for (int64_t e = 0; e < d; ++e) ASSERT_EQ(dx[size_t((s * c.n + p) * d + e)], 0.f) << s << " " << p;
  }
}

TEST(ReformerAttention, SameResultsForAnyThreadCount) {
  // Large enough for the kernels to go parallel; outputs and every gradient bit for bit.
  AttentionCase c = with_mask(reformer_case(300, {{"bucket_size", 16}, {"n_hashes", 2}}, false, 2, 64, 1));
  AttentionCase cc = with_mask(reformer_case(300, {{"bucket_size", 16}}, true, 2, 64, 1));
  for (const AttentionCase& k : {c, cc}) {
    SCOPED_TRACE(describe(k));
    std::vector<float> out1, dx1, grads1;
    for (int threads : {1, 3, 2}) {
      const RuntimeScope scope(RuntimeOptions{threads});
      AttentionRig<float> rig(k);
      rig.forward(k);
      std::vector<float> dout = test::random_vector<float>(int64_t(rig.out.size()), 8), dx(rig.x.size());
      rig.arena.zero_grad();
      rig.layer->backward(dout.data(), dx.data());
      std::vector<float> grads(rig.arena.grads(), rig.arena.grads() + rig.arena.numel());
      if (out1.empty()) {
        out1 = rig.out, dx1 = dx, grads1 = grads;
        continue;
      }
      EXPECT_EQ(rig.out, out1) << threads;
      EXPECT_EQ(dx, dx1) << threads;
      EXPECT_EQ(grads, grads1) << threads;
    }
  }
}

TEST(ReformerAttention, DefaultOptionsWorkForShortAndLongMaxLen) {
  // Defaults adapt: bucket_size = min(64, max_len); n_buckets from max_len.
  for (int64_t max_len : {1, 8, 32, 200})
    for (bool causal : {false, true}) {
      AttentionCase c = reformer_case(max_len, json::object(), causal, 2, 8, 2);
      SCOPED_TRACE(describe(c));
      AttentionRig<double> rig(c);
      rig.forward(c);
      const std::vector<double> ref = reference_layer(rig, c);
      LF_EXPECT_CLOSE(rig.out.data(), ref.data(), int64_t(ref.size()), 1e-12);
      AttentionCase shorter = c;  // variable length
      shorter.n = std::max<int64_t>(1, max_len / 2 - 1);
      AttentionRig<double> srig(shorter);
      srig.forward(shorter);
      const std::vector<double> sref = reference_layer(srig, shorter);
      LF_EXPECT_CLOSE(srig.out.data(), sref.data(), int64_t(sref.size()), 1e-12);
    }
  const json resolved = validate_attention({"reformer", {8, 2, 32, false, 0.1}, json::object(), ""});
  EXPECT_EQ(resolved, json({{"n_hashes", 2}, {"bucket_size", 32}, {"n_buckets", 0}, {"chunking", "global"},
                            {"attend_across_buckets", true}, {"allow_duplicate_attention", false},
                            {"rotations", "per_step"}, {"full_attn_thres", 0}, {"seed", 0}, {"qkv_bias", false}}));
  EXPECT_EQ(validate_attention({"reformer", {8, 2, 4096, true, 0}, json::object(), ""})["attend_across_buckets"], false);
  EXPECT_EQ(validate_attention({"reformer", {8, 2, 4096, true, 0}, json::object(), ""})["chunking"], "bucket");
  EXPECT_EQ(validate_attention({"reformer", {8, 2, 4096, true, 0}, json::object(), ""})["bucket_size"], 64);
}

// ---- memory --------------------------------------------------------------------------------------

TEST(ReformerAttention, LongSequenceDoesNotAllocateTheScores) {
  // n = 16384, d = 64, one head: an n×n float buffer would be 1 GiB; the layer keeps O(n·d).
  const int64_t n = 16384, d = 64;
  ParamArena<float> arena;
  auto layer = make_attention<float>({"reformer", {d, 1, n, true, 0}, json::object(), ""}, arena);
  EXPECT_LT(layer->activation_bytes(1, n, n, true), double(n) * n) << "the estimate should be far below n²";
  LF_SKIP_MEMORY_TEST_UNDER_SANITIZERS();
  LF_SKIP_WITHOUT_PROC_STATUS();
  test::expect_peak_rss_growth_below(arena, *layer, n, d, int64_t(128) << 20);
}

// ---- registry and configurations -----------------------------------------------------------------

TEST(ReformerAttention, IsRegisteredWithItsSupport) {
  const auto names = AttentionRegistry::instance().names();
  EXPECT_NE(std::find(names.begin(), names.end(), "reformer"), names.end());
  const AttentionSupport s = AttentionRegistry::instance().get("reformer").info.support;
  EXPECT_TRUE(s.causal);
  EXPECT_TRUE(s.key_padding_mask);
  EXPECT_TRUE(s.variable_length);
  EXPECT_FALSE(s.cross_attention);
}

TEST(ReformerAttention, RefusesBadConfigurations) {
  const AttentionDims dims{8, 2, 16, false, 0};
  const AttentionDims causal{8, 2, 16, true, 0};
  for (const json& bad : {json{{"n_buckets", 3}}, json{{"n_buckets", -2}}, json{{"n_buckets", 1}},
                          json{{"n_buckets", "4"}}, json{{"bucket_size", 0}}, json{{"bucket_size", -1}},
                          json{{"bucket_size", 17}}, json{{"n_hashes", 0}}, json{{"n_hashes", 65}},
                          json{{"chunking", "paper"}}, json{{"seed", -1}}, json{{"qkv_bias", 1}},
                          json{{"k", 4}}, json{{"n_hashes", 1.5}}, json{{"attend_across_buckets", 1}},
                          json{{"chunking", "bucket"}, {"attend_across_buckets", true}},
                          json{{"allow_duplicate_attention", "no"}}, json{{"rotations", "random"}},
                          json{{"full_attn_thres", -1}}, json{{"full_attn_thres", 2.5}}}) {
    SCOPED_TRACE(bad.dump());
    EXPECT_THROW(validate_attention({"reformer", dims, bad, ""}), InvalidArgument);
  }
  // Causal with global chunking would leak the future through the chunk boundaries.
  EXPECT_THROW(validate_attention({"reformer", causal, {{"chunking", "global"}}, ""}), InvalidArgument);
  try {
    validate_attention({"reformer", dims, {{"n_buckets", 5}}, ""});
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("n_buckets"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(validate_attention({"reformer", dims, {{"n_buckets", 0}, {"bucket_size", 16}}, ""}));
  // Cross-attention is refused at the call; so is a length above max_len.
  AttentionCase cross = reformer_case(5, json::object());
  cross.m = 5;
  AttentionRig<float> crig(cross);
  EXPECT_THROW(crig.forward(cross), InvalidArgument);
  AttentionCase small = reformer_case(6, json::object()), big = reformer_case(9, json::object());
  AttentionRig<float> layer(small), rig(big);
  std::vector<float> out(rig.out.size());
  EXPECT_THROW(layer.layer->forward(rig.input(big), out.data(), false, 0), InvalidArgument);
  // Kernel-level shape checks.
  ReformerShape s{1, 4, 1, 2, 1, 3, 2, false, false, 1.0, nullptr, 0, 0};
  std::vector<int32_t> b(4), p(4);
  EXPECT_THROW(reformer_sort(s, b.data(), p.data()), InvalidArgument);
  std::vector<double> R(6);
  EXPECT_THROW(reformer_rotations(0, 0, 1, 1, 2, 5, R.data()), InvalidArgument);
}

}  // namespace
}  // namespace lf
