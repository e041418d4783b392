#include "analysis/spectrum.h"

#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <sstream>

#include "io/atomic_file.h"
#include "linformer/error.h"
#include "linformer/rng.h"
#include "linformer/tensor.h"
#include "model/head.h"
#include "ops/linear.h"
#include "ops/softmax.h"

namespace lf {

// ---- One head -----------------------------------------------------------------------------------

std::vector<double> singular_values(std::vector<double> a, int64_t rows, int64_t cols) {
  LF_REQUIRE(rows > 0 && cols > 0 && int64_t(a.size()) == rows * cols, "singular_values: a (", rows, ", ", cols,
             ") needs ", rows * cols, " values, got ", a.size());
  LF_REQUIRE(rows <= std::numeric_limits<lapack_int>::max() && cols <= std::numeric_limits<lapack_int>::max(),
             "singular_values: a (", rows, ", ", cols, ") is too large for LAPACK's 32-bit sizes");
  std::vector<double> s(size_t(std::min(rows, cols)));
  // The row-major (rows, cols) buffer is, read column-major, its transpose (cols, rows), which has the
  // same singular values: LAPACK works on it in place (no transposed copy, as LAPACKE makes for
  // row-major input). jobz = 'N': values only, so U and Vᵀ are not referenced and ldu = ldvt = 1.
  double unused = 0;
  const lapack_int info = LAPACKE_dgesdd(LAPACK_COL_MAJOR, 'N', lapack_int(cols), lapack_int(rows), a.data(),
                                         lapack_int(cols), s.data(), &unused, 1, &unused, 1);
  if (info != 0)
    throw Error(str_cat("LAPACK dgesdd failed on a (", rows, ", ", cols, ") matrix (info = ", info,
                        info > 0 ? ": no convergence)" : ": bad argument)"));
  return s;  // LAPACK returns them sorted, largest first
}

std::vector<double> normalized_cumulative(const std::vector<double>& sigma) {
  double total = 0;
  for (double v : sigma) total += v;
  LF_REQUIRE(!sigma.empty() && total > 0, "normalized_cumulative: the singular values are empty or all zero");
  std::vector<double> c(sigma.size());
  double run = 0;
  for (size_t i = 0; i < sigma.size(); ++i) {
    run += sigma[i];
    c[i] = run / total;
  }
  c.back() = 1.0;  // exactly, whatever the rounding of the running sum
  return c;
}

double best_rank_k_error(const std::vector<double>& sigma, int64_t k) {
  LF_REQUIRE(k >= 0, "best_rank_k_error: k must not be negative, got ", k);
  double total = 0, tail = 0;
  for (size_t i = 0; i < sigma.size(); ++i) {
    const double sq = sigma[i] * sigma[i];
    total += sq;
    if (int64_t(i) >= k) tail += sq;
  }
  LF_REQUIRE(total > 0, "best_rank_k_error: the singular values are empty or all zero");
  return std::sqrt(tail / total);
}

void context_mapping(const double* q, int64_t ldq, const double* k, int64_t ldk, int64_t n, int64_t m, int64_t d_h,
                     double scale, bool causal, double* P) {
  // Serial on purpose (here and in matmul_rows): the analysis makes thousands of these small products,
  // and a parallel region for each spins at its barrier whenever a core is busy with something else
  // (measured on a shared two-core machine, 8 sequences at n = 128 with parallel regions: 5.8 s of CPU
  // with 2 threads against 0.7 s with 1). The SVDs, which dominate at large n, run in LAPACK.
  const double masked = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < n; ++i) {
    double* row = P + i * m;
    for (int64_t j = 0; j < m; ++j) {
      if (causal && j > i) {
        row[j] = masked;
        continue;
      }
      double dot = 0;
      for (int64_t e = 0; e < d_h; ++e) dot += q[i * ldq + e] * k[j * ldk + e];
      row[j] = dot * scale;
    }
    ops::softmax_forward<double>(matrix(row, 1, m), matrix(row, 1, m));  // one row: no parallel region below 16384 columns
  }
}

std::vector<double> gaussian_projection(int64_t k, int64_t n, uint64_t seed, uint64_t stream) {
  std::vector<double> R(size_t(k * n));
  const double sd = 1.0 / std::sqrt(double(k));
  for (int64_t i = 0; i < k * n; ++i) R[size_t(i)] = sd * normal_f64(seed, stream, uint64_t(i));
  return R;
}

