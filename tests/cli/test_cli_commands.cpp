// The `linformer` subcommands train, eval, predict and info, run as a user runs them (the built binary,
// LINFORMER_CLI_PATH, through the shell, inside a scratch directory): bad input of every kind ends in a
// non-zero exit status (2: usage or invalid argument, 1: a file or runtime failure), never a signal,
// with exactly one line `linformer: error: ...` on stderr that names the problem; and a tiny trained
// masked LM and classifier work end to end with eval, predict and info.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/cli_runner.h"
#include "linformer/runtime.h"

namespace {

namespace fs = std::filesystem;
using lf::test::write_file;

using lf::test::CliResult;
using lf::test::split_lines;

bool contains(const std::string& haystack, const std::string& needle) { return haystack.find(needle) != std::string::npos; }

// Runs `cd dir && LINFORMER_CLI_PATH args`; args are shell words (quote JSON).
CliResult run_in(const fs::path& dir, const std::string& args) {
  return lf::test::run_linformer("cd '" + dir.string() + "' &&", args,
                                 (dir / ("stderr_" + std::to_string(::getpid()) + ".txt")).string());
}

// Deterministic text of about `bytes` bytes on one line (no '_', no newline), from a small vocabulary.
std::string make_text(size_t bytes) {
  static const char* words[] = {"the", "cat", "sat", "on", "a",    "mat",   "and",   "dog", "ran",
                                "to",  "park", "while", "birds", "sang", "in", "trees", "then", "home"};
  std::string out;
  uint64_t x = 12345;
  while (out.size() < bytes) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    if (!out.empty()) out += ' ';
    out += words[(x >> 33) % (sizeof words / sizeof words[0])];
  }
  return out;
}

// label<TAB>text, two classes told apart by their words, alternating.
std::string make_tsv(int lines) {
  static const char* good[] = {"good", "great", "fine", "nice", "happy"};
  static const char* bad[] = {"bad", "awful", "sad", "poor", "ugly"};
  std::string out;
  uint64_t x = 777;
  for (int i = 0; i < lines; ++i) {
    const int label = i % 2;
    out += std::to_string(label) + "\t";
    for (int w = 0; w < 4; ++w) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      out += std::string(w ? " " : "") + (label ? bad : good)[(x >> 33) % 5];
    }
    out += "\n";
  }
  return out;
}

// A tiny model: trains in a fraction of a second. --warmup must not exceed --steps (default 100).
#define TINY_MODEL "--d-model 16 --layers 1 --heads 2 --attention-options '{\"k\": 4}'"
#define TINY_TRAIN \
  "--steps 10 --warmup 1 --lr 3e-3 --batch-size 2 --seq-len 16 --eval-batches 1 --valid-fraction 0.1 --test-fraction 0.1 --log-every 1"

class CliCommands : public ::testing::Test {
 protected:
  static inline fs::path dir_;
  static inline std::string mlm_error_, cls_error_;  // empty when that fixture model trained

