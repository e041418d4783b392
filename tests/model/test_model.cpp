// The model: finite-difference gradients of every parameter for each head, pre- and post-LN, several
// attention kinds per layer, padding and dropout; causality of the causal LM; bad configurations.
#include <cmath>
#include <string>
#include <vector>

#include "attention/linear_core.h"
#include "cpu/embedding.h"
#include "linformer/model.h"
#include "test_util.h"

namespace lf {
namespace {

ModelConfig tiny_config(const std::string& task, bool pre_ln, std::vector<LayerAttention> attention) {
  ModelConfig c;
  c.task = task;
  c.vocab_size = 12;
  c.d_model = 8;
  c.n_layers = 2;
  c.n_heads = 2;
  c.d_ff = 12;
  c.max_len = 8;
  c.pre_ln = pre_ln;
  c.dropout_embedding = c.dropout_attention = c.dropout_ffn = 0;
  c.attention = std::move(attention);
  if (task == "classify") c.n_classes = 3;
  return c;
}

const LayerAttention kLinformer{"linformer", {{"k", 4}, {"qkv_bias", true}}};
const LayerAttention kFull{"full", {{"qkv_bias", true}}};
const LayerAttention kPerformer{"performer", {{"features", 6}, {"redraw_every", 2}, {"seed", 3}, {"chunk", 4}}};
const LayerAttention kLinear{"linear", {{"chunk", 4}}};

struct Batch {
  int64_t B = 2, n = 6;
  std::vector<int32_t> tokens;
  std::vector<uint8_t> padding;
};

Batch tiny_batch(bool pad) {
  Batch b;
  for (int64_t i = 0; i < b.B * b.n; ++i) b.tokens.push_back(int32_t((i * 5 + 3) % 12));
  if (pad) {
    b.padding.assign(size_t(b.B * b.n), 0);
    b.padding[size_t(b.n - 1)] = 1;
    b.padding[size_t(2 * b.n - 1)] = b.padding[size_t(2 * b.n - 2)] = 1;
  }
  return b;
}

void check_model_gradients(const ModelConfig& c, const Batch& batch, bool training) {
  ParamArena<double> arena;
  Model<double> model(c, arena);
  arena.allocate();
  arena.initialize(11);
  const int64_t rows = c.task == "classify" ? batch.B : batch.B * batch.n;
  const auto w = test::random_vector<double>(rows * model.logits_per_row(), 3);
  const uint8_t* pad = batch.padding.empty() ? nullptr : batch.padding.data();
  auto loss = [&] {
    const double* logits = model.forward(batch.tokens.data(), pad, batch.B, batch.n, training, 77);
    return test::weighted_sum(logits, w.data(), int64_t(w.size()));
  };
  loss();
  arena.zero_grad();
  model.backward(w.data());
  const std::vector<double> analytic(arena.grads(), arena.grads() + arena.numel());
  for (const ParamInfo& p : arena.params()) {
    if (!p.trainable) continue;
    // tol 1e-4 of each entry: the loss sums B·n·V weighted logits of either sign, whose rounding (about
    // 1e-14, far above 64 ulp of the small sum) limits the differences for entries far below the largest.
    test::expect_gradient_matches(loss, arena.values() + p.offset, p.numel, analytic.data() + p.offset, p.name, 1e-4);
  }
}

TEST(Model, GradientsForEveryHeadAndNorm) {
  for (const std::string task : {"mlm", "classify", "clm"})
    for (bool pre_ln : {true, false}) {
      SCOPED_TRACE(task + (pre_ln ? " pre-LN" : " post-LN"));
      const std::vector<LayerAttention> attn =
          task == "clm" ? std::vector<LayerAttention>{kFull} : std::vector<LayerAttention>{kLinformer, kFull};
      check_model_gradients(tiny_config(task, pre_ln, attn), tiny_batch(task == "classify"), false);
    }
}

TEST(Model, GradientsWithPaddingDropoutAndLayerwiseSharing) {
  ModelConfig c = tiny_config("mlm", true, {LayerAttention{"linformer", {{"k", 4}, {"sharing", "layerwise"}}}});
  c.dropout_embedding = 0.1;
  c.dropout_attention = 0.2;
  c.dropout_ffn = 0.3;
  check_model_gradients(c, tiny_batch(true), true);
  ModelConfig first = tiny_config("classify", false, {kLinformer});
  first.pooling = "first";
  check_model_gradients(first, tiny_batch(true), false);
}

// embedding_norm: false (tatp22's post-LN LinformerLM): no embeddings.norm.* tensors, the embedding sum
// goes straight into the first block (checked against a plain recomputation of the first hidden state),
// gradients of every parameter against finite differences; refused for pre-LN.
TEST(Model, PostLnWithoutEmbeddingNorm) {
  // Named lists, not braced ones in the loop: GCC 12's ASan with detect_stack_use_after_return crashes on those.
  const std::vector<std::string> tasks = {"mlm", "classify"};
  for (const std::string& task : tasks) {
    SCOPED_TRACE(task);
    ModelConfig c = tiny_config(task, false, {kLinformer, kFull});
    c.embedding_norm = false;
    check_model_gradients(c, tiny_batch(task == "classify"), false);
  }
  ModelConfig c = tiny_config("mlm", false, {kLinformer});
  c.embedding_norm = false;
  ParamArena<double> arena;
  Model<double> model(c, arena);
  arena.allocate();
  arena.initialize(5);
  EXPECT_LT(arena.find("embeddings.norm.weight"), 0);
  EXPECT_LT(arena.find("embeddings.norm.bias"), 0);
  const Batch batch = tiny_batch(false);
  std::vector<double> hidden;  // post-LN: layer 0's attention input is the block input itself
  model.set_attention_input_observer([&](int64_t layer, const double* x, int64_t B, int64_t n) {
    if (layer == 0) hidden.assign(x, x + B * n * c.d_model);
  });
  model.forward(batch.tokens.data(), nullptr, batch.B, batch.n, false, 1);
  ASSERT_EQ(int64_t(hidden.size()), batch.B * batch.n * c.d_model);
  const double* tok = arena.values() + arena.params()[size_t(arena.find("embeddings.token.weight"))].offset;
  const double* pos = arena.values() + arena.params()[size_t(arena.find("embeddings.position.weight"))].offset;
  for (int64_t r = 0; r < batch.B * batch.n; ++r)
    for (int64_t j = 0; j < c.d_model; ++j)
      ASSERT_EQ(hidden[size_t(r * c.d_model + j)],
                tok[batch.tokens[size_t(r)] * c.d_model + j] + pos[(r % batch.n) * c.d_model + j]);
  ModelConfig pre = tiny_config("mlm", true, {kLinformer});
  pre.embedding_norm = false;
  EXPECT_THROW(pre.validate(), InvalidArgument);
  const ModelConfig back = ModelConfig::from_json(c.to_json());
  EXPECT_FALSE(back.embedding_norm);
  json legacy = c.to_json();
  legacy.erase("embedding_norm");
  EXPECT_TRUE(ModelConfig::from_json(legacy).embedding_norm);
  // written only when off: the config.json of a model with the norm is what it was before the option
  EXPECT_FALSE(tiny_config("mlm", false, {kLinformer}).to_json().contains("embedding_norm"));
}

TEST(Model, LayerwiseSharingDeclaresOneProjection) {
  ParamArena<float> arena;
  Model<float> model(tiny_config("mlm", true, {LayerAttention{"linformer", {{"k", 4}, {"sharing", "layerwise"}}}}), arena);
  int proj = 0;
  for (const ParamInfo& p : arena.params()) proj += p.name.find("proj") != std::string::npos;
  EXPECT_EQ(proj, 1);
  EXPECT_GE(arena.find("shared_proj"), 0);
  EXPECT_GE(arena.find("embeddings.token.weight"), 0);
  EXPECT_GE(arena.find("layers.1.ffn.fc2.weight"), 0);
  EXPECT_EQ(arena.info(arena.find("layers.1.ffn.fc1.weight")).shape, (std::vector<int64_t>{12, 8}));  // (out, in)
}

TEST(Model, CausalLmDoesNotSeeTheFuture) {
  ParamArena<float> arena;
  const ModelConfig c = tiny_config("clm", true, {kFull});
  Model<float> model(c, arena);
  arena.allocate();
  arena.initialize(2);
  Batch a = tiny_batch(false), b = a;
  b.tokens[size_t(a.n - 1)] = (b.tokens[size_t(a.n - 1)] + 1) % 12;  // change sample 0's last token
  const std::vector<float> la(model.forward(a.tokens.data(), nullptr, a.B, a.n, false, 0),
                              model.forward(a.tokens.data(), nullptr, a.B, a.n, false, 0) + a.B * a.n * 12);
  const float* lb = model.forward(b.tokens.data(), nullptr, b.B, b.n, false, 0);
  for (int64_t t = 0; t + 1 < a.n; ++t)
    for (int64_t v = 0; v < 12; ++v) EXPECT_EQ(la[size_t(t * 12 + v)], lb[t * 12 + v]) << "position " << t;
  bool last_changed = false;
  for (int64_t v = 0; v < 12; ++v) last_changed |= la[size_t((a.n - 1) * 12 + v)] != lb[(a.n - 1) * 12 + v];
  EXPECT_TRUE(last_changed);
}

TEST(Model, RefusesBadConfigurationsAndInput) {
  ParamArena<float> arena;
  // A causal LM over Linformer, which mixes the future into its compressed keys.
  try {
    Model<float> m(tiny_config("clm", true, {kLinformer}), arena);
    ADD_FAILURE() << "accepted a causal Linformer";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("causal"), std::string::npos) << e.what();
  }
  ModelConfig bad = tiny_config("mlm", true, {kLinformer});
  bad.n_heads = 3;
  EXPECT_THROW(bad.validate(), InvalidArgument);
  bad = tiny_config("mlm", true, {LayerAttention{"linformer", {{"k", 64}}}});
  EXPECT_THROW(bad.validate(), InvalidArgument);
  bad = tiny_config("classify", true, {kFull});
  bad.n_classes = 1;
  EXPECT_THROW(bad.validate(), InvalidArgument);
  EXPECT_THROW(ModelConfig::from_json({{"d_model", 8}, {"n_heads", 2}, {"bogus", 1}}), InvalidArgument);
  EXPECT_THROW(ModelConfig::from_json({{"d_model", "wide"}}), InvalidArgument);

