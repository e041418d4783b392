// Choosing the next token from a row of logits: temperature, top-k, top-p (nucleus) and a repetition
// penalty, drawn with the counter-based RNG from (seed, draw index), so the same seed gives the same
// text on any machine and thread count. Separate from the model: generation with a KV cache (#17)
// and `predict --generate` share it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lf {

struct SamplingOptions {
  // Logits are divided by it; 0 is greedy (the most likely token, no draw).
  double temperature = 0.8;
  int64_t top_k = 0;       // keep the k most likely tokens; 0 = all
  double top_p = 0.95;     // keep the smallest set of most likely tokens whose probability reaches p; 1 = all
  // CTRL's penalty on tokens already in the context: a positive logit is divided by it, a negative one
  // multiplied; 1 = off.
  double repetition_penalty = 1.0;
  uint64_t seed = 1;
  int64_t max_new_tokens = 64;
  // Generation stops after the first of these appears in the generated text (it is kept in the text).
  std::vector<std::string> stop;

  void validate() const;  // lf::InvalidArgument naming `temperature`, `top_k`, `top_p`, ...
};

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);  // validates them

  // The next token from logits[0, n) (only ids < n can be drawn: pass 256 to draw real bytes only),
  // penalising the ids in `context`. Each call draws from the next counter of the seed's stream.
  int32_t next(const float* logits, int64_t n, const std::vector<int32_t>& context = {});

  // The probabilities the next call would draw from (after penalty, temperature, top-k and top-p;
  // zero outside the kept set), for the tests and for callers that want them. Greedy: one-hot.
  std::vector<double> distribution(const float* logits, int64_t n, const std::vector<int32_t>& context = {}) const;

  const SamplingOptions& options() const { return options_; }

 private:
  SamplingOptions options_;
  uint64_t draws_ = 0;
};

}  // namespace lf
