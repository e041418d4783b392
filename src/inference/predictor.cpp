#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <numeric>

#include "data/mask_text.h"
#include "linformer/attention.h"
#include "linformer/checkpoint.h"
#include "linformer/error.h"
#include "linformer/inference.h"
#include "linformer/memory.h"
#include "linformer/model.h"
#include "linformer/tokenizer.h"
#include "linformer/tokens.h"
#include "model/head.h"

namespace lf {

Pooling parse_pooling(const std::string& name) {
  if (name == "mean") return Pooling::kMean;
  if (name == "first" || name == "cls") return Pooling::kFirst;
  if (name == "last") return Pooling::kLast;
  if (name == "max") return Pooling::kMax;
  throw InvalidArgument(str_cat("`pooling` must be mean, first (or cls), last or max, got '", name, "'"));
}

const char* pooling_name(Pooling pooling) {
  switch (pooling) {
    case Pooling::kMean: return "mean";
    case Pooling::kFirst: return "first";
    case Pooling::kLast: return "last";
    case Pooling::kMax: return "max";
  }
  return "?";
}

namespace {

// One sequence of a call: its tokens and the text it came from.
struct Job {
  std::vector<int32_t> tokens;
  size_t text = 0;
};

int32_t argmax_byte(const float* row, int64_t V) {  // the most likely real byte (never a special id)
  return int32_t(std::max_element(row, row + std::min<int64_t>(V, 256)) - row);
}

// A message about texts[i]: "text i: ..." when the call has several.
std::string text_error(const std::vector<std::string>& texts, size_t i, const std::string& what) {
  return texts.size() > 1 ? str_cat("text ", i, ": ", what) : what;
}

}  // namespace

struct Predictor::Impl {
  PredictorOptions options;
  std::string dir, objective;
  ModelConfig config;
  std::unique_ptr<ParamArena<float>> arena;
  std::unique_ptr<Model<float>> model;
  bool can_pad = true;  // every layer's kind is padding-invariant: mixed lengths share a batch

  // Runs the jobs in batches of up to batch_size, sorted by length (padded to the longest of the
  // batch, or of one length only where a kind is not padding-invariant), and calls
  // use(job index, logits of its row, final hidden states of its row, padded length n).
  template <class F>
  void run(const std::vector<Job>& jobs, F&& use) {
    RuntimeScope scope(options.runtime);
    std::vector<size_t> order(jobs.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return jobs[a].tokens.size() < jobs[b].tokens.size(); });
    const int64_t V = model->logits_per_row(), d = config.d_model;
    const bool per_token = head_info(config.task).targets == HeadTargets::kTokens;
    std::vector<int32_t> tokens;
    std::vector<uint8_t> padding;
    for (size_t first = 0; first < order.size();) {
      size_t last = first + 1;  // the batch is order[first, last)
      while (last < order.size() && int64_t(last - first) < options.batch_size &&
             (can_pad || jobs[order[last]].tokens.size() == jobs[order[first]].tokens.size()))
        ++last;
      const int64_t B = int64_t(last - first), n = int64_t(jobs[order[last - 1]].tokens.size());
      tokens.assign(size_t(B * n), kPad);
      padding.assign(size_t(B * n), 1);
      bool padded = false;
      for (int64_t b = 0; b < B; ++b) {
        const std::vector<int32_t>& t = jobs[order[first + size_t(b)]].tokens;
        std::copy(t.begin(), t.end(), tokens.begin() + b * n);
        std::fill_n(padding.begin() + b * n, t.size(), uint8_t(0));
        padded |= int64_t(t.size()) < n;
      }
      const float* logits = model->forward(tokens.data(), padded ? padding.data() : nullptr, B, n, false, 0,
                                           /*keep_for_backward=*/false);
      const float* hidden = model->final_hidden();
      for (int64_t b = 0; b < B; ++b)
        use(order[first + size_t(b)], logits + b * (per_token ? n : 1) * V, hidden + b * n * d, n);
      first = last;
    }
  }

  // Checks the options, refuses (before allocating) a model whose forward on batch_size × max_len
  // tokens exceeds runtime.max_memory, and builds the model with its weights allocated (zero).
  static void check_options(const PredictorOptions& o) {
    o.runtime.validate();
    LF_REQUIRE(o.batch_size > 0, "`batch_size` must be > 0, got ", o.batch_size);
  }
  void build(const ModelConfig& model_config, const PredictorOptions& predictor_options) {
    check_options(predictor_options);
    options = predictor_options;
    config = model_config;
    objective = head_info(config.task).objective;
    for (const LayerAttention& a : config.attention) {
      const AttentionSupport& s = AttentionRegistry::instance().get(a.kind).info.support;
      can_pad = can_pad && s.key_padding_mask && s.padding_invariant;
    }
    MemoryEstimate need = estimate_memory(config, Workload::Inference, options.batch_size, config.max_len, false, 0);
    need.buffers += need.parameters;  // model.safetensors is read whole
    require_memory(need, options.runtime, options.caller,
                   options.batch_size > 1 ? "lower `batch_size`, or use a smaller model" : "this checkpoint's model is too large for this machine");
    arena = std::make_unique<ParamArena<float>>();
    model = std::make_unique<Model<float>>(config, *arena);
    arena->allocate(/*with_grads=*/false);
  }