  ParamArena<float> ok_arena;
  Model<float> model(tiny_config("mlm", true, {kLinformer}), ok_arena);
  ok_arena.allocate();
  ok_arena.initialize(1);
  std::vector<int32_t> long_seq(9, 1), bad_ids(6, 99);
  EXPECT_THROW(model.forward(long_seq.data(), nullptr, 1, 9, false, 0), InvalidArgument);  // n > max_len
  EXPECT_THROW(model.forward(bad_ids.data(), nullptr, 1, 6, false, 0), InvalidArgument);   // id >= vocab
}

// Logits of a keep_for_backward = false forward (the lean inference path: FFN in row chunks, MLM head
// in one buffer) against the training forward's, for every head, both norm placements, padding, and
// B·n above the FFN's 2048-row chunk.
TEST(Model, InferenceForwardMatchesTrainingForward) {
  for (const std::string task : {"mlm", "classify", "clm"})
    for (bool pre_ln : {true, false})
      for (int64_t n : {int64_t(6), int64_t(1100)}) {
        SCOPED_TRACE(task + (pre_ln ? " pre-LN" : " post-LN") + " n=" + std::to_string(n));
        ModelConfig c = tiny_config(task, pre_ln, task == "clm" ? std::vector<LayerAttention>{kFull}
                                                                          : std::vector<LayerAttention>{kLinformer, kFull});
        c.max_len = n;
        ParamArena<float> arena;
        Model<float> model(c, arena);
        arena.allocate();
        arena.initialize(5);
        const int64_t B = 2;
        std::vector<int32_t> tokens(size_t(B * n));
        for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t((i * 7 + 1) % 12);
        std::vector<uint8_t> padding(size_t(B * n), 0);
        padding[size_t(2 * n - 1)] = 1;
        const uint8_t* pad = task == "clm" ? nullptr : padding.data();
        const int64_t count = (task == "classify" ? B : B * n) * model.logits_per_row();
        const float* p = model.forward(tokens.data(), pad, B, n, false, 0);
        const std::vector<float> kept(p, p + count);
        const float* q = model.forward(tokens.data(), pad, B, n, false, 0, /*keep_for_backward=*/false);
        LF_EXPECT_CLOSE(q, kept.data(), count, 2e-6);
        std::vector<float> dlogits(size_t(count), 0.f);
        EXPECT_THROW(model.backward(dlogits.data()), InvalidArgument);
      }
}

// Activation checkpointing recomputes each block before its backward: with dropout on, the gradients
// equal those of the plain training step bit for bit, and the logits too.
TEST(Model, ActivationCheckpointingGivesIdenticalGradients) {
  for (bool pre_ln : {true, false}) {
    SCOPED_TRACE(pre_ln ? "pre-LN" : "post-LN");
    ModelConfig c = tiny_config("mlm", pre_ln, {kLinformer, kFull, kLinformer});
    c.n_layers = 3;
    c.dropout_embedding = 0.1;
    c.dropout_attention = 0.2;
    c.dropout_ffn = 0.3;
    const Batch batch = tiny_batch(true);
    std::vector<float> grads[2], logits[2];
    for (int on = 0; on < 2; ++on) {
      ParamArena<float> arena;
      Model<float> model(c, arena);
      model.set_activation_checkpointing(on == 1);
      arena.allocate();
      arena.initialize(3);
      const int64_t count = batch.B * batch.n * c.vocab_size;
      const float* l = model.forward(batch.tokens.data(), batch.padding.data(), batch.B, batch.n, true, 42);
      logits[on].assign(l, l + count);
      const auto w = test::random_vector<float>(count, 8);
      arena.zero_grad();
      model.backward(w.data());
      grads[on].assign(arena.grads(), arena.grads() + arena.numel());
      EXPECT_THROW(model.backward(w.data()), InvalidArgument) << "one backward per forward";
    }
    EXPECT_EQ(logits[0], logits[1]);
    EXPECT_EQ(grads[0], grads[1]);
  }
}

TEST(Model, GradientsWithLinearAndPerformerLayers) {
  for (const std::string task : {"mlm", "clm"}) {
    SCOPED_TRACE(task);
    check_model_gradients(tiny_config(task, true, {kPerformer, kLinear}), tiny_batch(true), false);
  }
}

TEST(Model, TrainingStepReachesEveryLayer) {
  // Layer 0 is a Performer redrawing every 2 steps, layer 1 full attention (the default hook: nothing).
  ParamArena<float> arena;
  Model<float> model(tiny_config("mlm", true, {kPerformer, kFull}), arena);
  arena.allocate();
  arena.initialize(5);
  const int id = arena.find("layers.0.attn.features");
  ASSERT_GE(id, 0);
  auto draw = [](int64_t index) {
    std::vector<double> w(6 * 4);
    performer_orthogonal_features(3, "layers.0.attn.", index, 6, 4, w.data());
    return std::vector<float>(w.begin(), w.end());
  };
  auto features = [&] { return std::vector<float>(arena.value(id), arena.value(id) + 24); };
  EXPECT_EQ(features(), draw(0));
  const std::vector<float> others(arena.values(), arena.values() + arena.info(id).offset);
  for (int64_t step : {0, 1, 2, 3, 4, 9, 1}) {
    model.set_training_step(step);
    EXPECT_EQ(features(), draw(step / 2)) << "step " << step;
  }
  EXPECT_NE(draw(0), draw(1));
  EXPECT_EQ(std::vector<float>(arena.values(), arena.values() + arena.info(id).offset), others);  // nothing else moved
}

// The long-sequence options: sinusoidal or no positions, the depthwise convolution before attention
// (centred; causal for clm), and the d^{-1/2} scale of the tied LM head. Gradients of every parameter
// against finite differences, with padding and dropout, pre- and post-LN, each head.
ModelConfig with_long_sequence_options(ModelConfig c, const std::string& position, int64_t conv, bool scale) {
  c.position = position;
  c.conv_kernel = conv;
  c.scale_tied_output = scale;
  return c;
}

TEST(Model, GradientsWithPositionsConvolutionAndOutputScale) {
  for (const std::string task : {"mlm", "clm", "classify"})
    for (bool pre_ln : {true, false}) {
      SCOPED_TRACE(task + (pre_ln ? " pre-LN" : " post-LN"));
      const std::vector<LayerAttention> attn =
          task == "clm" ? std::vector<LayerAttention>{kFull} : std::vector<LayerAttention>{kLinformer, kFull};
      ModelConfig c = with_long_sequence_options(tiny_config(task, pre_ln, attn), "sinusoidal",
                                                 task == "clm" ? 2 : 3, true);
      check_model_gradients(c, tiny_batch(task != "clm"), false);
    }
  ModelConfig drop = with_long_sequence_options(tiny_config("mlm", true, {kLinformer}), "none", 5, true);
  drop.dropout_embedding = drop.dropout_attention = drop.dropout_ffn = 0.2;
  check_model_gradients(drop, tiny_batch(true), true);
}

TEST(Model, PositionAndConvolutionParameters) {
  ParamArena<float> arena;
  Model<float> model(with_long_sequence_options(tiny_config("mlm", true, {kFull}), "sinusoidal", 3, true), arena);
  EXPECT_LT(arena.find("embeddings.position.weight"), 0);  // nothing learned for sinusoidal positions
  const int conv = arena.find("layers.1.attn_conv.weight");
  ASSERT_GE(conv, 0);
  EXPECT_EQ(arena.info(conv).shape, (std::vector<int64_t>{8, 1, 3}));  // nn.Conv1d(d, d, 3, groups=d)
  EXPECT_EQ(arena.info(arena.find("layers.1.attn_conv.bias")).shape, (std::vector<int64_t>{8}));
  ParamArena<float> plain;
  Model<float> legacy(tiny_config("mlm", true, {kFull}), plain);
  EXPECT_GE(plain.find("embeddings.position.weight"), 0);
  EXPECT_LT(plain.find("layers.0.attn_conv.weight"), 0);
}

// Sinusoidal positions add exactly sin(t·ω_i), cos(t·ω_i) to the token embedding: with a zero token
// table the embedding sum is the table itself (read through the model's logits would mix it, so
// through the kernel; the model test above covers its use).
TEST(Model, SinusoidalPositionsFormula) {
  const int64_t B = 2, n = 5, d = 6;
  std::vector<double> out(size_t(B * n * d), 1.0);
  sinusoidal_positions_add(out.data(), B, n, d);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < d / 2; ++i) {
        const double w = std::pow(10000.0, -2.0 * double(i) / double(d));
        EXPECT_DOUBLE_EQ(out[size_t((b * n + t) * d + 2 * i)], 1.0 + std::sin(double(t) * w));
        EXPECT_DOUBLE_EQ(out[size_t((b * n + t) * d + 2 * i + 1)], 1.0 + std::cos(double(t) * w));
      }
}

