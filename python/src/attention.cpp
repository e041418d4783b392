// One attention layer of any registered kind, for Python: what linformer.torch's modules run inside
// their torch.autograd.Function. The layer owns its parameters in its own ParamArena; the caller
// (the torch module, whose nn.Parameters are the state) writes them in before a call and reads the
// gradients out after a backward. Arrays come in without copies (numpy through the buffer protocol,
// torch through DLPack) when their dtype and layout fit, and are refused with a clear TypeError or
// ValueError otherwise; the GIL is released around forward and backward.
#include <array>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "bindings.h"
#include "linformer/attention.h"
#include "linformer/runtime.h"

namespace lf::py {
namespace {

using Array = nb::ndarray<nb::ro>;  // any device and dtype: check_array refuses with a clear message

// Row-major with no gaps: what the layer reads through a raw pointer.
bool c_contiguous(const Array& a) {
  int64_t expect = 1;
  for (size_t i = a.ndim(); i-- > 0;) {
    if (a.shape(i) != 1 && a.stride(i) != expect) return false;
    expect *= int64_t(a.shape(i));
  }
  return true;
}

// Checks an array argument: dtype (TypeError), rank, sizes where given (>= 0), C-contiguity (ValueError).
void check_array(const Array& a, const char* arg, nb::dlpack::dtype want, const std::vector<int64_t>& shape) {
  if (a.device_type() != nb::device::cpu::value)
    throw nb::type_error(str_cat("`", arg, "` must be on the CPU (the layer runs there)").c_str());
  if (a.dtype() != want)
    throw nb::type_error(str_cat("`", arg, "` must be float", int(want.bits), ", got ", describe(a)).c_str());
  bool ok = a.ndim() == shape.size();
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || int64_t(a.shape(i)) == shape[i];
  if (!ok) {
    std::string want_s = "(";
    for (size_t i = 0; i < shape.size(); ++i)
      want_s += (i ? ", " : "") + (shape[i] < 0 ? std::string("*") : std::to_string(shape[i]));
    throw nb::value_error(
        str_cat("`", arg, "` must have shape ", want_s, shape.size() == 1 ? ",)" : ")", ", got ", describe(a)).c_str());
  }
  if (!c_contiguous(a))
    throw nb::value_error(str_cat("`", arg, "` must be C-contiguous (the layer reads it in place); pass ",
                                      "x.contiguous() (torch) or np.ascontiguousarray(x)")
                              .c_str());
}

// A fresh NumPy array owning `v`'s contents (moved, not copied).
template <class T>
nb::object to_numpy(std::vector<T>&& v, std::vector<size_t> shape) {
  auto* owned = new std::vector<T>(std::move(v));
  nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return nb::cast(nb::ndarray<nb::numpy, T>(owned->data(), shape.size(), shape.data(), owner));
}

// The dtype-independent face of the layer; Core<T> below is the layer in float or double.
class CoreBase {
 public:
  virtual ~CoreBase() = default;
  virtual nb::object forward(Array x, nb::object context, nb::object mask, bool training, uint64_t seed,
                             bool keep) = 0;
  virtual nb::tuple backward(Array dout) = 0;
  virtual void set_parameter(const std::string& name, Array value) = 0;
  virtual nb::object get_parameter(const std::string& name) = 0;
  virtual const std::vector<ParamInfo>& params() const = 0;
};

template <class T>
class Core final : public CoreBase {
 public:
  Core(const AttentionSpec& spec, uint64_t init_seed, const RuntimeOptions* rt)
      : dims_(spec.dims), runtime_(rt) {
    layer_ = make_attention<T>(spec, arena_);
    arena_.allocate(/*with_grads=*/true);
    arena_.initialize(init_seed);
  }

  const std::vector<ParamInfo>& params() const override { return arena_.params(); }

