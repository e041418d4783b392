// The spectrum of exact attention and the error of its low-rank approximations (Linformer paper,
// Wang et al. 2020: Fig. 1 and Theorem 2), measured on a trained model.
//
// For every layer ℓ and head h of an exact-attention model (every layer `full` or `flash`) and each
// sequence, the context-mapping matrix P = softmax(Q Kᵀ / √d_h) (n × n, causal models: keys after the
// query masked) is formed in double from the layer's own attention input and to_q/to_k/to_v weights,
// and gives
//   - its singular values σ_1 ≥ … ≥ σ_n (LAPACK's dgesdd, values only) and the normalised cumulative
//     singular values c_i = (σ_1 + … + σ_i) / (σ_1 + … + σ_n) (Fig. 1 left; c at index k per layer and
//     head is Fig. 1 right);
//   - for each k of a list: the relative Frobenius error of the best rank-k approximation of P,
//     √(σ_{k+1}² + … + σ_n²) / √(σ_1² + … + σ_n²) (Eckart–Young), and the relative Frobenius error
//     ‖Ō − P V‖ / ‖P V‖ of Linformer's head output with Theorem 2's fixed projections,
//     Ō = softmax(Q (E K)ᵀ / √d_h) (F V), E = δR, F = e^{−δ}R, R (k, n) with R_ij ~ N(0, 1/k) drawn
//     once per (layer, head, k) from the seed (fixed across sequences, as a fixed projection is).
// One sequence, layer and head is processed at a time: the largest buffers are one P and LAPACK's
// workspace, O(n²) doubles.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "linformer/arena.h"
#include "linformer/config.h"
#include "linformer/model.h"
#include "linformer/runtime.h"

namespace lf {

// ---- One head, in double ------------------------------------------------------------------------

// The singular values of the (rows, cols) row-major matrix a, largest first (min(rows, cols) of
// them), from LAPACKE_dgesdd without vectors. a is taken by value: LAPACK destroys its input. Throws
// lf::Error when LAPACK reports a failure (no convergence).
std::vector<double> singular_values(std::vector<double> a, int64_t rows, int64_t cols);

// c (r): c[i] = (σ_1 + … + σ_{i+1}) / (σ_1 + … + σ_r) for sigma (r) sorted largest first; the last is
// 1. Throws lf::InvalidArgument for an empty or all-zero sigma.
std::vector<double> normalized_cumulative(const std::vector<double>& sigma);

// ‖A − A_k‖_F / ‖A‖_F for A_k the best rank-k approximation of a matrix with singular values sigma
// (largest first); 0 for k ≥ r. Throws lf::InvalidArgument for k < 0 or an all-zero sigma.
double best_rank_k_error(const std::vector<double>& sigma, int64_t k);

// P (n, m) = softmax(q kᵀ · scale) row by row; causal: P_ij = 0 for j > i. q (n, ·) and k (m, ·)
// hold d_h columns each, at row strides ldq and ldk (a head inside a (n, d) matrix: stride d).
void context_mapping(const double* q, int64_t ldq, const double* k, int64_t ldk, int64_t n, int64_t m, int64_t d_h,
                     double scale, bool causal, double* P);

// R (k, n), R_ij ~ N(0, 1/k): the Philox normal draws of (seed, stream), the same for any thread count.
std::vector<double> gaussian_projection(int64_t k, int64_t n, uint64_t seed, uint64_t stream);

// Linformer's head output with Theorem 2's fixed projections E = δR, F = e^{−δ}R (R (k, n)):
// out (n, d_h) = softmax(q (E kh)ᵀ · scale) (F v). q, kh, v: (n, ·) with d_h columns at row stride ld.
void linformer_fixed_output(const double* q, const double* kh, const double* v, int64_t n, int64_t d_h, int64_t ld,
                            const double* R, int64_t k, double delta, double scale, double* out);

// ‖a − b‖_F / ‖b‖_F over count elements; 0 when both are zero, +inf when only b is.
double relative_error(const double* a, const double* b, int64_t count);

// ---- A model ------------------------------------------------------------------------------------

struct SpectrumOptions {
  std::vector<int64_t> k_list;  // ranks / projected lengths, each in [1, n], increasing; empty: default_k_list(n)
  double delta = 1.0;           // δ of E = δR, F = e^{−δ}R (positive)
  uint64_t seed = 1;            // of R
};

// 1, 2, 4, … (powers of 2 below n), then n.
std::vector<int64_t> default_k_list(int64_t n);

// Q, K, V (n, d) in double of layer `layer` of an exact-attention model for its attention input x
// (n, d) (what Model::set_attention_input_observer hands over): x W_ᵀ + b with the layer's to_q, to_k,
// to_v weights (and biases when it has them). Returns {Q, K, V}.
std::vector<std::vector<double>> attention_qkv(const ParamArena<float>& arena, int64_t layer, int64_t d, const float* x,
                                               int64_t n);

// Throws lf::InvalidArgument naming the first layer whose attention is not exact (`full` or `flash`)
// and its kind; and for a classifier (the analysis reads text sequences, not labelled examples).
void require_exact_attention(const ModelConfig& config);

// Throws lf::InvalidArgument for a k outside [1, n] (naming it), a list not strictly increasing, or
// a δ that is not a positive finite number.
void validate_spectrum_options(const SpectrumOptions& opt, int64_t n);

// Bytes the analysis needs besides the model's own inference: per-head buffers (P, LAPACK's
// workspace, Q/K/V in double) and the stored curves of every (layer, head, sequence).
double spectrum_analysis_bytes(const ModelConfig& config, int64_t n, int64_t sequences, int64_t k_count);

struct SpectrumResult {
  int64_t n = 0, n_layers = 0, n_heads = 0, sequences = 0;
  std::vector<int64_t> k_list;
  double delta = 1.0;
  uint64_t seed = 1;
  bool causal = false;
  // Sequence fastest, then head, then layer:
  std::vector<double> cumulative;       // (L, h, S, n): c_1 … c_n
  std::vector<double> rank_k_error;     // (L, h, S, K)
  std::vector<double> linformer_error;  // (L, h, S, K)

