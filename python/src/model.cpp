// linformer.Model: a model built from a configuration or loaded from a checkpoint, its forward pass on
// token arrays, its weights as arrays, and inference on texts (masks, classes, embeddings, generation)
// through lf::Predictor on a copy of the current weights.
#include <nanobind/stl/function.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
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

// A model that owns its parameters (not a Trainer's).
struct StandaloneModel {
  ParamArena<float> arena;
  std::unique_ptr<Model<float>> model;
};

ModelHandle standalone(const ModelConfig& config, const std::function<void(ParamArena<float>&)>& fill) {
  auto own = std::make_shared<StandaloneModel>();
  own->model = std::make_unique<Model<float>>(config, own->arena);
  own->arena.allocate(/*with_grads=*/false);
  fill(own->arena);
  ModelHandle h;
  h.model = own->model.get();
  h.arena = &own->arena;
  h.owner = std::move(own);
  return h;
}

RuntimeOptions runtime_options(int threads, const std::string& precision) {
  RuntimeOptions r;
  r.threads = threads;
  r.precision = parse_precision(precision);
  r.validate();
  return r;
}

// The texts argument: one str (then one result) or a list of them.
std::vector<std::string> texts_of(const nb::handle& texts, bool& single) {
  single = nb::isinstance<nb::str>(texts);
  if (single) return {nb::cast<std::string>(texts)};
  try {
    return nb::cast<std::vector<std::string>>(texts);
  } catch (const nb::cast_error&) {
    throw nb::type_error("`texts` must be a str or a list of str");
  }
}

}  // namespace

void PyModel::reset(ModelHandle handle) {
  handle_ = std::move(handle);
  ++version_;
}

Predictor& PyModel::predictor() {
  if (!predictor_ || predictor_version_ != version_) {
    PredictorOptions o;
    o.runtime = runtime_;
    o.batch_size = batch_size_;
    o.caller = "linformer.Model";
    predictor_ = std::make_unique<Predictor>(config_, *handle_.arena, o);
    predictor_version_ = version_;
  }
  return *predictor_;
}

