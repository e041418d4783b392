// End-to-end training on a small generated corpus: the loss falls, a resumed run equals an
// uninterrupted one bit for bit, and bad options are refused.
#include <omp.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>

#include "io/safetensors.h"
#include "linformer/checkpoint.h"
#include "linformer/memory.h"
#include "linformer/runtime.h"
#include "linformer/trainer.h"
#include "test_util.h"
#include "train/optimizer_step.h"

namespace lf {
namespace {

namespace fs = std::filesystem;

class TrainerTest : public test::TempDirTest {
 protected:
  TrainerTest() : TempDirTest("lf_trainer") {}
  void SetUp() override {
    TempDirTest::SetUp();
    // Text with structure a small model learns quickly: a few sentences in shuffled order.
    const char* sentences[] = {"the cat sat on the mat. ", "a dog ran in the park. ", "the sun is warm today. ",
                               "we read a good book. ", "birds sing in the morning. "};
    std::ofstream out(dir_ / "corpus.txt");
    for (int i = 0; i < 4000; ++i) out << sentences[(i * 7 + i / 5) % 5];
  }

  ModelConfig small_model() const {
    ModelConfig c;
    c.d_model = 32;
    c.n_layers = 2;
    c.n_heads = 2;
    c.d_ff = 64;
    c.max_len = 32;
    c.dropout_embedding = c.dropout_attention = c.dropout_ffn = 0.1;
    c.attention = {LayerAttention{"linformer", {{"k", 8}}}};
    return c;
  }
  TrainOptions small_options(const std::string& run) const {
    TrainOptions o;
    o.data_path = (dir_ / "corpus.txt").string();
    o.run_dir = (dir_ / run).string();
    o.batch_size = 8;
    o.seq_len = 32;
    o.steps = 60;
    o.warmup_steps = 5;
    o.lr = 3e-3;
    o.eval_every = 0;
    o.eval_batches = 4;
    o.save_every = 0;
    o.log_every = 10;
    o.valid_fraction = 0.05;
    o.test_fraction = 0.05;
    return o;
  }
};

TEST_F(TrainerTest, LossFalls) {
  TrainOptions o = small_options("run");
  o.steps = 100;
  const TrainSummary s = train(small_model(), o, false);
  // An untrained model scores at least ln(260) = 5.56 nats per masked byte (more: its tied output
  // embedding starts with large logits); 100 steps must bring the held-out loss far down.
  std::ifstream first_log(o.run_dir + "/log.jsonl");
  std::string first_line;
  std::getline(first_log, first_line);
  const double first_loss = json::parse(first_line).at("loss").get<double>();  // mean of steps 1-10
  EXPECT_GT(first_loss, 5.0);
  EXPECT_LT(s.valid.loss, 0.6 * first_loss) << "first logged loss " << first_loss;
  EXPECT_LT(s.valid.loss, 4.0);
  EXPECT_LT(s.last_loss, 0.6 * first_loss);
  EXPECT_GT(s.valid.accuracy, 0.15);  // chance is 1/260
  EXPECT_GT(s.tokens_per_s, 0);
  EXPECT_TRUE(fs::exists(fs::path(s.checkpoint) / "model.safetensors"));
  // The log has a line per logged step, an eval and a summary.
  std::ifstream log(o.run_dir + "/log.jsonl");
  int train_lines = 0, summaries = 0;
  for (std::string line; std::getline(log, line);) {
    const json j = json::parse(line);
    train_lines += j["type"] == "train";
    summaries += j["type"] == "summary";
  }
  EXPECT_EQ(train_lines, 10);
  EXPECT_EQ(summaries, 1);
}

TEST_F(TrainerTest, ResumeIsBitIdenticalToAnUninterruptedRun) {
  TrainOptions o = small_options("full");
  o.steps = 12;
  o.save_every = 6;
  o.grad_accum = 2;
  const TrainSummary full = train(small_model(), o, false);
  // The interrupted run: the same run directory as it stood after step 6.
  const fs::path resumed = dir_ / "resumed";
  fs::create_directories(resumed / "checkpoints");
  fs::copy(fs::path(o.run_dir) / "checkpoints" / "step-00000006", resumed / "checkpoints" / "step-00000006",
           fs::copy_options::recursive);
  TrainOptions r = o;
  r.run_dir = resumed.string();
  const TrainSummary cont = train(ModelConfig{}, r, /*resume=*/true);  // the model comes from the checkpoint
  EXPECT_EQ(cont.last_loss, full.last_loss);
  const SafeTensorsFile a = SafeTensorsFile::read(full.checkpoint + "/model.safetensors");
  const SafeTensorsFile b = SafeTensorsFile::read(cont.checkpoint + "/model.safetensors");
  ASSERT_EQ(a.names(), b.names());
  for (const std::string& name : a.names()) {
    const StoredTensor ta = a.get(name), tb = b.get(name);
    ASSERT_EQ(ta.nbytes, tb.nbytes);
    EXPECT_EQ(0, std::memcmp(ta.data, tb.data, ta.nbytes)) << name << " differs after resume";
  }
  const SafeTensorsFile ma = SafeTensorsFile::read(full.checkpoint + "/optimizer.safetensors");
  const SafeTensorsFile mb = SafeTensorsFile::read(cont.checkpoint + "/optimizer.safetensors");
  for (const std::string& name : ma.names())
    EXPECT_EQ(0, std::memcmp(ma.get(name).data, mb.get(name).data, ma.get(name).nbytes)) << name;
}

// Every tensor of two checkpoint files holds the same bytes (`same`), or at least one differs (!same).
void expect_tensor_files_equal(const std::string& path_a, const std::string& path_b, bool same = true) {
  const SafeTensorsFile a = SafeTensorsFile::read(path_a), b = SafeTensorsFile::read(path_b);
  ASSERT_EQ(a.names(), b.names());
  bool all_equal = true;
  for (const std::string& name : a.names()) {
    const StoredTensor ta = a.get(name), tb = b.get(name);
    ASSERT_EQ(ta.nbytes, tb.nbytes) << name;
    const bool equal = std::memcmp(ta.data, tb.data, ta.nbytes) == 0;
    if (same) {
      EXPECT_TRUE(equal) << name << " differs between " << path_a << " and " << path_b;
    }
    all_equal = all_equal && equal;
  }
  if (!same) {
    EXPECT_FALSE(all_equal) << path_a << " and " << path_b << " are identical";
  }
}

// Determinism: with the same seed and thread count, two runs give the same weights and optimizer
// state bit for bit, for kinds that draw random numbers of their own (Performer's features, Reformer's
// hashes, BigBird's random blocks) as well as Linformer, with dropout and gradient accumulation on.
// Another seed changes them (so the comparison can fail).
TEST_F(TrainerTest, TwoRunsWithOneSeedAndThreadCountAreBitwiseIdentical) {
  const RuntimeScope two_threads(RuntimeOptions{2});
  for (const LayerAttention& attention :
       {LayerAttention{"linformer", {{"k", 8}}}, LayerAttention{"performer", {{"features", 16}, {"redraw_every", 2}}},
        LayerAttention{"reformer", {{"bucket_size", 4}}}, LayerAttention{"bigbird", {{"block", 4}, {"random_blocks", 2}}}}) {
    SCOPED_TRACE(attention.kind);
    ModelConfig c = small_model();
    c.attention = {attention};
    TrainOptions o = small_options(attention.kind + "_a");
    o.steps = 4;
    o.warmup_steps = 1;
    o.grad_accum = 2;
    const TrainSummary a = train(c, o, false);
    o.run_dir = (dir_ / (attention.kind + "_b")).string();
    const TrainSummary b = train(c, o, false);
    EXPECT_EQ(a.last_loss, b.last_loss);
    EXPECT_EQ(a.valid.loss, b.valid.loss);
    expect_tensor_files_equal(a.checkpoint + "/model.safetensors", b.checkpoint + "/model.safetensors");
    expect_tensor_files_equal(a.checkpoint + "/optimizer.safetensors", b.checkpoint + "/optimizer.safetensors");
    o.run_dir = (dir_ / (attention.kind + "_c")).string();
    o.seed = 2;
    const TrainSummary other = train(c, o, false);
    EXPECT_NE(a.last_loss, other.last_loss);
    expect_tensor_files_equal(a.checkpoint + "/model.safetensors", other.checkpoint + "/model.safetensors", false);
  }
}

// checkpoint_activations changes memory, not results: the same run with it is identical bit for bit.
TEST_F(TrainerTest, ActivationCheckpointingLeavesTheRunUnchanged) {
  TrainOptions o = small_options("plain");
  o.steps = 5;
  const TrainSummary a = train(small_model(), o, false);
  o.run_dir = (dir_ / "checkpointed").string();
  o.checkpoint_activations = true;
  const TrainSummary b = train(small_model(), o, false);
  EXPECT_EQ(a.last_loss, b.last_loss);
  EXPECT_EQ(a.valid.loss, b.valid.loss);
  EXPECT_TRUE(TrainOptions::from_json(o.to_json()).checkpoint_activations);
}

TEST_F(TrainerTest, NonFiniteLossStopsWithTheStep) {
  TrainOptions o = small_options("diverge");
  o.lr = 1e30;  // finite but absurd: the weights blow up within a few steps
  o.clip_norm = 0;
  o.warmup_steps = 0;
  o.steps = 50;
  try {
    train(small_model(), o, false);
    ADD_FAILURE() << "training with lr 1e30 did not report divergence";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("at step"), std::string::npos) << message;
    EXPECT_NE(message.find("non-finite"), std::string::npos) << message;
    // Where it happened: a layer, the embeddings or the head.
    EXPECT_TRUE(message.find("layer ") != std::string::npos || message.find("the embeddings") != std::string::npos ||
                message.find("the output head") != std::string::npos || message.find("LayerNorm") != std::string::npos)
        << message;
  }
}

// A NaN planted in layer 1's FFN weights (through the checkpoint) makes the next step's loss NaN; the
// message names that step and layer 1, where the first non-finite activation appears.
TEST_F(TrainerTest, NonFiniteLossNamesTheStepAndTheLayer) {
  TrainOptions o = small_options("poisoned");
  o.steps = 2;
  o.warmup_steps = 0;
  const TrainSummary s = train(small_model(), o, false);
  const LoadedCheckpoint ck = load_checkpoint(s.checkpoint);
  ParamArena<float> arena;
  Model<float> model(ck.config, arena);
  arena.allocate();
  OptimizerMoments moments;
  load_checkpoint_weights(ck.dir, arena, &moments);
  const ParamInfo& poisoned = arena.info(arena.find("layers.1.ffn.fc1.weight"));
  std::fill(arena.values() + poisoned.offset, arena.values() + poisoned.offset + poisoned.numel, std::nanf(""));
  save_checkpoint(ck.dir, ck.config, arena, &moments, ck.trainer_state);
  o.steps = 4;
  try {
    train(ModelConfig{}, o, /*resume=*/true);
    ADD_FAILURE() << "training with NaN weights did not stop";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("non-finite loss (nan) at step 2"), std::string::npos) << message;
    EXPECT_NE(message.find("first non-finite activation in layer 1"), std::string::npos) << message;
  }
}