  static void SetUpTestSuite() {
    dir_ = fs::path(::testing::TempDir()) / ("linformer_cli_commands_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    write_file(dir_ / "small.txt", make_text(4000));
    write_file(dir_ / "empty.txt", "");
    write_file(dir_ / "garbage.gz", std::string("\x1f\x8b\x08\x00", 4) + "this is not deflate data at all \xff\xfe\x00\x01");
    write_file(dir_ / "notadir", "a regular file\n");
    write_file(dir_ / "badjson.json", "{\"model\": {\"d_model\": 16,\n");
    write_file(dir_ / "unknownkey.json", "{\"model\": {\"d_model\": 16}, \"training\": {}}\n");
    write_file(dir_ / "classes.tsv", make_tsv(40));
    fs::create_directories(dir_ / "emptyrun");
    fs::create_directories(dir_ / "noconfig");

    const CliResult mlm = run_in(dir_, "train --data small.txt --out run " TINY_MODEL " " TINY_TRAIN);
    if (mlm.status != 0)
      mlm_error_ = "training the fixture MLM failed (status " + std::to_string(mlm.status) + "): " + mlm.err;
    const CliResult cls = run_in(dir_, "train --task classify --data classes.tsv --out clsrun " TINY_MODEL
                                       " --steps 10 --warmup 1 --lr 3e-3 --batch-size 4 --seq-len 32 --eval-batches 1"
                                       " --valid-fraction 0.1 --test-fraction 0.1 --log-every 5");
    if (cls.status != 0)
      cls_error_ = "training the fixture classifier failed (status " + std::to_string(cls.status) + "): " + cls.err;

    // A checkpoint whose model.safetensors is cut in half.
    if (mlm_error_.empty()) {
      std::ifstream latest(dir_ / "run" / "checkpoints" / "latest");
      std::string name;
      std::getline(latest, name);
      fs::copy(dir_ / "run" / "checkpoints" / name, dir_ / "truncated", fs::copy_options::recursive);
      const fs::path weights = dir_ / "truncated" / "model.safetensors";
      fs::resize_file(weights, fs::file_size(weights) / 2);
      // A model-only checkpoint: weights and config, no optimizer or trainer state.
      fs::copy(dir_ / "run" / "checkpoints" / name, dir_ / "modelonly", fs::copy_options::recursive);
      fs::remove(dir_ / "modelonly" / "optimizer.safetensors");
      fs::remove(dir_ / "modelonly" / "trainer_state.json");
    }
  }

  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // The checkpoint directory `latest` names in a run.
  static fs::path latest_of(const std::string& run) {
    std::ifstream f(dir_ / run / "checkpoints" / "latest");
    std::string name;
    std::getline(f, name);
    return dir_ / run / "checkpoints" / name;
  }
};

struct BadCase {
  const char* args;     // shell words after `linformer`, run inside the scratch directory
  int status;           // expected exit status: 2 usage / invalid argument, 1 file or runtime failure
  const char* mention;  // must appear in the one `linformer: error:` line
  bool needs_mlm;       // uses the fixture's trained masked LM (run/, truncated/, modelonly/)
};

TEST_F(CliCommands, BadInputEndsInOneClearErrorLine) {
  const std::vector<BadCase> cases = {
      // train
      {"train --out r " TINY_MODEL " " TINY_TRAIN, 2, "--data", false},
      {"train --data nosuch.txt --out r " TINY_MODEL " " TINY_TRAIN, 1, "nosuch.txt", false},
      {"train --data empty.txt --out r " TINY_MODEL " " TINY_TRAIN, 1, "empty", false},
      {"train --data garbage.gz --out r " TINY_MODEL " " TINY_TRAIN, 1, "gzip", false},
      {"train --data small.txt --out notadir/run " TINY_MODEL " " TINY_TRAIN, 1, "notadir/run", false},
      {"train --data small.txt --out r --lr nan " TINY_MODEL, 2, "--lr", false},
      {"train --data small.txt --out r --lr -1 " TINY_MODEL, 2, "--lr", false},
      {"train --data small.txt --out r --lr abc " TINY_MODEL, 2, "--lr", false},
      {"train --data small.txt --out r --steps 0 " TINY_MODEL, 2, "--steps", false},
      {"train --data small.txt --out r --mask-span 0.5 " TINY_MODEL, 2, "--mask-span", false},
      {"train --data small.txt --out r --mask-span 100 " TINY_MODEL, 2, "--mask-span", false},
      {"train --data small.txt --out r --batch-size -2 " TINY_MODEL, 2, "--batch-size", false},
      {"train --data small.txt --out r --seq-len 64 --max-len 32 --warmup 1 " TINY_MODEL, 2, "max_len", false},
      {"train --data small.txt --out r --heads 3 --d-model 32", 2, "divisible", false},
      {"train --data small.txt --out r --attention bogus", 2, "bogus", false},
      {"train --data small.txt --out r --max-len 64 --attention-options '{\"k\": 1000}'", 2, "'k'", false},
      {"train --data small.txt --out r --attention-options 'not json'", 2, "--attention-options", false},
      {"train --data small.txt --out r --task clm", 2, "use 'causal_linformer'", false},
      {"train --data small.txt --out r --config nosuch.json", 1, "nosuch.json", false},
      {"train --data small.txt --out r --config badjson.json", 2, "not valid JSON", false},
      {"train --data small.txt --out r --config unknownkey.json", 2, "'training'", false},
      {"train --resume --out emptyrun", 2, "no checkpoint", false},
      {"train --data small.txt --out r --bogus", 2, "--bogus", false},
      // eval
      {"eval", 2, "--checkpoint", false},
      {"eval --checkpoint nosuchdir", 1, "nosuchdir", false},
      {"eval --checkpoint noconfig", 1, "config.json", false},
      {"eval --checkpoint truncated", 1, "model.safetensors", true},
      {"eval --checkpoint run --split bogus", 2, "--split", true},
      {"eval --checkpoint modelonly", 2, "--data", true},  // it does not name its data
      {"eval --checkpoint run --batch-size -1", 2, "--batch-size", true},
      {"eval --checkpoint run --seq-len 1000", 2, "--seq-len", true},
      {"eval --checkpoint run --mask-prob 1.5", 2, "--mask-prob", true},
      {"eval --checkpoint run --mask-prob 0", 2, "--mask-prob", true},
      // predict
      {"predict --checkpoint run --text 'the cat'", 2, "'_'", true},
      {"predict --checkpoint run --text 'th_ cat' --mask-char ab", 2, "--mask-char", true},
      {"predict --checkpoint run", 2, "--text", true},
      // info
      {"info --config nosuch.json", 1, "nosuch.json", false},
      {"info --checkpoint nosuchdir", 1, "nosuchdir", false},
      {"info --checkpoint run/checkpoints/step-00000010 --n 17", 2, "--n", true},
      {"info --checkpoint run/checkpoints/step-00000010 --n -3", 2, "--n", true},
      // bench
      {"bench --kinds nosuchkind --n 64", 2, "nosuchkind", false},
      {"bench --what sideways --n 64", 2, "sideways", false},
      {"bench --n 0", 2, "--n", false},
      {"bench --n 64,abc", 2, "abc", false},
      {"bench --d-model 30 --heads 4 --n 64", 2, "--d-model", false},
      {"bench --max-seconds 0 --n 64", 2, "--max-seconds", false},
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(std::string("linformer ") + c.args);
    if (c.needs_mlm && !mlm_error_.empty()) {
      ADD_FAILURE() << mlm_error_;
      continue;
    }
    const CliResult r = run_in(dir_, c.args);
    EXPECT_EQ(r.signal, 0) << "killed by signal " << r.signal << "; stderr: " << r.err;
    EXPECT_EQ(r.status, c.status) << "stderr: " << r.err;
    EXPECT_EQ(r.out, "") << "nothing on stdout for bad input";
    const std::vector<std::string> err = split_lines(r.err);
    std::vector<std::string> errors;
    for (const std::string& line : err)
      if (line.rfind("linformer: error: ", 0) == 0) errors.push_back(line);
    if (errors.size() != 1u) {
      ADD_FAILURE() << "expected exactly one 'linformer: error:' line, got " << errors.size() << "; stderr: " << r.err;
      continue;
    }
    EXPECT_EQ(err.back(), errors[0]) << "the error line comes last; stderr: " << r.err;
    EXPECT_TRUE(contains(errors[0], c.mention)) << "missing '" << c.mention << "' in: " << errors[0];
    for (const char* crash : {"terminate called", "what():", "Aborted", "Segmentation", "core dumped", "Assertion"})
      EXPECT_FALSE(contains(r.err, crash)) << "crash output in stderr: " << r.err;
  }
}

TEST_F(CliCommands, TrainingWroteARunDirectory) {
  ASSERT_EQ(mlm_error_, "");
  const fs::path ck = latest_of("run");
  EXPECT_EQ(ck.filename(), "step-00000010");
  for (const char* f : {"config.json", "model.safetensors", "optimizer.safetensors", "trainer_state.json"})
    EXPECT_TRUE(fs::is_regular_file(ck / f)) << ck / f;
  std::ifstream log(dir_ / "run" / "log.jsonl");
  int train = 0, eval = 0, summary = 0;
  for (std::string line; std::getline(log, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    const std::string type = j.at("type");
    train += type == "train";
    eval += type == "eval";
    summary += type == "summary";
  }
  EXPECT_EQ(train, 10);  // --log-every 1
  EXPECT_EQ(eval, 1);
  EXPECT_EQ(summary, 1);
}

// The first training record's loss (step 1, before any update, with --log-every 1).
double first_logged_loss(const fs::path& run) {
  std::ifstream log(run / "log.jsonl");
  for (std::string line; std::getline(log, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.at("type") == "train" && j.at("step") == 1) return j.at("loss").get<double>();
  }
  ADD_FAILURE() << "no step-1 record in " << run / "log.jsonl";
  return NAN;
}

// An untrained default-initialised LM guesses about uniformly: its first loss is near ln 260 = 5.56
// nats (the tied output scaled by d^-1/2 gives logits of unit scale; without it, √d). d_model 16.
TEST_F(CliCommands, UntrainedDefaultModelStartsNearAUniformGuess) {
  ASSERT_EQ(mlm_error_, "");
  const double uniform = std::log(260.0);
  const double first = first_logged_loss(dir_ / "run");
  EXPECT_GT(first, uniform - 0.5);
  EXPECT_LT(first, uniform + 1.0) << "the default model's first loss is far above a uniform guess";
  std::ifstream f(latest_of("run") / "config.json");
  EXPECT_TRUE(nlohmann::json::parse(f).at("scale_tied_output").get<bool>());
  // --no-scale-tied-output keeps the unscaled tied output (and its larger first loss: this test can fail).
  const CliResult r = run_in(dir_, "train --data small.txt --out unscaled --no-scale-tied-output " TINY_MODEL
                                   " --steps 1 --warmup 0 --lr 3e-3 --batch-size 2 --seq-len 16 --eval-batches 1 "
                                   "--valid-fraction 0.1 --test-fraction 0.1 --log-every 1");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_GT(first_logged_loss(dir_ / "unscaled"), uniform + 2.0);
}

// A PNG's width and height from its IHDR chunk; {0, 0} when the bytes are not a PNG.
std::pair<uint32_t, uint32_t> png_size(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  std::string head(24, '\0');
  if (!f.read(head.data(), 24) || head.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0 || head.compare(12, 4, "IHDR") != 0)
    return {0, 0};
  auto be32 = [&](size_t at) {
    uint32_t v = 0;
    for (size_t i = 0; i < 4; ++i) v = v << 8 | uint8_t(head[at + i]);
    return v;
  };
  return {be32(16), be32(20)};
}

bool no_matplotlib(const CliResult& r) { return r.status == 1 && contains(r.err, "no python3 with matplotlib"); }

TEST_F(CliCommands, PlotDrawsTheCurvesOfOneRun) {
  ASSERT_EQ(mlm_error_, "");
  const CliResult r = run_in(dir_, "plot run --out curves.png");
  if (no_matplotlib(r)) GTEST_SKIP() << r.err;
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_TRUE(contains(r.out, "curves.png (loss, bits_per_byte of 1 run)")) << r.out;
  // Two panels of 8 × 3.2 inches at 110 dpi; matplotlib draws 10 steps' curves in well over 10 kB.
  EXPECT_EQ(png_size(dir_ / "curves.png"), (std::pair<uint32_t, uint32_t>{880, 704}));
  EXPECT_GT(fs::file_size(dir_ / "curves.png"), 10000u);
  // No temporary file is left beside it.
  for (const auto& e : fs::directory_iterator(dir_)) EXPECT_NE(e.path().filename().string().rfind(".plot-", 0), 0u);
}

TEST_F(CliCommands, PlotComparesRunsOnTheChosenMetrics) {
  ASSERT_EQ(mlm_error_, "");
  ASSERT_EQ(cls_error_, "");
  const CliResult r = run_in(dir_, "plot run clsrun/log.jsonl --metric loss --metric accuracy --metric lr --out two.png");
  if (no_matplotlib(r)) GTEST_SKIP() << r.err;
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "two.png (loss, accuracy, lr of 2 runs)")) << r.out;
  EXPECT_EQ(png_size(dir_ / "two.png"), (std::pair<uint32_t, uint32_t>{880, 1056}));  // three panels
}

