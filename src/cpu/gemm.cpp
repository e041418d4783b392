#include "cpu/gemm.h"
#include "cpu/scratch.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "linformer/error.h"

#if defined(LINFORMER_GEMM_DNNL)
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl.hpp>
#elif defined(LINFORMER_GEMM_OPENBLAS)
#include <cblas.h>
#elif defined(LINFORMER_GEMM_MKL)
#include <mkl.h>
#else
#error "define LINFORMER_GEMM_DNNL, LINFORMER_GEMM_OPENBLAS or LINFORMER_GEMM_MKL"
#endif

namespace lf {

template <class T>
void gemm_ref(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
              int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0;
      for (int64_t p = 0; p < K; ++p) {
        const double a = trans_a ? A[p * lda + i] : A[i * lda + p];
        const double b = trans_b ? B[j * ldb + p] : B[p * ldb + j];
        acc += a * b;
      }
      T& c = C[i * ldc + j];
      // beta = 0 must overwrite (C may hold garbage or NaN), as BLAS does.
      c = T(alpha * acc + (beta == T(0) ? T(0) : beta * c));
    }
  }
}

namespace {

void check_dims(int64_t M, int64_t N, int64_t K) {
  LF_REQUIRE(M >= 0 && N >= 0 && K >= 0, "gemm: negative size M=", M, " N=", N, " K=", K);
}

// Double precision, used by tests: the reference loops, parallel over rows when not nested.
void gemm_f64(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
              const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  if (omp_in_parallel() || M * N * K < 32768) {
    gemm_ref<double>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < M; ++i)
    gemm_ref<double>(ta, tb, 1, N, K, alpha, ta ? A + i : A + i * lda, lda, B, ldb, beta, C + i * ldc, ldc);
}

#if defined(LINFORMER_GEMM_DNNL)
// dst (cols × rows, dense) = srcᵀ, src (rows × cols) with row stride ld; in 32×32 tiles.
void transpose_into(const float* src, int64_t rows, int64_t cols, int64_t ld, float* dst) {
  constexpr int64_t kTile = 32;
#pragma omp parallel for collapse(2) schedule(static) if (rows * cols > 65536 && !omp_in_parallel())
  for (int64_t r0 = 0; r0 < rows; r0 += kTile)
    for (int64_t c0 = 0; c0 < cols; c0 += kTile)
      for (int64_t c = c0; c < std::min(cols, c0 + kTile); ++c)
        for (int64_t r = r0; r < std::min(rows, r0 + kTile); ++r) dst[c * rows + r] = src[r * ld + c];
}

// oneDNN 2.6's sgemm runs C = A·Bᵀ (B stored N×K, as a linear layer's (out, in) weight) at 75-85 %
// of the rate of C = A·B on this machine's AVX-512 cores (184 vs 218 GFLOP/s at 4096×512×512, 165 vs
// 218 at 4096×512×2048, direct dnnl_sgemm calls, 2 threads). When A has many rows the product amortises a
// transposed copy of B (N·K floats, against M·N·K multiply-adds), so such calls go through a
// per-thread packed Bᵀ of at most 4 MiB. Not when B is the larger operand (M < N, e.g. dE = dXe·cᵀ
// with c of n rows): there A·Bᵀ was measured faster than A·B (167 vs 151 GFLOP/s at 256×4096×512).
bool worth_packing(bool ta, bool tb, int64_t M, int64_t N, int64_t K) {
  return !ta && tb && M >= 256 && M >= N && N * K >= 4096 && N * K <= (int64_t(1) << 20);
}
#endif

#if defined(LINFORMER_GEMM_MKL)
// MKL's threaded sgemm is not bitwise the same across thread counts: with 1, 2 and 3 threads the
// products differ in the last bits for many shapes (N = 20 in its default mode; shapes as common as
// 8×16×64 even in its strict reproducibility mode, MKL_CBWR=AUTO,STRICT), which the engine promises
// (the thread-independence tests of every kind). So the threads are ours: C is cut into a grid of
// tiles fixed by the shape alone, each tile one single-threaded MKL call over the whole K (MKL runs
// one thread inside an OpenMP parallel region), and the team shares out the tiles.
struct TileGrid {
  int64_t tm = 0, tn = 0, rows = 1, cols = 1;
};

// About one tile per kMinTileMacs multiply-adds, a power of two up to kMaxTiles (so that 2, 4, 8 or
// 16 threads share them evenly): rows × columns of tiles, each a power of two, the squarest such grid
// (each tile packs its m × K and K × n panels: 1/m + 1/n of its work), edges multiples of 16.
TileGrid mkl_tile_grid(int64_t M, int64_t N, int64_t K) {
  constexpr double kMinTileMacs = double(1 << 24);
  constexpr int64_t kMaxTiles = 16, kAlign = 16;
  const auto ceil_div = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  const double macs = double(M) * double(N) * double(K);
  int64_t want = 1;
  while (want < kMaxTiles && double(2 * want) * kMinTileMacs <= macs) want *= 2;
  TileGrid best{M, N, 1, 1};
  double best_cost = 1e300;
  int64_t best_tiles = 1;
  for (int64_t mt = 1; mt <= want; mt *= 2) {
    TileGrid g;
    g.tm = std::min(M, ceil_div(ceil_div(M, mt), kAlign) * kAlign);
    g.tn = std::min(N, ceil_div(ceil_div(N, want / mt), kAlign) * kAlign);
    g.rows = ceil_div(M, g.tm);
    g.cols = ceil_div(N, g.tn);
    const int64_t tiles = std::min(g.rows * g.cols, want);  // rounding to 16 may leave fewer
    const double cost = 1.0 / double(g.tm) + 1.0 / double(g.tn);
    if (tiles > best_tiles || (tiles == best_tiles && cost < best_cost)) {
      best = g;
      best_cost = cost;
      best_tiles = tiles;
    }
  }
  return best;
}

// LINFORMER_MKL_OWN_THREADS=1: MKL's own threads, one call (results then differ between thread
// counts); only to measure what the tiles cost (scripts/gemm_backends.sh).
bool mkl_own_threads() {
  static const bool own = [] {
    const char* env = std::getenv("LINFORMER_MKL_OWN_THREADS");
    return env && std::string_view(env) == "1";
  }();
  return own;
}

void mkl_sgemm_tiled(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                     int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const auto call = [&](int64_t i0, int64_t j0, int64_t m, int64_t n) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n),
                int(K), alpha, ta ? A + i0 : A + i0 * lda, int(lda), tb ? B + j0 * ldb : B + j0, int(ldb), beta,
                C + i0 * ldc + j0, int(ldc));
  };
  if (mkl_own_threads()) return call(0, 0, M, N);
  const TileGrid g = mkl_tile_grid(M, N, K);
  const int64_t tiles = g.rows * g.cols;
  const auto run = [&](int64_t t) {
    const int64_t i0 = (t / g.cols) * g.tm, j0 = (t % g.cols) * g.tn;
    call(i0, j0, std::min(g.tm, M - i0), std::min(g.tn, N - j0));
  };
  if (tiles == 1 || omp_in_parallel() || omp_get_max_threads() == 1) {
    // One thread: MKL's own threads must not run either (their split would differ from the tiles').
    const int saved = mkl_set_num_threads_local(1);
    for (int64_t t = 0; t < tiles; ++t) run(t);
    mkl_set_num_threads_local(saved);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tiles; ++t) run(t);
}
#endif

