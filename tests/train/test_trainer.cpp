// End-to-end training on a small generated corpus: the loss falls, a resumed run equals an
// uninterrupted one bit for bit, and bad options are refused.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "io/safetensors.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace lf {
namespace {

namespace fs = std::filesystem;

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lf_trainer_" + std::to_string(getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // Text with structure a small model learns quickly: a few sentences in shuffled order.
    const char* sentences[] = {"the cat sat on the mat. ", "a dog ran in the park. ", "the sun is warm today. ",
                               "we read a good book. ", "birds sing in the morning. "};
    std::ofstream out(dir_ / "corpus.txt");
    for (int i = 0; i < 4000; ++i) out << sentences[(i * 7 + i / 5) % 5];
  }
  void TearDown() override { fs::remove_all(dir_); }

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
  fs::path dir_;
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
    const TensorView ta = a.get(name), tb = b.get(name);
    ASSERT_EQ(ta.nbytes, tb.nbytes);
    EXPECT_EQ(0, std::memcmp(ta.data, tb.data, ta.nbytes)) << name << " differs after resume";
  }
  const SafeTensorsFile ma = SafeTensorsFile::read(full.checkpoint + "/optimizer.safetensors");
  const SafeTensorsFile mb = SafeTensorsFile::read(cont.checkpoint + "/optimizer.safetensors");
  for (const std::string& name : ma.names())
    EXPECT_EQ(0, std::memcmp(ma.get(name).data, mb.get(name).data, ma.get(name).nbytes)) << name;
}

TEST_F(TrainerTest, TwoRunsWithOneSeedAreIdenticalAndSeedsDiffer) {
  TrainOptions o = small_options("a");
  o.steps = 5;
  const TrainSummary a = train(small_model(), o, false);
  o.run_dir = (dir_ / "b").string();
  const TrainSummary b = train(small_model(), o, false);
  EXPECT_EQ(a.last_loss, b.last_loss);
  o.run_dir = (dir_ / "c").string();
  o.seed = 2;
  const TrainSummary c = train(small_model(), o, false);
  EXPECT_NE(a.last_loss, c.last_loss);
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
    EXPECT_NE(std::string(e.what()).find("at step"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("non-finite"), std::string::npos) << e.what();
  }
}

TEST_F(TrainerTest, RefusesBadOptions) {
  const std::vector<std::pair<std::function<void(TrainOptions&)>, std::string>> table = {
      {[](TrainOptions& o) { o.data_path = ""; }, "no training data"},
      {[](TrainOptions& o) { o.data_path = "/nonexistent/corpus.txt"; }, "/nonexistent/corpus.txt"},
      {[](TrainOptions& o) { o.lr = std::nan(""); }, "--lr"},
      {[](TrainOptions& o) { o.lr = -1; }, "--lr"},
      {[](TrainOptions& o) { o.batch_size = 0; }, "--batch-size"},
      {[](TrainOptions& o) { o.seq_len = 64; }, "exceeds the model's max_len"},
      {[](TrainOptions& o) { o.steps = -3; }, "--steps"},
      {[](TrainOptions& o) { o.warmup_steps = 1000; }, "--warmup"},
  };
  for (const auto& [mutate, expect] : table) {
    TrainOptions o = small_options("bad");
    mutate(o);
    try {
      train(small_model(), o, false);
      ADD_FAILURE() << "accepted: " << expect;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(expect), std::string::npos) << e.what();
    }
  }
  TrainOptions o = small_options("empty");
  EXPECT_THROW(train(small_model(), o, /*resume=*/true), InvalidArgument);  // nothing to resume
}

}  // namespace
}  // namespace lf
