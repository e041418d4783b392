// A head's training objective: the data it trains on, how its training and evaluation batches are made
// and how a batch is scored. The model layer sits below the data layer, so a head cannot make batches
// itself: its HeadInfo names an objective ("masked_lm", "causal_lm", "classification") and this table,
// in the training layer, maps the name to the functions. The trainer, evaluate() and `linformer eval`
// ask it and never the task; heads that train alike share an objective.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "linformer/batches.h"
#include "linformer/corpus.h"
#include "linformer/trainer.h"

namespace lf {

// A batch's score from the model's logits.
struct ObjectiveLoss {
  double loss = 0;      // mean over the scored rows (nats)
  int64_t count = 0;    // scored rows (targets that are not kIgnoreIndex)
  int64_t correct = 0;  // scored rows whose largest logit is the target
};

struct Objective {
  std::string name;
  // Reads opt.data_path into `data`: a text corpus (the LM objectives) or labelled examples.
  void (*load)(const TrainOptions& opt, TaskData& data) = nullptr;
  TokenBatch (*train_batch)(const TaskData& data, int64_t B, int64_t n, uint64_t seed, uint64_t step,
                            const MlmMasking& masking) = nullptr;
  int64_t (*eval_batch_count)(const TaskData& data, Split split, int64_t B, int64_t n, int64_t max_batches) = nullptr;
  TokenBatch (*eval_batch)(const TaskData& data, Split split, int64_t B, int64_t n, int64_t index,
                           double mask_prob) = nullptr;
  // logits (rows, V) of the batch's targets (rows = its targets' count). With dlogits (rows, V), also
  // writes the gradient of loss · grad_scale. Every objective so far is cross-entropy.
  ObjectiveLoss (*loss)(const float* logits, const TokenBatch& batch, int64_t V, float* dlogits,
                        double grad_scale) = nullptr;
};

// Throws lf::InvalidArgument listing the known objectives when the name is unknown.
const Objective& objective(const std::string& name);
// The objective of the head a config's `task` names.
const Objective& head_objective(const std::string& task);
std::vector<std::string> objective_names();

}  // namespace lf
