// Predictor::generate on the model's decoding state: with a fixed seed it draws the tokens of a
// reference loop that reruns forward() over the whole context for each token (written here, with the
// same max_len policy: the context is refilled from its last max_len / 2 bytes when it is full), for
// several causal kinds, past max_len, with a prompt longer than max_len, a stop string and a
// repetition penalty; and its statistics count what it ran.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "linformer/checkpoint.h"
#include "linformer/inference.h"
#include "linformer/model.h"
#include "linformer/sampling.h"
#include "linformer/tokenizer.h"
#include "test_util.h"
#include "tiny_model_config.h"

namespace lf {
namespace {

// The plain loop: a whole forward per token over the context ids[start, end).
std::string reference_generate(Model<float>& model, const std::string& prompt, const SamplingOptions& o) {
  Sampler sampler(o);
  const int64_t L = model.config().max_len, V = model.logits_per_row(), keep = std::max<int64_t>(1, L / 2);
  std::vector<int32_t> ids = encode(prompt);
  int64_t start = std::max<int64_t>(0, int64_t(ids.size()) - L);
  std::string out;
  for (int64_t i = 0; i < o.max_new_tokens; ++i) {
    const int64_t n = int64_t(ids.size()) - start;
    const float* logits = model.forward(ids.data() + start, nullptr, 1, n, false, 0, /*keep_for_backward=*/false);
    const std::vector<int32_t> context(ids.begin() + start, ids.end());
    ids.push_back(sampler.next(logits + (n - 1) * V, 256, context));
    out.push_back(char(ids.back()));
    const bool stopped = std::any_of(o.stop.begin(), o.stop.end(), [&](const std::string& s) {
      return out.size() >= s.size() && out.compare(out.size() - s.size(), s.size(), s) == 0;
    });
    if (stopped) break;
    if (int64_t(ids.size()) - start > L) start = int64_t(ids.size()) - keep;
  }
  return out;
}

class GenerateTest : public test::TempDirTest {
 protected:
  GenerateTest() : TempDirTest("generate") {}
};

TEST_F(GenerateTest, CachedGenerationDrawsTheTokensOfTheFullForwardLoop) {
  for (const std::string kind : {"full", "local", "linear", "aft_simple"}) {
    SCOPED_TRACE(kind);
    ModelConfig c = test::small_byte_model_config("clm", kind, 2, 32);
    c.conv_kernel = 5;
    const std::string dir = path("ck_" + kind);
    test::save_random_checkpoint(dir, c, 7);
    PredictorOptions po;
    po.batch_size = 1;
    po.runtime.threads = 1;
    Predictor p(dir, po);
    ParamArena<float> arena;
    Model<float> model(c, arena);
    arena.allocate(false);
    load_checkpoint_weights(dir, arena, nullptr);

    SamplingOptions s;
    s.seed = 3;
    s.max_new_tokens = 70;  // from a 9-byte prompt past max_len 32: refills after tokens 24, 41 and 58
    s.repetition_penalty = 1.3;
    GenerationStats st;
    const std::string got = p.generate("once upon", s, {}, &st);
    EXPECT_EQ(got, reference_generate(model, "once upon", s));
    ASSERT_EQ(got.size(), 70u);
    // The prompt and three refills of max_len / 2 prefilled; every other token but the last one step.
    EXPECT_EQ(st.refills, 3);
    EXPECT_EQ(st.prefill_tokens, 9 + 3 * 16);
    EXPECT_EQ(st.decode_tokens, 70 - 1 - 3);
    EXPECT_EQ(st.generated, 70);
    EXPECT_GT(st.cache_bytes, 0.0);

    SamplingOptions greedy = s;
    greedy.temperature = 0;
    greedy.max_new_tokens = 20;
    const std::string long_prompt = "a prompt longer than the model's max_len of 32 bytes";
    EXPECT_EQ(p.generate(long_prompt, greedy, {}, &st), reference_generate(model, long_prompt, greedy));
    EXPECT_EQ(st.prefill_tokens, 32 + 2 * 16);  // its last 32 bytes; refills after tokens 1 and 18
    EXPECT_EQ(st.refills, 2);

    greedy.stop = {got.substr(30, 2)};
    s.stop = greedy.stop;
    EXPECT_EQ(p.generate("once upon", s), reference_generate(model, "once upon", s));
  }
}

}  // namespace
}  // namespace lf
