// The attention interface. Every attention kind (full softmax, Linformer, and the rest of the
// efficient-attention family) is one class implementing Attention<T>, registered by name with a
// factory that parses and validates its typed options from JSON and declares what it supports. The
// model code only ever talks to this interface, so a new kind drops in without touching it.
//
// Dimension letters: B batch, n query length, m key/value length (m = n for self-attention),
// d model width, h heads, d_h = d / h head width, k projected length (Linformer).
// Layouts are PyTorch's: activations (B, n, d) row-major, linear weights (out, in).
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "linformer/arena.h"
#include "linformer/error.h"
#include "linformer/registry.h"
#include "linformer/tensor.h"

namespace lf {

using json = nlohmann::json;

// What a kind can do. The model refuses a configuration that asks for something a kind lacks.
struct AttentionSupport {
  bool causal = false;            // a causal mask (position t sees only positions <= t)
  bool key_padding_mask = false;  // per-sample padding of keys in a ragged batch
  bool variable_length = false;   // sequences shorter than max_len
  bool cross_attention = false;   // keys and values from a separate context sequence
  // A sequence's outputs at its real positions are those of the sequence alone, however much
  // padding (masked keys) follows it, to rounding: inference may batch texts of different lengths
  // (linformer/inference.h). False where the padded length moves block, bucket or random-pattern
  // boundaries. Checked for every kind by AllKinds/EveryKindPredictor.BatchedEqualsOneAtATime.
  bool padding_invariant = true;
  // An arbitrary mask or additive bias on the scores (AttentionInput::attn_mask, attn_bias).
  bool attention_mask = false;
};

// The options every kind shares; kind-specific options live in AttentionSpec::options.
struct AttentionDims {
  int64_t d_model = 0;
  int64_t n_heads = 0;
  int64_t max_len = 0;  // the longest key/value sequence the layer accepts
  bool causal = false;
  double dropout = 0;  // on the attention probabilities (or the kind's equivalent)
};

// Everything needed to build one attention layer.
struct AttentionSpec {
  std::string kind;                     // registry name, e.g. "linformer"
  AttentionDims dims;
  json options = json::object();        // the kind's typed options, validated by its factory
  std::string prefix;                   // parameter name prefix, e.g. "layers.3.attn."
};

// One call's inputs. x (B, n, d); context (B, m, d) for cross-attention or null (then m = n and the
// keys come from x); key_padding_mask (B, m) bytes, nonzero = padding (PyTorch's convention), or null.
//
// attn_mask and attn_bias: the `attn_mask` of PyTorch's scaled_dot_product_attention, for the kinds
// whose AttentionSupport::attention_mask is set (full, flash; the others refuse it). Both are
// (mask_batch, mask_heads, n, m) row-major, mask_batch 1 (one for every sample) or B, mask_heads 1
// (one for every head) or n_heads. attn_mask: bytes, nonzero = query t may attend key j (SDPA's
// boolean convention, the opposite of key_padding_mask's); attn_bias: added to the scaled scores,
// finite or −inf (−inf hides the key). Either, both, or neither, combined with the causal mask and the
// key padding mask (a key is attended when every one allows it). A query that may attend no key
// outputs zero, where SDPA gives NaN. No gradient flows to attn_bias (a constant input). Like x, they
// must stay alive until backward().
template <class T>
struct AttentionInput {
  const T* x = nullptr;
  int64_t B = 0, n = 0;
  const T* context = nullptr;
  int64_t m = 0;  // ignored when context is null
  const uint8_t* key_padding_mask = nullptr;
  const uint8_t* attn_mask = nullptr;
  const T* attn_bias = nullptr;
  int64_t mask_batch = 1, mask_heads = 1;  // attn_mask's and attn_bias's leading sizes
  // false: inference. The layer keeps nothing for a backward (its probabilities live in a per-head
  // scratch, its buffers are released before forward() returns), and backward() refuses to run.
  bool keep_for_backward = true;

  int64_t kv_len() const { return context ? m : n; }