namespace {

// c (rows, d_h) = scale · a (rows, m) · b (m, ·) with b's d_h columns at row stride ldb.
void matmul_rows(const double* a, const double* b, int64_t rows, int64_t m, int64_t d_h, int64_t ldb, double scale,
                 double* c) {
  for (int64_t i = 0; i < rows; ++i) {
    double* ci = c + i * d_h;
    std::fill(ci, ci + d_h, 0.0);
    for (int64_t j = 0; j < m; ++j) {
      const double aij = a[i * m + j];
      if (aij == 0) continue;
      for (int64_t e = 0; e < d_h; ++e) ci[e] += aij * b[j * ldb + e];
    }
    for (int64_t e = 0; e < d_h; ++e) ci[e] *= scale;
  }
}

}  // namespace

void linformer_fixed_output(const double* q, const double* kh, const double* v, int64_t n, int64_t d_h, int64_t ld,
                            const double* R, int64_t k, double delta, double scale, double* out) {
  // E K = δ R K and F V = e^{−δ} R V, both (k, d_h); the scores (n, k) against the k projected keys.
  std::vector<double> ek(size_t(k * d_h)), fv(size_t(k * d_h)), scores(size_t(n * k));
  matmul_rows(R, kh, k, n, d_h, ld, delta, ek.data());
  matmul_rows(R, v, k, n, d_h, ld, std::exp(-delta), fv.data());
  context_mapping(q, ld, ek.data(), d_h, n, k, d_h, scale, /*causal=*/false, scores.data());
  matmul_rows(scores.data(), fv.data(), n, k, d_h, d_h, 1.0, out);
}

double relative_error(const double* a, const double* b, int64_t count) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < count; ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  if (den == 0) return num == 0 ? 0.0 : std::numeric_limits<double>::infinity();
  return std::sqrt(num / den);
}

// ---- A model ------------------------------------------------------------------------------------

std::vector<int64_t> default_k_list(int64_t n) {
  std::vector<int64_t> ks;
  for (int64_t k = 1; k < n; k *= 2) ks.push_back(k);
  ks.push_back(n);
  return ks;
}

void require_exact_attention(const ModelConfig& config) {
  LF_REQUIRE(head_info(config.task).targets == HeadTargets::kTokens, "spectrum reads text sequences: it needs a ",
             "language model (a `task` that predicts tokens, e.g. mlm or clm), not the ", config.task, " head");
  for (int64_t i = 0; i < config.n_layers; ++i) {
    const std::string kind = config.attention_spec(i).kind;
    LF_REQUIRE(kind == "full" || kind == "flash", "spectrum needs exact attention in every layer (full or flash), but "
               "layer ", i, " is '", kind, "': give a checkpoint trained with `attention` full or flash");
  }
}

void validate_spectrum_options(const SpectrumOptions& opt, int64_t n) {
  LF_REQUIRE(std::isfinite(opt.delta) && opt.delta > 0, "`delta` must be a positive number, got ", opt.delta);
  for (size_t i = 0; i < opt.k_list.size(); ++i) {
    const int64_t k = opt.k_list[i];
    LF_REQUIRE(k >= 1, "`k_list`: k must be positive, got ", k);
    LF_REQUIRE(k <= n, "`k_list`: k = ", k, " exceeds the sequence length n = ", n);
    LF_REQUIRE(i == 0 || k > opt.k_list[i - 1], "`k_list` must be strictly increasing, got ", opt.k_list[i - 1],
               " then ", k);
  }
}

double spectrum_analysis_bytes(const ModelConfig& c, int64_t n, int64_t sequences, int64_t k_count) {
  const double nn = double(n) * double(n), d = double(c.d_model);
  // One head: P (LAPACK works on it in place), R (k, n) and the Linformer scores (n, k), k ≤ n;
  // vectors of n (singular values, LAPACK's O(n) workspace for values only).
  const double head = 8.0 * (3.0 * nn + 16.0 * double(n));
  const double layer = 8.0 * (4.0 * double(n) * d + 6.0 * d * d);
  const double stored = 8.0 * double(c.n_layers) * double(c.n_heads) * double(sequences) * (double(n) + 2.0 * k_count);
  return head + layer + stored;
}

