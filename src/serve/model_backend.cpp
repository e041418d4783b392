#include "serve/model_backend.h"

#include <mutex>

#include "linformer/error.h"

namespace lf::serve {
namespace {

class PredictorBackend : public Backend {
 public:
  explicit PredictorBackend(std::unique_ptr<Predictor> p) : p_(std::move(p)) {}

  std::vector<json> run(const Request& options, const std::vector<std::string>& texts) override {
    std::vector<json> out;
    switch (options.endpoint) {
      case Endpoint::predict:
        for (std::string& filled : p_->fill_masks(texts, options.mask_char)) out.push_back({{"text", std::move(filled)}});
        break;
      case Endpoint::classify:
        for (Classification& c : p_->classify(texts))
          out.push_back({{"label", c.label}, {"probabilities", std::move(c.probabilities)}, {"truncated", c.truncated}});
        break;
      case Endpoint::embed: {
        const Embeddings e = p_->embed(texts, options.pooling);
        for (int64_t r = 0; r < e.rows; ++r) {
          const float* row = e.values.data() + r * e.dim;
          out.push_back({{"embedding", std::vector<float>(row, row + e.dim)}, {"truncated", bool(e.truncated[size_t(r)])}});
        }
        break;
      }
      case Endpoint::generate:
        // One prompt at a time: the library's generate is not batched (each step reruns the window).
        for (const std::string& prompt : texts) out.push_back({{"text", p_->generate(prompt, options.sampling)}});
        break;
    }
    return out;
  }

 private:
  std::unique_ptr<Predictor> p_;
};

}  // namespace

ModelEndpoints model_endpoints(const Predictor& p) {
  ModelEndpoints m;
  m.endpoints.insert(Endpoint::embed);
  const std::string& objective = p.objective();
  if (objective == "masked_lm") m.endpoints.insert(Endpoint::predict);
  if (objective == "classification") m.endpoints.insert(Endpoint::classify);
  if (objective == "causal_lm") m.endpoints.insert(Endpoint::generate);
  std::string list;
  for (Endpoint e : m.endpoints) list += str_cat(list.empty() ? "" : ", ", "/v1/", endpoint_name(e));
  m.why_not = str_cat("this checkpoint's head is '", p.config().task, "' (", objective, "), which has ", list);
  m.info = {{"checkpoint", p.checkpoint_dir()}, {"task", p.config().task}, {"objective", objective},
            {"max_len", p.max_len()}, {"d_model", p.config().d_model}};
  return m;
}

BackendFactory predictor_backends(std::unique_ptr<Predictor> first, const PredictorOptions& options) {
  struct Shared {
    std::mutex mu;
    std::unique_ptr<Predictor> first;
    std::string dir;
  };
  auto shared = std::make_shared<Shared>();
  shared->dir = first->checkpoint_dir();
  shared->first = std::move(first);
  return [shared, options]() -> std::unique_ptr<Backend> {
    {
      const std::lock_guard<std::mutex> lock(shared->mu);
      if (shared->first) return std::make_unique<PredictorBackend>(std::move(shared->first));
    }
    return std::make_unique<PredictorBackend>(std::make_unique<Predictor>(shared->dir, options));
  };
}

}  // namespace lf::serve