// Positions from an offset are the table's rows from there (a decoded prefix's new tokens).
TEST(Model, SinusoidalPositionsAtAnOffset) {
  const int64_t B = 2, n = 7, d = 6, offset = 4;
  std::vector<double> whole(size_t(B * n * d), 0.0), tail(size_t(B * (n - offset) * d), 0.0);
  sinusoidal_positions_add(whole.data(), B, n, d);
  sinusoidal_positions_add(tail.data(), B, n - offset, d, offset);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t e = 0; e < (n - offset) * d; ++e)
      EXPECT_EQ(tail[size_t(b * (n - offset) * d + e)], whole[size_t(b * n * d + offset * d + e)]);
  EXPECT_THROW(sinusoidal_positions_add(tail.data(), B, 1, d, -1), InvalidArgument);
}

// The convolution sees no padding: changing the tokens behind the padding changes no real position's
// logits (it would through the convolution's window if padded rows were not zeroed).
TEST(Model, ConvolutionIgnoresPaddedPositions) {
  ParamArena<float> arena;
  const ModelConfig c = with_long_sequence_options(tiny_config("mlm", true, {kLinformer, kFull}), "sinusoidal", 5, false);
  Model<float> model(c, arena);
  arena.allocate();
  arena.initialize(4);
  Batch a = tiny_batch(true), b = a;
  b.tokens[size_t(a.n - 1)] = (b.tokens[size_t(a.n - 1)] + 3) % 12;  // sample 0's padded last position
  const int64_t V = 12, count = a.B * a.n * V;
  const float* p = model.forward(a.tokens.data(), a.padding.data(), a.B, a.n, false, 0);
  const std::vector<float> la(p, p + count);
  const float* lb = model.forward(b.tokens.data(), b.padding.data(), b.B, b.n, false, 0);
  for (int64_t r = 0; r < a.B * a.n; ++r) {
    if (a.padding[size_t(r)]) continue;
    for (int64_t v = 0; v < V; ++v) EXPECT_EQ(la[size_t(r * V + v)], lb[r * V + v]) << "row " << r;
  }
}

