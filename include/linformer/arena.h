// Parameters in one arena. Layers declare their parameters by name, shape and initialiser; the arena
// then allocates one buffer for all values and one for all gradients, and layers reach their tensors
// through the ids it handed out. A checkpoint is one pass over the arena, zeroing gradients one fill,
// the optimizer one flat loop. Shapes are PyTorch's: a linear weight is (out, in).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "linformer/error.h"
#include "linformer/rng.h"
#include "linformer/tensor.h"

namespace lf {

// How a parameter starts. Random draws come from the counter RNG keyed by (seed, stream), where the
// stream is the parameter's own name unless `stream` names another: two tensors with one stream get
// the same random matrix (scaled each by its own `scale`), which is how Linformer's fixed projections
// E = δR and F = e^{-δ}R share R. Custom fills the whole tensor by a function of the seed (e.g.
// Performer's orthogonal random features, which a layer also redraws itself during training).
struct Init {
  enum Kind { Zeros, Ones, Uniform, Normal, Custom };
  // Custom: writes numel values (in double, in the parameter's row-major order) for the arena's seed.
  using Fill = std::function<void(uint64_t seed, double* out, int64_t numel)>;
  Kind kind = Zeros;
  double a = 0;        // Uniform: bound (draws in [-a, a]); Normal: standard deviation
  double scale = 1;    // multiplies every drawn value
  std::string stream;  // empty: the parameter's name
  Fill fill;           // Custom only

  static Init zeros() { return {Zeros, 0, 1, {}, {}}; }
  static Init ones() { return {Ones, 0, 1, {}, {}}; }
  static Init uniform(double bound) { return {Uniform, bound, 1, {}, {}}; }
  static Init normal(double stddev, double scale = 1, std::string stream = {}) {
    return {Normal, stddev, scale, std::move(stream), {}};
  }
  static Init custom(Fill fill) { return {Custom, 0, 1, {}, std::move(fill)}; }
  // Xavier/Glorot uniform for a (fan_out, fan_in) weight, with PyTorch's gain convention.
  static Init xavier_uniform(int64_t fan_out, int64_t fan_in, double gain = 1) {
    return uniform(gain * std::sqrt(6.0 / double(fan_in + fan_out)));
  }
};

struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0;  // into the arena's value and gradient buffers, in elements
  int64_t numel = 0;
  Init init;
  bool trainable = true;  // fixed tensors (e.g. Theorem 2's random projections) are saved, not trained
};

inline int64_t shape_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

inline std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}

template <class T>
class ParamArena {
 public:
  using Id = int;

  // Values and gradients live on `device` (what their views carry). Initialisation and zero_grad()
  // write on the host, so a device arena needs its backend's fill or a copy from the host first.
  explicit ParamArena(Device device = Device::CPU) : device_(device) {}
  Device device() const { return device_; }

  // Declares a parameter and returns its id. With shared = true, a parameter already declared under
  // the same name (and shape) is returned instead of a new one: this is how a tensor is shared
  // between layers (Linformer's layerwise E). Gradients of a shared tensor accumulate from each user.
  Id declare(const std::string& name, std::vector<int64_t> shape, Init init, bool trainable = true,
             bool shared = false) {
    LF_REQUIRE(!allocated_, "parameter '", name, "' declared after the arena was allocated");
    for (int64_t s : shape) LF_REQUIRE(s > 0, "parameter '", name, "' has a non-positive size in ", shape_str(shape));
    auto it = index_.find(name);
    if (it != index_.end()) {
      ParamInfo& p = params_[it->second];
      LF_REQUIRE(shared, "parameter '", name, "' declared twice");
      LF_REQUIRE(p.shape == shape, "shared parameter '", name, "' declared with shape ", shape_str(shape),
                 " but it has ", shape_str(p.shape));
      return it->second;
    }
    ParamInfo p;
    p.name = name;
    // Sizes come from configs: an absurd one is refused here rather than wrapping around.
    int64_t numel = 1;
    for (int64_t s : shape)
      LF_REQUIRE(!__builtin_mul_overflow(numel, s, &numel), "parameter '", name, "' of shape ", shape_str(shape),
                 " is too large");
    int64_t new_total = 0;
    LF_REQUIRE(!__builtin_add_overflow(total_, numel, &new_total), "parameter '", name,
               "' makes the model's parameter count overflow");
    p.numel = numel;
    p.shape = std::move(shape);
    p.offset = total_;
    p.init = std::move(init);
    p.trainable = trainable;
    total_ = new_total;
    params_.push_back(std::move(p));
    index_[params_.back().name] = Id(params_.size() - 1);
    return Id(params_.size() - 1);
  }

