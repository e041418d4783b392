#include "cpu/routing.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "linformer/rng.h"

namespace lf {
namespace {

bool padded(const RoutingShape& s, int64_t b, int64_t t) { return s.key_mask && s.key_mask[b * s.n + t]; }

// Row t of head i of sample b in a (B, n, h·d_h) tensor.
template <class T>
const T* head_row(const RoutingShape& s, const T* x, int64_t b, int64_t i, int64_t t) {
  return x + (b * s.n + t) * s.h * s.d_h + i * s.d_h;
}
template <class T>
T* head_row(const RoutingShape& s, T* x, int64_t b, int64_t i, int64_t t) {
  return x + (b * s.n + t) * s.h * s.d_h + i * s.d_h;
}

template <class A, class B>
double dot(const A* a, const B* b, int64_t d) {
  double acc = 0;
  for (int64_t e = 0; e < d; ++e) acc += double(a[e]) * double(b[e]);
  return acc;
}

// The nearest centroid of x (the first on ties).
template <class T>
int32_t nearest(const T* x, const T* mu, int64_t c, int64_t d_h) {
  int32_t best = 0;
  double best_sim = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < c; ++j) {
    const double sim = dot(x, mu + j * d_h, d_h);
    if (sim > best_sim) best_sim = sim, best = int32_t(j);
  }
  return best;
}

// One (b, head)'s groups, before concatenation: queries and keys per group.
struct HeadGroups {
  std::vector<std::vector<int32_t>> q, k;
};

void local_groups(const RoutingShape& s, HeadGroups& out) {
  const int64_t n = s.n, w = s.window;
  for (int64_t start = 0; start < n; start += w) {
    std::vector<int32_t> q, k;
    for (int64_t t = start; t < std::min(n, start + w); ++t) q.push_back(int32_t(t));
    const int64_t k_end = std::min(n, start + (s.causal ? 1 : 2) * w);
    for (int64_t t = std::max<int64_t>(0, start - w); t < k_end; ++t) k.push_back(int32_t(t));
    out.q.push_back(std::move(q));
    out.k.push_back(std::move(k));
  }
}

// The min(w, n) positions of highest sim (padded last, ties to the lower position), ascending.
std::vector<int32_t> top_positions(const std::vector<double>& sim, int64_t w) {
  std::vector<int32_t> idx(sim.size());
  std::iota(idx.begin(), idx.end(), 0);
  const auto before = [&](int32_t a, int32_t b) { return sim[size_t(a)] > sim[size_t(b)] || (sim[size_t(a)] == sim[size_t(b)] && a < b); };
  const int64_t take = std::min<int64_t>(w, int64_t(idx.size()));
  std::partial_sort(idx.begin(), idx.begin() + take, idx.end(), before);
  idx.resize(size_t(take));
  std::sort(idx.begin(), idx.end());
  return idx;
}

template <class T>
void routed_groups(const RoutingShape& s, const T* qn, const T* kn, const T* mu, int64_t b, int64_t i, HeadGroups& out) {
  const int64_t n = s.n, c = s.clusters, d_h = s.d_h;
  if (s.balanced) {
    std::vector<double> qs(static_cast<size_t>(n)), ks(static_cast<size_t>(n));
    for (int64_t j = 0; j < c; ++j) {
      const T* m = mu + j * d_h;
      for (int64_t t = 0; t < n; ++t) {
        const bool pad = padded(s, b, t);
        qs[size_t(t)] = pad ? -std::numeric_limits<double>::infinity() : dot(head_row(s, qn, b, i, t), m, d_h);
        ks[size_t(t)] = pad ? -std::numeric_limits<double>::infinity() : dot(head_row(s, kn, b, i, t), m, d_h);
      }
      out.q.push_back(top_positions(qs, s.window));
      out.k.push_back(top_positions(ks, s.window));
    }
    return;
  }
  out.q.assign(size_t(c), {});
  out.k.assign(size_t(c), {});
  for (int64_t t = 0; t < n; ++t) {
    out.q[size_t(nearest(head_row(s, qn, b, i, t), mu, c, d_h))].push_back(int32_t(t));
    if (!padded(s, b, t)) out.k[size_t(nearest(head_row(s, kn, b, i, t), mu, c, d_h))].push_back(int32_t(t));
  }
  // A cluster without queries attends nothing: drop it.
  HeadGroups kept;
  for (int64_t j = 0; j < c; ++j)
    if (!out.q[size_t(j)].empty()) {
      kept.q.push_back(std::move(out.q[size_t(j)]));
      kept.k.push_back(std::move(out.k[size_t(j)]));
    }
  out = std::move(kept);
}

// The keys query t of group g sees (the definition in routing.h), ascending.
void visible_keys(const RoutingShape& s, const RoutingGroups& g, int64_t grp, int64_t b, int64_t i, int64_t t,
                  std::vector<int32_t>& keys) {
  keys.clear();
  bool has_self = false;
  for (int64_t e = g.koff[size_t(grp)]; e < g.koff[size_t(grp) + 1]; ++e) {
    const int32_t j = g.kidx[size_t(e)];
    if (padded(s, b, j) || (s.causal && j > t)) continue;
    has_self = has_self || j == t;
    keys.push_back(j);
  }
  if (!s.balanced && i >= s.local_heads && !has_self && !padded(s, b, t)) {
    keys.insert(std::upper_bound(keys.begin(), keys.end(), int32_t(t)), int32_t(t));
  }
}

// The dropout factors r of an entry's visible keys (all 1 without dropout).
template <class T>
void dropout_factors(const RoutingShape& s, int64_t entry, size_t count, std::vector<double>& r) {
  r.assign(count, 1.0);
  if (s.dropout <= 0) return;
  const float p = float(s.dropout);
  for (size_t j = 0; j < count; ++j)
    r[j] = uniform01(s.seed, kRoutingDropoutStream, uint64_t(entry) * uint64_t(s.n) + j) >= p ? 1.0 / (1.0 - s.dropout)
                                                                                               : 0.0;
}

// The scores of query t (head i of sample b) against `keys`, and their log Σ exp.
template <class T>
double scores(const RoutingShape& s, const T* q, const T* k, int64_t b, int64_t i, int64_t t,
              const std::vector<int32_t>& keys, std::vector<double>& sc) {
  sc.resize(keys.size());
  const T* qt = head_row(s, q, b, i, t);
  double mx = -std::numeric_limits<double>::infinity();
  for (size_t j = 0; j < keys.size(); ++j) {
    sc[j] = s.scale * dot(qt, head_row(s, k, b, i, keys[j]), s.d_h);
    mx = std::max(mx, sc[j]);
  }
  double sum = 0;
  for (double v : sc) sum += std::exp(v - mx);
  return mx + std::log(sum);
}

}  // namespace