  // Self-attention inference on B sequences of n rows of x, no padding: what a decoding step hands
  // the layer's forward maps.
  static AttentionInput inference(const T* x, int64_t B, int64_t n) {
    AttentionInput in;
    in.x = x;
    in.B = B;
    in.n = n;
    in.keep_for_backward = false;
    return in;
  }
};

// ---- incremental decoding --------------------------------------------------------------------------
// What one causal self-attention layer keeps between decoding steps of B sequences that advance
// together: a KV cache, a ring buffer of the last positions, a recurrent state, compressed blocks
// (Attention::begin_decode makes it; docs/generation.md lists each kind's).
template <class T>
class DecodeState {
 public:
  virtual ~DecodeState() = default;
  int64_t B = 0;       // sequences decoded together
  int64_t length = 0;  // positions each sequence has consumed so far (decode() advances it)
  // Bytes the state holds now: the cache memory the generation benchmark reports.
  virtual double bytes() const = 0;
};

// How a kind's decode() works. kRecompute is the fallback every kind has: the state keeps the layer's
// input and each call reruns forward() over the whole prefix (O(t) work per token for a linear kind,
// O(t²) for an exact one), correct for any kind whose causal outputs do not depend on the total length.
enum class DecodeMechanism { kRecompute, kKvCache, kWindow, kRecurrent, kCompressed };
const char* decode_mechanism_name(DecodeMechanism m);  // "recompute", "kv_cache", ...

template <class T>
class Attention {
 public:
  virtual ~Attention() = default;

  // out (B, n, d) = attention(in). training = true applies dropout drawn from the counter RNG keyed
  // by `seed`; in.keep_for_backward decides whether the layer keeps what backward() needs. Throws
  // lf::InvalidArgument for inputs the layer cannot take.
  virtual void forward(const AttentionInput<T>& in, T* out, bool training, uint64_t seed) = 0;

  // Backward of the last forward() (which must have kept its activations; they are released here, so
  // one backward per forward, as in PyTorch): dout (B, n, d) -> dx (B, n, d), overwritten; for cross-attention
  // also dcontext (B, m, d), overwritten (dx then excludes the context path). Parameter gradients
  // accumulate (+=) into the arena.
  virtual void backward(const T* dout, T* dx, T* dcontext = nullptr) = 0;

  // Multiply-adds ×2 of one forward for this input size (for `info` and the benchmarks' GFLOP/s).
  virtual double forward_flops(int64_t B, int64_t n, int64_t m) const = 0;

  // Estimated peak bytes of the buffers the layer allocates for one forward of this size (training:
  // the forward with keep_for_backward and then its backward), parameters and the caller's x/out/dx
  // excluded. Used to refuse a configuration that would not fit before allocating it, so it must not
  // underestimate by much: count every buffer of B·n·d, B·h·n·m, ... size the kind holds at once.
  virtual double activation_bytes(int64_t B, int64_t n, int64_t m, bool training) const = 0;

  // Called by the trainer (through Model::set_training_step) before each training step's forward,
  // with the 0-based step, and again after a resume. A kind whose state follows the training
  // schedule (Performer's periodic feature redraw) acts on it; the default does nothing.
  virtual void set_training_step(int64_t step) {}

