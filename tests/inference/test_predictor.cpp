// The inference API on small random checkpoints: batched results equal one text at a time, the
// embeddings equal the final hidden states pooled by hand, masks are filled where they are, long
// texts are windowed or truncated, generation follows the sampler, and wrong uses are refused.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "linformer/attention.h"
#include "linformer/checkpoint.h"
#include "linformer/error.h"
#include "linformer/inference.h"
#include "linformer/model.h"
#include "linformer/tokenizer.h"
#include "linformer/tokens.h"
#include "test_util.h"
#include "tiny_model_config.h"

namespace lf {
namespace {

// A byte-vocabulary model small enough for a test: 2 layers of d 16, max_len 32.
ModelConfig small_config(const std::string& task, const std::string& kind = "linformer") {
  return test::small_byte_model_config(task, kind, 2, 32);
}

std::string save_random(const std::string& dir, const ModelConfig& c, uint64_t seed = 5) {
  test::save_random_checkpoint(dir, c, seed);
  return dir;
}

PredictorOptions batch(int64_t b) {
  PredictorOptions o;
  o.batch_size = b;
  o.runtime.threads = 1;
  return o;
}

// Texts of many lengths, longest first so that sorting by length moves them around.
const std::vector<std::string> kTexts = {"a much longer text of thirty-one", "the cat sat on the mat", "x",
                                         "hello world", "hello world", "ab", "twelve bytes", "seventeen bytes!!"};

class PredictorTest : public test::TempDirTest {
 protected:
  PredictorTest() : TempDirTest("predictor") {}
};

TEST_F(PredictorTest, EmbeddingsEqualTheFinalHiddenStatesPooledByHand) {
  const ModelConfig c = small_config("mlm");
  Predictor p(save_random(path("ck"), c), batch(4));
  ParamArena<float> arena;
  Model<float> model(c, arena);
  arena.allocate(false);
  load_checkpoint_weights(path("ck"), arena, nullptr);
  for (Pooling pooling : {Pooling::kMean, Pooling::kFirst, Pooling::kLast, Pooling::kMax}) {
    const Embeddings e = p.embed(kTexts, pooling);
    ASSERT_EQ(e.rows, int64_t(kTexts.size()));
    ASSERT_EQ(e.dim, 16);
    ASSERT_EQ(e.values.size(), kTexts.size() * 16);
    for (size_t i = 0; i < kTexts.size(); ++i) {
      const std::vector<int32_t> ids = encode(kTexts[i]);
      const int64_t n = int64_t(ids.size());
      model.forward(ids.data(), nullptr, 1, n, false, 0, false);
      const float* h = model.final_hidden();
      for (int64_t k = 0; k < 16; ++k) {
        double want = pooling == Pooling::kMax ? -1e300 : 0;
        for (int64_t t = 0; t < n; ++t) {
          const double v = h[t * 16 + k];
          if (pooling == Pooling::kMean) want += v / double(n);
          if (pooling == Pooling::kMax) want = std::max(want, v);
        }
        if (pooling == Pooling::kFirst) want = h[k];
        if (pooling == Pooling::kLast) want = h[(n - 1) * 16 + k];
        EXPECT_NEAR(e.values[i * 16 + size_t(k)], want, 1e-4 * (1 + std::abs(want)))
            << pooling_name(pooling) << " text " << i << " dim " << k;
      }
    }
  }
}

// A host program's model in memory (the Python package's) predicts as its checkpoint does, and weights of
// another configuration are refused before anything runs.
TEST_F(PredictorTest, FromWeightsInMemoryEqualsFromTheCheckpoint) {
  const ModelConfig c = small_config("mlm");
  const std::string dir = save_random(path("ck"), c);
  ParamArena<float> arena;
  Model<float> model(c, arena);
  arena.allocate(/*with_grads=*/false);
  load_checkpoint_weights(dir, arena, nullptr);
  Predictor from_disk(dir, batch(4)), from_memory(c, arena, batch(4));
  EXPECT_EQ(from_memory.checkpoint_dir(), "");
  const std::vector<std::string> texts = {"the c_t sat on the m_t", "h_llo"};
  EXPECT_EQ(from_memory.fill_masks(texts), from_disk.fill_masks(texts));
  // The predictor holds a copy: changing the arena afterwards does not reach it.
  std::fill_n(arena.values(), arena.numel(), 0.f);
  EXPECT_EQ(from_memory.fill_masks(texts), from_disk.fill_masks(texts));

  ModelConfig wider = c;
  wider.d_ff *= 2;
  ParamArena<float> other;
  Model<float> other_model(wider, other);
  other.allocate(false);
  test::expect_throw_containing<InvalidArgument>([&] { Predictor(c, other, batch(4)); }, "are not those of the model");
  ParamArena<float> unallocated;
  Model<float> unallocated_model(c, unallocated);
  test::expect_throw_containing<InvalidArgument>([&] { Predictor(c, unallocated, batch(4)); }, "are not those of the model");
}

TEST_F(PredictorTest, BatchedEqualsOneAtATimeForEveryCall) {
  for (const char* task : {"mlm", "classify"}) {
    SCOPED_TRACE(task);
    const std::string ck = save_random(path(task), small_config(task));
    Predictor batched(ck, batch(5)), single(ck, batch(1));
    const Embeddings a = batched.embed(kTexts), b = single.embed(kTexts);
    ASSERT_EQ(a.values.size(), b.values.size());
    for (size_t i = 0; i < a.values.size(); ++i)
      EXPECT_NEAR(a.values[i], b.values[i], 1e-5 * (1 + std::abs(b.values[i]))) << i;
    if (std::string(task) == "classify") {
      const std::vector<Classification> x = batched.classify(kTexts), y = single.classify(kTexts);
      for (size_t i = 0; i < kTexts.size(); ++i) {
        EXPECT_EQ(x[i].label, y[i].label);
        for (size_t k = 0; k < 3; ++k) EXPECT_NEAR(x[i].probabilities[k], y[i].probabilities[k], 1e-6);
      }
    } else {
      std::vector<std::string> masked = kTexts;
      for (std::string& t : masked) t[t.size() / 2] = '_';
      EXPECT_EQ(batched.fill_masks(masked), single.fill_masks(masked));
    }
  }
}

TEST_F(PredictorTest, KindsThatMixPositionsOtherwiseBatchAlikeToo) {
  // Synthesizer's dense variant mixes positions through a max_len matrix and sinkhorn sorts blocks:
  // with padding their results must still not depend on the batch.
  for (const char* kind : {"synthesizer", "sinkhorn", "full"}) {
    SCOPED_TRACE(kind);
    const std::string ck = save_random(path(kind), small_config("mlm", kind));
    Predictor batched(ck, batch(8)), single(ck, batch(1));
    const Embeddings a = batched.embed(kTexts), b = single.embed(kTexts);
    for (size_t i = 0; i < a.values.size(); ++i) EXPECT_NEAR(a.values[i], b.values[i], 1e-5 * (1 + std::abs(b.values[i])));
  }
}

TEST_F(PredictorTest, FillMasksChangesOnlyTheMaskedBytesAndReadsLongTextsInWindows) {
  Predictor p(save_random(path("ck"), small_config("mlm")), batch(4));
  const std::vector<std::string> out = p.fill_masks({"th_ c_t", std::string(50, 'a') + "_" + std::string(40, 'b') + "_"});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].size(), 7u);
  EXPECT_EQ(out[0].substr(0, 2) + out[0].substr(3, 2) + out[0].substr(6), "th c" "t");
  EXPECT_EQ(out[1].size(), 92u);
  EXPECT_EQ(out[1].substr(0, 50), std::string(50, 'a'));
  EXPECT_EQ(out[1].substr(51, 40), std::string(40, 'b'));
  // The long text's masks equal those of its windows read alone.
  const std::string w1 = (std::string(50, 'a') + "_" + std::string(40, 'b') + "_").substr(50 - 16, 32);
  EXPECT_EQ(p.fill_masks({w1})[0][16], out[1][50]);
}