template <class T>
void routing_assign(const RoutingShape& s, const T* qn, const T* kn, const T* centroids, RoutingGroups& groups) {
  const int64_t BH = s.B * s.h;
  std::vector<HeadGroups> per(static_cast<size_t>(BH));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t bh = 0; bh < BH; ++bh) {
    const int64_t b = bh / s.h, i = bh % s.h;
    if (i < s.local_heads)
      local_groups(s, per[size_t(bh)]);
    else
      routed_groups(s, qn, kn, centroids + (i - s.local_heads) * s.clusters * s.d_h, b, i, per[size_t(bh)]);
  }
  groups = RoutingGroups();
  groups.head_start.push_back(0);
  groups.qoff.push_back(0);
  groups.koff.push_back(0);
  groups.count.assign(size_t(BH * s.n), 0);
  for (int64_t bh = 0; bh < BH; ++bh) {
    const HeadGroups& hg = per[size_t(bh)];
    for (size_t j = 0; j < hg.q.size(); ++j) {
      groups.qidx.insert(groups.qidx.end(), hg.q[j].begin(), hg.q[j].end());
      groups.kidx.insert(groups.kidx.end(), hg.k[j].begin(), hg.k[j].end());
      groups.qoff.push_back(int32_t(groups.qidx.size()));
      groups.koff.push_back(int32_t(groups.kidx.size()));
      for (int32_t t : hg.q[j]) ++groups.count[size_t(bh * s.n + t)];
    }
    groups.head_start.push_back(int32_t(groups.qoff.size() - 1));
  }
}

template <class T>
void routing_forward(const RoutingShape& s, const RoutingGroups& g, const T* q, const T* k, const T* v, T* out,
                     T* lse) {
  const int64_t BH = s.B * s.h, d_h = s.d_h;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t bh = 0; bh < BH; ++bh) {
    const int64_t b = bh / s.h, i = bh % s.h;
    for (int64_t t = 0; t < s.n; ++t) std::fill_n(head_row(s, out, b, i, t), d_h, T(0));
    std::vector<int32_t> keys;
    std::vector<double> sc, r, acc(static_cast<size_t>(d_h));
    for (int64_t grp = g.head_start[size_t(bh)]; grp < g.head_start[size_t(bh) + 1]; ++grp)
      for (int64_t e = g.qoff[size_t(grp)]; e < g.qoff[size_t(grp) + 1]; ++e) {
        const int64_t t = g.qidx[size_t(e)];
        visible_keys(s, g, grp, b, i, t, keys);
        if (keys.empty()) {
          lse[e] = std::numeric_limits<T>::infinity();
          continue;
        }
        const double z = scores(s, q, k, b, i, t, keys, sc);
        lse[e] = T(z);
        dropout_factors<T>(s, e, keys.size(), r);
        std::fill(acc.begin(), acc.end(), 0.0);
        for (size_t j = 0; j < keys.size(); ++j) {
          const double pj = std::exp(sc[j] - z) * r[j];
          const T* vj = head_row(s, v, b, i, keys[j]);
          for (int64_t c = 0; c < d_h; ++c) acc[size_t(c)] += pj * double(vj[c]);
        }
        const double inv = 1.0 / double(g.count[size_t(bh * s.n + t)]);
        T* ot = head_row(s, out, b, i, t);
        for (int64_t c = 0; c < d_h; ++c) ot[c] += T(acc[size_t(c)] * inv);
      }
  }
}