  // Incremental decoding, for a layer built causal (the caller checks; the model refuses a head that
  // is not causal). begin_decode(B, d) starts B empty sequences (d: the layer's d_model, checked). decode(state, x, n_new, out) appends
  // x (B, n_new, d) — the next n_new positions of each sequence — and writes their outputs out
  // (B, n_new, d): to rounding, rows [state.length, state.length + n_new) of an inference forward()
  // over the whole prefix. n_new > 1 (a prompt's prefill) runs in parallel. No dropout, no key
  // padding, nothing kept for a backward; the caller keeps state.length + n_new <= max_len. The
  // defaults are the kRecompute fallback (src/attention/decode.cpp).
  virtual DecodeMechanism decode_mechanism() const { return DecodeMechanism::kRecompute; }
  virtual std::unique_ptr<DecodeState<T>> begin_decode(int64_t B, int64_t d_model);
  virtual void decode(DecodeState<T>& state, const T* x, int64_t n_new, T* out);
};

struct AttentionKindInfo {
  std::string name;
  std::string summary;  // one line for `linformer info --list-attention`
  AttentionSupport support;
  // The kind's definition holds an n×n matrix (scores or parameters), so its memory grows as n²
  // whatever the implementation: the O(n)-memory test skips it.
  bool quadratic_memory = false;
  // What the benchmarks run (bench/bench_attention.cpp): these options (the defaults when empty) at
  // n = 512, 1024, ... up to bench_max_len.
  json bench_options = json::object();
  int64_t bench_max_len = 16384;
};

struct AttentionFactory {
  AttentionKindInfo info;
  // Throws lf::InvalidArgument naming the bad option; returns the options with defaults filled in.
  std::function<json(const AttentionDims&, const json& options)> validate;
  // Build a layer from a spec whose dims were checked; they parse the options once.
  std::function<std::unique_ptr<Attention<float>>(const AttentionSpec&, ParamArena<float>&)> make_f32;
  std::function<std::unique_ptr<Attention<double>>(const AttentionSpec&, ParamArena<double>&)> make_f64;
};

// The registry of kinds (get, has, names, entries: linformer/registry.h). The built-in kinds are
// registered on first use (see registry.cpp: one line per kind). Nothing may depend on the order of
// names().
class AttentionRegistry : public Registry<AttentionFactory> {
 public:
  AttentionRegistry();
  static AttentionRegistry& instance();
};

// The one registration every kind uses. `parse(dims, options, resolved)` returns the kind's typed
// options, throwing lf::InvalidArgument on a bad one, and writes them with every default filled in
// to `resolved` when it is not null; `Layer<T>(spec, options, arena)` builds the layer for T = float
// and double.
template <template <class> class Layer, class Parse>
void register_kind(AttentionRegistry& registry, AttentionKindInfo info, Parse parse) {
  AttentionFactory f;
  f.info = std::move(info);
  f.validate = [parse](const AttentionDims& dims, const json& options) {
    json resolved;
    parse(dims, options, &resolved);
    return resolved;
  };
  f.make_f32 = [parse](const AttentionSpec& s, ParamArena<float>& a) -> std::unique_ptr<Attention<float>> {
    return std::make_unique<Layer<float>>(s, parse(s.dims, s.options, nullptr), a);
  };
  f.make_f64 = [parse](const AttentionSpec& s, ParamArena<double>& a) -> std::unique_ptr<Attention<double>> {
    return std::make_unique<Layer<double>>(s, parse(s.dims, s.options, nullptr), a);
  };
  registry.add(std::move(f));
}

// Validates the spec (dims and options) and returns the options with every default filled in.
json validate_attention(const AttentionSpec& spec);

// Builds a layer of the spec's kind, declaring its parameters in the arena (before allocate()).
template <class T>
std::unique_ptr<Attention<T>> make_attention(const AttentionSpec& spec, ParamArena<T>& arena);

// Checks shared by every kind: positive sizes, d divisible by h, dropout in [0, 1).
void validate_dims(const AttentionDims& dims);

// For kinds' backward(): refuses to run after a forward that kept nothing (in.keep_for_backward false).
inline void require_kept_for_backward(bool kept, const std::string& kind) {
  LF_REQUIRE(kept, kind, " attention: backward() needs a forward() with keep_for_backward = true");
}

// Frees the buffers (an inference forward releases what it will not need again): Buffer<T>s, and
// the std::vectors of host-side metadata (index tables, masks built from the call's input).
template <class... Buffers>
void release_buffers(Buffers&... buffers) {
  auto free = [](auto& b) {
    if constexpr (requires { b.release(); })
      b.release();
    else
      std::remove_reference_t<decltype(b)>().swap(b);
  };
  (free(buffers), ...);
}

// The rows of x (B, m, d) at padded positions (mask (B, m), nonzero = padding) replaced by zeros, in
// `clean`: a select, so whatever the padding holds (garbage, NaN) cannot reach the real positions
// through a product with a zero weight. Returns clean's data, or x itself when there is no mask.
template <class T>
const T* zero_padded_rows(const T* x, const uint8_t* mask, int64_t B, int64_t m, int64_t d, Buffer<T>& clean);

// Zeros at the padded rows of a (B, m, d) buffer, in place: the gradient of that select, or values
// to select away.
template <class T>
void zero_rows_at_padding(T* dx, const uint8_t* mask, int64_t B, int64_t m, int64_t d);

// Checks one call's input against the layer's dims and what the kind supports.
template <class T>
void validate_input(const AttentionInput<T>& in, const AttentionDims& dims, const AttentionKindInfo& info);

}  // namespace lf