TEST_F(PredictorTest, ClassifyTruncatesLongTextsAndSaysSo) {
  Predictor p(save_random(path("ck"), small_config("classify")), batch(4));
  const std::string long_text = std::string(32, 'q') + "anything after max_len";
  const std::vector<Classification> r = p.classify({long_text, std::string(32, 'q'), "short"});
  EXPECT_TRUE(r[0].truncated);
  EXPECT_FALSE(r[1].truncated);
  EXPECT_FALSE(r[2].truncated);
  EXPECT_EQ(r[0].probabilities, r[1].probabilities);
  double sum = 0;
  for (double q : r[2].probabilities) sum += q;
  EXPECT_NEAR(sum, 1.0, 1e-12);
  EXPECT_EQ(r[2].label, std::max_element(r[2].probabilities.begin(), r[2].probabilities.end()) - r[2].probabilities.begin());
}

TEST_F(PredictorTest, GenerateIsGreedyAtTemperatureZeroAndRepeatsWithTheSameSeed) {
  Predictor p(save_random(path("clm"), small_config("clm", "full")), batch(1));
  SamplingOptions greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = 40;  // past max_len: the context is refilled from its last half
  std::string streamed;
  const std::string g = p.generate("once upon", greedy, [&](std::string_view piece) {
    streamed += piece;
    return true;
  });
  EXPECT_EQ(g.size(), 40u);
  EXPECT_EQ(streamed, g);
  // Greedy by hand: the argmax of the last row over the bytes.
  const ModelConfig c = small_config("clm", "full");
  ParamArena<float> arena;
  Model<float> model(c, arena);
  arena.allocate(false);
  load_checkpoint_weights(path("clm"), arena, nullptr);
  std::vector<int32_t> ids = encode("once upon");
  for (int i = 0; i < 5; ++i) {
    const float* logits = model.forward(ids.data(), nullptr, 1, int64_t(ids.size()), false, 0, false);
    const float* row = logits + (int64_t(ids.size()) - 1) * kVocabSize;
    ids.push_back(int32_t(std::max_element(row, row + 256) - row));
    EXPECT_EQ(uint8_t(g[size_t(i)]), uint8_t(ids.back())) << i;
  }
  SamplingOptions s;
  s.max_new_tokens = 20;
  s.seed = 9;
  EXPECT_EQ(p.generate("once upon", s), p.generate("once upon", s));
  s.seed = 10;
  const std::string other = p.generate("once upon", s);
  s.seed = 9;
  EXPECT_NE(p.generate("once upon", s), other);
  // A stop string ends it, kept; on_token returning false ends it too.
  const std::string stop = g.substr(3, 2);
  greedy.stop = {stop};
  EXPECT_EQ(p.generate("once upon", greedy), g.substr(0, g.find(stop) + stop.size()));
  greedy.stop.clear();
  EXPECT_EQ(p.generate("once upon", greedy, [](std::string_view) { return false; }).size(), 1u);
}