template <class T>
void routing_backward(const RoutingShape& s, const RoutingGroups& g, const T* q, const T* k, const T* v, const T* lse,
                      const T* dout, T* dq, T* dk, T* dv) {
  const int64_t BH = s.B * s.h, d_h = s.d_h;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t bh = 0; bh < BH; ++bh) {
    const int64_t b = bh / s.h, i = bh % s.h;
    for (int64_t t = 0; t < s.n; ++t)
      for (T* x : {dq, dk, dv}) std::fill_n(head_row(s, x, b, i, t), d_h, T(0));
    std::vector<int32_t> keys;
    std::vector<double> sc, r, dp, dqt(static_cast<size_t>(d_h)), dot_(static_cast<size_t>(d_h));
    for (int64_t grp = g.head_start[size_t(bh)]; grp < g.head_start[size_t(bh) + 1]; ++grp)
      for (int64_t e = g.qoff[size_t(grp)]; e < g.qoff[size_t(grp) + 1]; ++e) {
        const int64_t t = g.qidx[size_t(e)];
        if (std::isinf(double(lse[e]))) continue;  // no visible key: the output did not depend on anything
        visible_keys(s, g, grp, b, i, t, keys);
        scores(s, q, k, b, i, t, keys, sc);
        dropout_factors<T>(s, e, keys.size(), r);
        const double inv = 1.0 / double(g.count[size_t(bh * s.n + t)]);
        const T* dot_row = head_row(s, dout, b, i, t);
        for (int64_t c = 0; c < d_h; ++c) dot_[size_t(c)] = double(dot_row[c]) * inv;
        dp.resize(keys.size());
        double D = 0;
        for (size_t j = 0; j < keys.size(); ++j) {
          sc[j] = std::exp(sc[j] - double(lse[e]));  // now the probability
          dp[j] = r[j] * dot(dot_.data(), head_row(s, v, b, i, keys[j]), d_h);
          D += sc[j] * dp[j];
        }
        std::fill(dqt.begin(), dqt.end(), 0.0);
        const T* qt = head_row(s, q, b, i, t);
        for (size_t j = 0; j < keys.size(); ++j) {
          const double ds = sc[j] * (dp[j] - D) * s.scale, pv = sc[j] * r[j];
          const T* kj = head_row(s, k, b, i, keys[j]);
          T* dkj = head_row(s, dk, b, i, keys[j]);
          T* dvj = head_row(s, dv, b, i, keys[j]);
          for (int64_t c = 0; c < d_h; ++c) {
            dqt[size_t(c)] += ds * double(kj[c]);
            dkj[c] += T(ds * double(qt[c]));
            dvj[c] += T(pv * dot_[size_t(c)]);
          }
        }
        T* dqrow = head_row(s, dq, b, i, t);
        for (int64_t c = 0; c < d_h; ++c) dqrow[c] += T(dqt[size_t(c)]);
      }
  }
}

template <class T>
void routing_update_centroids(const RoutingShape& s, const T* qn, const T* kn, double decay, T* centroids) {
  const int64_t c = s.clusters, d_h = s.d_h;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = s.local_heads; i < s.h; ++i) {
    T* mu = centroids + (i - s.local_heads) * c * d_h;
    std::vector<double> sum(size_t(c * d_h), 0.0);
    std::vector<int64_t> cnt(static_cast<size_t>(c), 0);
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t t = 0; t < s.n; ++t) {
        if (padded(s, b, t)) continue;
        for (const T* x : {head_row(s, qn, b, i, t), head_row(s, kn, b, i, t)}) {
          const int32_t j = nearest(x, mu, c, d_h);
          ++cnt[size_t(j)];
          for (int64_t e = 0; e < d_h; ++e) sum[size_t(j * d_h + e)] += double(x[e]);
        }
      }
    for (int64_t j = 0; j < c; ++j) {
      if (cnt[size_t(j)] == 0) continue;
      double norm = 0;
      for (int64_t e = 0; e < d_h; ++e) {
        double& m = sum[size_t(j * d_h + e)];
        m = decay * double(mu[j * d_h + e]) + (1 - decay) * m / double(cnt[size_t(j)]);
        norm += m * m;
      }
      norm = std::max(std::sqrt(norm), 1e-12);
      for (int64_t e = 0; e < d_h; ++e) mu[j * d_h + e] = T(sum[size_t(j * d_h + e)] / norm);
    }
  }
}

#define LF_INSTANTIATE(T)                                                                                        \
  template void routing_assign<T>(const RoutingShape&, const T*, const T*, const T*, RoutingGroups&);           \
  template void routing_forward<T>(const RoutingShape&, const RoutingGroups&, const T*, const T*, const T*, T*, \
                                   T*);                                                                          \
  template void routing_backward<T>(const RoutingShape&, const RoutingGroups&, const T*, const T*, const T*,    \
                                    const T*, const T*, T*, T*, T*);                                             \
  template void routing_update_centroids<T>(const RoutingShape&, const T*, const T*, double, T*);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