namespace {

std::unique_ptr<PyModel> model_from_config(const nb::handle& config, uint64_t seed, int threads,
                                           const std::string& precision, int64_t batch_size) {
  auto m = std::make_unique<PyModel>();
  m->config_ = ModelConfig::from_json(from_python(config, "config"));
  m->runtime_ = runtime_options(threads, precision);
  LF_REQUIRE(batch_size > 0, "`batch_size` must be > 0, got ", batch_size);
  m->batch_size_ = batch_size;
  m->reset(standalone(m->config_, [&](ParamArena<float>& a) { a.initialize(seed); }));
  return m;
}

std::unique_ptr<PyModel> model_from_checkpoint(const std::string& path, int threads, const std::string& precision,
                                               int64_t batch_size) {
  auto m = std::make_unique<PyModel>();
  m->runtime_ = runtime_options(threads, precision);
  LF_REQUIRE(batch_size > 0, "`batch_size` must be > 0, got ", batch_size);
  m->batch_size_ = batch_size;
  std::string dir = path;
  const std::string latest = latest_checkpoint(path);  // a run directory: its newest checkpoint
  if (!latest.empty()) dir = latest;
  LoadedCheckpoint ck;
  {
    nb::gil_scoped_release release;
    ck = load_checkpoint(dir);
  }
  m->config_ = ck.config;
  m->checkpoint_ = ck.dir;
  m->reset(standalone(m->config_, [&](ParamArena<float>& a) {
    nb::gil_scoped_release release;
    load_checkpoint_weights(ck.dir, a, nullptr);
  }));
  return m;
}

nb::object forward(PyModel& m, const nb::ndarray<nb::ro>& tokens, const std::optional<nb::ndarray<nb::ro>>& key_padding_mask,
                   bool return_hidden) {
  const TokenArray t = token_array(tokens, "tokens");
  std::vector<uint8_t> padding;
  if (key_padding_mask) padding = padding_array(*key_padding_mask, t.B, t.n, "key_padding_mask");
  const ModelConfig& c = m.config_;
  const bool per_token = c.n_classes == 0;  // LM heads: a row of logits per position
  std::vector<float> logits, hidden;
  {
    nb::gil_scoped_release release;  // the mutex after the GIL, so a waiting thread never holds the GIL
    std::lock_guard<std::mutex> lock(m.mutex_);
    RuntimeScope scope(m.runtime_);
    const float* out = m.handle_.model->forward(t.ids.data(), padding.empty() ? nullptr : padding.data(), t.B, t.n,
                                                /*training=*/false, 0, /*keep_for_backward=*/false);
    const int64_t rows = per_token ? t.B * t.n : t.B, V = m.handle_.model->logits_per_row();
    logits.assign(out, out + rows * V);
    if (return_hidden) {
      const float* h = m.handle_.model->final_hidden();
      hidden.assign(h, h + t.B * t.n * c.d_model);
    }
  }
  const size_t B = size_t(t.B), n = size_t(t.n), V = logits.size() / (per_token ? B * n : B);
  std::vector<size_t> shape = per_token ? std::vector<size_t>{B, n, V} : std::vector<size_t>{B, V};
  if (!t.batched) shape.erase(shape.begin());  // (n,) in, (n, V) out
  nb::object out = nb::cast(float_array(logits.data(), shape));
  if (!return_hidden) return out;
  std::vector<size_t> hshape{B, n, size_t(c.d_model)};
  if (!t.batched) hshape.erase(hshape.begin());
  return nb::make_tuple(out, float_array(hidden.data(), hshape));
}

nb::dict state_dict(PyModel& m) {
  nb::dict d;
  std::lock_guard<std::mutex> lock(m.mutex_);
  const ParamArena<float>& a = *m.handle_.arena;
  for (const ParamInfo& p : a.params())
    d[p.name.c_str()] = float_array(a.value(a.find(p.name)), std::vector<size_t>(p.shape.begin(), p.shape.end()));
  return d;
}

// Values from a mapping name -> array (float32 or float64, any strides, numpy or torch), every tensor of
// the model with its shape; nothing is written unless all of them check.
void load_state_dict(PyModel& m, const nb::dict& d) {
  ParamArena<float>& a = *m.handle_.arena;
  std::vector<std::pair<ParamArena<float>::Id, std::vector<float>>> values;
  std::vector<std::string> unknown;
  for (auto [key, value] : d) {
    const std::string name = nb::cast<std::string>(nb::str(key));
    const ParamArena<float>::Id id = a.find(name);
    if (id < 0) {
      unknown.push_back(name);
      continue;
    }
    nb::ndarray<nb::ro> arr;
    if (!nb::try_cast(value, arr))
      throw nb::type_error(str_cat("state_dict['", name, "'] is not an array (numpy or torch)").c_str());
    if (arr.device_type() != nb::device::cpu::value)
      throw nb::type_error(str_cat("state_dict['", name, "'] must be on the CPU").c_str());
    const ParamInfo& p = a.info(id);
    bool same_shape = arr.ndim() == p.shape.size();
    for (size_t i = 0; same_shape && i < arr.ndim(); ++i) same_shape = int64_t(arr.shape(i)) == p.shape[i];
    if (!same_shape)
      throw nb::value_error(str_cat("state_dict['", name, "'] has shape ", describe(arr), ", the model's is ",
                                    shape_str(p.shape)).c_str());
    const nb::dlpack::dtype t = arr.dtype();
    if (t.code != uint8_t(nb::dlpack::dtype_code::Float) || (t.bits != 32 && t.bits != 64))
      throw nb::type_error(str_cat("state_dict['", name, "'] must be float32 or float64, got ", describe(arr)).c_str());
    std::vector<float> v(size_t(p.numel));
    // Row-major order over any strides (element strides).
    std::vector<int64_t> index(arr.ndim(), 0);
    for (int64_t i = 0; i < p.numel; ++i) {
      int64_t offset = 0;
      for (size_t k = 0; k < arr.ndim(); ++k) offset += index[k] * arr.stride(k);
      const char* at = static_cast<const char*>(arr.data()) + offset * int64_t(arr.itemsize());
      v[size_t(i)] = t.bits == 32 ? *reinterpret_cast<const float*>(at) : float(*reinterpret_cast<const double*>(at));
      for (size_t k = arr.ndim(); k-- > 0;) {
        if (++index[k] < int64_t(arr.shape(k))) break;
        index[k] = 0;
      }
    }
    values.emplace_back(id, std::move(v));
  }
  if (!unknown.empty()) {
    std::string names;
    for (const std::string& u : unknown) names += (names.empty() ? "'" : ", '") + u + "'";
    throw InvalidArgument(str_cat("load_state_dict: the model has no tensor ", names));
  }
  std::string missing;
  for (const ParamInfo& p : a.params()) {
    bool found = false;
    for (const auto& [id, v] : values) found = found || a.info(id).name == p.name;
    if (!found) missing += (missing.empty() ? "'" : ", '") + p.name + "'";
  }
  if (!missing.empty()) throw InvalidArgument(str_cat("load_state_dict: missing ", missing));
  std::lock_guard<std::mutex> lock(m.mutex_);
  for (const auto& [id, v] : values) std::copy(v.begin(), v.end(), a.value(id));
  m.touch();
}

}  // namespace