TEST_F(CliCommands, AttentionOptionsFlagKeepsTheConfigFilesKind) {
  write_file(dir_ / "full.json", "{\"model\": {\"attention\": {\"kind\": \"full\"}}}\n");
  const CliResult r = run_in(dir_, "train --config full.json --data small.txt --out fullrun --attention-options "
                                   "'{\"qkv_bias\": true}' --d-model 16 --layers 1 --heads 2 --steps 1 --warmup 0 "
                                   "--batch-size 2 --seq-len 16 --eval-batches 1 --valid-fraction 0.1 --test-fraction 0.1");
  ASSERT_EQ(r.status, 0) << r.err;
  std::ifstream f(dir_ / "fullrun" / "checkpoints" / "step-00000001" / "config.json");
  const nlohmann::json config = nlohmann::json::parse(f);
  ASSERT_EQ(config.at("attention").size(), 1u) << config.dump();
  EXPECT_EQ(config["attention"][0].at("kind").get<std::string>(), "full") << config.dump();
  EXPECT_EQ(config["attention"][0].at("options"), nlohmann::json({{"qkv_bias", true}})) << config.dump();
}

TEST_F(CliCommands, EvalPrintsBitsPerByte) {
  ASSERT_EQ(mlm_error_, "");
  const CliResult r = run_in(dir_, "eval --checkpoint run");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "bits/byte")) << r.out;
  EXPECT_TRUE(contains(r.out, "valid split")) << r.out;
  const CliResult test = run_in(dir_, "eval --checkpoint run/checkpoints/step-00000010 --split test --batches 2");
  ASSERT_EQ(test.status, 0) << test.err;
  EXPECT_TRUE(contains(test.out, "test split")) << test.out;
}