thread_local Precision tls_precision = Precision::fp32;
thread_local bool tls_bf16_every_shape = false;

// Whether a bf16 product pays for converting its operands and for oneDNN's matmul: an inner
// dimension of at least 32 and an output of at least 2¹⁵ elements. oneDNN 2.6 shares a bf16 product's
// output blocks among the threads, not its inner dimension, so a small output with a long K leaves a
// thread idle. Measured on AMD Zen 4 (issue 15; 2 threads, the best of 5 runs, fp32 / bf16 ms):
//   pays:  4096×256×64 0.78 / 0.43, 4096×64×256 0.66 / 0.43, 512×512×256 (Aᵀ) 0.67 / 0.50,
//          512×128×128 0.22 / 0.12, 512×128×32 0.060 / 0.051, every linear layer of the d = 512 model;
//   loses: 256×64×4096 (Aᵀ) 0.67 / 1.08, 128×128×512 (Aᵀ) 0.076 / 0.22, 512×32×128 0.021 / 0.073.
// The others stay fp32 (more exact, and faster there).
bool bf16_pays(int64_t M, int64_t N, int64_t K) {
  return tls_bf16_every_shape || (K >= 32 && M * N >= (int64_t(1) << 15));
}

// dst (rows × cols, dense) = src (rows × cols, row stride ld) rounded to bf16, row by row with the
// vectorised to_bf16_n (a call of the scalar to_bf16 per element cost about 1 ns: a third of a bf16
// product's time at 4096 × 512 × 512).
[[maybe_unused]] void to_bf16_dense(const float* src, int64_t rows, int64_t cols, int64_t ld, uint16_t* dst) {
#pragma omp parallel for schedule(static) if (rows * cols > 65536 && !omp_in_parallel())
  for (int64_t r = 0; r < rows; ++r) to_bf16_n(src + r * ld, dst + r * cols, cols);
}

