// Classification as a user sees it: the metrics of train/metrics.h against hand-computed values, the
// label map through TaskData, config.json and train(), and the overfitting warning.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "linformer/checkpoint.h"
#include "linformer/config.h"
#include "linformer/error.h"
#include "linformer/trainer.h"
#include "test_util.h"
#include "tiny_model_config.h"
#include "train/metrics.h"

namespace lf {
namespace {

// Rows: true class 0: 4 right, 1 as class 1, 1 as class 2; class 1: 2 as 0, 2 right; class 2: never
// occurs but is predicted once; class 3: neither occurs nor is predicted.
const std::vector<int64_t> kConfusion = {4, 1, 1, 0,  //
                                         2, 2, 0, 0,  //
                                         0, 0, 0, 0,  //
                                         0, 0, 0, 0};

TEST(ClassificationMetrics, MatchHandComputedValues) {
  const ClassificationReport r = classification_report(kConfusion, 4, /*majority_class=*/1);
  EXPECT_EQ(r.count, 10);
  EXPECT_DOUBLE_EQ(r.accuracy, 0.6);
  EXPECT_EQ(r.classes[0].support, 6);
  EXPECT_EQ(r.classes[0].predicted, 6);
  EXPECT_DOUBLE_EQ(r.classes[0].precision, 4.0 / 6);
  EXPECT_DOUBLE_EQ(r.classes[0].recall, 4.0 / 6);
  EXPECT_DOUBLE_EQ(r.classes[0].f1, 4.0 / 6);
  EXPECT_DOUBLE_EQ(r.classes[1].precision, 2.0 / 3);
  EXPECT_DOUBLE_EQ(r.classes[1].recall, 0.5);
  EXPECT_NEAR(r.classes[1].f1, 4.0 / 7, 1e-15);
  EXPECT_EQ(r.classes[2].support, 0);
  EXPECT_EQ(r.classes[2].predicted, 1);
  EXPECT_EQ(r.classes[2].precision, 0);
  EXPECT_EQ(r.classes[2].f1, 0);
  // Macro-F1 over the classes seen in truth or predictions (0, 1, 2), not the unseen class 3.
  EXPECT_NEAR(r.macro_f1, (4.0 / 6 + 4.0 / 7 + 0) / 3, 1e-15);
  EXPECT_DOUBLE_EQ(r.majority_accuracy, 0.4);  // class 1's 4 of 10
  const nlohmann::json j = report_to_json(r, {"a", "b", "c", "d"});
  EXPECT_EQ(j["majority_class"], "b");
  EXPECT_EQ(j["classes"][1]["name"], "b");
  EXPECT_EQ(j["classes"][1]["support"], 4);
  EXPECT_EQ(j["confusion"][0], (std::vector<int64_t>{4, 1, 1, 0}));
  EXPECT_THROW(classification_report({1, 2, 3}, 2, 0), InvalidArgument);
  EXPECT_THROW(classification_report(kConfusion, 4, 4), InvalidArgument);
}

TEST(ClassificationMetrics, MajorityClassAndOverfitting) {
  EXPECT_EQ(most_frequent_class({1, 0, 1, 2, 0}, 3), 0);  // a tie goes to the lower class
  EXPECT_EQ(most_frequent_class({2, 2, 1}, 3), 2);
  EXPECT_EQ(most_frequent_class({}, 3), -1);
  EXPECT_TRUE(looks_overfitted(1.0, 0.4, 0.5));
  EXPECT_TRUE(looks_overfitted(0.995, 0.4, 0.5));
  EXPECT_FALSE(looks_overfitted(0.98, 0.4, 0.5));  // not memorised
  EXPECT_FALSE(looks_overfitted(1.0, 0.5, 0.5));   // as good as the baseline
  const std::string w = overfitting_warning(1.0, 0.25, 0.75, "pos", "valid");
  EXPECT_NE(w.find("'pos'"), std::string::npos) << w;
  EXPECT_NE(w.find("0.75"), std::string::npos) << w;
}

TEST(ClassificationConfig, LabelMapRoundTripsAndOldConfigsKeepTheIdentity) {
  ModelConfig c = test::tiny_model_config();
  c.task = "classify";
  c.n_classes = 3;
  EXPECT_EQ(c.class_map(), (std::vector<std::string>{"0", "1", "2"}));  // a checkpoint without a map
  EXPECT_FALSE(c.to_json().contains("class_names"));
  c.class_names = {"neg", "neutral", "pos"};
  const ModelConfig back = ModelConfig::from_json(c.to_json());
  EXPECT_EQ(back.class_names, c.class_names);
  EXPECT_EQ(back.class_name(2), "pos");
  c.class_names = {"neg", "pos"};
  EXPECT_THROW(c.validate(), InvalidArgument);
  c.class_names = {"neg", "pos", "neg"};
  EXPECT_THROW(c.validate(), InvalidArgument);
  nlohmann::json j = back.to_json();
  j["class_names"] = {1, 2, 3};
  EXPECT_THROW(ModelConfig::from_json(j), InvalidArgument);
}

class ClassificationTaskData : public test::TempDirTest {
 protected:
  ClassificationTaskData() : TempDirTest("lf_cls_train") {}
  void write(const std::string& name, const std::string& content) { std::ofstream(dir_ / name, std::ios::binary) << content; }
  TrainOptions options(const std::string& file) {
    TrainOptions o = test::tiny_train_options(dir_, "run");
    o.data_path = (dir_ / file).string();
    o.valid_fraction = 0.2;
    return o;
  }
};

TEST_F(ClassificationTaskData, SplitsAndTheirLabelMaps) {
  // 10 examples: 8 train, 2 held out. Training sees labels 1 and 2 only: two classes, none empty.
  std::string tsv = "label\ttext\n";
  for (int i = 0; i < 10; ++i) tsv += std::to_string(1 + i % 2) + "\ttext " + std::to_string(i) + "\n";
  write("d.tsv", tsv);
  const TaskData d = TaskData::load("classify", options("d.tsv"));
  EXPECT_EQ(d.class_map, (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(d.eval_batch_count(Split::Train, 4, 16, 100), 2);
  EXPECT_EQ(d.eval_batch_count(Split::Valid, 4, 16, 100), 1);
  const TokenBatch train = d.eval_batch(Split::Train, 4, 16, 0, 0.15), valid = d.eval_batch(Split::Valid, 4, 16, 0, 0.15);
  EXPECT_EQ(train.B, 4);
  EXPECT_EQ(valid.B, 2);
  EXPECT_EQ(train.tokens[5], '0');  // "text 0", the first training example
  EXPECT_EQ(valid.tokens[5], '8');  // "text 8", the first held-out one
  EXPECT_EQ(train.targets, (std::vector<int32_t>{0, 1, 0, 1}));
  // The model's map (a checkpoint without class_names: the identity 0 … 2) keeps its own indices.
  const TaskData m = TaskData::load("classify", options("d.tsv"), {"0", "1", "2"});
  EXPECT_EQ(m.eval_batch(Split::Train, 4, 16, 0, 0.15).targets, (std::vector<int32_t>{1, 2, 1, 2}));
}

TEST_F(ClassificationTaskData, AHeldOutLabelTrainingNeverSawIsNamedWithItsLine) {
  std::string tsv;
  for (int i = 0; i < 9; ++i) tsv += std::string(i % 2 ? "pos" : "neg") + "\tt\n";
  tsv += "maybe\tt\n";  // line 10, held out
  write("d.tsv", tsv);
  try {
    (void)TaskData::load("classify", options("d.tsv"));
    ADD_FAILURE() << "an unseen held-out label was accepted";
  } catch (const IoError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("d.tsv' line 10: label 'maybe' is not one of the training split's 2 classes (neg, pos)"),
              std::string::npos) << msg;
  }
  write("one.tsv", "pos\ta\npos\tb\npos\tc\npos\td\nneg\te\n");
  try {
    (void)TaskData::load("classify", options("one.tsv"));
    ADD_FAILURE() << "a training split of one label was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("has only the label 'pos'"), std::string::npos) << e.what();
  }
}

// A host's train() on string labels: the map is saved in config.json, the summary has the training
// accuracy and the majority baseline, and a model that memorised the training examples while the
// held-out ones are labelled against them is warned about.
TEST_F(ClassificationTaskData, TrainSavesTheLabelMapAndWarnsOfOverfitting) {
  std::string tsv;
  for (int i = 0; i < 36; ++i) tsv += i % 4 ? "pos\taaaaaaaa\n" : "neg\tzzzzzzzz\n";
  for (int i = 0; i < 4; ++i) tsv += "pos\tzzzzzzzz\n";  // held out: labelled against training
  write("d.tsv", tsv);
  TrainOptions o = options("d.tsv");
  o.valid_fraction = 0.1;
  o.steps = 60;
  o.warmup_steps = 5;
  o.lr = 1e-2;
  o.batch_size = 8;
  ModelConfig c = test::tiny_model_config();
  c.vocab_size = 260;
  c.task = "classify";
  c.n_classes = 2;
  c.dropout_attention = c.dropout_embedding = c.dropout_ffn = 0;
  std::vector<std::string> messages;
  TrainCallbacks cb;
  cb.message = [&](const std::string& m) { messages.push_back(m); };
  const TrainSummary s = train(c, o, false, cb);
  EXPECT_EQ(read_checkpoint_config(s.checkpoint).class_names, (std::vector<std::string>{"neg", "pos"}));
  EXPECT_EQ(s.majority_class, "pos");
  EXPECT_DOUBLE_EQ(s.majority_accuracy, 1.0);  // every held-out example is 'pos'
  EXPECT_EQ(s.train.count, 36);
  ASSERT_GE(s.train.accuracy, kMemorisedAccuracy) << "the tiny model did not learn aaaa vs zzzz";
  EXPECT_LT(s.valid.accuracy, 1.0);
  EXPECT_NE(s.overfit_warning.find("overfitted"), std::string::npos);
  EXPECT_NE(messages.back().find("warning: the model looks overfitted"), std::string::npos) << messages.back();
  EXPECT_EQ(read_trainer_state(s.checkpoint)["train"]["accuracy"], s.train.accuracy);
  // n_classes that disagrees with the data's labels is refused before training.
  c.n_classes = 3;
  o.run_dir = (dir_ / "run3").string();
  EXPECT_THROW(train(c, o, false), InvalidArgument);
}

}  // namespace
}  // namespace lf