void bind_model(nb::module_& mod) {
  nb::class_<PyModel>(mod, "Model",
                      "A linformer model: an embedding, a stack of blocks whose attention kinds the configuration "
                      "names, and a head (mlm, clm, classify). Build one from a configuration dict or load a "
                      "checkpoint with Model.from_checkpoint.")
      .def(nb::new_(&model_from_config), nb::arg("config"), nb::arg("seed") = 0, nb::arg("threads") = 0,
           nb::arg("precision") = "fp32", nb::arg("batch_size") = 16,
           "A fresh model of `config` (the dict config.json holds; missing keys take their defaults), its "
           "parameters initialised from `seed`. threads = 0: $LINFORMER_NUM_THREADS, else every core; "
           "precision 'fp32', 'bf16' or 'int8' (inference); batch_size: texts per forward in the text methods.")
      .def_static("from_checkpoint", &model_from_checkpoint, nb::arg("path"), nb::arg("threads") = 0,
                  nb::arg("precision") = "fp32", nb::arg("batch_size") = 16,
                  "Loads a checkpoint directory, or a run directory's newest checkpoint (linformer.IoError when "
                  "missing or corrupt).")
      .def("forward", &forward, nb::arg("tokens"), nb::arg("key_padding_mask") = nb::none(),
           nb::arg("return_hidden") = false,
           "Inference on token ids: tokens (B, n) or (n,), any integer dtype, numpy or torch (CPU). "
           "key_padding_mask: the same shape, nonzero = padding (PyTorch's convention). Returns the logits as "
           "float32 numpy: (B, n, vocab) for LM heads, (B, n_classes) for a classifier (the batch axis dropped "
           "for (n,) input); with return_hidden, (logits, hidden states (B, n, d_model)), the head's input. "
           "linformer.InvalidArgument for n > max_len or ids outside the vocabulary.")
      .def("__call__", &forward, nb::arg("tokens"), nb::arg("key_padding_mask") = nb::none(),
           nb::arg("return_hidden") = false, "The same as forward().")
      .def_prop_ro("config", [](const PyModel& m) { return to_python(m.config_.to_json()); },
                   "The configuration as a dict (config.json's content).")
      .def_prop_ro("task", [](const PyModel& m) { return m.config_.task; })
      .def_prop_ro("max_len", [](const PyModel& m) { return m.config_.max_len; })
      .def_prop_ro("vocab_size", [](const PyModel& m) { return m.config_.vocab_size; })
      .def_prop_ro("d_model", [](const PyModel& m) { return m.config_.d_model; })
      .def_prop_ro("num_parameters", [](const PyModel& m) { return m.handle_.arena->numel(); })
      .def_prop_ro("checkpoint_dir", [](const PyModel& m) { return m.checkpoint_; },
                   "The checkpoint directory it was loaded from ('' for a model built from a config).")
      .def("state_dict", &state_dict, "Every tensor as a float32 numpy array (a copy), by its PyTorch-style name.")
      .def("load_state_dict", &load_state_dict, nb::arg("state_dict"),
           "Replaces every tensor from name -> float32/float64 array (numpy or torch); refuses unknown or missing "
           "names and wrong shapes, naming them, before changing anything.")
      .def(
          "save",
          [](PyModel& m, const std::string& dir) {
            nb::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(m.mutex_);
            save_checkpoint(dir, m.config_, *m.handle_.arena, nullptr, json());
          },
          nb::arg("dir"), "Writes a model-only checkpoint (config.json, model.safetensors) atomically to `dir`.")
      .def(
          "predict_masked",
          [](PyModel& m, const nb::handle& texts, const std::string& mask) -> nb::object {
            LF_REQUIRE(mask.size() == 1, "`mask` must be one character, got '", mask, "'");
            bool single = false;
            std::vector<std::string> in = texts_of(texts, single), out;
            {
              nb::gil_scoped_release release;
              std::lock_guard<std::mutex> lock(m.mutex_);
              out = m.predictor().fill_masks(in, mask[0]);
            }
            if (single) return text_to_python(out[0]);
            nb::list filled;
            for (const std::string& t : out) filled.append(text_to_python(t));
            return filled;
          },
          nb::arg("texts"), nb::arg("mask") = "_",
          "Masked LM: each text with every `mask` byte replaced by the most likely byte, as `linformer predict` "
          "fills them (texts longer than max_len window by window). A str gives a str, a list a list.")
      .def(
          "embed",
          [](PyModel& m, const nb::handle& texts, const std::string& pooling) {
            bool single = false;
            std::vector<std::string> in = texts_of(texts, single);
            Embeddings e;
            {
              nb::gil_scoped_release release;
              std::lock_guard<std::mutex> lock(m.mutex_);
              e = m.predictor().embed(in, parse_pooling(pooling));
            }
            std::vector<size_t> shape{size_t(e.rows), size_t(e.dim)};
            if (single) shape.erase(shape.begin());
            return float_array(e.values.data(), shape);
          },
          nb::arg("texts"), nb::arg("pooling") = "mean",
          "The final hidden states pooled per text ('mean', 'first'/'cls', 'last', 'max'): float32 (len(texts), "
          "d_model), or (d_model,) for one str. Texts longer than max_len are truncated.")
      .def(
          "classify",
          [](PyModel& m, const nb::handle& texts) -> nb::object {
            bool single = false;
            std::vector<std::string> in = texts_of(texts, single);
            std::vector<Classification> out;
            {
              nb::gil_scoped_release release;
              std::lock_guard<std::mutex> lock(m.mutex_);
              out = m.predictor().classify(in);
            }
            nb::list results;
            for (const Classification& c : out) {
              nb::dict r;
              r["label"] = m.config_.class_name(c.label);
              r["class"] = c.label;
              r["probabilities"] = c.probabilities;
              r["truncated"] = c.truncated;
              results.append(r);
            }
            return single ? nb::object(results[0]) : nb::object(results);
          },
          nb::arg("texts"),
          "Classifier: per text a dict with 'label' (the class's name), 'class' (its index), 'probabilities' and "
          "'truncated'.")
      .def(
          "generate",
          [](PyModel& m, const std::string& prompt, int64_t max_new_tokens, double temperature, int64_t top_k,
             double top_p, double repetition_penalty, uint64_t seed, const std::vector<std::string>& stop,
             const std::optional<nb::callable>& on_token) {
            SamplingOptions o;
            o.max_new_tokens = max_new_tokens;
            o.temperature = temperature;
            o.top_k = top_k;
            o.top_p = top_p;
            o.repetition_penalty = repetition_penalty;
            o.seed = seed;
            o.stop = stop;
            o.validate();
            // Every token: back in Python for Ctrl-C (and the caller's callback); an exception there stops
            // the generation and is raised once the C++ call has returned.
            std::optional<nb::python_error> raised;
            auto each = [&](std::string_view piece) {
              nb::gil_scoped_acquire acquire;
              if (PyErr_CheckSignals() != 0) {
                raised.emplace();
                return false;
              }
              if (!on_token) return true;
              try {
                nb::object keep = (*on_token)(nb::bytes(piece.data(), piece.size()));
                return keep.is_none() || nb::cast<bool>(keep);
              } catch (nb::python_error& e) {
                raised.emplace(std::move(e));
                return false;
              }
            };
            std::string out;
            {
              nb::gil_scoped_release release;
              std::lock_guard<std::mutex> lock(m.mutex_);
              out = m.predictor().generate(prompt, o, each);
            }
            if (raised) throw std::move(*raised);
            return text_to_python(out);
          },
          nb::arg("prompt"), nb::arg("max_new_tokens") = 64, nb::arg("temperature") = 0.8, nb::arg("top_k") = 0,
          nb::arg("top_p") = 0.95, nb::arg("repetition_penalty") = 1.0, nb::arg("seed") = 1,
          nb::arg("stop") = std::vector<std::string>(), nb::arg("on_token") = nb::none(),
          "Causal LM: `prompt` continued by up to max_new_tokens bytes (as str; bytes that are not UTF-8 "
          "become U+FFFD), with the KV cache or the kind's own decoding state "
          "(docs/generation.md). on_token(piece: bytes) is called for each byte; returning False stops. "
          "Ctrl-C stops it and raises KeyboardInterrupt.");
}

}  // namespace lf::py
