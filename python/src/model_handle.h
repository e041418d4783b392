// The Python Model object: a handle on a Model<float> and its parameter arena, which either it owns or
// a Trainer does (linformer.Trainer(model, ...) trains the model's own weights in place), plus the
// runtime options its calls run with and a Predictor for the text methods, rebuilt when the weights
// may have changed.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "linformer/linformer.h"

namespace lf::py {

struct ModelHandle {
  std::shared_ptr<void> owner;  // keeps model and arena alive
  Model<float>* model = nullptr;
  ParamArena<float>* arena = nullptr;
};

class PyModel {
 public:
  // Points the model at other weights (a Trainer's); text methods then rebuild their Predictor.
  void reset(ModelHandle handle);
  // The weights changed in place (a training step, load_state_dict).
  void touch() { ++version_; }
  // A Predictor on a copy of the current weights (the caller holds mutex_).
  Predictor& predictor();

  ModelConfig config_;
  RuntimeOptions runtime_;
  std::string checkpoint_;
  int64_t batch_size_ = 16;
  ModelHandle handle_;
  // One call at a time (the model keeps its activations between forward and backward); taken with the
  // GIL released, so a thread waiting for it never blocks the others' Python.
  std::mutex mutex_;
  uint64_t version_ = 0;

 private:
  std::unique_ptr<Predictor> predictor_;
  uint64_t predictor_version_ = ~uint64_t(0);
};

}  // namespace lf::py