#if defined(LINFORMER_GEMM_DNNL)
// A oneDNN matmul primitive with its operands' descriptions.
struct DnnlMatmul {
  dnnl::memory::desc a, b, c;
  dnnl::matmul prim;
};

const dnnl::engine& dnnl_cpu_engine() {
  static const dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

// The primitive of `key` from the calling thread's cache, made by make() (a DnnlMatmul) on first use:
// primitives are cached per thread because oneDNN's scratchpad is not shared safely between threads
// running one primitive. oneDNN's errors become an lf::Error naming the product.
template <class Key, class Make>
const DnnlMatmul& cached_matmul(std::map<Key, DnnlMatmul>& cache, const Key& key, const char* what, int64_t M,
                                int64_t N, int64_t K, Make make) {
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  if (cache.size() >= 256) cache.clear();  // shapes of one model are few; bound it all the same
  try {
    return cache.emplace(key, make()).first->second;
  } catch (const dnnl::error& e) {  // e.g. no kernel for this ISA
    throw Error(str_cat(what, " product ", M, "×", N, "×", K, ": oneDNN could not create its matmul (", e.what(),
                        ", status ", int(e.status), ")"));
  }
}

// Runs a cached product on the calling thread's stream, to completion.
void run_matmul(const DnnlMatmul& p, const std::unordered_map<int, dnnl::memory>& args, const char* what, int64_t M,
                int64_t N, int64_t K) {
  thread_local dnnl::stream strm(dnnl_cpu_engine());
  try {
    p.prim.execute(strm, args);
    strm.wait();
  } catch (const dnnl::error& e) {
    throw Error(str_cat(what, " product ", M, "×", N, "×", K, " failed in oneDNN (", e.what(), ")"));
  }
}

// A bias row (1 × N, fp32) for a binary-add post-op, and its execution argument when it is post-op `index`.
dnnl::memory::desc bias_md(int64_t N) { return dnnl::memory::desc({1, N}, dnnl::memory::data_type::f32, {N, 1}); }
int bias_arg(int index) { return DNNL_ARG_ATTR_MULTIPLE_POST_OP(index) | DNNL_ARG_SRC_1; }

// C = alpha · op(A)·op(B) + beta · C (+ bias, N floats added to every row) with A and B rounded to
// bf16, on oneDNN's matmul primitive (its brgemm kernels with AVX512-BF16's dot products, fp32
// accumulation). Operands are converted into dense per-thread buffers (O(MK + KN) against O(MNK)
// products); the primitive is cached per shape, transposition, scale, bias and thread count. The bias
// is oneDNN's binary post-op, added after the product: no fill of C and second pass over it.
void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const float* bias = nullptr) {
  using namespace dnnl;
  thread_local GrowOnlyBuffer<uint16_t> a_scratch, b_scratch;
  uint16_t* a16 = a_scratch.get(size_t(M * K));
  uint16_t* b16 = b_scratch.get(size_t(K * N));
  // Stored A is (M × K), or (K × M) when transposed; likewise B (K × N) or (N × K). Converting a
  // transposed A into (M × K) on the way was measured slower than handing oneDNN the strided one
  // (1 thread: 13.0 against 11.7 ms at 512 × 512 × 4096).
  to_bf16_dense(A, ta ? K : M, ta ? M : K, lda, a16);
  to_bf16_dense(B, tb ? N : K, tb ? K : N, ldb, b16);

  const bool with_bias = bias != nullptr;
  using Key = std::tuple<int64_t, int64_t, int64_t, bool, bool, int64_t, float, float, bool, int>;
  thread_local std::map<Key, DnnlMatmul> cache;
  const Key key{M, N, K, ta, tb, ldc, alpha, beta, with_bias, omp_get_max_threads()};
  const DnnlMatmul& p = cached_matmul(cache, key, "bf16", M, N, K, [&] {
    using dt = memory::data_type;
    const memory::desc a_md({M, K}, dt::bf16, ta ? memory::dims{1, M} : memory::dims{K, 1});
    const memory::desc b_md({K, N}, dt::bf16, tb ? memory::dims{1, K} : memory::dims{N, 1});
    const memory::desc c_md({M, N}, dt::f32, memory::dims{ldc, 1});
    primitive_attr attr;
    if (alpha != 1.f) attr.set_output_scales(0, {alpha});
    post_ops po;
    if (beta != 0.f) po.append_sum(beta);
    if (with_bias) po.append_binary(algorithm::binary_add, bias_md(N));
    attr.set_post_ops(po);
    return DnnlMatmul{a_md, b_md, c_md, matmul(matmul::primitive_desc(matmul::desc(a_md, b_md, c_md), attr, dnnl_cpu_engine()))};
  });
  const engine& eng = dnnl_cpu_engine();
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(p.a, eng, a16)},
                                       {DNNL_ARG_WEIGHTS, memory(p.b, eng, b16)},
                                       {DNNL_ARG_DST, memory(p.c, eng, C)}};
  if (with_bias) args.emplace(bias_arg(beta != 0.f ? 1 : 0), memory(bias_md(N), eng, const_cast<float*>(bias)));
  run_matmul(p, args, "bf16", M, N, K);
}