std::vector<std::vector<double>> attention_qkv(const ParamArena<float>& arena, int64_t layer, int64_t d, const float* x,
                                               int64_t n) {
  const std::vector<double> xd(x, x + n * d);
  std::vector<std::vector<double>> out(3);
  const char* names[3] = {"to_q", "to_k", "to_v"};
  for (int p = 0; p < 3; ++p) {
    const std::string prefix = str_cat("layers.", layer, ".attn.", names[p]);
    const int w = arena.find(prefix + ".weight");
    LF_REQUIRE(w >= 0, "the model has no parameter '", prefix, ".weight' (an exact-attention layer has one)");
    const std::vector<double> wd(arena.value(w), arena.value(w) + d * d);
    const int b = arena.find(prefix + ".bias");
    std::vector<double> bd;
    if (b >= 0) bd.assign(arena.value(b), arena.value(b) + d);
    out[size_t(p)].resize(size_t(n * d));
    ops::linear_forward(matrix<const double>(xd.data(), n, d), matrix<const double>(wd.data(), d, d),
                        bd.empty() ? TensorView<const double>() : vector_view<const double>(bd.data(), d),
                        matrix(out[size_t(p)].data(), n, d));
  }
  return out;
}

SpectrumResult analyse_spectrum(Model<float>& model, const ParamArena<float>& arena,
                                const std::vector<std::vector<int32_t>>& sequences, const SpectrumOptions& options,
                                const RuntimeOptions& runtime) {
  const RuntimeScope scope(runtime);
  const ModelConfig& c = model.config();
  require_exact_attention(c);
  LF_REQUIRE(!sequences.empty(), "spectrum needs at least one sequence");
  const int64_t n = int64_t(sequences[0].size());
  LF_REQUIRE(n > 0, "spectrum needs non-empty sequences");
  for (const auto& s : sequences)
    LF_REQUIRE(int64_t(s.size()) == n, "spectrum needs sequences of one length, got ", n, " and ", s.size());
  SpectrumOptions opt = options;
  if (opt.k_list.empty()) opt.k_list = default_k_list(n);
  validate_spectrum_options(opt, n);

  const int64_t L = c.n_layers, H = c.n_heads, d = c.d_model, d_h = d / H, S = int64_t(sequences.size());
  const int64_t K = int64_t(opt.k_list.size());
  SpectrumResult r;
  r.n = n;
  r.n_layers = L;
  r.n_heads = H;
  r.sequences = S;
  r.k_list = opt.k_list;
  r.delta = opt.delta;
  r.seed = opt.seed;
  r.causal = head_info(c.task).causal;
  r.cumulative.resize(size_t(L * H * S * n));
  r.rank_k_error.resize(size_t(L * H * S * K));
  r.linformer_error.resize(size_t(L * H * S * K));

  const double scale = 1.0 / std::sqrt(double(d_h));

  int64_t seq = 0;
  auto observe = [&](int64_t layer, const float* x, int64_t B, int64_t len) {
    LF_REQUIRE(B == 1 && len == n, "spectrum: unexpected attention input (", B, ", ", len, ")");
    const std::vector<std::vector<double>> qkv = attention_qkv(arena, layer, d, x, n);
    std::vector<double> exact(size_t(n * d_h)), approx(size_t(n * d_h));
    for (int64_t h = 0; h < H; ++h) {
      const double* q = qkv[0].data() + h * d_h;
      const double* k = qkv[1].data() + h * d_h;
      const double* v = qkv[2].data() + h * d_h;
      std::vector<double> P(size_t(n * n));
      context_mapping(q, d, k, d, n, n, d_h, scale, r.causal, P.data());
      matmul_rows(P.data(), v, n, n, d_h, d, 1.0, exact.data());  // the exact head output P V
      const size_t at = r.slot(layer, h, seq);
      for (int64_t j = 0; j < K; ++j) {
        const int64_t kk = opt.k_list[size_t(j)];
        // One R per (layer, head, k), whatever the sequence: a fixed projection is a parameter.
        const uint64_t stream = stream_id(str_cat("spectrum.R.", layer, ".", h, ".", kk));
        const std::vector<double> R = gaussian_projection(kk, n, opt.seed, stream);
        linformer_fixed_output(q, k, v, n, d_h, d, R.data(), kk, opt.delta, scale, approx.data());
        r.linformer_error[at * size_t(K) + size_t(j)] = relative_error(approx.data(), exact.data(), n * d_h);
      }
      const std::vector<double> sigma = singular_values(std::move(P), n, n);
      const std::vector<double> cum = normalized_cumulative(sigma);
      std::copy(cum.begin(), cum.end(), r.cumulative.begin() + std::ptrdiff_t(at * size_t(n)));
      for (int64_t j = 0; j < K; ++j)
        r.rank_k_error[at * size_t(K) + size_t(j)] = best_rank_k_error(sigma, opt.k_list[size_t(j)]);
    }
  };
  model.set_attention_input_observer(observe);
  try {
    for (seq = 0; seq < S; ++seq)
      model.forward(sequences[size_t(seq)].data(), nullptr, 1, n, /*training=*/false, 0, /*keep_for_backward=*/false);
  } catch (...) {
    model.set_attention_input_observer({});
    throw;
  }
  model.set_attention_input_observer({});
  return r;
}

