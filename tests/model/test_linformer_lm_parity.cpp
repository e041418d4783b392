// Model-level parity with lucidrains' LinformerLM (the `linformer` package). The golden
// tests/data/golden/model/linformer_lm.safetensors (scripts/make_goldens.py, docs/goldens.md) holds
// its weights in our names and layouts, a token batch with targets, PyTorch's logits, the mean
// cross-entropy over every position, the gradient of that loss for every parameter, and the
// parameters after ten torch.optim.AdamW steps on the batch (weight decay on tensors of two or more
// dimensions only, as our trainer). The same model in our engine must reproduce all of it, in double
// tightly and in float loosely, with the library's own cross-entropy and AdamW step.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "cpu/adamw.h"
#include "cpu/cross_entropy.h"
#include "golden_util.h"
#include "io/safetensors.h"
#include "linformer/model.h"
#include "test_util.h"
#include "train/optimizer_step.h"

namespace lf {
namespace {

const std::string kGolden = LINFORMER_TEST_DATA "/golden/model/linformer_lm.safetensors";

// LinformerLM(num_tokens, dim, seq_len, depth, k, heads, dropout = 0) as our configuration: token and
// learned absolute position embeddings, pre-LN blocks of LinformerSelfAttention (one E and one F per
// layer, no Q/K/V biases) and a GELU FFN of width 4·dim, no final LayerNorm, and an untied
// to_logits = Linear(dim, num_tokens) with bias. The task is mlm only because it is non-causal; the
// loss below scores every position, as the golden's does.
ModelConfig linformer_lm_config(const json& lucid) {
  ModelConfig c;
  c.task = Task::MaskedLM;
  c.vocab_size = lucid.at("num_tokens").get<int64_t>();
  c.d_model = lucid.at("dim").get<int64_t>();
  c.n_layers = lucid.at("depth").get<int64_t>();
  c.n_heads = lucid.at("heads").get<int64_t>();
  c.d_ff = 4 * c.d_model;  // FeedForward's mult = 4
  c.max_len = lucid.at("seq_len").get<int64_t>();
  c.pre_ln = true;
  c.dropout_embedding = c.dropout_attention = c.dropout_ffn = 0;
  c.ln_eps = 1e-5;  // nn.LayerNorm's default
  c.position = "learned";
  c.final_norm = false;
  c.output_head = "linear";
  c.attention = {LayerAttention{"linformer", json{{"k", lucid.at("k")}, {"sharing", "headwise"}}}};
  return c;
}

struct Tolerances {
  double logits, loss, grads, adamw;
};

template <class T>
void check_parity(const SafeTensorsFile& f, const Tolerances& tol) {
  SCOPED_TRACE(sizeof(T) == sizeof(float) ? "float" : "double");
  const json spec = json::parse(f.metadata().at("spec"));
  const ModelConfig config = linformer_lm_config(spec.at("lucidrains"));
  const int64_t B = spec.at("B").get<int64_t>(), n = spec.at("n").get<int64_t>(), V = config.vocab_size;
  ASSERT_FALSE(spec.at("lucidrains").at("dropout").get<double>() > 0) << "the golden must be built without dropout";

  ParamArena<T> arena;
  Model<T> model(config, arena);
  arena.allocate();
  // Every parameter by name, both ways: the golden has none we lack and we have none it lacks.
  int loaded = 0;
  for (const std::string& name : f.names()) {
    if (name.rfind("param.", 0) != 0) continue;
    const std::string pname = name.substr(6);
    const int id = arena.find(pname);
    ASSERT_GE(id, 0) << "the golden has parameter '" << pname << "' but the model declares none of that name";
    const TensorView v = f.get(name);
    ASSERT_EQ(v.shape, arena.info(id).shape) << pname;
    const std::vector<T> values = to_vector<T>(v);
    std::copy(values.begin(), values.end(), arena.value(id));
    ++loaded;
  }
  ASSERT_EQ(loaded, arena.count()) << "some model parameter has no value in the golden";

  const std::vector<int32_t> tokens = to_vector<int32_t>(f.get("input.tokens"));
  const std::vector<int32_t> targets = to_vector<int32_t>(f.get("input.targets"));
  ASSERT_EQ(int64_t(tokens.size()), B * n);
  ASSERT_EQ(int64_t(targets.size()), B * n);

  // Forward: logits and the mean cross-entropy over every position.
  const std::vector<double> want_logits = to_vector<double>(f.get("output.logits"));
  ASSERT_EQ(int64_t(want_logits.size()), B * n * V);
  const T* logits = model.forward(tokens.data(), nullptr, B, n, /*training=*/true, /*seed=*/0);
  const double logits_err = test::max_rel_error(logits, want_logits.data(), B * n * V);
  EXPECT_LE(logits_err, tol.logits) << "logits";
  const double want_loss = to_vector<double>(f.get("output.loss")).at(0);
  const CrossEntropyResult ce = cross_entropy_forward(logits, targets.data(), B * n, V);
  const double loss_err = std::abs(ce.loss - want_loss) / std::abs(want_loss);
  EXPECT_LE(loss_err, tol.loss) << "loss " << ce.loss << " vs PyTorch's " << want_loss;

  // Backward: every parameter's gradient. A tensor is measured against max(its largest entry, 1e-3 ×
  // the largest gradient entry of the model), so that a tensor with small gradients is not judged
  // by the float rounding of the large ones it is summed from.
  std::vector<T> dlogits(size_t(B * n * V));
  cross_entropy_backward(logits, targets.data(), dlogits.data(), B * n, V);
  arena.zero_grad();
  model.backward(dlogits.data());
  double scale = 0;
  for (const ParamInfo& p : arena.params())
    for (const double g : to_vector<double>(f.get("grad.param." + p.name))) scale = std::max(scale, std::abs(g));
  double worst_grad = 0;
  std::string worst_name;
  for (const ParamInfo& p : arena.params()) {
    const std::vector<double> want = to_vector<double>(f.get("grad.param." + p.name));
    ASSERT_EQ(int64_t(want.size()), p.numel) << p.name;
    const double err = test::max_rel_error(arena.grads() + p.offset, want.data(), p.numel, 1e-3 * scale);
    EXPECT_LE(err, tol.grads) << "grad." << p.name;
    if (err >= worst_grad) worst_grad = err, worst_name = p.name;
  }

  // Ten AdamW steps on the same batch with the trainer's update (adamw_step_params).
  const json& adamw = spec.at("adamw");
  const AdamWOptions options{adamw.at("lr").get<double>(), adamw.at("betas").at(0).get<double>(),
                             adamw.at("betas").at(1).get<double>(), adamw.at("eps").get<double>(),
                             adamw.at("weight_decay").get<double>()};
  const int64_t steps = adamw.at("steps").get<int64_t>();
  const std::vector<double> want_losses = to_vector<double>(f.get("output.step_losses"));
  ASSERT_EQ(int64_t(want_losses.size()), steps);
  std::vector<T> m(size_t(arena.numel()), T(0)), v(size_t(arena.numel()), T(0));
  double worst_step_loss = 0;
  for (int64_t t = 1; t <= steps; ++t) {
    const T* lg = model.forward(tokens.data(), nullptr, B, n, /*training=*/true, /*seed=*/0);
    const double loss = cross_entropy_forward(lg, targets.data(), B * n, V).loss;
    worst_step_loss = std::max(worst_step_loss, std::abs(loss - want_losses[size_t(t - 1)]) / want_losses[size_t(t - 1)]);
    cross_entropy_backward(lg, targets.data(), dlogits.data(), B * n, V);
    arena.zero_grad();
    model.backward(dlogits.data());
    adamw_step_params(arena, m.data(), v.data(), t, options);
  }
  EXPECT_LE(worst_step_loss, tol.adamw) << "the losses of the AdamW steps";
  double worst_param = 0;
  std::string worst_param_name;
  for (const ParamInfo& p : arena.params()) {
    const std::vector<double> want = to_vector<double>(f.get("after_adamw." + p.name));
    ASSERT_EQ(int64_t(want.size()), p.numel) << p.name;
    const double err = test::max_rel_error(arena.values() + p.offset, want.data(), p.numel);
    EXPECT_LE(err, tol.adamw) << "after AdamW: " << p.name;
    if (err >= worst_param) worst_param = err, worst_param_name = p.name;
  }
  std::printf("[ golden   ] %-6s LinformerLM: logits %.3g, loss %.3g, worst gradient %.3g (%s), step losses %.3g, "
              "after %lld AdamW steps %.3g (%s)\n",
              sizeof(T) == sizeof(float) ? "float" : "double", logits_err, loss_err, worst_grad, worst_name.c_str(),
              worst_step_loss, (long long)steps, worst_param, worst_param_name.c_str());
}

TEST(LinformerLmParity, MatchesLucidrainsLinformerLM) {
  const SafeTensorsFile f = SafeTensorsFile::read(kGolden);
  test::expect_golden_versions(f);
  EXPECT_EQ(f.metadata().count("linformer_version"), 1u) << "the golden must say which linformer package built it";
  // Measured: double 3e-16 (logits), 2e-15 (gradients), 2e-14 (after ten steps); float 2e-7, 8e-7, 5e-6.
  // AdamW's normalised step turns a small gradient's rounding into a full-size update, hence float's
  // looser bound after the steps.
  check_parity<double>(f, {1e-12, 1e-12, 1e-10, 1e-10});
  check_parity<float>(f, {1e-5, 1e-5, 1e-4, 1e-3});
}

// The configuration options the parity needs are real: without them the model is not LinformerLM.
TEST(LinformerLmParity, ConfigOptionsAreValidatedAndSaved) {
  const SafeTensorsFile f = SafeTensorsFile::read(kGolden);
  const ModelConfig c = linformer_lm_config(json::parse(f.metadata().at("spec")).at("lucidrains"));
  const ModelConfig back = ModelConfig::from_json(c.to_json());
  EXPECT_FALSE(back.final_norm);
  EXPECT_EQ(back.output_head, "linear");
  ParamArena<double> arena;
  const Model<double> model(back, arena);
  EXPECT_GE(arena.find("lm_head.weight"), 0);
  EXPECT_GE(arena.find("lm_head.bias"), 0);
  EXPECT_LT(arena.find("final_norm.weight"), 0);
  EXPECT_LT(arena.find("mlm_head.dense.weight"), 0);
  // Defaults: what every earlier model had (and what a config.json without the keys means).
  json old = c.to_json();
  old.erase("final_norm");
  old.erase("output_head");
  const ModelConfig legacy = ModelConfig::from_json(old);
  EXPECT_TRUE(legacy.final_norm);
  EXPECT_EQ(legacy.output_head, "default");
  for (const auto& [key, value] : std::vector<std::pair<std::string, json>>{
           {"output_head", "tied"}, {"output_head", 1}, {"final_norm", "no"}}) {
    json j = c.to_json();
    j[key] = value;
    EXPECT_THROW(ModelConfig::from_json(j), InvalidArgument) << key << " = " << value.dump();
  }
  ModelConfig bad = c;
  bad.task = Task::Classify;
  bad.n_classes = 3;
  EXPECT_THROW(bad.validate(), InvalidArgument);  // a classifier has its own head
  bad = c;
  bad.scale_tied_output = true;
  EXPECT_THROW(bad.validate(), InvalidArgument);  // nothing tied to scale
  bad = c;
  bad.pre_ln = false;
  EXPECT_THROW(bad.validate(), InvalidArgument);  // post-LN has no final LayerNorm to drop
}

}  // namespace
}  // namespace lf