// gemm_u8s8 on oneDNN's int8 matmul (it picks its jit int8 GEMM here, VNNI's u8·s8 dot products into
// s32). The scales (per column of C) and A's zero point are runtime arguments, so one cached primitive
// serves every call of its shape.
void gemm_u8s8_dnnl(int64_t M, int64_t N, int64_t K, const uint8_t* A, int32_t a_zero_point, const int8_t* B,
                    const float* scales, const float* bias, float* C, int64_t ldc) {
  using namespace dnnl;
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, bool, int>;
  thread_local std::map<Key, DnnlMatmul> cache;
  const bool with_bias = bias != nullptr;
  const Key key{M, N, K, ldc, with_bias, omp_get_max_threads()};
  const DnnlMatmul& p = cached_matmul(cache, key, "int8", M, N, K, [&] {
    using dt = memory::data_type;
    const memory::desc a_md({M, K}, dt::u8, memory::dims{K, 1});
    const memory::desc b_md({K, N}, dt::s8, memory::dims{1, K});  // B is stored (N × K): its transpose
    const memory::desc c_md({M, N}, dt::f32, memory::dims{ldc, 1});
    primitive_attr attr;
    attr.set_output_scales(1 << 1, {DNNL_RUNTIME_F32_VAL});  // one per column
    attr.set_zero_points(DNNL_ARG_SRC, 0, {DNNL_RUNTIME_S32_VAL});
    if (with_bias) {  // C = scaled product + bias, an fp32 addition after the scaling (a post-op)
      post_ops po;
      po.append_binary(algorithm::binary_add, bias_md(N));
      attr.set_post_ops(po);
    }
    return DnnlMatmul{a_md, b_md, c_md, matmul(matmul::primitive_desc(matmul::desc(a_md, b_md, c_md), attr, dnnl_cpu_engine()))};
  });
  const engine& eng = dnnl_cpu_engine();
  int32_t zp = a_zero_point;
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, memory(p.a, eng, const_cast<uint8_t*>(A))},
      {DNNL_ARG_WEIGHTS, memory(p.b, eng, const_cast<int8_t*>(B))},
      {DNNL_ARG_DST, memory(p.c, eng, C)},
      {DNNL_ARG_ATTR_OUTPUT_SCALES, memory({{N}, memory::data_type::f32, {1}}, eng, const_cast<float*>(scales))},
      {DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, memory({{1}, memory::data_type::s32, {1}}, eng, &zp)}};
  if (with_bias)
    args.emplace(bias_arg(0), memory(bias_md(N), eng, const_cast<float*>(bias)));
  run_matmul(p, args, "int8", M, N, K);
}
#endif

}  // namespace

