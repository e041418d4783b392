// The batch commands run as a user runs them: `predict --input` (text lines and JSONL, to stdout or
// --output, one object per text in input order, the same answers as --text one at a time), sampling
// flags of `predict --generate`, and `embed` to .npy (its header bytes) and .safetensors, with the
// values of the library's Predictor. Checkpoints are small random models saved by the library.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/cli_runner.h"
#include "tiny_model_config.h"
#include "io/safetensors.h"
#include "linformer/checkpoint.h"
#include "linformer/inference.h"
#include "linformer/model.h"
#include "linformer/tokens.h"
#include "test_util.h"

namespace lf {
namespace {

namespace fs = std::filesystem;
using test::read_file;
using test::write_file;
using test::CliResult;
using test::split_lines;

// What a string becomes in predict's JSON: invalid UTF-8 replaced by U+FFFD.
std::string as_json_text(const std::string& s) {
  return nlohmann::json::parse(nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

void save_random(const fs::path& dir, const std::string& task, const std::string& kind) {
  test::save_random_checkpoint(dir.string(), test::small_byte_model_config(task, kind, 1, 24), 3);
}

class CliBatch : public test::TempDirTest {
 protected:
  CliBatch() : TempDirTest("cli_batch") {}
  void SetUp() override {
    TempDirTest::SetUp();
    save_random(dir_ / "mlm", "mlm", "linformer");
    save_random(dir_ / "cls", "classify", "linformer");
    save_random(dir_ / "clm", "clm", "full");
  }
  CliResult run(const std::string& args) {
    return test::run_linformer("cd '" + dir_.string() + "' &&", args, path("stderr.txt"));
  }
  std::vector<nlohmann::json> json_lines(const std::string& out) {
    std::vector<nlohmann::json> v;
    for (const std::string& l : split_lines(out)) v.push_back(nlohmann::json::parse(l));
    return v;
  }
};

const std::vector<std::string> kMasked = {"th_ cat sat", "a much longer text wh_re the mask is l_ter on", "_",
                                          "d_g", "one more t_xt"};

TEST_F(CliBatch, PredictInputAnswersEachLineInOrderAsTextWouldAlone) {
  std::string file;
  for (size_t i = 0; i < kMasked.size(); ++i) file += kMasked[i] + (i == 2 ? "\n\n" : "\n");  // a blank line 4
  write_file(dir_ / "in.txt", file);
  const CliResult r = run("predict --checkpoint mlm --input in.txt --batch-size 2");
  ASSERT_EQ(r.status, 0) << r.err;
  const std::vector<nlohmann::json> out = json_lines(r.out);
  ASSERT_EQ(out.size(), kMasked.size()) << r.out;
  const std::vector<int> lines = {1, 2, 3, 5, 6};
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(out[i]["line"], lines[i]);
    const CliResult one = run("predict --checkpoint mlm --text '" + kMasked[i] + "'");
    ASSERT_EQ(one.status, 0) << one.err;
    EXPECT_EQ(out[i]["text"].get<std::string>(), as_json_text(one.out.substr(0, one.out.size() - 1))) << "line " << lines[i];
  }
  // --output: the same lines in the file, nothing on stdout, no temporary file left.
  const CliResult f = run("predict --checkpoint mlm --input in.txt --output res/out.jsonl");
  ASSERT_EQ(f.status, 0) << f.err;
  EXPECT_EQ(f.out, "");
  EXPECT_EQ(read_file(dir_ / "res" / "out.jsonl"), r.out);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_ / "res"), fs::directory_iterator()), 1);
}

TEST_F(CliBatch, PredictInputReadsJsonlByExtensionOrFirstByteAndEchoesIds) {
  const std::string jsonl = "{\"text\": \"th_ cat\", \"id\": \"a\"}\n{\"text\": \"d_g\", \"id\": 7}\n";
  write_file(dir_ / "in.jsonl", jsonl);
  write_file(dir_ / "in_json.txt", jsonl);
  for (const char* name : {"in.jsonl", "in_json.txt"}) {
    const CliResult r = run(std::string("predict --checkpoint mlm --input ") + name);
    ASSERT_EQ(r.status, 0) << r.err;
    const std::vector<nlohmann::json> out = json_lines(r.out);
    ASSERT_EQ(out.size(), 2u);
    EXPECT_EQ(out[0]["id"], "a");
    EXPECT_EQ(out[1]["id"], 7);
    EXPECT_EQ(out[1]["line"], 2);
    EXPECT_EQ(out[0]["text"].get<std::string>().size(), 7u);
    EXPECT_EQ(out[0]["text"].get<std::string>().find('_'), std::string::npos);
  }
}