TEST_F(CliCommands, EvalJsonPrintsOneObject) {
  ASSERT_EQ(mlm_error_, "");
  const CliResult r = run_in(dir_, "eval --checkpoint run --json");
  ASSERT_EQ(r.status, 0) << r.err;
  const std::vector<std::string> out = split_lines(r.out);
  ASSERT_EQ(out.size(), 1u) << r.out;
  const nlohmann::json j = nlohmann::json::parse(out[0]);
  ASSERT_TRUE(j.is_object());
  for (const char* key : {"loss", "bits_per_byte", "accuracy"}) {
    ASSERT_TRUE(j.contains(key) && j[key].is_number()) << key << " in " << out[0];
  }
  EXPECT_GT(j["loss"].get<double>(), 0);
  EXPECT_NEAR(j["bits_per_byte"].get<double>(), j["loss"].get<double>() / std::log(2.0), 1e-9);
  EXPECT_GE(j["accuracy"].get<double>(), 0);
  EXPECT_LE(j["accuracy"].get<double>(), 1);
  EXPECT_EQ(j.value("split", ""), "valid");
  // --mask-prob scores that fraction of the same windows instead of the training run's 0.15.
  const CliResult more = run_in(dir_, "eval --checkpoint run --json --mask-prob 0.6");
  ASSERT_EQ(more.status, 0) << more.err;
  const nlohmann::json m = nlohmann::json::parse(split_lines(more.out).at(0));
  EXPECT_GT(m["count"].get<double>(), 2.5 * j["count"].get<double>()) << out[0] << " vs " << more.out;
}

// --mask-span trains with SpanBERT masking and is saved with the run's options.
TEST_F(CliCommands, MaskSpanIsATrainingOption) {
  const CliResult r = run_in(dir_, "train --data small.txt --out spanrun --mask-span 3 " TINY_MODEL " " TINY_TRAIN);
  ASSERT_EQ(r.status, 0) << r.err;
  std::ifstream f(latest_of("spanrun") / "trainer_state.json");
  const nlohmann::json state = nlohmann::json::parse(f);
  EXPECT_EQ(state["options"]["mask_span"].get<double>(), 3.0) << state.dump();
}