// A causal LM with a (causal) convolution still never sees the future.
TEST(Model, CausalConvolutionDoesNotSeeTheFuture) {
  ParamArena<float> arena;
  const ModelConfig c = with_long_sequence_options(tiny_config("clm", true, {kFull}), "sinusoidal", 4, true);
  Model<float> model(c, arena);
  arena.allocate();
  arena.initialize(2);
  Batch a = tiny_batch(false), b = a;
  b.tokens[size_t(3)] = (b.tokens[size_t(3)] + 1) % 12;  // sample 0, position 3
  const int64_t V = 12;
  const float* p = model.forward(a.tokens.data(), nullptr, a.B, a.n, false, 0);
  const std::vector<float> la(p, p + a.B * a.n * V);
  const float* lb = model.forward(b.tokens.data(), nullptr, b.B, b.n, false, 0);
  for (int64_t t = 0; t < 3; ++t)
    for (int64_t v = 0; v < V; ++v) EXPECT_EQ(la[size_t(t * V + v)], lb[t * V + v]) << "position " << t;
}

// The tied head's scale: with N(0, 1) embeddings the first masked-LM loss is near ln V with the scale
// (logits of unit size) and far above it without (logits of size √d).
TEST(Model, ScaledTiedOutputStartsNearUniform) {
  for (bool scale : {false, true}) {
    ModelConfig c = with_long_sequence_options(tiny_config("mlm", true, {kFull}), "learned", 0, scale);
    c.vocab_size = 260;
    c.d_model = 128;
    c.n_heads = 4;
    c.d_ff = 256;
    ParamArena<float> arena;
    Model<float> model(c, arena);
    arena.allocate();
    arena.initialize(9);
    const int64_t B = 4, n = 8, V = c.vocab_size;
    std::vector<int32_t> tokens(size_t(B * n));
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t((i * 37 + 5) % 256);
    const float* logits = model.forward(tokens.data(), nullptr, B, n, false, 0);
    double loss = 0;
    for (int64_t r = 0; r < B * n; ++r) {
      double mx = -1e30, s = 0;
      for (int64_t v = 0; v < V; ++v) mx = std::max(mx, double(logits[r * V + v]));
      for (int64_t v = 0; v < V; ++v) s += std::exp(double(logits[r * V + v]) - mx);
      loss += mx + std::log(s) - double(logits[r * V + tokens[size_t(r)]]);
    }
    loss /= double(B * n);
    if (scale)
      EXPECT_LT(std::abs(loss - std::log(double(V))), 1.0) << loss;
    else
      EXPECT_GT(loss, 3 * std::log(double(V))) << loss;
  }
}