TEST_F(CliBatch, PredictInputClassifiesWithProbabilities) {
  write_file(dir_ / "in.txt", "good nice\n" + std::string(40, 'x') + "\nbad\n");
  const CliResult r = run("predict --checkpoint cls --input in.txt --batch-size 2");
  ASSERT_EQ(r.status, 0) << r.err;
  const std::vector<nlohmann::json> out = json_lines(r.out);
  ASSERT_EQ(out.size(), 3u);
  for (const nlohmann::json& j : out) {
    ASSERT_EQ(j["probabilities"].size(), 3u) << j;
    double sum = 0, best = -1;
    int64_t arg = -1;
    for (size_t k = 0; k < 3; ++k) {
      const double p = j["probabilities"][k].get<double>();
      sum += p;
      if (p > best) best = p, arg = int64_t(k);
    }
    EXPECT_NEAR(sum, 1.0, 1e-9);
    EXPECT_EQ(j["class"].get<int64_t>(), arg);
    EXPECT_EQ(j["label"].get<std::string>(), std::to_string(arg)) << "a checkpoint of integer labels 0..2 names them so";
  }
  EXPECT_FALSE(out[0]["truncated"].get<bool>());
  EXPECT_TRUE(out[1]["truncated"].get<bool>()) << "40 bytes > max_len 24";
}

TEST_F(CliBatch, GenerateSamplesWithSeedAndIsGreedyAtTemperatureZero) {
  auto gen = [&](const std::string& flags) {
    const CliResult r = run("predict --checkpoint clm --text 'once' --generate 30 " + flags);
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out.size(), 4u + 30u + 1u) << r.out;
    return r.out;
  };
  // A random model's logits are peaked: a high temperature spreads them, so seeds differ.
  EXPECT_EQ(gen("--temperature 20 --seed 5"), gen("--temperature 20 --seed 5"));
  EXPECT_NE(gen("--temperature 20 --seed 5"), gen("--temperature 20 --seed 6"));
  // Greedy: the seed does not matter, and top-k 1 at any temperature is greedy too.
  EXPECT_EQ(gen("--temperature 0 --seed 1"), gen("--temperature 0 --seed 2"));
  EXPECT_EQ(gen("--temperature 0"), gen("--temperature 2 --top-k 1 --seed 9"));
  // --input: one object per prompt, the prompt's answer alone.
  write_file(dir_ / "prompts.txt", "once\nupon a time\n");
  const CliResult r = run("predict --checkpoint clm --input prompts.txt --generate 30 --temperature 20 --seed 5");
  ASSERT_EQ(r.status, 0) << r.err;
  const std::vector<nlohmann::json> out = json_lines(r.out);
  ASSERT_EQ(out.size(), 2u);
  const std::string alone = gen("--temperature 20 --seed 5");
  EXPECT_EQ(as_json_text("once") + out[0]["generated"].get<std::string>(), as_json_text(alone.substr(0, alone.size() - 1)));
}

// The rows of X.npy (its header checked byte by byte) and X.safetensors are the Predictor's.
TEST_F(CliBatch, EmbedWritesNpyAndSafetensorsWithThePredictorsValues) {
  const std::vector<std::string> texts = {"the cat", "a somewhat longer sentence here", "x"};
  write_file(dir_ / "in.txt", texts[0] + "\n" + texts[1] + "\n" + texts[2] + "\n");
  PredictorOptions o;
  o.batch_size = 1;
  Predictor p((dir_ / "mlm").string(), o);
  for (const char* pooling : {"mean", "max"}) {
    SCOPED_TRACE(pooling);
    const Embeddings want = p.embed(texts, parse_pooling(pooling));
    const CliResult r = run(std::string("embed --checkpoint mlm --input in.txt --output e.npy --batch-size 2 --pooling ") + pooling);
    ASSERT_EQ(r.status, 0) << r.err;
    const std::string b = read_file(dir_ / "e.npy");
    ASSERT_GE(b.size(), 10u);
    EXPECT_EQ(b.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
    const size_t hlen = uint8_t(b[8]) | size_t(uint8_t(b[9])) << 8;
    EXPECT_EQ((10 + hlen) % 64, 0u);
    EXPECT_NE(b.find("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 16), }"), std::string::npos);
    ASSERT_EQ(b.size(), 10 + hlen + 3 * 16 * sizeof(float));
    std::vector<float> got(48);
    std::memcpy(got.data(), b.data() + 10 + hlen, 48 * sizeof(float));
    for (size_t i = 0; i < 48; ++i) EXPECT_NEAR(got[i], want.values[i], 1e-5 * (1 + std::abs(want.values[i]))) << i;

    const CliResult s =
        run(std::string("embed --checkpoint mlm --input in.txt --output e.safetensors --batch-size 2 --pooling ") + pooling);
    ASSERT_EQ(s.status, 0) << s.err;
    const SafeTensorsFile f = SafeTensorsFile::read(path("e.safetensors"));
    const StoredTensor t = f.get("embeddings");
    EXPECT_EQ(t.shape, (std::vector<int64_t>{3, 16}));
    const std::vector<float> st = to_vector<float>(t);
    for (size_t i = 0; i < 48; ++i) EXPECT_EQ(st[i], got[i]) << "the two files differ at " << i;
  }
  // --text, repeatable: the same rows.
  const CliResult r = run("embed --checkpoint mlm --text 'the cat' --text x --output t.npy");
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string b = read_file(dir_ / "t.npy");
  EXPECT_NE(b.find("'shape': (2, 16)"), std::string::npos);
}

}  // namespace
}  // namespace lf