// The gradient locator reports where a NaN entered the backward: the head before the layers, the
// top layer first, the embeddings last; nothing when every gradient is finite.
TEST_F(TrainerTest, NonFiniteGradientSiteFollowsTheBackwardOrder) {
  ModelConfig c = small_model();
  c.n_layers = 3;
  ParamArena<float> arena;
  Model<float> model(c, arena);
  arena.allocate();
  auto poison = [&](const std::string& name) { arena.grad(arena.find(name))[1] = std::nanf(""); };
  EXPECT_EQ(nonfinite_gradient_site(arena), "");
  poison("embeddings.token.weight");
  EXPECT_EQ(nonfinite_gradient_site(arena), "the embeddings (parameter 'embeddings.token.weight')");
  poison("layers.0.ffn.fc2.bias");
  EXPECT_EQ(nonfinite_gradient_site(arena), "layer 0 (parameter 'layers.0.ffn.fc2.bias')");
  arena.grad(arena.find("layers.2.attn_norm.weight"))[0] = INFINITY;
  EXPECT_EQ(nonfinite_gradient_site(arena), "layer 2 (parameter 'layers.2.attn_norm.weight')");
  poison("layers.1.ffn.fc1.weight");  // below layer 2 in the backward order: layer 2 stays the answer
  EXPECT_EQ(nonfinite_gradient_site(arena), "layer 2 (parameter 'layers.2.attn_norm.weight')");
  poison("mlm_head.dense.weight");
  EXPECT_EQ(nonfinite_gradient_site(arena), "the output head (parameter 'mlm_head.dense.weight')");
}