  nb::object forward(Array x, nb::object context, nb::object mask, bool training, uint64_t seed,
                     bool keep) override {
    auto lock = exclusive();
    check_array(x, "x", nb::dtype<T>(), {-1, -1, dims_.d_model});
    const int64_t B = int64_t(x.shape(0)), n = int64_t(x.shape(1)), d = dims_.d_model;
    if (B == 0 || n == 0) throw nb::value_error("`x` must have a positive batch and length");
    if (n > dims_.max_len)
      throw nb::value_error(str_cat("`x` has ", n, " positions but the layer was built for at most ",
                                        dims_.max_len, " (seq_len / max_len)")
                                .c_str());
    std::optional<Array> c;  // cross-attention: keys and values from context (B, m, d)
    int64_t kv = n;
    if (!context.is_none()) {
      Array a;
      if (!nb::try_cast(context, a, /*convert=*/false))
        throw nb::type_error("`context` must be an array (numpy or torch) or None");
      check_array(a, "context", nb::dtype<T>(), {B, -1, d});
      kv = int64_t(a.shape(1));
      if (kv == 0 || kv > dims_.max_len)
        throw nb::value_error(
            str_cat("`context` has ", kv, " positions; the layer takes 1 to ", dims_.max_len).c_str());
      c = a;
    }
    std::vector<uint8_t> m;  // nonzero = padding, copied to bytes (bool or any integer dtype)
    if (!mask.is_none()) {
      nb::ndarray<nb::ro> a;
      if (!nb::try_cast(mask, a, /*convert=*/false))
        throw nb::type_error("`key_padding_mask` must be a bool or integer array (numpy or torch) or None");
      m = padding_array(a, B, kv, "key_padding_mask");
    }
    AttentionInput<T> in;
    in.x = static_cast<const T*>(x.data());
    in.B = B;
    in.n = n;
    in.context = c ? static_cast<const T*>(c->data()) : nullptr;
    in.m = kv;
    in.key_padding_mask = m.empty() ? nullptr : m.data();
    in.keep_for_backward = keep;
    std::vector<T> out(size_t(B * n * d));
    {
      nb::gil_scoped_release release;
      RuntimeScope scope(*runtime_);
      pending_ = false;
      layer_->forward(in, out.data(), training, seed);
    }
    // The layer reads x (and the context and mask) again in its backward: hold them until then.
    if (keep) {
      kept_x_ = x;
      kept_context_ = c;
      kept_mask_ = std::move(m);
      shape_ = {B, n, kv};
      pending_ = true;
    } else {
      release();
    }
    return to_numpy(std::move(out), {size_t(B), size_t(n), size_t(d)});
  }

  nb::tuple backward(Array dout) override {
    auto lock = exclusive();
    if (!pending_)
      throw nb::value_error(
          "backward() needs a forward() with keep_for_backward=True before it (one backward per forward)");
    check_array(dout, "dout", nb::dtype<T>(), {shape_[0], shape_[1], dims_.d_model});
    const int64_t B = shape_[0], n = shape_[1], m = shape_[2], d = dims_.d_model;
    std::vector<T> dx(size_t(B * n * d)), dcontext(kept_context_ ? size_t(B * m * d) : 0);
    {
      nb::gil_scoped_release release;
      RuntimeScope scope(*runtime_);
      arena_.zero_grad();
      pending_ = false;  // the layer releases its activations whatever happens
      layer_->backward(static_cast<const T*>(dout.data()), dx.data(), kept_context_ ? dcontext.data() : nullptr);
    }
    const bool cross = kept_context_.has_value();
    release();
    nb::dict grads;
    for (const ParamInfo& p : arena_.params()) {
      const T* g = arena_.grads() + p.offset;
      grads[p.name.c_str()] = to_numpy(std::vector<T>(g, g + p.numel), sizes(p));
    }
    nb::object dc = cross ? to_numpy(std::move(dcontext), {size_t(B), size_t(m), size_t(d)}) : nb::none();
    return nb::make_tuple(to_numpy(std::move(dx), {size_t(B), size_t(n), size_t(d)}), grads, dc);
  }

