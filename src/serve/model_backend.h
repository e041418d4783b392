// The server's backend on a trained checkpoint: one lf::Predictor per worker (a Predictor runs one
// call at a time), and which endpoints the checkpoint's head gives.
#pragma once
#include <memory>
#include <set>
#include <string>

#include "linformer/inference.h"
#include "serve/batcher.h"
#include "serve/request.h"

namespace lf::serve {

struct ModelEndpoints {
  std::set<Endpoint> endpoints;  // every model embeds; masked LMs predict, classifiers classify, causal LMs generate
  std::string why_not;           // for the others' 404: the head and the endpoints it has
  json info;                     // for GET /health: checkpoint, task, objective, max_len, d_model
};
ModelEndpoints model_endpoints(const Predictor& predictor);

// Backends on `first` (handed to the first worker) and on fresh Predictors of the same checkpoint for
// the others, with `options`.
BackendFactory predictor_backends(std::unique_ptr<Predictor> first, const PredictorOptions& options);

}  // namespace lf::serve
