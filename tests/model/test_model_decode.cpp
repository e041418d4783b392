// Model-level incremental decoding (Model::begin_decode / decode): a causal LM decoding a sequence in
// chunks — a prompt's prefill, single steps, a chunk, single steps — gives the logits of forward()
// over the whole sequence, to rounding, for every causal kind and for the model's variants
// (convolution, positions, pre/post-LN, final norm, output heads, layers of mixed kinds); and the
// refusals: a model that is not a causal LM, a step past max_len, a foreign state, a bad token.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "linformer/model.h"
#include "test_util.h"

namespace lf {
namespace {

ModelConfig decode_config(std::vector<LayerAttention> attention) {
  ModelConfig c;
  c.task = "clm";
  c.vocab_size = 20;
  c.d_model = 16;
  c.n_layers = int64_t(attention.size());
  c.n_heads = 2;
  c.d_ff = 24;
  c.max_len = 48;
  c.dropout_embedding = c.dropout_attention = c.dropout_ffn = 0;
  c.conv_kernel = 5;  // the CLI's default
  c.attention = std::move(attention);
  return c;
}

// A 5-token prompt, 10 single steps, a chunk of 4, 5 single steps, a chunk of 9, 15 single steps: 48.
std::vector<int64_t> mixed_schedule() {
  std::vector<int64_t> s = {5};
  s.insert(s.end(), 10, 1);
  s.push_back(4);
  s.insert(s.end(), 5, 1);
  s.push_back(9);
  s.insert(s.end(), 15, 1);
  return s;
}

// Decodes B = 2 sequences along `schedule` and compares every step's logits with forward()'s rows,
// |decode − forward| <= tol · (1 + |forward|). Returns the state's bytes at the end.
template <class T>
double expect_decode_matches_forward(const ModelConfig& c, const std::vector<int64_t>& schedule, double tol) {
  SCOPED_TRACE(sizeof(T) == 4 ? "float" : "double");
  ParamArena<T> arena;
  Model<T> model(c, arena);
  arena.allocate(/*with_grads=*/false);
  arena.initialize(5);
  const int64_t B = 2, n = std::accumulate(schedule.begin(), schedule.end(), int64_t(0)), V = c.vocab_size;
  std::vector<int32_t> tokens(size_t(B * n));
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t((i * 7 + i / 5 + 3) % size_t(V));
  const T* full = model.forward(tokens.data(), nullptr, B, n, false, 0, /*keep_for_backward=*/false);
  const std::vector<T> expected(full, full + B * n * V);
  auto state = model.begin_decode(B);
  int64_t t0 = 0;
  for (const int64_t step : schedule) {
    std::vector<int32_t> chunk(size_t(B * step));
    for (int64_t b = 0; b < B; ++b)
      std::copy_n(tokens.begin() + b * n + t0, step, chunk.begin() + b * step);
    const T* logits = model.decode(*state, chunk.data(), step);
    double worst = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < step; ++j)
        for (int64_t v = 0; v < V; ++v) {
          const double want = double(expected[size_t(((b * n) + t0 + j) * V + v)]);
          worst = std::max(worst, std::abs(double(logits[(b * step + j) * V + v]) - want) / (1 + std::abs(want)));
        }
    EXPECT_LE(worst, tol) << "positions [" << t0 << ", " << t0 + step << ")";
    t0 += step;
    EXPECT_EQ(state->length(), t0);
  }
  return state->bytes();
}

template <class T>
void expect_all_schedules(const ModelConfig& c, double tol) {
  expect_decode_matches_forward<T>(c, mixed_schedule(), tol);
  expect_decode_matches_forward<T>(c, {48}, tol);                        // prefill only
  expect_decode_matches_forward<T>(c, std::vector<int64_t>(48, 1), tol);  // token by token from the start
}

std::vector<std::string> causal_kinds() {
  std::vector<std::string> kinds;
  for (const AttentionFactory& f : AttentionRegistry::instance().entries())
    if (f.info.support.causal) kinds.push_back(f.info.name);
  return kinds;
}

class EveryCausalKindModel : public testing::TestWithParam<std::string> {};

// Two layers of the kind with its default options, the CLI's convolution of 5 taps, learned positions.
TEST_P(EveryCausalKindModel, DecodeMatchesForward) {
  const ModelConfig c = decode_config({{GetParam(), json::object()}, {GetParam(), json::object()}});
  // The mixed schedule (prompt, steps, chunks) in both types and a whole prefill: a kind on the
  // recompute fallback reruns its forward per step, so token by token from the start is left to the
  // variants below.
  expect_decode_matches_forward<double>(c, mixed_schedule(), 1e-9);
  expect_decode_matches_forward<double>(c, {48}, 1e-9);
  expect_decode_matches_forward<float>(c, mixed_schedule(), 2e-4);
}

INSTANTIATE_TEST_SUITE_P(AllCausalKinds, EveryCausalKindModel, testing::ValuesIn(causal_kinds()),
                         [](const testing::TestParamInfo<std::string>& p) { return p.param; });

// f() throws lf::InvalidArgument whose message contains `part`.
template <class F>
void expect_invalid(F f, const std::string& part) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one mentioning '" << part << "'";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

const LayerAttention kFull{"full", {{"qkv_bias", true}}};

TEST(ModelDecode, ConvolutionKernels) {
  for (const int64_t K : {0, 1, 3, 5}) {
    SCOPED_TRACE(str_cat("conv_kernel ", K));
    ModelConfig c = decode_config({kFull, kFull});
    c.conv_kernel = K;
    expect_all_schedules<double>(c, 1e-9);
    expect_all_schedules<float>(c, 2e-4);
  }
}

TEST(ModelDecode, PositionsAtTheirOffset) {
  for (const std::string position : {"learned", "sinusoidal", "none"}) {
    SCOPED_TRACE(position);
    ModelConfig c = decode_config({kFull});
    c.position = position;
    expect_all_schedules<double>(c, 1e-9);
    expect_all_schedules<float>(c, 2e-4);
  }
}

TEST(ModelDecode, NormsAndOutputHeads) {
  auto variant = [](auto change) {
    ModelConfig c = decode_config({kFull, kFull});
    change(c);
    return c;
  };
  const std::vector<std::pair<std::string, ModelConfig>> variants = {
      {"post-LN", variant([](ModelConfig& c) { c.pre_ln = false; })},
      {"no final norm", variant([](ModelConfig& c) { c.final_norm = false; })},
      {"scale_tied_output", variant([](ModelConfig& c) { c.scale_tied_output = true; })},
      {"linear output head", variant([](ModelConfig& c) { c.output_head = "linear"; })},
  };
  for (const auto& [name, c] : variants) {
    SCOPED_TRACE(name);
    expect_all_schedules<double>(c, 1e-9);
    expect_all_schedules<float>(c, 2e-4);
  }
}

// Layers of different kinds, each with its own decoding state.
TEST(ModelDecode, LayersOfMixedKinds) {
  const ModelConfig c = decode_config({kFull, {"local", json::object()}, {"linear", json::object()}});
  expect_all_schedules<double>(c, 1e-9);
  expect_all_schedules<float>(c, 2e-4);
}

// The state's bytes: the layers' attention states plus each layer's conv_kernel − 1 rows per sequence.
TEST(ModelDecode, StateBytesCountTheConvolutionRows) {
  ModelConfig c = decode_config({kFull, kFull});
  c.conv_kernel = 4;
  ParamArena<float> arena;
  Model<float> model(c, arena);
  arena.allocate(false);
  arena.initialize(1);
  auto state = model.begin_decode(3);
  const double conv_rows = 2.0 * 3 * 3 * 16 * sizeof(float);  // layers × B × (K − 1) × d
  EXPECT_EQ(state->bytes(), state->attention_bytes() + conv_rows);
  const std::vector<int32_t> tokens(3 * 7, 4);
  model.decode(*state, tokens.data(), 7);
  EXPECT_GT(state->attention_bytes(), 0.0);
  EXPECT_EQ(state->bytes(), state->attention_bytes() + conv_rows);
  EXPECT_EQ(state->batch(), 3);
}

TEST(ModelDecode, Refusals) {
  ModelConfig c = decode_config({kFull});
  ParamArena<float> arena;
  Model<float> model(c, arena);
  arena.allocate(false);
  arena.initialize(1);
  expect_invalid([&] { model.begin_decode(0); }, "positive batch");
  auto state = model.begin_decode(1);
  std::vector<int32_t> tokens(49, 1);
  expect_invalid([&] { model.decode(*state, tokens.data(), 49); }, "max_len of 48");
  expect_invalid([&] { model.decode(*state, tokens.data(), 0); }, "at least one new token");
  tokens[2] = 20;  // one past the vocabulary
  expect_invalid([&] { model.decode(*state, tokens.data(), 3); }, "20");
  EXPECT_EQ(state->length(), 0);  // nothing moved
  model.decode(*state, tokens.data(), 2);
  expect_invalid([&] { model.decode(*state, tokens.data() + 3, 47); }, "after 2");
  ParamArena<float> other_arena;
  Model<float> other(c, other_arena);
  other_arena.allocate(false);
  expect_invalid([&] { other.decode(*state, tokens.data(), 1); }, "another model");

  ModelConfig mlm = c;
  mlm.task = "mlm";
  ParamArena<float> mlm_arena;
  Model<float> masked(mlm, mlm_arena);
  expect_invalid([&] { masked.begin_decode(1); }, "task is 'mlm'");
}

}  // namespace
}  // namespace lf
