// The head registry (one line per head; each is defined in its own file src/model/head_<name>.cpp) and
// what every head shares: its logits' shape, the tied output scale, and make_head.
#include <cmath>

#include "linformer/error.h"
#include "model/head.h"

namespace lf {

void register_mlm_head(HeadRegistry&);
void register_clm_head(HeadRegistry&);
void register_classify_head(HeadRegistry&);

HeadRegistry::HeadRegistry()
    : Registry("model head", [](const HeadFactory& f) -> const std::string& { return f.info.name; }, "task") {}

HeadRegistry& HeadRegistry::instance() {
  return first_use_instance<HeadRegistry>([](HeadRegistry& r) {
    register_mlm_head(r);
    register_clm_head(r);
    register_classify_head(r);
  });
}

const HeadInfo& head_info(const std::string& task) { return HeadRegistry::instance().get(task).info; }

int64_t logits_rows(const HeadInfo& info, int64_t B, int64_t n) {
  return info.targets == HeadTargets::kClasses ? B : B * n;
}

int64_t logits_per_row(const HeadInfo& info, const ModelConfig& config) {
  return info.targets == HeadTargets::kClasses ? config.n_classes : config.vocab_size;
}

template <class T>
T tied_output_scale(const ModelConfig& c) {
  return c.scale_tied_output ? T(1 / std::sqrt(double(c.d_model))) : T(1);
}
template float tied_output_scale<float>(const ModelConfig&);
template double tied_output_scale<double>(const ModelConfig&);

template <>
std::unique_ptr<Head<float>> make_head(const HeadContext<float>& ctx) {
  const HeadFactory& f = HeadRegistry::instance().get(ctx.config.task);
  return ctx.config.output_head == "linear" ? make_untied_linear_head(f.info, ctx) : f.make_f32(ctx);
}

template <>
std::unique_ptr<Head<double>> make_head(const HeadContext<double>& ctx) {
  const HeadFactory& f = HeadRegistry::instance().get(ctx.config.task);
  return ctx.config.output_head == "linear" ? make_untied_linear_head(f.info, ctx) : f.make_f64(ctx);
}

double head_activation_bytes(const ModelConfig& config, double B, double n, bool training) {
  if (config.output_head == "linear") return untied_linear_head_activation_bytes(config, B, n, training);
  return HeadRegistry::instance().get(config.task).activation_bytes(config, B, n, training);
}

}  // namespace lf