TEST_F(CliCommands, PredictFillsTheMaskedBytes) {
  ASSERT_EQ(mlm_error_, "");
  const std::string text = "th_ cat";
  const CliResult r = run_in(dir_, "predict --checkpoint run --text '" + text + "'");
  ASSERT_EQ(r.status, 0) << r.err;
  ASSERT_EQ(r.out.size(), text.size() + 1) << "one line as long as the input: '" << r.out << "'";
  EXPECT_EQ(r.out.back(), '\n');
  const std::string line = r.out.substr(0, text.size());
  EXPECT_EQ(line.find('_'), std::string::npos) << line;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '_') continue;
    EXPECT_EQ(line[i], text[i]) << "byte " << i << " changed: " << line;
  }
  // Longer than the model's max_len (16): each mask is read from a window around it.
  const std::string longer = "the cat sat on th_ mat and the dog sat on the l_g";
  const CliResult lr = run_in(dir_, "predict --checkpoint run --text '" + longer + "'");
  ASSERT_EQ(lr.status, 0) << lr.err;
  ASSERT_EQ(lr.out.size(), longer.size() + 1) << lr.out;
  EXPECT_EQ(lr.out.find('_'), std::string::npos) << lr.out;
  EXPECT_EQ(lr.out.substr(0, 17), longer.substr(0, 17));
  // Another mask character.
  const CliResult star = run_in(dir_, "predict --checkpoint run --text 'th* c*t' --mask-char '*'");
  ASSERT_EQ(star.status, 0) << star.err;
  ASSERT_EQ(star.out.size(), 8u) << star.out;
  EXPECT_EQ(star.out.find('*'), std::string::npos) << star.out;
}

// --precision int8 runs a checkpoint trained in fp32: eval close to fp32's (and not fp32's exact
// numbers: the linear layers were quantised), predict fills the masks, and the same checkpoint with
// the classifier's head too.
TEST_F(CliCommands, Int8EvaluatesAndPredictsAnFp32Checkpoint) {
  ASSERT_EQ(mlm_error_, "");
  ASSERT_EQ(cls_error_, "");
  if (const std::string why = lf::precision_unsupported_reason(lf::Precision::int8); !why.empty()) GTEST_SKIP() << why;
  for (const char* run : {"run", "clsrun"}) {
    SCOPED_TRACE(run);
    const CliResult fp32 = run_in(dir_, std::string("eval --checkpoint ") + run + " --json");
    const CliResult int8 = run_in(dir_, std::string("--precision int8 eval --checkpoint ") + run + " --json");
    ASSERT_EQ(fp32.status, 0) << fp32.err;
    ASSERT_EQ(int8.status, 0) << int8.err;
    const nlohmann::json a = nlohmann::json::parse(split_lines(fp32.out).at(0)), b = nlohmann::json::parse(split_lines(int8.out).at(0));
    const double loss32 = a["loss"].get<double>(), loss8 = b["loss"].get<double>();
    EXPECT_NE(loss8, loss32) << "int8 gave fp32's exact loss: nothing was quantised";
    EXPECT_LT(std::abs(loss8 - loss32), 0.05 * loss32) << "int8 loss " << loss8 << " against fp32's " << loss32;
    EXPECT_EQ(b["count"], a["count"]);
  }
  const CliResult p = run_in(dir_, "--precision int8 predict --checkpoint run --text 'th_ cat'");
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_EQ(p.out.size(), 8u) << p.out;
  EXPECT_EQ(p.out.find('_'), std::string::npos) << p.out;
}

TEST_F(CliCommands, ModelOnlyCheckpointServesEvalAndPredict) {
  ASSERT_EQ(mlm_error_, "");
  const CliResult p = run_in(dir_, "predict --checkpoint modelonly --text 'th_ cat'");
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_EQ(p.out.size(), 8u) << p.out;
  const CliResult e = run_in(dir_, "eval --checkpoint modelonly --data small.txt --seq-len 16 --batch-size 2 "
                                   "--valid-fraction 0.1 --test-fraction 0.1 --batches 2");
  ASSERT_EQ(e.status, 0) << e.err;
  EXPECT_TRUE(contains(e.out, "bits/byte")) << e.out;
}

TEST_F(CliCommands, InfoDescribesTheCheckpoint) {
  ASSERT_EQ(mlm_error_, "");
  const CliResult r = run_in(dir_, "info --checkpoint run/checkpoints/step-00000010 --batch 2");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "parameters: ")) << r.out;
  EXPECT_TRUE(contains(r.out, "activation memory")) << r.out;
  EXPECT_TRUE(contains(r.out, "B=2")) << r.out;
  EXPECT_TRUE(contains(r.out, "\"d_model\":16")) << r.out;
}

TEST_F(CliCommands, ClassifierPredictsAClassWithProbabilities) {
  ASSERT_EQ(cls_error_, "");
  const CliResult r = run_in(dir_, "predict --checkpoint clsrun --text 'good nice happy'");
  ASSERT_EQ(r.status, 0) << r.err;
  const std::vector<std::string> out = split_lines(r.out);
  ASSERT_EQ(out.size(), 3u) << r.out;
  EXPECT_TRUE(out[0] == "class 0" || out[0] == "class 1") << out[0];
  double sum = 0;
  for (int k = 0; k < 2; ++k) {
    const std::string prefix = "  p(" + std::to_string(k) + ") = ";
    ASSERT_EQ(out[size_t(1 + k)].rfind(prefix, 0), 0u) << out[size_t(1 + k)];
    const double p = std::stod(out[size_t(1 + k)].substr(prefix.size()));
    EXPECT_GE(p, 0);
    EXPECT_LE(p, 1);
    sum += p;
  }
  EXPECT_NEAR(sum, 1.0, 2e-4);  // printed with 4 decimals
  const CliResult e = run_in(dir_, "eval --checkpoint clsrun --json");
  ASSERT_EQ(e.status, 0) << e.err;
  const nlohmann::json j = nlohmann::json::parse(e.out);
  EXPECT_GT(j.at("count").get<int64_t>(), 0) << e.out;
}

