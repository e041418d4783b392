// linformer.Data and linformer.Trainer: the step-level trainer (include/linformer/trainer.h) driven
// from Python. Trainer(model, data, options) trains `model`'s own weights: the model is re-pointed at
// the trainer's parameters, so model.forward() between steps sees the current weights.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "bindings.h"
#include "model_handle.h"

namespace lf::py {
namespace {

// A training corpus (mlm/clm) or a classifier's TSV examples, loaded once, split into train / valid /
// test as `linformer train` splits it.
struct PyData {
  std::string task;
  TrainOptions source;  // data_path, max_bytes and the held-out fractions
  std::shared_ptr<TaskData> data;
};

std::unique_ptr<PyData> load_data(const std::string& path, const std::string& task, int64_t max_bytes,
                                  double valid_fraction, double test_fraction,
                                  const std::optional<std::vector<std::string>>& class_names) {
  auto d = std::make_unique<PyData>();
  d->task = task;
  d->source.data_path = path;
  d->source.max_bytes = max_bytes;
  d->source.valid_fraction = valid_fraction;
  d->source.test_fraction = test_fraction;
  LF_REQUIRE(max_bytes >= 0, "`max_bytes` must be >= 0, got ", max_bytes);
  nb::gil_scoped_release release;
  d->data = std::make_shared<TaskData>(TaskData::load(task, d->source, class_names.value_or(std::vector<std::string>{})));
  return d;
}

Split parse_split(const std::string& name) {
  if (name == "train") return Split::Train;
  if (name == "valid") return Split::Valid;
  if (name == "test") return Split::Test;
  throw InvalidArgument(str_cat("`split` must be 'train', 'valid' or 'test', got '", name, "'"));
}

struct PyTrainer {
  std::shared_ptr<Trainer> trainer;
  nb::object model_object, data_object;  // keep the Python Model and Data alive
  PyModel* model = nullptr;
  std::shared_ptr<TaskData> data;  // may be null: step() then needs batches
  std::string task;
  std::optional<nb::callable> callback;
};

nb::dict step_dict(const StepResult& r) {
  nb::dict d;
  d["step"] = r.step;
  d["loss"] = r.loss;
  d["grad_norm"] = r.grad_norm;
  d["lr"] = r.lr;
  return d;
}

nb::dict eval_dict(const EvalResult& e) {
  nb::dict d;
  d["loss"] = e.loss;
  d["bits_per_byte"] = e.bits_per_byte;
  d["accuracy"] = e.accuracy;
  d["count"] = e.count;
  return d;
}

std::unique_ptr<PyTrainer> make_trainer(const nb::handle& model_object, const nb::handle& data_object,
                                        const nb::handle& options, const std::optional<nb::callable>& callback) {
  PyModel* model_ptr = nullptr;
  if (!nb::try_cast(model_object, model_ptr) || !model_ptr) throw nb::type_error("`model` must be a linformer.Model");
  PyModel& model = *model_ptr;
  PyData* data = nullptr;
  if (!data_object.is_none() && !nb::try_cast(data_object, data)) throw nb::type_error("`data` must be a linformer.Data or None");
  json j = options.is_none() ? json::object() : from_python(options, "options");
  LF_REQUIRE(j.is_object(), "`options` must be a dict of training options");
  for (const char* file_key : {"data_path", "run_dir"})
    LF_REQUIRE(!j.contains(file_key), "the option '", file_key, "' is not a Trainer's: pass the data as `data` and the ",
               "directory to save()");
  const TrainOptions opt = TrainOptions::from_json(j);
  auto t = std::make_unique<PyTrainer>();
  t->model = &model;
  t->model_object = nb::borrow(model_object);
  t->data_object = nb::borrow(data_object);
  t->task = model.config_.task;
  t->callback = callback;
  if (data) {
    LF_REQUIRE(data->task == model.config_.task, "the data was loaded for the task '", data->task,
               "' but the model's head is '", model.config_.task, "'");
    t->data = data->data;
  }
  {
    nb::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(model.mutex_);
    t->trainer = std::make_shared<Trainer>(model.config_, opt, model.runtime_);
    // Start from the model's weights (same configuration, so the same tensors), then share them.
    ParamArena<float>& from = *model.handle_.arena;
    ParamArena<float>& to = t->trainer->arena();
    for (const ParamInfo& p : to.params()) std::copy_n(from.value(from.find(p.name)), p.numel, to.values() + p.offset);
    ModelHandle h;
    h.model = &t->trainer->model();
    h.arena = &t->trainer->arena();
    h.owner = t->trainer;
    model.reset(std::move(h));
  }
  return t;
}

// The micro-batches of one step: the data's next ones (a pure function of the seed and the step, as in
// `linformer train`), or the caller's arrays (grad_accum 1).
std::vector<TokenBatch> step_batches(PyTrainer& t, const std::optional<nb::ndarray<nb::ro>>& tokens,
                                     const std::optional<nb::ndarray<nb::ro>>& targets,
                                     const std::optional<nb::ndarray<nb::ro>>& key_padding_mask) {
  const TrainOptions& o = t.trainer->options();
  std::vector<TokenBatch> micro(size_t(o.grad_accum));
  if (!tokens) {
    LF_REQUIRE(!targets && !key_padding_mask, "`targets` and `key_padding_mask` need `tokens`");
    LF_REQUIRE(t.data != nullptr, "this Trainer has no data: pass `tokens` and `targets` to step()");
    for (int64_t m = 0; m < o.grad_accum; ++m)
      micro[size_t(m)] = t.data->train_batch(o.batch_size, o.seq_len, o.seed,
                                             uint64_t(t.trainer->steps_done() * o.grad_accum + m),
                                             {o.mask_prob, o.mask_span, o.short_seq_prob});
    return micro;
  }
  LF_REQUIRE(targets.has_value(), "step(tokens=...) needs `targets` too");
  LF_REQUIRE(o.grad_accum == 1, "step(tokens=...) is one micro-batch, but `grad_accum` is ", o.grad_accum);
  TokenBatch& b = micro[0];
  const TokenArray x = token_array(*tokens, "tokens");
  const TokenArray y = token_array(*targets, "targets");
  LF_REQUIRE(x.batched, "`tokens` must be (batch, length)");
  const bool classes = t.trainer->model().config().n_classes > 0;
  const bool shaped = classes ? (!y.batched && y.n == x.B) : (y.batched && y.B == x.B && y.n == x.n);
  if (!shaped)
    throw nb::value_error(str_cat("`targets` must be ", classes ? str_cat("(", x.B, ",) class ids") : str_cat("(", x.B, ", ", x.n, ")"),
                                  ", got ", describe(*targets)).c_str());
  b.B = x.B;
  b.n = x.n;
  b.tokens = x.ids;
  b.targets = y.ids;
  if (key_padding_mask) b.padding = padding_array(*key_padding_mask, x.B, x.n, "key_padding_mask");
  return micro;
}

nb::dict step(PyTrainer& t, const std::optional<nb::ndarray<nb::ro>>& tokens, const std::optional<nb::ndarray<nb::ro>>& targets,
              const std::optional<nb::ndarray<nb::ro>>& key_padding_mask) {
  std::vector<TokenBatch> micro = step_batches(t, tokens, targets, key_padding_mask);
  StepResult r;
  {
    nb::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(t.model->mutex_);
    r = t.trainer->step(micro);
    t.model->touch();
  }
  nb::dict d = step_dict(r);
  if (t.callback) (*t.callback)(d);
  return d;
}

}  // namespace

void bind_trainer(nb::module_& m) {
  nb::class_<PyData>(m, "Data",
                     "Training data for a head: a text file (plain or gzip) for mlm/clm, a label<TAB>text TSV for "
                     "classify, split into train / valid / test from its end as `linformer train` splits it.")
      .def(nb::new_(&load_data), nb::arg("path"), nb::arg("task") = "mlm", nb::arg("max_bytes") = 0,
           nb::arg("valid_fraction") = 0.01, nb::arg("test_fraction") = 0.01, nb::arg("class_names") = nb::none(),
           "Loads `path` for the head `task` (max_bytes = 0: the whole file). class_names (classify): the label "
           "map to follow, e.g. a trained model's; default: the training split's sorted labels. linformer.IoError "
           "for a missing or malformed file.")
      .def_prop_ro("task", [](const PyData& d) { return d.task; })
      .def_prop_ro("path", [](const PyData& d) { return d.source.data_path; })
      .def_prop_ro("class_names", [](const PyData& d) { return d.data->class_map; });

  nb::class_<PyTrainer>(m, "Trainer",
                        "The step-level trainer: AdamW with warm-up and cosine decay, gradient clipping and "
                        "micro-batching, on `model`'s own weights (the model sees every step).")
      .def(nb::new_(&make_trainer), nb::arg("model"), nb::arg("data") = nb::none(), nb::arg("options") = nb::none(),
           nb::arg("callback") = nb::none(),
           "options: training options as `linformer train` takes them (batch_size, seq_len, steps, lr, "
           "warmup_steps, grad_accum, weight_decay, clip_norm, mask_prob, seed, ...; docs/python.md), missing "
           "ones at their defaults. callback(result: dict) is called after every step. The model's threads and "
           "precision apply.")
      .def("step", &step, nb::arg("tokens") = nb::none(), nb::arg("targets") = nb::none(),
           nb::arg("key_padding_mask") = nb::none(),
           "One optimizer step over the data's next batches (a function of the seed and the step), or over "
           "tokens (B, n) with targets (B, n) for LMs (-100 = not scored) or (B,) class ids. Returns "
           "{'step', 'loss', 'grad_norm', 'lr'}. linformer.Error for a non-finite loss (the weights are then "
           "unchanged).")
      .def(
          "train",
          [](PyTrainer& t, std::optional<int64_t> steps) {
            const int64_t until = steps ? t.trainer->steps_done() + *steps : t.trainer->options().steps;
            LF_REQUIRE(!steps || *steps >= 0, "`steps` must be >= 0, got ", *steps);
            nb::object last = nb::none();
            while (t.trainer->steps_done() < until) {
              last = step(t, std::nullopt, std::nullopt, std::nullopt);
              // Ctrl-C lands between steps: the weights and optimizer state are those of a whole step.
              if (PyErr_CheckSignals() != 0) throw nb::python_error();
            }
            return last;
          },
          nb::arg("steps") = nb::none(),
          "Steps over the data until options['steps'] are done (or `steps` more). Ctrl-C raises "
          "KeyboardInterrupt after the step under way, leaving a consistent trainer (save() it). Returns the last "
          "step's result.")
      .def(
          "evaluate",
          [](PyTrainer& t, const std::string& split, std::optional<int64_t> batches, std::optional<int64_t> batch_size,
             std::optional<int64_t> seq_len) {
            LF_REQUIRE(t.data != nullptr, "this Trainer has no data to evaluate on");
            const TrainOptions& o = t.trainer->options();
            const Split which = parse_split(split);
            EvalResult e;
            {
              nb::gil_scoped_release release;
              std::lock_guard<std::mutex> lock(t.model->mutex_);
              e = t.trainer->evaluate(*t.data, which, batch_size.value_or(o.batch_size), seq_len.value_or(o.seq_len),
                                      batches.value_or(o.eval_batches), o.mask_prob);
            }
            return eval_dict(e);
          },
          nb::arg("split") = "valid", nb::arg("batches") = nb::none(), nb::arg("batch_size") = nb::none(),
          nb::arg("seq_len") = nb::none(),
          "Mean loss, bits per byte and accuracy over the split's fixed evaluation batches: {'loss', "
          "'bits_per_byte', 'accuracy', 'count'}.")
      .def(
          "save",
          [](PyTrainer& t, const std::string& run_dir, int keep) {
            const TrainOptions& o = t.trainer->options();
            json state = {{"options", o.to_json()},
                          {"tokens_seen", t.trainer->steps_done() * o.batch_size * o.seq_len * o.grad_accum}};
            nb::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(t.model->mutex_);
            return t.trainer->save(run_dir, state, keep);
          },
          nb::arg("run_dir"), nb::arg("keep") = 0,
          "Saves the weights and the optimizer state as run_dir/checkpoints/step-<steps> (atomically), keeping the "
          "newest `keep` (0: all); returns the checkpoint's directory, which Model.from_checkpoint and `linformer` "
          "read.")
      .def_prop_ro("steps_done", [](const PyTrainer& t) { return t.trainer->steps_done(); })
      .def_prop_ro("options", [](const PyTrainer& t) { return to_python(t.trainer->options().to_json()); });
}

}  // namespace lf::py