std::string gemm_int8_unsupported_reason() {
#if defined(LINFORMER_GEMM_DNNL)
  // AVX512-VNNI's vpdpbusd sums u8·s8 products exactly in s32. Without it oneDNN's int8 kernels add
  // pairs of products with vpmaddubsw, whose 16-bit sums saturate (2 · 255 · 127 > 2¹⁵ − 1), so a
  // result would depend on the CPU; AVX-VNNI alone (256-bit, Intel client cores) is not what oneDNN
  // 2.6's int8 matmul is built for. Plain AVX-512 without VNNI is refused for the same reason.
  const unsigned isa = unsigned(dnnl_get_effective_cpu_isa()), vnni = unsigned(dnnl_cpu_isa_avx512_core_vnni);
  if ((isa & vnni) != vnni)
    return "int8 products need a CPU with AVX512-VNNI (AMD Zen 4 or later, Intel Cascade Lake or later); "
           "this one (or $ONEDNN_MAX_CPU_ISA) does not allow them";
  return {};
#else
  return str_cat("int8 products need the dnnl GEMM backend; this build uses ", gemm_backend(),
                 " (configure with -DLINFORMER_GEMM=dnnl)");
#endif
}

void gemm_u8s8(int64_t M, int64_t N, int64_t K, const uint8_t* A, int32_t a_zero_point, const int8_t* B,
               const float* scales, const float* bias, float* C, int64_t ldc) {
  check_dims(M, N, K);
  LF_REQUIRE(K > 0, "gemm_u8s8: K must be positive");  // the caller answers K = 0 itself
  if (M == 0 || N == 0) return;
#if defined(LINFORMER_GEMM_DNNL)
  gemm_u8s8_dnnl(M, N, K, A, a_zero_point, B, scales, bias, C, ldc);
#else
  (void)A, (void)a_zero_point, (void)B, (void)scales, (void)bias, (void)C, (void)ldc;
  throw Error(gemm_int8_unsupported_reason());  // RuntimeScope refuses int8 first
#endif
}

uint16_t to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // NaN: keep it a (quiet) NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even (may round up to ±inf, as it should)
  return uint16_t(u >> 16);
}