TEST(ModelConfig, LongSequenceOptionsValidatedAndRoundTripped) {
  ModelConfig c = with_long_sequence_options(tiny_config("mlm", true, {kFull}), "sinusoidal", 3, true);
  const ModelConfig back = ModelConfig::from_json(c.to_json());
  EXPECT_EQ(back.position, "sinusoidal");
  EXPECT_EQ(back.conv_kernel, 3);
  EXPECT_TRUE(back.scale_tied_output);
  // A file from before these options: the behaviour those models had.
  json old = c.to_json();
  old.erase("position");
  old.erase("conv_kernel");
  old.erase("scale_tied_output");
  const ModelConfig legacy = ModelConfig::from_json(old);
  EXPECT_EQ(legacy.position, "learned");
  EXPECT_EQ(legacy.conv_kernel, 0);
  EXPECT_FALSE(legacy.scale_tied_output);
  for (const auto& [key, value] : std::vector<std::pair<std::string, json>>{
           {"position", "rotary"}, {"conv_kernel", 4}, {"conv_kernel", -1}, {"scale_tied_output", "yes"}}) {
    json j = c.to_json();
    j[key] = value;
    EXPECT_THROW(ModelConfig::from_json(j), InvalidArgument) << key << " = " << value.dump();
  }
  json causal = with_long_sequence_options(tiny_config("clm", true, {kFull}), "none", 4, false).to_json();
  EXPECT_EQ(ModelConfig::from_json(causal).conv_kernel, 4);  // a causal convolution may have an even size
}