  void require_objective(const char* call, const char* wanted) const {
    LF_REQUIRE(objective == wanted, call, " needs a ", wanted == std::string("masked_lm") ? "masked language model"
               : wanted == std::string("causal_lm") ? "causal language model" : "classifier",
               ", but the checkpoint's head is '", config.task, "' (objective ", objective, ")");
  }
};

Predictor::Predictor(const std::string& path, const PredictorOptions& options) : impl_(std::make_unique<Impl>()) {
  namespace fs = std::filesystem;
  Impl::check_options(options);  // before reading anything
  std::string dir = path;
  if (!fs::exists(fs::path(path) / "config.json")) {  // a run directory: its latest checkpoint
    const std::string latest = fs::is_directory(path) ? latest_checkpoint(path) : std::string();
    if (!latest.empty()) dir = latest;
  }
  LoadedCheckpoint ck = load_checkpoint(dir);
  impl_->build(ck.config, options);
  impl_->dir = ck.dir;
  load_checkpoint_weights(impl_->dir, *impl_->arena, nullptr);
}

Predictor::Predictor(const ModelConfig& config, const ParamArena<float>& weights, const PredictorOptions& options)
    : impl_(std::make_unique<Impl>()) {
  config.validate();
  impl_->build(config, options);
  ParamArena<float>& arena = *impl_->arena;
  LF_REQUIRE(weights.allocated() && weights.numel() == arena.numel() && weights.count() == arena.count(),
             "Predictor: the weights (", weights.count(), " tensors, ", weights.numel(),
             " values) are not those of the model's configuration (", arena.count(), " tensors, ", arena.numel(), ")");
  for (const ParamInfo& p : arena.params()) {
    const ParamArena<float>::Id id = weights.find(p.name);
    LF_REQUIRE(id >= 0 && weights.info(id).shape == p.shape, "Predictor: the weights lack '", p.name, "' of shape ",
               shape_str(p.shape));
    std::copy_n(weights.value(id), p.numel, arena.values() + p.offset);
  }
}

Predictor::~Predictor() = default;
Predictor::Predictor(Predictor&&) noexcept = default;
Predictor& Predictor::operator=(Predictor&&) noexcept = default;

const ModelConfig& Predictor::config() const { return impl_->config; }
const std::string& Predictor::checkpoint_dir() const { return impl_->dir; }
const std::string& Predictor::objective() const { return impl_->objective; }
int64_t Predictor::max_len() const { return impl_->config.max_len; }
int64_t Predictor::batch_size() const { return impl_->options.batch_size; }

std::vector<std::string> Predictor::fill_masks(const std::vector<std::string>& texts, char mask) {
  Impl& m = *impl_;
  m.require_objective("fill_masks", "masked_lm");
  const int64_t L = m.config.max_len, V = m.model->logits_per_row();
  // A job per text that fits, else per mask: the window of max_len bytes centred on it. Each job
  // reads the masked positions [begin, end) of its text, `offset` being where its window starts.
  struct Reads {
    std::vector<int64_t> positions;
    int64_t offset = 0;
  };
  std::vector<Job> jobs;
  std::vector<Reads> reads;
  std::vector<std::string> out(texts);
  for (size_t i = 0; i < texts.size(); ++i) {
    MaskedText mt;
    try {
      mt = mask_text(texts[i], mask);
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(text_error(texts, i, e.what()));
    }
    const int64_t n = int64_t(mt.tokens.size());
    if (n <= L) {
      reads.push_back({mt.masked_positions, 0});
      jobs.push_back({std::move(mt.tokens), i});
      continue;
    }
    for (int64_t pos : mt.masked_positions) {
      const int64_t start = std::clamp<int64_t>(pos - L / 2, 0, n - L);
      reads.push_back({{pos}, start});
      jobs.push_back({std::vector<int32_t>(mt.tokens.begin() + start, mt.tokens.begin() + start + L), i});
    }
  }
  m.run(jobs, [&](size_t j, const float* logits, const float*, int64_t) {
    for (int64_t pos : reads[j].positions)
      out[jobs[j].text][size_t(pos)] = char(argmax_byte(logits + (pos - reads[j].offset) * V, V));
  });
  return out;
}

