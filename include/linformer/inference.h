// Inference on a trained checkpoint for host programs (`linformer predict`, `embed`, `serve`): load
// it once, then batched calls on vectors of texts. Texts are grouped by length and padded with the
// model's padding mask, so a text's result does not depend on the other texts of the call (up to
// float rounding).
//
// Thread safety: a Predictor runs one call at a time (its model keeps the activations of the
// current forward): share one between threads only behind a mutex, or give each worker its own.
// Distinct Predictors may run at the same time on different threads; each call runs inside a
// RuntimeScope of the Predictor's RuntimeOptions.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "linformer/arena.h"
#include "linformer/config.h"
#include "linformer/runtime.h"
#include "linformer/sampling.h"

namespace lf {

struct PredictorOptions {
  RuntimeOptions runtime;
  // Texts per forward pass. The memory guard checks a full batch of max_len tokens at construction.
  int64_t batch_size = 16;
  // Names the work in the memory guard's refusal ("<caller> needs about ..."), e.g. the host's command.
  std::string caller = "inference";
};

struct Classification {
  int64_t label = 0;                  // the most likely class
  std::vector<double> probabilities;  // per class, summing to 1
  bool truncated = false;             // the text was longer than max_len: its first max_len bytes were read
};

// How embed() reduces a text's final hidden states (B, n, d) to one vector of d.
enum class Pooling { kMean, kFirst, kLast, kMax };
// "mean" | "first" (alias "cls") | "last" | "max"; lf::InvalidArgument listing them otherwise.
Pooling parse_pooling(const std::string& name);
const char* pooling_name(Pooling pooling);

struct Embeddings {
  int64_t rows = 0, dim = 0;  // one row per text, dim = d_model
  std::vector<float> values;  // (rows, dim) row-major
  std::vector<bool> truncated;  // per text: longer than max_len, its first max_len bytes were read
};

// What one generate() call did, for a caller that reports speed (`linformer generate`).
struct GenerationStats {
  int64_t prefill_tokens = 0;   // positions run in parallel: the prompt's, then each refill's
  double prefill_seconds = 0;   // in the model's prefills (sampling excluded)
  int64_t decode_tokens = 0;    // single decoding steps
  double decode_seconds = 0;    // in the model's decoding steps (sampling and on_token excluded)
  int64_t refills = 0;          // times the context reached max_len and was refilled from its last half
  int64_t generated = 0;        // tokens returned
  double cache_bytes = 0;       // the decoding state's largest size (ModelDecodeState::bytes)
};

class Predictor {
 public:
  // `path`: a checkpoint directory, or a run directory (its latest checkpoint). Refuses, before
  // allocating, a model whose forward on batch_size × max_len tokens exceeds runtime.max_memory.
  // lf::IoError for a missing or unreadable checkpoint, lf::InvalidArgument for bad options.
  explicit Predictor(const std::string& path, const PredictorOptions& options = {});
  // A model held in memory (a host program's, e.g. the Python package's Model): its configuration and
  // a copy of `weights`, an arena of that configuration (lf::InvalidArgument when a tensor is missing
  // or shaped otherwise). checkpoint_dir() is then "". The same memory guard as above.
  Predictor(const ModelConfig& config, const ParamArena<float>& weights, const PredictorOptions& options = {});
  ~Predictor();
  Predictor(Predictor&&) noexcept;
  Predictor& operator=(Predictor&&) noexcept;

  const ModelConfig& config() const;
  const std::string& checkpoint_dir() const;  // the directory actually read
  // The head's training objective: "masked_lm", "causal_lm" or "classification" (HeadInfo::objective).
  const std::string& objective() const;
  int64_t max_len() const;
  int64_t batch_size() const;

  // Masked LM: each text with every `mask` byte replaced by the most likely byte. A text longer than
  // max_len reads each mask from the window of max_len bytes centred on it. lf::InvalidArgument
  // ("text i: ...") for an empty text or one without `mask`, and for a model that is not a masked LM.
  std::vector<std::string> fill_masks(const std::vector<std::string>& texts, char mask = '_');

  // Classifier: per text its class and probabilities (texts longer than max_len are truncated, and
  // say so). lf::InvalidArgument for an empty text or a model that is not a classifier.
  std::vector<Classification> classify(const std::vector<std::string>& texts);

  // Any model: the final hidden states (after the final LayerNorm, the head's input) pooled per text.
  // Texts longer than max_len are truncated (Embeddings::truncated).
  Embeddings embed(const std::vector<std::string>& texts, Pooling pooling = Pooling::kMean);

  // Causal LM: `prompt` continued by up to options.max_new_tokens bytes drawn by a Sampler (only real
  // bytes, never a special id). The model's decoding state (Model::begin_decode) is filled once with
  // the prompt's last max_len bytes (the prefill, in parallel), then advanced one token per step.
  // Positions are absolute, so the context cannot slide by one: when it would pass max_len, the state
  // is refilled from the last max_len / 2 bytes (at least 1), which the model then sees at positions
  // 0.. (docs/generation.md). The repetition penalty reads that context, the bytes the model sees.
  // on_token gets each new byte as it is drawn; returning false stops. stats, when given, receives
  // the counts and timings. Returns the generated bytes (not the prompt).
  std::string generate(const std::string& prompt, const SamplingOptions& options,
                       const std::function<bool(std::string_view piece)>& on_token = {},
                       GenerationStats* stats = nullptr);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lf