  void set_parameter(const std::string& name, Array value) override {
    auto lock = exclusive();
    const ParamInfo& p = info(name);
    check_array(value, name.c_str(), nb::dtype<T>(), p.shape);
    std::memcpy(arena_.values() + p.offset, value.data(), size_t(p.numel) * sizeof(T));
  }

  nb::object get_parameter(const std::string& name) override {
    auto lock = exclusive();
    const ParamInfo& p = info(name);
    const T* v = arena_.values() + p.offset;
    return to_numpy(std::vector<T>(v, v + p.numel), sizes(p));
  }

 private:
  const ParamInfo& info(const std::string& name) const {
    const int id = arena_.find(name);
    if (id < 0) {
      std::string known;
      for (const ParamInfo& p : arena_.params()) known += (known.empty() ? "" : ", ") + p.name;
      throw nb::key_error(str_cat("no parameter '", name, "' in this layer (it has: ", known, ")").c_str());
    }
    return arena_.info(id);
  }
  // The layer's lock, taken with the GIL released: a thread that holds it runs C++ without the GIL and
  // needs the GIL back to return, so waiting for it while holding the GIL would deadlock.
  std::unique_lock<std::mutex> exclusive() {
    std::unique_lock<std::mutex> lock(mu_, std::defer_lock);
    nb::gil_scoped_release release;
    lock.lock();
    return lock;
  }
  static std::vector<size_t> sizes(const ParamInfo& p) { return {p.shape.begin(), p.shape.end()}; }
  void release() {
    kept_x_.reset();
    kept_context_.reset();
    kept_mask_.clear();
  }

  AttentionDims dims_;
  const RuntimeOptions* runtime_;
  ParamArena<T> arena_;
  std::unique_ptr<Attention<T>> layer_;
  std::mutex mu_;
  bool pending_ = false;  // a forward kept its activations and awaits its backward
  std::optional<Array> kept_x_, kept_context_;
  std::vector<uint8_t> kept_mask_;
  std::array<int64_t, 3> shape_{};  // B, n, m of the kept forward
};

// linformer._core.AttentionLayer.
class AttentionLayer {
 public:
  AttentionLayer(const std::string& kind, int64_t d_model, int64_t n_heads, int64_t max_len, bool causal,
                 double dropout, nb::object options, const std::string& dtype, uint64_t seed, int threads) {
    spec_.kind = kind;
    spec_.dims = {d_model, n_heads, max_len, causal, dropout};
    if (!options.is_none()) {
      if (!nb::isinstance<nb::dict>(options)) throw nb::type_error("`options` must be a dict or None");
      spec_.options = from_python(options, "options");
    }
    set_threads(threads);
    resolved_ = validate_attention(spec_);
    if (dtype == "float32")
      core_ = std::make_unique<Core<float>>(spec_, seed, &runtime_);
    else if (dtype == "float64")
      core_ = std::make_unique<Core<double>>(spec_, seed, &runtime_);
    else
      throw nb::value_error(str_cat("`dtype` must be 'float32' or 'float64', got '", dtype, "'").c_str());
    dtype_ = dtype;
  }

  void set_threads(int threads) {
    RuntimeOptions rt;
    rt.threads = threads;
    rt.validate();
    runtime_ = rt;
  }

  CoreBase& core() { return *core_; }
  const AttentionSpec& spec() const { return spec_; }
  const json& resolved() const { return resolved_; }
  const std::string& dtype() const { return dtype_; }
  int threads() const { return runtime_.threads; }