// A header row and string labels, 'pos' twice as often as 'neg', told apart by their words.
std::string make_named_tsv(int lines) {
  const std::string tsv = make_tsv(3 * lines);
  std::string out = "label\ttext\n";
  int kept = 0;
  for (const std::string& line : split_lines(tsv)) {
    if (kept == lines) break;
    const bool pos = line[0] == '0';
    if (!pos && kept % 3 != 2) continue;  // every third example is 'neg'
    out += (pos ? "pos" : "neg") + line.substr(1) + "\n";
    ++kept;
  }
  return out;
}

// A classifier on a TSV with a header and string labels: the label map is saved and named by eval and
// predict; eval reports the majority baseline, per-class metrics and the confusion matrix (text and
// JSON), on the split asked for; a label the model never saw is named with its file and line.
TEST_F(CliCommands, ClassifierWithStringLabelsReportsPerClassMetrics) {
  write_file(dir_ / "named.tsv", make_named_tsv(60));  // 54 training examples, 6 held out
  const CliResult t = run_in(dir_, "train --task classify --data named.tsv --out namedrun " TINY_MODEL
                                   " --steps 10 --warmup 1 --lr 3e-3 --batch-size 4 --seq-len 32 --eval-batches 2"
                                   " --valid-fraction 0.1 --log-every 5");
  ASSERT_EQ(t.status, 0) << t.err;
  EXPECT_TRUE(contains(t.out, "baseline: always answering the most frequent class 'pos' scores")) << t.out;
  EXPECT_TRUE(contains(t.out, "train: accuracy ")) << t.out;
  std::ifstream config_file(latest_of("namedrun") / "config.json");
  EXPECT_EQ(nlohmann::json::parse(config_file)["class_names"], (std::vector<std::string>{"neg", "pos"}));

  const CliResult e = run_in(dir_, "eval --checkpoint namedrun --json");
  ASSERT_EQ(e.status, 0) << e.err;
  const nlohmann::json j = nlohmann::json::parse(e.out), cls = j.at("classification");
  EXPECT_EQ(j["split"], "valid");
  ASSERT_EQ(j["count"], 6);
  ASSERT_EQ(cls["classes"].size(), 2u);
  EXPECT_EQ(cls["classes"][0]["name"], "neg");
  EXPECT_EQ(cls["classes"][1]["name"], "pos");
  EXPECT_EQ(cls["majority_class"], "pos");
  int64_t correct = 0, total = 0;
  double f1_sum = 0;
  for (int k = 0; k < 2; ++k) {
    const nlohmann::json& c = cls["classes"][size_t(k)];
    int64_t row = 0, col = 0;
    for (int q = 0; q < 2; ++q) {
      row += cls["confusion"][size_t(k)][size_t(q)].get<int64_t>();
      col += cls["confusion"][size_t(q)][size_t(k)].get<int64_t>();
    }
    EXPECT_EQ(c["support"], row);
    EXPECT_EQ(c["predicted"], col);
    const int64_t hit = cls["confusion"][size_t(k)][size_t(k)].get<int64_t>();
    correct += hit;
    total += row;
    if (col) {
      EXPECT_DOUBLE_EQ(c["precision"].get<double>(), double(hit) / double(col));
    }
    if (row) {
      EXPECT_DOUBLE_EQ(c["recall"].get<double>(), double(hit) / double(row));
    }
    f1_sum += c["f1"].get<double>();
  }
  EXPECT_EQ(total, 6);
  EXPECT_DOUBLE_EQ(j["accuracy"].get<double>(), double(correct) / 6);
  EXPECT_DOUBLE_EQ(cls["accuracy"].get<double>(), j["accuracy"].get<double>());
  EXPECT_NEAR(cls["macro_f1"].get<double>(), f1_sum / 2, 1e-12);
  EXPECT_DOUBLE_EQ(cls["majority_accuracy"].get<double>(), double(cls["classes"][1]["support"].get<int64_t>()) / 6);

  const CliResult text = run_in(dir_, "eval --checkpoint namedrun");
  ASSERT_EQ(text.status, 0) << text.err;
  EXPECT_TRUE(contains(text.out, "(valid split: the held-out examples)")) << text.out;
  EXPECT_TRUE(contains(text.out, "baseline: always answering the most frequent training class 'pos' scores")) << text.out;
  EXPECT_TRUE(contains(text.out, "macro-F1 ")) << text.out;
  EXPECT_TRUE(contains(text.out, "confusion matrix (rows: true class, columns: predicted)")) << text.out;
  const std::vector<std::string> lines = split_lines(text.out);
  EXPECT_EQ(std::count_if(lines.begin(), lines.end(), [](const std::string& l) { return l.rfind("pos ", 0) == 0; }), 2)
      << text.out;  // its metrics row and its confusion row

  // --split train is the training examples, not the held-out ones.
  const CliResult tr = run_in(dir_, "eval --checkpoint namedrun --split train --json");
  ASSERT_EQ(tr.status, 0) << tr.err;
  const nlohmann::json jt = nlohmann::json::parse(tr.out);
  EXPECT_EQ(jt["split"], "train");
  EXPECT_EQ(jt["count"], 54);

  const CliResult p = run_in(dir_, "predict --checkpoint namedrun --text 'good nice happy'");
  ASSERT_EQ(p.status, 0) << p.err;
  const std::vector<std::string> out = split_lines(p.out);
  ASSERT_EQ(out.size(), 3u) << p.out;
  EXPECT_TRUE(out[0] == "class pos" || out[0] == "class neg") << out[0];
  EXPECT_EQ(out[1].rfind("  p(neg) = ", 0), 0u) << out[1];
  EXPECT_EQ(out[2].rfind("  p(pos) = ", 0), 0u) << out[2];

  // A label the model was not trained on, in eval's --data: file, line and label, exit 1.
  write_file(dir_ / "unknown.tsv", "pos\tgood\nneg\tbad\npos\tfine\nmaybe\tso so\nneg\tsad\n");
  const CliResult u = run_in(dir_, "eval --checkpoint namedrun --data unknown.tsv --valid-fraction 0.4");
  EXPECT_EQ(u.status, 1) << u.err;
  EXPECT_TRUE(contains(u.err, "unknown.tsv' line 4: label 'maybe' is not one of the model's 2 classes (neg, pos)")) << u.err;
  EXPECT_FALSE(contains(u.err, "cross_entropy")) << u.err;
}