// GCC 12's AVX-512 shift and narrowing intrinsics start from _mm512_undefined (`__Y = __Y`), which
// -Wmaybe-uninitialized reports once inlined: a false positive.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
namespace {
// to_bf16 on 16 floats at a time, the same bits: round to nearest even on the integer image, NaN
// kept quiet. AVX-512 (F + BW) is chosen at run time, so that a build without -march=native has it.
__attribute__((target("avx512f,avx512bw"))) void to_bf16_n_avx512(const float* src, uint16_t* dst, int64_t n) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000),
                bias = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1), quiet = _mm512_set1_epi32(0x40);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i u = _mm512_loadu_si512(src + i);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(bias, lsb)), 16);
    r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), quiet);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm512_cvtepi32_epi16(r));
  }
  for (; i < n; ++i) dst[i] = to_bf16(src[i]);
}
}  // namespace

void to_bf16_n(const float* src, uint16_t* dst, int64_t n) {
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  if (avx512) return to_bf16_n_avx512(src, dst, n);
  for (int64_t i = 0; i < n; ++i) dst[i] = to_bf16(src[i]);
}
#pragma GCC diagnostic pop

float from_bf16(uint16_t x) {
  const uint32_t u = uint32_t(x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

void set_gemm_precision(Precision p) { tls_precision = p; }
bool gemm_runs_bf16(int64_t M, int64_t N, int64_t K) { return tls_precision == Precision::bf16 && bf16_pays(M, N, K); }
void set_gemm_bf16_every_shape(bool on) { tls_bf16_every_shape = on; }
Precision gemm_precision() { return tls_precision; }

std::string gemm_bf16_unsupported_reason() {
#if defined(LINFORMER_GEMM_DNNL)
  const unsigned isa = unsigned(dnnl_get_effective_cpu_isa()), bf16 = unsigned(dnnl_cpu_isa_avx512_core_bf16);
  if ((isa & bf16) != bf16)
    return "bf16 products need a CPU with AVX512-BF16 (AMD Zen 4 or later, Intel Cooper Lake or later); "
           "this one (or $ONEDNN_MAX_CPU_ISA) does not allow them";
  return {};
#else
  return str_cat("bf16 products need the dnnl GEMM backend; this build uses ", gemm_backend(),
                 " (configure with -DLINFORMER_GEMM=dnnl)");
#endif
}

template <>
void gemm<float>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  check_dims(M, N, K);
  if (M == 0 || N == 0) return;
  if (K == 0) {  // backends disagree on K = 0; define it as C = beta·C
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
    return;
  }
#if defined(LINFORMER_GEMM_DNNL)
  if (gemm_runs_bf16(M, N, K))
    return gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  // oneDNN 2.6's sgemm with alpha ≠ 1 is not bitwise the same across thread counts (1 against 2
  // threads: 92 of 540 shapes of a grid M 32–300, N 16–256, K 16–512 differed, e.g. the scores
  // scale·Q·Kᵀ of `full` at n = 128, d_h = 32; none with alpha = 1), which the engine promises. So alpha
  // goes into a scaled copy of the smaller operand and the product runs with alpha = 1. The copy is
  // freed on return: memory a forward keeps is only what its activations estimate counts.
  std::unique_ptr<float[]> scaled;
  if (alpha != 1.f) {
    const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K, b_rows = tb ? N : K, b_cols = tb ? K : N;
    const bool scale_a = a_rows * a_cols <= b_rows * b_cols;
    const int64_t rows = scale_a ? a_rows : b_rows, cols = scale_a ? a_cols : b_cols, ld = scale_a ? lda : ldb;
    const float* src = scale_a ? A : B;
    scaled.reset(new float[size_t(rows * cols)]);
    float* dst = scaled.get();
#pragma omp parallel for schedule(static) if (rows * cols > 65536 && !omp_in_parallel())
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) dst[r * cols + c] = alpha * src[r * ld + c];
    (scale_a ? A : B) = dst;
    (scale_a ? lda : ldb) = cols;
    alpha = 1.f;
  }
  if (worth_packing(ta, tb, M, N, K)) {
    thread_local GrowOnlyBuffer<float> packed;
    float* Bt = packed.get(size_t(N * K));
    transpose_into(B, N, K, ldb, Bt);  // (K × N), row stride N
    B = Bt;
    ldb = N;
    tb = false;
  }
  const dnnl_status_t st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  if (st != dnnl_success) throw Error(str_cat("dnnl_sgemm failed with status ", int(st)));
#else
  if (tls_precision == Precision::bf16) throw Error(gemm_bf16_unsupported_reason());  // RuntimeScope refuses it first
#endif
#if defined(LINFORMER_GEMM_MKL)  // MKL's CBLAS (LP64: 32-bit sizes, as OpenBLAS's), on our threads
  mkl_sgemm_tiled(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#elif defined(LINFORMER_GEMM_OPENBLAS)
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M), int(N),
              int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
#endif
}