TEST_F(TrainerTest, RefusesBadOptions) {
  const std::vector<std::pair<std::function<void(TrainOptions&)>, std::string>> table = {
      {[](TrainOptions& o) { o.data_path = ""; }, "no training data"},
      {[](TrainOptions& o) { o.data_path = "/nonexistent/corpus.txt"; }, "/nonexistent/corpus.txt"},
      {[](TrainOptions& o) { o.lr = std::nan(""); }, "`lr`"},
      {[](TrainOptions& o) { o.lr = -1; }, "`lr`"},
      {[](TrainOptions& o) { o.batch_size = 0; }, "`batch_size`"},
      {[](TrainOptions& o) { o.seq_len = 64; }, "`seq_len` 64 exceeds the model's max_len"},
      {[](TrainOptions& o) { o.steps = -3; }, "`steps`"},
      {[](TrainOptions& o) { o.warmup_steps = 1000; }, "`warmup_steps`"},
  };
  for (const auto& [mutate, expect] : table) {
    TrainOptions o = small_options("bad");
    mutate(o);
    try {
      train(small_model(), o, false);
      ADD_FAILURE() << "accepted: " << expect;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(expect), std::string::npos) << e.what();
      // The library names options by their own names; only the CLI speaks of flags.
      EXPECT_EQ(std::string(e.what()).find("--"), std::string::npos) << e.what();
    }
  }
  TrainOptions o = small_options("empty");
  EXPECT_THROW(train(small_model(), o, /*resume=*/true), InvalidArgument);  // nothing to resume
}

}  // namespace
}  // namespace lf