TEST(ModelConfig, JsonRoundTripAndSingleAttentionEntry) {
  ModelConfig c = tiny_config("classify", false, {kLinformer, kFull});
  const ModelConfig back = ModelConfig::from_json(c.to_json());
  EXPECT_EQ(back.to_json(), c.to_json());
  const ModelConfig one = ModelConfig::from_json(
      {{"d_model", 8}, {"n_heads", 2}, {"max_len", 8}, {"n_layers", 3}, {"attention", {{"kind", "full"}}}});
  EXPECT_EQ(one.attention_spec(2).kind, "full");
  EXPECT_EQ(one.attention_spec(2).prefix, "layers.2.attn.");
}


// Linformer's default k changed with config version 2: a version-1 checkpoint config without k keeps
// the k its weights were made with, min(256, max_len); a current or hand-written one gets the new default.
TEST(ModelConfig, VersionOneCheckpointConfigKeepsItsLinformerK) {
  json j = {{"format", "linformer-model"}, {"version", 1}, {"d_model", 16}, {"n_heads", 2}, {"max_len", 128},
            {"n_layers", 2}, {"attention", {{"kind", "linformer"}}}};
  const ModelConfig old = ModelConfig::from_json(j);
  ASSERT_EQ(old.attention.size(), 1u) << "one entry for every layer";
  EXPECT_EQ(old.attention[0].options.value("k", -1), 128);
  j["version"] = 2;
  EXPECT_FALSE(ModelConfig::from_json(j).attention[0].options.contains("k"));
  j.erase("format");
  j["version"] = 1;
  EXPECT_FALSE(ModelConfig::from_json(j).attention[0].options.contains("k")) << "a hand-written config is not a checkpoint's";
  j["attention"] = {{"kind", "linformer"}, {"options", {{"k", 8}}}};
  j["format"] = "linformer-model";
  EXPECT_EQ(ModelConfig::from_json(j).attention[0].options["k"], 8) << "an explicit k is kept";
  EXPECT_EQ(ModelConfig::from_json(old.to_json()).to_json()["version"], 2);
  j["version"] = 3;
  EXPECT_THROW(ModelConfig::from_json(j), InvalidArgument);
}

}  // namespace
}  // namespace lf