// A model that memorised its training examples while the held-out ones are labelled against them:
// train and eval both warn (stderr), and still succeed.
TEST_F(CliCommands, OverfittedClassifierIsWarnedAbout) {
  std::string tsv;
  for (int i = 0; i < 36; ++i) tsv += i % 4 ? "pos\taaaaaaaa\n" : "neg\tzzzzzzzz\n";
  for (int i = 0; i < 4; ++i) tsv += "pos\tzzzzzzzz\n";  // held out
  write_file(dir_ / "memorise.tsv", tsv);
  const CliResult t = run_in(dir_, "train --task classify --data memorise.tsv --out overfit " TINY_MODEL
                                   " --dropout 0 --steps 60 --warmup 5 --lr 1e-2 --batch-size 8 --seq-len 16"
                                   " --valid-fraction 0.1 --log-every 30");
  ASSERT_EQ(t.status, 0) << t.err;
  EXPECT_TRUE(contains(t.out, "train: accuracy 1.0000 over 36 examples")) << t.out;
  EXPECT_TRUE(contains(t.out, "most frequent class 'pos' scores 1.0000 on valid")) << t.out;
  EXPECT_TRUE(contains(t.err, "warning: the model looks overfitted: training accuracy 1 but valid accuracy")) << t.err;
  const CliResult e = run_in(dir_, "eval --checkpoint overfit --split test");
  ASSERT_EQ(e.status, 0) << e.err;
  EXPECT_TRUE(contains(e.err, "linformer: warning: the model looks overfitted: training accuracy 1 but test accuracy"))
      << e.err;
  const CliResult tr = run_in(dir_, "eval --checkpoint overfit --split train");  // nothing held out to compare
  ASSERT_EQ(tr.status, 0) << tr.err;
  EXPECT_FALSE(contains(tr.err, "warning")) << tr.err;
}

// A checkpoint saved before label maps existed (no class_names in config.json) still loads, with the
// identity map: class k is the label "k".
TEST_F(CliCommands, ClassifierCheckpointWithoutALabelMapStillLoads) {
  ASSERT_EQ(cls_error_, "");
  fs::copy(latest_of("clsrun"), dir_ / "legacy_cls", fs::copy_options::recursive);
  nlohmann::json config = nlohmann::json::parse(std::ifstream(dir_ / "legacy_cls" / "config.json"));
  ASSERT_EQ(config["class_names"], (std::vector<std::string>{"0", "1"}));
  config.erase("class_names");
  write_file(dir_ / "legacy_cls" / "config.json", config.dump(2));
  const CliResult e = run_in(dir_, "eval --checkpoint legacy_cls --data classes.tsv --json");
  ASSERT_EQ(e.status, 0) << e.err;
  const nlohmann::json j = nlohmann::json::parse(e.out);
  EXPECT_EQ(j["classification"]["classes"][1]["name"], "1");
  const CliResult p = run_in(dir_, "predict --checkpoint legacy_cls --text 'good nice happy'");
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_TRUE(contains(p.out, "  p(1) = ")) << p.out;
  // Resuming such a run keeps the identity map (the checkpoint's config, without class_names).
  fs::create_directories(dir_ / "legacy_run" / "checkpoints");
  fs::copy(dir_ / "legacy_cls", dir_ / "legacy_run" / "checkpoints" / "step-00000010", fs::copy_options::recursive);
  write_file(dir_ / "legacy_run" / "checkpoints" / "latest", "step-00000010\n");
  const CliResult r = run_in(dir_, "train --resume --out legacy_run --steps 12");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "baseline: always answering the most frequent class '")) << r.out;
  const nlohmann::json resumed = nlohmann::json::parse(std::ifstream(latest_of("legacy_run") / "config.json"));
  EXPECT_FALSE(resumed.contains("class_names")) << resumed.dump();
  EXPECT_EQ(resumed["n_classes"], 2);
}

