// `linformer convert` as a user runs it: train a tiny exact-attention model, convert it to Linformer
// with a longer max_len, fine-tune the converted run with `train --resume`, evaluate and predict
// with it. Bad input of the subcommand is in docs/bad_input.md (tests/cli/test_bad_input.cpp).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/cli_runner.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST(CliConvert, ExactToLinformerThenResumeEvalPredict) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("linformer_cli_convert_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    std::ofstream out(dir / "data.txt");
    for (int i = 0; i < 300; ++i) out << "the cat sat on the mat and the dog ran to the park. ";
  }
  auto run = [&](const std::string& args) {
    return lf::test::run_linformer("cd '" + dir.string() + "' &&", args, (dir / "stderr.txt").string());
  };
  lf::test::CliResult r = run(
      "train --data data.txt --out exact --attention flash --position learned --d-model 16 --layers 1 --heads 2 --seq-len 16 --steps 2 "
      "--warmup 1 --batch-size 2 --eval-batches 1 --valid-fraction 0.1 --test-fraction 0.1");
  ASSERT_EQ(r.status, 0) << r.err;

  r = run("convert --help");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "--max-len") && contains(r.out, "--sharing") && contains(r.out, "--init-projection")) << r.out;

  r = run("convert --checkpoint exact --out lin --attention linformer --k 8 --max-len 32 --lr 2e-3"
          " --short-seq-prob 0.25 --mask-span 2");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "embeddings.position.weight: rows 0-15 kept, rows 16-31 tiled")) << r.out;
  EXPECT_TRUE(contains(r.out, "layers.0.attn.proj_k: new: mean pooling over 8 windows of max_len 32")) << r.out;
  EXPECT_TRUE(contains(r.out, "checkpoints/step-00000000")) << r.out;
  std::ifstream state_file(dir / "lin" / "checkpoints" / "step-00000000" / "trainer_state.json");
  const json state = json::parse(state_file);
  EXPECT_EQ(state.at("step"), 0);
  EXPECT_EQ(state.at("options").at("seq_len"), 32);
  EXPECT_EQ(state.at("options").at("lr"), 2e-3);
  EXPECT_EQ(state.at("options").at("short_seq_prob"), 0.25);  // every train flag overrides the source's
  EXPECT_EQ(state.at("options").at("mask_span"), 2.0);
  EXPECT_TRUE(contains(state.at("converted_from").at("checkpoint").get<std::string>(), "step-00000002"));

  r = run("train --resume --out lin --steps 3");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "resuming from") && contains(r.err, "step-00000000")) << r.err;
  EXPECT_TRUE(fs::exists(dir / "lin" / "checkpoints" / "step-00000003"));
  r = run("eval --checkpoint lin --batches 1");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "bits/byte")) << r.out;
  r = run("predict --checkpoint lin --text 'the c_t sat'");
  ASSERT_EQ(r.status, 0) << r.err;

  // Converting into a run that exists is refused, and leaves it alone.
  r = run("convert --checkpoint exact --out lin --attention linformer --k 8");
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(contains(r.err, "already holds a training run")) << r.err;
  EXPECT_TRUE(fs::exists(dir / "lin" / "checkpoints" / "step-00000003"));
  fs::remove_all(dir);
}

// convert --from hands a peer's checkpoint to `python3 -m linformer.convert` (or $LINFORMER_PYTHON's).
// An interpreter that cannot import linformer (here /bin/false, and one that does not exist) is one
// clear line and exit status 1, before anything is written; misused flags are usage errors (2). The
// conversion itself is tested end to end by python/tests/test_convert.py.
TEST(CliConvert, FromPeerNeedsThePythonPackage) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("linformer_cli_convert_from_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto run = [&](const std::string& env, const std::string& args) {
    return lf::test::run_linformer("cd '" + dir.string() + "' && " + env, args, (dir / "stderr.txt").string());
  };
  // A named list, not a braced one in the loop (GCC 12's ASan with detect_stack_use_after_return crashes on those).
  const std::vector<std::string> pythons = {"/bin/false", "/nonexistent/python3"};
  for (const std::string& python : pythons) {
    SCOPED_TRACE(python);
    lf::test::CliResult r =
        run("LINFORMER_PYTHON=" + python, "convert --from lucidrains --input peer.safetensors --out conv --heads 2");
    EXPECT_EQ(r.status, 1) << r.err;
    EXPECT_TRUE(contains(r.err, "cannot import linformer.convert") && contains(r.err, python)) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(fs::exists(dir / "conv"));
  }
  lf::test::CliResult r = run("LINFORMER_PYTHON=/bin/false", "convert --from lucidrains --out conv");
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(contains(r.err, "needs --input")) << r.err;
  r = run("LINFORMER_PYTHON=/bin/false", "convert --from tatp22 --input x.pt --checkpoint c --out conv");
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(contains(r.err, "--checkpoint resizes our own checkpoints")) << r.err;
  r = run("LINFORMER_PYTHON=/bin/false", "convert --from fairseq --input x.pt --out conv --lr 1e-3");
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(contains(r.err, "training options")) << r.err;
  r = run("", "convert --from other --input x.pt --out conv");
  EXPECT_EQ(r.status, 2);
  r = run("", "convert --out conv");
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(contains(r.err, "--checkpoint") && contains(r.err, "--from")) << r.err;
  fs::remove_all(dir);
}

}  // namespace