SampleStats sample_stats(const double* values, int64_t count, int64_t stride) {
  SampleStats s;
  if (count <= 0) return s;
  s.min = s.max = values[0];
  double sum = 0;
  for (int64_t i = 0; i < count; ++i) {
    const double v = values[i * stride];
    sum += v;
    s.min = std::min(s.min, v);
    s.max = std::max(s.max, v);
  }
  s.mean = sum / double(count);
  double var = 0;
  for (int64_t i = 0; i < count; ++i) var += (values[i * stride] - s.mean) * (values[i * stride] - s.mean);
  s.std = std::sqrt(var / double(count));
  return s;
}

namespace {

// Values with enough digits to read back the double (CSV for plotting and for tests).
std::string num(double v) {
  std::ostringstream o;
  o.precision(10);
  o << v;
  return o.str();
}

std::string stats_cells(const SampleStats& s) {
  return str_cat(num(s.mean), ",", num(s.std), ",", num(s.min), ",", num(s.max));
}

}  // namespace

void write_spectrum_files(const SpectrumResult& r, const std::string& dir, const json& extra) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    throw IoError(str_cat("cannot create the output directory '", dir, "': ", ec ? ec.message() : "not a directory"));
  const int64_t L = r.n_layers, H = r.n_heads, S = r.sequences, n = r.n, K = int64_t(r.k_list.size());
  const std::string base = (fs::path(dir) / "").string();

  // c_index over sequences × heads of a layer: the (h, S) values at stride n.
  std::string cum = "layer,index,mean,std,min,max\n";
  for (int64_t l = 0; l < L; ++l)
    for (int64_t i = 0; i < n; ++i)
      cum += str_cat(l, ",", i + 1, ",",
                     stats_cells(sample_stats(r.cumulative.data() + r.slot(l, 0, 0) * size_t(n) + size_t(i), H * S, n)),
                     "\n");
  write_file_atomic(base + "cumulative.csv", cum);

  std::string heat = "layer,head,k,mean,std,min,max\n";
  for (int64_t l = 0; l < L; ++l)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t kk : r.k_list)
        heat += str_cat(l, ",", h, ",", kk, ",",
                        stats_cells(sample_stats(r.cumulative.data() + r.slot(l, h, 0) * size_t(n) + size_t(kk - 1), S, n)),
                        "\n");
  write_file_atomic(base + "heatmap.csv", heat);

  std::string err = "layer,k,rank_k_mean,rank_k_std,rank_k_min,rank_k_max,linformer_mean,linformer_std,linformer_min,"
                    "linformer_max\n";
  for (int64_t l = 0; l < L; ++l)
    for (int64_t j = 0; j < K; ++j) {
      const size_t at = r.slot(l, 0, 0) * size_t(K) + size_t(j);
      err += str_cat(l, ",", r.k_list[size_t(j)], ",", stats_cells(sample_stats(r.rank_k_error.data() + at, H * S, K)),
                     ",", stats_cells(sample_stats(r.linformer_error.data() + at, H * S, K)), "\n");
    }
  write_file_atomic(base + "errors.csv", err);

  std::string by_head = "layer,head,k,rank_k_mean,rank_k_std,linformer_mean,linformer_std\n";
  for (int64_t l = 0; l < L; ++l)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t j = 0; j < K; ++j) {
        const size_t at = r.slot(l, h, 0) * size_t(K) + size_t(j);
        const SampleStats a = sample_stats(r.rank_k_error.data() + at, S, K);
        const SampleStats b = sample_stats(r.linformer_error.data() + at, S, K);
        by_head += str_cat(l, ",", h, ",", r.k_list[size_t(j)], ",", num(a.mean), ",", num(a.std), ",", num(b.mean), ",",
                           num(b.std), "\n");
      }
  write_file_atomic(base + "errors_by_head.csv", by_head);

  json meta = extra.is_object() ? extra : json::object();
  meta["n"] = n;
  meta["layers"] = L;
  meta["heads"] = H;
  meta["sequences"] = S;
  meta["k_list"] = r.k_list;
  meta["delta"] = r.delta;
  meta["seed"] = r.seed;
  meta["causal"] = r.causal;
  write_file_atomic(base + "spectrum.json", meta.dump(2) + "\n");
}

}  // namespace lf