template <class T>
void gemm_bias(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
               const T* bias, T* C, int64_t ldc) {
  check_dims(M, N, K);
#if defined(LINFORMER_GEMM_DNNL)
  if constexpr (std::is_same_v<T, float>)
    if (bias && K > 0 && M > 0 && N > 0 && gemm_runs_bf16(M, N, K))
      return gemm_bf16(ta, tb, M, N, K, 1.f, A, lda, B, ldb, 0.f, C, ldc, bias);
#endif
  if (bias) {
#pragma omp parallel for schedule(static) if (M * N > 65536 && !omp_in_parallel())
    for (int64_t r = 0; r < M; ++r)
      for (int64_t j = 0; j < N; ++j) C[r * ldc + j] = bias[j];
  }
  gemm<T>(ta, tb, M, N, K, T(1), A, lda, B, ldb, bias ? T(1) : T(0), C, ldc);
}

template <>
void gemm<double>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
                  int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  check_dims(M, N, K);
  gemm_f64(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <class T>
void gemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
                  int64_t stride_a, const T* B, int64_t ldb, int64_t stride_b, T beta, T* C, int64_t ldc,
                  int64_t stride_c, int64_t batch) {
  // Each product is threaded inside the backend; items run one after the other.
  for (int64_t b = 0; b < batch; ++b)
    gemm<T>(ta, tb, M, N, K, alpha, A + b * stride_a, lda, B + b * stride_b, ldb, beta, C + b * stride_c, ldc);
}

const char* gemm_backend() {
#if defined(LINFORMER_GEMM_DNNL)
  return "dnnl";
#elif defined(LINFORMER_GEMM_MKL)
  return "mkl";
#else
  return "openblas";
#endif
}

void set_gemm_threads(int n) {
#if defined(LINFORMER_GEMM_OPENBLAS)
  openblas_set_num_threads(n);
#elif defined(LINFORMER_GEMM_MKL)
  // The calling thread's own count (as oneDNN's and our loops' omp_set_num_threads): another host
  // thread's scope leaves it alone, and an MKL_NUM_THREADS in the environment does not override it.
  // Our GEMMs run MKL one thread per tile (mkl_sgemm_tiled); LAPACKE's SVD runs MKL's own threads.
  mkl_set_num_threads_local(n);
#else
  (void)n;  // oneDNN follows the calling thread's omp_set_num_threads, which RuntimeScope has already called
#endif
}

int gemm_threads() {
#if defined(LINFORMER_GEMM_OPENBLAS)
  return openblas_get_num_threads();
#elif defined(LINFORMER_GEMM_MKL)
  return mkl_get_max_threads();
#else
  return omp_get_max_threads();
#endif
}

template void gemm_ref<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*,
                              int64_t, float, float*, int64_t);
template void gemm_ref<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                               const double*, int64_t, double, double*, int64_t);
template void gemm_bias<float>(bool, bool, int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t,
                               const float*, float*, int64_t);
template void gemm_bias<double>(bool, bool, int64_t, int64_t, int64_t, const double*, int64_t, const double*, int64_t,
                                const double*, double*, int64_t);
template void gemm_batched<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, int64_t,
                                  const float*, int64_t, int64_t, float, float*, int64_t, int64_t, int64_t);
template void gemm_batched<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                                   int64_t, const double*, int64_t, int64_t, double, double*, int64_t, int64_t,
                                   int64_t);

}  // namespace lf