  // Allocates values and gradients (both zero) for everything declared.
  // with_grads = false is for inference: no gradient buffer (grad() and grads() then throw), half
  // the parameter memory.
  void allocate(bool with_grads = true) {
    values_ = Buffer<T>(total_, device_);
    grads_ = Buffer<T>(with_grads ? total_ : 0, device_);
    allocated_ = true;
    has_grads_ = with_grads;
  }

  // Fills every parameter from its initialiser; depends only on the seed and the names.
  void initialize(uint64_t seed) {
    LF_REQUIRE(allocated_, "initialize() before allocate()");
    require_host("initialize");
    for (const ParamInfo& p : params_) {
      T* v = values_.data() + p.offset;
      if (p.init.kind == Init::Custom) {
        LF_REQUIRE(bool(p.init.fill), "parameter '", p.name, "' has a custom initialiser without a function");
        std::vector<double> x(static_cast<size_t>(p.numel), 0.0);
        p.init.fill(seed, x.data(), p.numel);
        for (int64_t i = 0; i < p.numel; ++i) v[i] = T(x[size_t(i)] * p.init.scale);
        continue;
      }
      const uint64_t stream = stream_id(p.init.stream.empty() ? p.name : p.init.stream);
      for (int64_t i = 0; i < p.numel; ++i) {
        double x = 0;
        switch (p.init.kind) {
          case Init::Zeros: x = 0; break;
          case Init::Ones: x = 1; break;
          case Init::Uniform: x = (2 * uniform01_f64(seed, stream, uint64_t(i)) - 1) * p.init.a; break;
          case Init::Normal: x = normal_f64(seed, stream, uint64_t(i)) * p.init.a; break;
          case Init::Custom: break;  // handled above
        }
        v[i] = T(x * p.init.scale);
      }
    }
  }

  void zero_grad() {
    require_host("zero_grad");
    std::fill_n(grads_.data(), grads_.size(), T(0));
  }

  T* value(Id id) { return values_.data() + params_[size_t(id)].offset; }
  const T* value(Id id) const { return values_.data() + params_[size_t(id)].offset; }
  T* grad(Id id) {
    LF_REQUIRE(has_grads_, "parameter gradients requested from an arena allocated for inference");
    return grads_.data() + params_[size_t(id)].offset;
  }
  const ParamInfo& info(Id id) const { return params_[size_t(id)]; }
  // A parameter's values or gradient as a view of its declared shape (what ops take); id < 0, a
  // parameter the layer does not have (a bias switched off), is the empty view.
  TensorView<const T> value_view(Id id) const { return id < 0 ? TensorView<const T>() : shaped(value(id), id); }
  TensorView<T> grad_view(Id id) { return id < 0 ? TensorView<T>() : shaped(grad(id), id); }
  // The id of a parameter by name, or -1.
  Id find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? -1 : it->second;
  }
  int count() const { return int(params_.size()); }
  int64_t numel() const { return total_; }
  bool allocated() const { return allocated_; }
  T* values() { return values_.data(); }
  bool has_grads() const { return has_grads_; }
  T* grads() {
    LF_REQUIRE(has_grads_, "parameter gradients requested from an arena allocated for inference");
    return grads_.data();
  }
  const T* grads() const {
    LF_REQUIRE(has_grads_, "parameter gradients requested from an arena allocated for inference");
    return grads_.data();
  }
  const std::vector<ParamInfo>& params() const { return params_; }

 private:
  template <class P>
  TensorView<P> shaped(P* data, Id id) const {
    const std::vector<int64_t>& s = params_[size_t(id)].shape;
    LF_REQUIRE(!s.empty() && s.size() <= size_t(kMaxRank), "parameter '", params_[size_t(id)].name, "' of rank ",
               s.size(), " has no view");
    switch (s.size()) {
      case 1: return TensorView<P>(data, {s[0]}, device_);
      case 2: return TensorView<P>(data, {s[0], s[1]}, device_);
      case 3: return TensorView<P>(data, {s[0], s[1], s[2]}, device_);
      default: return TensorView<P>(data, {s[0], s[1], s[2], s[3]}, device_);
    }
  }
  // The host writes of this arena (zero-filling, initialisers) are the CPU's; another device's
  // arena gets them with its backend.
  void require_host(const char* what) const {
    if (device_ != Device::CPU)
      throw Error(str_cat("ParamArena::", what, ": not implemented for device ", device_name(device_)));
  }
  std::vector<ParamInfo> params_;
  std::unordered_map<std::string, Id> index_;
  Device device_;
  Buffer<T> values_, grads_;
  int64_t total_ = 0;
  bool allocated_ = false, has_grads_ = false;
};

}  // namespace lf