 private:
  AttentionSpec spec_;
  json resolved_;
  std::string dtype_;
  RuntimeOptions runtime_;
  std::unique_ptr<CoreBase> core_;
};

}  // namespace

void bind_attention(nb::module_& m) {
  nb::class_<AttentionLayer>(m, "AttentionLayer",
                             "One attention layer of a registered kind, its parameters in its own arena "
                             "(PyTorch names, (out, in) weights). What linformer.torch's modules run.")
      .def(nb::init<const std::string&, int64_t, int64_t, int64_t, bool, double, nb::object, const std::string&,
                    uint64_t, int>(),
           nb::arg("kind"), nb::arg("d_model"), nb::arg("n_heads"), nb::arg("max_len"), nb::arg("causal") = false,
           nb::arg("dropout") = 0.0, nb::arg("options").none() = nb::none(), nb::arg("dtype") = "float32",
           nb::arg("seed") = 0, nb::arg("threads") = 0,
           "Builds a layer of `kind` (see linformer info --list-attention) with the kind's options dict; "
           "parameters initialised from `seed`. threads = 0: $LINFORMER_NUM_THREADS, else all cores.")
      .def_prop_ro("kind", [](const AttentionLayer& l) { return l.spec().kind; })
      .def_prop_ro("dtype", &AttentionLayer::dtype)
      .def_prop_ro("d_model", [](const AttentionLayer& l) { return l.spec().dims.d_model; })
      .def_prop_ro("n_heads", [](const AttentionLayer& l) { return l.spec().dims.n_heads; })
      .def_prop_ro("max_len", [](const AttentionLayer& l) { return l.spec().dims.max_len; })
      .def_prop_ro("causal", [](const AttentionLayer& l) { return l.spec().dims.causal; })
      .def_prop_ro("dropout", [](const AttentionLayer& l) { return l.spec().dims.dropout; })
      .def_prop_ro(
          "options",
          [](const AttentionLayer& l) { return to_python(l.resolved()); },
          "The kind's options with every default filled in.")
      .def_prop_rw("threads", &AttentionLayer::threads, &AttentionLayer::set_threads)
      .def(
          "parameters",
          [](AttentionLayer& l) {
            nb::list out;
            for (const ParamInfo& p : l.core().params()) {
              nb::list shape;
              for (int64_t s : p.shape) shape.append(s);
              out.append(nb::make_tuple(p.name, nb::tuple(shape), p.trainable));
            }
            return out;
          },
          "[(name, shape, trainable)] in declaration order.")
      .def(
          "set_parameter", [](AttentionLayer& l, const std::string& name, Array v) { l.core().set_parameter(name, v); },
          nb::arg("name"), nb::arg("value").noconvert(),
          "Copies `value` (the layer's dtype, the parameter's shape, C-contiguous) into the parameter.")
      .def(
          "get_parameter", [](AttentionLayer& l, const std::string& name) { return l.core().get_parameter(name); },
          nb::arg("name"), "A copy of the parameter as a NumPy array.")
      .def(
          "forward",
          [](AttentionLayer& l, Array x, nb::object mask, bool training, uint64_t seed, bool keep, nb::object context) {
            return l.core().forward(x, context, mask, training, seed, keep);
          },
          nb::arg("x").noconvert(), nb::arg("key_padding_mask").none() = nb::none(), nb::arg("training") = false,
          nb::arg("seed") = 0, nb::arg("keep_for_backward") = true, nb::arg("context").none() = nb::none(),
          "x (B, n, d) in the layer's dtype, C-contiguous, read in place -> out (B, n, d) NumPy. "
          "context (B, m, d): cross-attention where the kind supports it (keys and values from it). "
          "key_padding_mask (B, m) bool or integer (copied to bytes), nonzero = padding. training switches dropout on (drawn from `seed`). "
          "With keep_for_backward the layer keeps x and context (references) and its activations for one backward().")
      .def(
          "backward", [](AttentionLayer& l, Array dout) { return l.core().backward(dout); },
          nb::arg("dout").noconvert(),
          "Backward of the last forward(keep_for_backward=True): dout (B, n, d) -> (dx, {name: gradient}, "
          "dcontext or None); the gradients are those of this call alone.");
}

}  // namespace lf::py