std::vector<Classification> Predictor::classify(const std::vector<std::string>& texts) {
  Impl& m = *impl_;
  m.require_objective("classify", "classification");
  const int64_t C = m.model->logits_per_row();
  std::vector<Job> jobs(texts.size());
  std::vector<Classification> out(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    LF_REQUIRE(!texts[i].empty(), text_error(texts, i, "the text is empty"));
    jobs[i] = {encode(texts[i]), i};
    out[i].truncated = int64_t(jobs[i].tokens.size()) > m.config.max_len;
    if (out[i].truncated) jobs[i].tokens.resize(size_t(m.config.max_len));
  }
  m.run(jobs, [&](size_t j, const float* logits, const float*, int64_t) {
    Classification& c = out[j];
    const float mx = *std::max_element(logits, logits + C);
    c.probabilities.resize(size_t(C));
    double sum = 0;
    for (int64_t k = 0; k < C; ++k) sum += c.probabilities[size_t(k)] = std::exp(double(logits[k] - mx));
    for (double& p : c.probabilities) p /= sum;
    c.label = std::max_element(logits, logits + C) - logits;
  });
  return out;
}

Embeddings Predictor::embed(const std::vector<std::string>& texts, Pooling pooling) {
  Impl& m = *impl_;
  const int64_t d = m.config.d_model;
  Embeddings e;
  e.rows = int64_t(texts.size());
  e.dim = d;
  e.values.assign(size_t(e.rows * d), 0.0f);
  e.truncated.assign(texts.size(), false);
  std::vector<Job> jobs(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    LF_REQUIRE(!texts[i].empty(), text_error(texts, i, "the text is empty"));
    jobs[i] = {encode(texts[i]), i};
    e.truncated[i] = int64_t(jobs[i].tokens.size()) > m.config.max_len;
    if (e.truncated[i]) jobs[i].tokens.resize(size_t(m.config.max_len));
  }
  m.run(jobs, [&](size_t j, const float*, const float* h, int64_t) {
    const int64_t len = int64_t(jobs[j].tokens.size());  // the real positions: padding follows them
    float* out = e.values.data() + int64_t(j) * d;
    for (int64_t c = 0; c < d; ++c) {
      double acc = pooling == Pooling::kMax ? -INFINITY : 0.0;
      switch (pooling) {
        case Pooling::kMean:
          for (int64_t t = 0; t < len; ++t) acc += h[t * d + c];
          acc /= double(len);
          break;
        case Pooling::kFirst: acc = h[c]; break;
        case Pooling::kLast: acc = h[(len - 1) * d + c]; break;
        case Pooling::kMax:
          for (int64_t t = 0; t < len; ++t) acc = std::max(acc, double(h[t * d + c]));
          break;
      }
      out[c] = float(acc);
    }
  });
  return e;
}

std::string Predictor::generate(const std::string& prompt, const SamplingOptions& options,
                                const std::function<bool(std::string_view)>& on_token, GenerationStats* stats) {
  using Clock = std::chrono::steady_clock;
  Impl& m = *impl_;
  m.require_objective("generate", "causal_lm");
  LF_REQUIRE(!prompt.empty(), "the prompt is empty");
  Sampler sampler(options);
  RuntimeScope scope(m.options.runtime);
  const int64_t L = m.config.max_len, V = m.model->logits_per_row(), keep = std::max<int64_t>(1, L / 2);
  GenerationStats local;
  GenerationStats& st = stats ? *stats : local;
  st = GenerationStats{};
  if (options.max_new_tokens == 0) return "";
  std::vector<int32_t> ids = encode(prompt);
  // The model sees ids[start, end): at most max_len of them, at positions 0.. .
  int64_t start = std::max<int64_t>(0, int64_t(ids.size()) - L);
  std::unique_ptr<ModelDecodeState<float>> state;
  const float* logits = nullptr;  // the newest position's row
  auto prefill = [&] {
    const auto t0 = Clock::now();
    const int64_t n = int64_t(ids.size()) - start;
    state = m.model->begin_decode(1);
    logits = m.model->decode(*state, ids.data() + start, n) + (n - 1) * V;
    st.prefill_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    st.prefill_tokens += n;
    st.cache_bytes = std::max(st.cache_bytes, state->bytes());
  };
  prefill();
  std::string out;
  for (int64_t i = 0; i < options.max_new_tokens; ++i) {
    const std::vector<int32_t> context(ids.begin() + start, ids.end());
    const int32_t next = sampler.next(logits, std::min<int64_t>(V, 256), context);
    ids.push_back(next);
    out.push_back(char(next));
    st.generated = int64_t(out.size());
    if (on_token && !on_token(std::string_view(out).substr(out.size() - 1))) break;
    const bool stopped = std::any_of(options.stop.begin(), options.stop.end(), [&](const std::string& s) {
      return out.size() >= s.size() && out.compare(out.size() - s.size(), s.size(), s) == 0;
    });
    if (stopped || i + 1 == options.max_new_tokens) break;  // no step for a token nobody reads
    if (int64_t(ids.size()) - start > L) {  // no position left for the new token: refill from the last half
      start = int64_t(ids.size()) - keep;
      ++st.refills;
      prefill();
      continue;
    }
    const auto t0 = Clock::now();
    logits = m.model->decode(*state, &ids.back(), 1);
    st.decode_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    ++st.decode_tokens;
    st.cache_bytes = std::max(st.cache_bytes, state->bytes());
  }
  return out;
}

}  // namespace lf
