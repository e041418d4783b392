// The training objectives (train/objective.h), one block each, and the table naming them.
#include "train/objective.h"

#include <algorithm>
#include <cmath>

#include "linformer/error.h"
#include "linformer/registry.h"
#include "linformer/tensor.h"
#include "linformer/tokenizer.h"
#include "model/head.h"
#include "ops/sequence.h"

namespace lf {
namespace {

constexpr uint64_t kEvalSeed = 0xe7a1ull;  // fixed: every evaluation of every model sees the same batches

ObjectiveLoss cross_entropy_loss(const float* logits, const TokenBatch& b, int64_t V, float* dlogits,
                                 double grad_scale) {
  const int64_t rows = int64_t(b.targets.size());
  const TensorView<const int32_t> targets = vector_view(b.targets.data(), rows);
  const CrossEntropyResult ce = ops::cross_entropy_forward<float>(matrix(logits, rows, V), targets);
  ObjectiveLoss r{ce.loss, ce.count, 0};
  for (int64_t i = 0; i < rows; ++i) {
    if (b.targets[size_t(i)] == kIgnoreIndex) continue;
    const float* row = logits + i * V;
    r.correct += std::max_element(row, row + V) - row == b.targets[size_t(i)];
  }
  if (dlogits) ops::cross_entropy_backward<float>(matrix(logits, rows, V), targets, matrix(dlogits, rows, V), grad_scale);
  return r;
}

// ---- the LM objectives: a text corpus -----------------------------------------------------------

void load_corpus(const TrainOptions& opt, TaskData& d) {
  d.corpus = std::make_unique<Corpus>(Corpus::load(opt.data_path, opt.max_bytes, {opt.valid_fraction, opt.test_fraction}));
}

// masked_lm: BERT-style masking; evaluation masks per position at fixed draws.
TokenBatch masked_lm_train_batch(const TaskData& d, int64_t B, int64_t n, uint64_t seed, uint64_t step,
                                 const MlmMasking& masking) {
  return mlm_batch(d.corpus->split(Split::Train), B, n, seed, step, masking);
}
int64_t masked_lm_eval_batch_count(const TaskData& d, Split split, int64_t B, int64_t n, int64_t max_batches) {
  return mlm_eval_batches(d.corpus->split(split), B, n, max_batches);
}
TokenBatch masked_lm_eval_batch(const TaskData& d, Split split, int64_t B, int64_t n, int64_t index, double mask_prob) {
  return mlm_eval_batch(d.corpus->split(split), B, n, uint64_t(index), kEvalSeed, mask_prob);
}

// causal_lm: crops of n + 1 bytes, each position predicting the next.
TokenBatch causal_lm_train_batch(const TaskData& d, int64_t B, int64_t n, uint64_t seed, uint64_t step,
                                 const MlmMasking&) {
  return clm_batch(d.corpus->split(Split::Train), B, n, seed, step);
}
int64_t causal_lm_eval_batch_count(const TaskData& d, Split split, int64_t B, int64_t n, int64_t max_batches) {
  return mlm_eval_batches(d.corpus->split(split), B, n + 1, max_batches);
}
TokenBatch causal_lm_eval_batch(const TaskData& d, Split split, int64_t B, int64_t n, int64_t index, double) {
  return clm_batch(d.corpus->split(split), B, n, kEvalSeed, uint64_t(index));
}

// ---- classification: labelled examples ------------------------------------------------------------

// The last valid_fraction of the examples (at least one) is held out; valid and test share them. The
// classes are data.class_map (a checkpoint's) or, when it is empty, the training part's sorted labels;
// a held-out label outside them is refused naming its line (never a class index out of range).
void load_labelled(const TrainOptions& opt, TaskData& d) {
  const ClassificationData all = ClassificationData::load(opt.data_path);
  const int64_t held = std::max<int64_t>(1, int64_t(std::round(double(all.size()) * opt.valid_fraction)));
  LF_REQUIRE(all.size() > held, opt.data_path, ": ", all.size(), " examples are too few to hold out ", held,
             " for validation");
  const ClassificationData train = all.slice(0, all.size() - held);
  const bool own = d.class_map.empty();
  std::vector<std::string> classes = own ? ClassificationData::sorted_classes(train.label_names()) : d.class_map;
  LF_REQUIRE(classes.size() >= 2, "the training split of ", opt.data_path, " (its first ", train.size(),
             " examples) has only the label '", classes.at(0), "': a classifier needs examples of at least two labels");
  const std::string whose = own ? "the training split's" : "the model's";
  d.train_examples = std::make_unique<ClassificationData>(train.with_classes(classes, whose));
  d.valid_examples = std::make_unique<ClassificationData>(all.slice(all.size() - held, all.size()).with_classes(classes, whose));
}

const ClassificationData& split_examples(const TaskData& d, Split split) {
  return split == Split::Train ? *d.train_examples : *d.valid_examples;
}

TokenBatch classification_train_batch(const TaskData& d, int64_t B, int64_t n, uint64_t seed, uint64_t step,
                                      const MlmMasking&) {
  return classification_batch(*d.train_examples, B, n, seed, step);
}
int64_t classification_eval_batch_count(const TaskData& d, Split split, int64_t B, int64_t, int64_t max_batches) {
  return std::min<int64_t>(max_batches, (split_examples(d, split).size() + B - 1) / B);
}
// The split's examples [index·B, (index + 1)·B) as one padded batch.
TokenBatch classification_eval_batch(const TaskData& d, Split split, int64_t B, int64_t n, int64_t index, double) {
  const ClassificationData& examples = split_examples(d, split);
  const int64_t begin = index * B, end = std::min<int64_t>(examples.size(), (index + 1) * B);
  TokenBatch b;
  b.B = end - begin;
  b.n = n;
  b.tokens.assign(size_t(b.B * n), kPad);
  b.padding.assign(size_t(b.B * n), 1);
  for (int64_t i = 0; i < b.B; ++i) {
    const std::vector<int32_t> ids = encode(examples.texts()[size_t(begin + i)]);
    const int64_t len = std::min<int64_t>(n, int64_t(ids.size()));
    for (int64_t t = 0; t < len; ++t) {
      b.tokens[size_t(i * n + t)] = ids[size_t(t)];
      b.padding[size_t(i * n + t)] = 0;
    }
    b.targets.push_back(examples.labels()[size_t(begin + i)]);
  }
  return b;
}

const Registry<Objective>& objectives() {
  static const Registry<Objective> table = [] {
    Registry<Objective> r("training objective", [](const Objective& o) -> const std::string& { return o.name; });
    r.add({"masked_lm", load_corpus, masked_lm_train_batch, masked_lm_eval_batch_count, masked_lm_eval_batch,
           cross_entropy_loss});
    r.add({"causal_lm", load_corpus, causal_lm_train_batch, causal_lm_eval_batch_count, causal_lm_eval_batch,
           cross_entropy_loss});
    r.add({"classification", load_labelled, classification_train_batch, classification_eval_batch_count,
           classification_eval_batch, cross_entropy_loss});
    return r;
  }();
  return table;
}

}  // namespace

std::vector<std::string> objective_names() { return objectives().names(); }

const Objective& objective(const std::string& name) { return objectives().get(name); }

const Objective& head_objective(const std::string& task) { return objective(head_info(task).objective); }

}  // namespace lf