namespace lf {
namespace {

// ---- the step-level trainer -------------------------------------------------------------------------

// The training batches train() draws for steps [0, steps) of `o`.
std::vector<std::vector<TokenBatch>> train_batches(const TaskData& data, const TrainOptions& o, int64_t steps) {
  std::vector<std::vector<TokenBatch>> out(static_cast<size_t>(steps));
  for (int64_t s = 0; s < steps; ++s)
    for (int64_t m = 0; m < o.grad_accum; ++m)
      out[size_t(s)].push_back(data.train_batch(o.batch_size, o.seq_len, o.seed, uint64_t(s * o.grad_accum + m),
                                                {o.mask_prob, o.mask_span, o.short_seq_prob}));
  return out;
}

// A short run: `o` for `steps` steps (`warmup` of them warm-up), its data and every step's batches.
struct ShortRun {
  TrainOptions o;
  TaskData data;
  std::vector<std::vector<TokenBatch>> batches;
};
ShortRun short_run(TrainOptions o, int64_t steps, int64_t warmup) {
  o.steps = steps;
  o.warmup_steps = warmup;
  TaskData data = TaskData::load("mlm", o);
  auto batches = train_batches(data, o, steps);
  return {o, std::move(data), std::move(batches)};
}

// The arena's values equal those of a checkpoint's model.safetensors, bit for bit.
void expect_arena_equals_checkpoint(ParamArena<float>& arena, const std::string& checkpoint) {
  const SafeTensorsFile f = SafeTensorsFile::read(checkpoint + "/model.safetensors");
  for (const ParamInfo& p : arena.params()) {
    const StoredTensor t = f.get(p.name);
    ASSERT_EQ(t.nbytes, size_t(p.numel) * sizeof(float)) << p.name;
    EXPECT_EQ(0, std::memcmp(t.data, arena.values() + p.offset, t.nbytes)) << p.name << " differs";
  }
}

TEST_F(TrainerTest, TrainerStepsReproduceTrainBitForBit) {
  TrainOptions o = small_options("run");
  o.steps = 6;
  o.grad_accum = 2;
  const TrainSummary s = train(small_model(), o, false);
  const TaskData data = TaskData::load("mlm", o);
  Trainer trainer(small_model(), o);
  double last = 0;
  for (const std::vector<TokenBatch>& step : train_batches(data, o, o.steps)) last = trainer.step(step).loss;
  EXPECT_EQ(trainer.steps_done(), 6);
  EXPECT_EQ(last, s.last_loss);
  expect_arena_equals_checkpoint(trainer.arena(), s.checkpoint);
}

TEST_F(TrainerTest, TrainerSaveAndLoadContinueBitForBit) {
  const auto [o, data, batches] = short_run(small_options("run"), 4, 2);
  Trainer straight(small_model(), o);
  for (const auto& step : batches) straight.step(step);

  Trainer first(small_model(), o);
  first.step(batches[0]);
  first.step(batches[1]);
  const std::string checkpoint = first.save(o.run_dir, json{{"note", "half way"}});
  EXPECT_EQ(read_trainer_state(checkpoint).at("step"), 2);
  Trainer second(small_model(), o);
  second.load(checkpoint, 2);
  second.step(batches[2]);
  const StepResult r = second.step(batches[3]);
  EXPECT_EQ(r.step, 4);
  const std::string end = second.save(o.run_dir, json::object());
  expect_arena_equals_checkpoint(straight.arena(), end);
}

TEST_F(TrainerTest, TrainerRefusesAWrongMicroBatchCountAndBadOptions) {
  TrainOptions o = small_options("run");
  o.grad_accum = 2;
  const TaskData data = TaskData::load("mlm", o);
  Trainer trainer(small_model(), o);
  const auto batches = train_batches(data, o, 1);
  EXPECT_THROW(trainer.step({batches[0][0]}), InvalidArgument);
  EXPECT_EQ(trainer.steps_done(), 0);
  o.lr = -1;
  EXPECT_THROW(Trainer(small_model(), o), InvalidArgument);
  TrainOptions no_files = small_options("run");
  no_files.data_path.clear();  // the trainer reads no file: only train() needs one
  no_files.run_dir.clear();
  EXPECT_NO_THROW(Trainer(small_model(), no_files));
}

// Two trainers on one host thread with 1 and 2 threads, their steps and evaluations interleaved: each
// runs with its own count (seen from inside its forward passes), the caller's count is back between
// calls, and each ends exactly as when it ran alone.
TEST_F(TrainerTest, InterleavedTrainersRunWithTheirOwnThreadCounts) {
  const ShortRun run = short_run(small_options("run"), 3, 1);
  const TrainOptions& o = run.o;  // references, not structured bindings: the lambdas below capture them
  const TaskData& data = run.data;
  const auto& batches = run.batches;
  const RuntimeOptions one{1}, two{2};
  auto run_alone = [&](const RuntimeOptions& runtime) {
    auto t = std::make_unique<Trainer>(small_model(), o, runtime);
    for (const auto& step : batches) t->step(step);
    return t;
  };
  const auto alone_one = run_alone(one), alone_two = run_alone(two);
  const EvalResult eval_one = alone_one->evaluate(data, Split::Valid, 8, 32, 2, o.mask_prob);
  const EvalResult eval_two = alone_two->evaluate(data, Split::Valid, 8, 32, 2, o.mask_prob);

  Trainer a(small_model(), o, one), b(small_model(), o, two);
  EXPECT_EQ(a.runtime().threads, 1);
  EXPECT_EQ(b.runtime().threads, 2);
  std::set<int> seen_a, seen_b;
  a.model().set_attention_input_observer([&](int64_t, const float*, int64_t, int64_t) { seen_a.insert(omp_get_max_threads()); });
  b.model().set_attention_input_observer([&](int64_t, const float*, int64_t, int64_t) { seen_b.insert(omp_get_max_threads()); });
  const RuntimeScope caller(RuntimeOptions{3});
  for (const auto& step : batches) {
    a.step(step);
    EXPECT_EQ(omp_get_max_threads(), 3);
    b.step(step);
    EXPECT_EQ(omp_get_max_threads(), 3);
  }
  EXPECT_EQ(b.evaluate(data, Split::Valid, 8, 32, 2, o.mask_prob).loss, eval_two.loss);
  EXPECT_EQ(a.evaluate(data, Split::Valid, 8, 32, 2, o.mask_prob).loss, eval_one.loss);
  EXPECT_EQ(seen_a, std::set<int>{1});
  EXPECT_EQ(seen_b, std::set<int>{2});
  const auto values = [](Trainer& t) { return std::vector<float>(t.arena().values(), t.arena().values() + t.arena().numel()); };
  EXPECT_EQ(values(a), values(*alone_one));
  EXPECT_EQ(values(b), values(*alone_two));
}

// Two trainers with different memory limits: the guard refuses a step above the limit in one
// instance (naming the limit's source, before the parameters change) and not in the other.
TEST_F(TrainerTest, EachTrainerGuardsItsOwnMemoryLimit) {
  TrainOptions o = small_options("run");
  const TaskData data = TaskData::load("mlm", o);
  const auto batches = train_batches(data, o, 1);
  // Below what an evaluation needs, so below a training step too.
  const double tight_limit = estimate_memory(small_model(), Workload::Inference, o.batch_size, o.seq_len).total() / 2;
  const double roomy_limit = estimate_memory(small_model(), Workload::Training, o.batch_size, o.seq_len).total() * 4;
  Trainer tight(small_model(), o, RuntimeOptions{1, tight_limit}), roomy(small_model(), o, RuntimeOptions{2, roomy_limit});
  for (int attempt = 0; attempt < 2; ++attempt) {  // refused every time, not only the first
    try {
      tight.step(batches[0]);
      ADD_FAILURE() << "a step above the memory limit ran";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("a training step of 8 × 32 tokens needs about"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("(`max_memory`)"), std::string::npos) << e.what();
    }
    EXPECT_EQ(tight.steps_done(), 0);
    EXPECT_NO_THROW(roomy.step(batches[0]));
  }
  EXPECT_THROW(tight.evaluate(data, Split::Valid, 8, 32, 2, o.mask_prob), Error);
  EXPECT_NO_THROW(roomy.evaluate(data, Split::Valid, 8, 32, 2, o.mask_prob));
  EXPECT_THROW(Trainer(small_model(), o, RuntimeOptions{-1}), InvalidArgument);
}

TEST_F(TrainerTest, CallbacksSeeTheOptionsEveryStepAndEachEvaluation) {
  TrainOptions o = small_options("run");
  o.steps = 8;
  o.eval_every = 4;
  int starts = 0, steps = 0, evals = 0;
  int64_t last_step = 0;
  TrainCallbacks cb;
  cb.start = [&](const TrainOptions& resolved) {
    ++starts;
    EXPECT_EQ(resolved.steps, 8);
  };
  cb.step = [&](const StepResult& r, int64_t total, double tokens_per_s) {
    ++steps;
    EXPECT_EQ(r.step, last_step + 1);
    last_step = r.step;
    EXPECT_EQ(total, 8);
    EXPECT_TRUE(std::isfinite(r.loss) && r.grad_norm > 0 && r.lr > 0 && tokens_per_s > 0);
  };
  cb.message = [&](const std::string& line) { evals += line.find("valid loss") != std::string::npos; };
  train(small_model(), o, false, cb);
  EXPECT_EQ(starts, 1);
  EXPECT_EQ(steps, 8);
  EXPECT_EQ(evals, 2);  // at step 4 and at the end
}

}  // namespace
}  // namespace lf