// The causal Linformer trains a causal LM from the command line, and its checkpoint evaluates; plain
// `linformer` is refused for it with a message naming causal_linformer (the bad-input table too).
TEST_F(CliCommands, TrainsACausalLmWithTheCausalLinformer) {
  const CliResult r = run_in(dir_, "train --task clm --attention causal_linformer --attention-options "
                                   "'{\"block\": 4, \"slots\": 2, \"max_blocks\": 2}' --d-model 16 --layers 1 --heads 2"
                                   " --data small.txt --out clinrun --steps 5 --warmup 1 --batch-size 2 --seq-len 16"
                                   " --eval-batches 1 --valid-fraction 0.1 --test-fraction 0.1");
  ASSERT_EQ(r.status, 0) << r.err;
  std::ifstream f(dir_ / "clinrun" / "checkpoints" / "step-00000005" / "config.json");
  ASSERT_TRUE(f.good()) << r.out;
  const nlohmann::json config = nlohmann::json::parse(f);
  EXPECT_EQ(config["attention"][0].at("kind").get<std::string>(), "causal_linformer") << config.dump();
  const CliResult e = run_in(dir_, "eval --checkpoint clinrun --json");
  ASSERT_EQ(e.status, 0) << e.err;
  EXPECT_TRUE(std::isfinite(nlohmann::json::parse(e.out).at("loss").get<double>())) << e.out;
  const CliResult refused = run_in(dir_, "train --task clm --attention linformer --data small.txt --out linrun --steps 1");
  EXPECT_EQ(refused.status, 2);
  EXPECT_TRUE(contains(refused.err, "use 'causal_linformer', its causal form")) << refused.err;
}

// `eval --split` is honoured for the language models too: train, valid and test are different text.
TEST_F(CliCommands, EvalSplitIsHonouredForLanguageModels) {
  ASSERT_EQ(mlm_error_, "");
  const CliResult clm = run_in(dir_, "train --task clm --attention full --d-model 16 --layers 1 --heads 2 --data small.txt"
                                     " --out clmrun --steps 2 --warmup 1 --batch-size 2 --seq-len 16 --eval-batches 1"
                                     " --valid-fraction 0.1 --test-fraction 0.1");
  ASSERT_EQ(clm.status, 0) << clm.err;
  for (const char* run : {"run", "clmrun"}) {
    SCOPED_TRACE(run);
    std::map<std::string, nlohmann::json> by_split;
    for (const char* split : {"train", "valid", "test"}) {
      const CliResult r = run_in(dir_, std::string("eval --checkpoint ") + run + " --split " + split + " --json");
      ASSERT_EQ(r.status, 0) << r.err;
      by_split[split] = nlohmann::json::parse(r.out);
      EXPECT_EQ(by_split[split]["split"], split);
    }
    // 50 batches (the cap) of the 80 % training split; the 10 % held-out splits have fewer windows.
    EXPECT_GT(by_split["train"]["count"].get<int64_t>(), by_split["valid"]["count"].get<int64_t>());
    EXPECT_NE(by_split["train"]["loss"], by_split["valid"]["loss"]);
    EXPECT_NE(by_split["valid"]["loss"], by_split["test"]["loss"]);
  }
}

std::string file_bytes(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// The losses of a run's log.jsonl, in order (train records and evaluations).
std::vector<double> logged_losses(const fs::path& log_path) {
  std::vector<double> losses;
  std::ifstream log(log_path);
  for (std::string line; std::getline(log, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("loss")) losses.push_back(j["loss"].get<double>());
  }
  return losses;
}

// Determinism from the command line: the same command (seed, --threads 2) twice gives byte-identical
// checkpoint files and the same logged losses; another --seed changes the weights.
TEST_F(CliCommands, SameSeedAndThreadsGiveByteIdenticalCheckpoints) {
  const std::string train = "--threads 2 train --data small.txt " TINY_MODEL " " TINY_TRAIN " --dropout 0.2";
  for (const char* run : {"det_a", "det_b"}) {
    const CliResult r = run_in(dir_, train + " --out " + run);
    ASSERT_EQ(r.status, 0) << r.err;
  }
  const CliResult other = run_in(dir_, train + " --seed 7 --out det_c");
  ASSERT_EQ(other.status, 0) << other.err;
  const fs::path a = latest_of("det_a"), b = latest_of("det_b"), c = latest_of("det_c");
  for (const char* f : {"model.safetensors", "optimizer.safetensors", "config.json"}) {
    const std::string bytes = file_bytes(a / f);
    ASSERT_FALSE(bytes.empty()) << a / f;
    EXPECT_TRUE(bytes == file_bytes(b / f)) << f << " differs between two runs with the same seed";
  }
  EXPECT_FALSE(file_bytes(a / "model.safetensors") == file_bytes(c / "model.safetensors"));
  const std::vector<double> losses = logged_losses(dir_ / "det_a" / "log.jsonl");
  EXPECT_EQ(losses.size(), 11u);  // 10 train records, 1 evaluation
  EXPECT_EQ(losses, logged_losses(dir_ / "det_b" / "log.jsonl"));
}

}  // namespace