TEST_F(PredictorTest, WrongUsesAreRefusedWithTheTextIndex) {
  Predictor mlm(save_random(path("mlm"), small_config("mlm")), batch(4));
  EXPECT_THROW(mlm.classify({"a"}), InvalidArgument);
  EXPECT_THROW(mlm.generate("a", SamplingOptions{}), InvalidArgument);
  try {
    mlm.fill_masks({"a_", "no mask here"});
    ADD_FAILURE();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("text 1: the text has no '_' to predict"), std::string::npos) << e.what();
  }
  EXPECT_THROW(mlm.embed({"ok", ""}), InvalidArgument);
  EXPECT_THROW(parse_pooling("median"), InvalidArgument);
  EXPECT_EQ(parse_pooling("cls"), Pooling::kFirst);
  EXPECT_THROW(Predictor(path("missing")), IoError);
  EXPECT_THROW(Predictor(path("mlm"), batch(0)), InvalidArgument);
  PredictorOptions tiny = batch(4);
  tiny.runtime.max_memory = 1024;
  EXPECT_THROW(Predictor(path("mlm"), tiny), Error);
  // An empty call is an empty answer.
  EXPECT_TRUE(mlm.fill_masks({}).empty());
  EXPECT_EQ(mlm.embed({}).rows, 0);
}

}  // namespace
}  // namespace lf

namespace lf {
namespace {

// Every kind, with its default options at max_len 256: a text's embedding is the same in a batch of
// texts of other lengths as alone. Kinds that declare padding_invariant are batched across lengths
// (padded), so this checks the declaration; the others are batched by equal length only.
class EveryKindPredictor : public test::TempDirTest, public ::testing::WithParamInterface<std::string> {
 protected:
  EveryKindPredictor() : TempDirTest("predictor_kind") {}
};

TEST_P(EveryKindPredictor, BatchedEqualsOneAtATime) {
  ModelConfig c = small_config("mlm", GetParam());
  c.attention = {LayerAttention{GetParam(), json::object()}};
  c.max_len = 256;
  try {
    c.validate();
  } catch (const InvalidArgument& e) {
    GTEST_SKIP() << "the kind's defaults do not fit max_len 256: " << e.what();
  }
  const std::string ck = save_random(path("ck"), c);
  // Lengths across the kinds' blocks, chunks and windows (64 and more), different bytes each.
  std::vector<std::string> texts = kTexts;
  for (int n : {256, 200, 129, 64, 97}) {
    std::string t;
    for (int i = 0; i < n; ++i) t.push_back(char('a' + (i * 7 + n) % 26));
    texts.push_back(t);
  }
  Predictor batched(ck, batch(16)), single(ck, batch(1));
  const Embeddings a = batched.embed(texts), b = single.embed(texts);
  for (size_t i = 0; i < a.values.size(); ++i)
    ASSERT_NEAR(a.values[i], b.values[i], 1e-5 * (1 + std::abs(b.values[i]))) << "text " << i / 16;
}

INSTANTIATE_TEST_SUITE_P(AllKinds, EveryKindPredictor, ::testing::ValuesIn(AttentionRegistry::instance().names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace lf