  size_t slot(int64_t layer, int64_t head, int64_t seq) const {
    return size_t((layer * n_heads + head) * sequences + seq);
  }
};

// Runs the model (inference) on each sequence — all of one length n ≤ max_len, ids in [0, vocab) —
// and measures every layer and head as described at the top. The arena holds the model's weights.
// Throws lf::InvalidArgument for a model that is not exact attention, no sequences, sequences of
// different lengths, or bad options. Runs with `runtime`'s threads.
SpectrumResult analyse_spectrum(Model<float>& model, const ParamArena<float>& arena,
                                const std::vector<std::vector<int32_t>>& sequences, const SpectrumOptions& opt,
                                const RuntimeOptions& runtime = {});

// Mean, standard deviation (population) and extremes of values.
struct SampleStats {
  double mean = 0, std = 0, min = 0, max = 0;
};
SampleStats sample_stats(const double* values, int64_t count, int64_t stride = 1);

// Writes into dir (created if missing), each file atomically:
//   cumulative.csv      layer,index,mean,std,min,max                 c_index over sequences × heads
//   heatmap.csv         layer,head,k,mean,std,min,max                c_k over sequences, every k of the list
//   errors.csv          layer,k,rank_k_{mean,std,min,max},linformer_{mean,std,min,max}   over sequences × heads
//   errors_by_head.csv  layer,head,k,rank_k_{mean,std},linformer_{mean,std}             over sequences
//   spectrum.json       meta (n, layers, heads, sequences, k_list, delta, seed, causal) merged with `extra`
// Throws lf::IoError naming the file that cannot be written.
void write_spectrum_files(const SpectrumResult& r, const std::string& dir, const json& extra);

}  // namespace lf
