// Run directories that cannot lose work (`linformer train --out`), with real processes: a second run
// on a directory in use is refused naming the first's pid, and a killed holder leaves no stale lock;
// a directory with a user's files is refused unless --force, and whatever the user put there (beside
// the run, or inside a checkpoint directory) survives pruning, overwriting and --force; the data path
// is stored absolute; the directory is not created when the data is too small. Also the flag checks
// of train (--resume, options of another task, a mistyped flag, a checkpoint's config.json).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli/cli_runner.h"

namespace {

namespace fs = std::filesystem;
using lf::test::read_file;
using lf::test::write_file;
using lf::test::CliResult;
using nlohmann::json;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string words(size_t bytes) {
  static const char* w[] = {"the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "park", "home"};
  std::string out;
  uint64_t x = 99;
  while (out.size() < bytes) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    out += std::string(out.empty() ? "" : " ") + w[(x >> 33) % 12];
  }
  return out;
}

#define TINY "--d-model 16 --layers 1 --heads 2 --attention-options '{\"k\": 4}' --threads 1 "
#define TINY_RUN TINY "--warmup 1 --batch-size 2 --seq-len 16 --eval-batches 1 --valid-fraction 0.1 --test-fraction 0.1 "

class RunDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("linformer_run_dir_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    write_file(dir_ / "data.txt", words(4000));
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  CliResult run(const std::string& args, const fs::path& cwd = {}) {
    return lf::test::run_linformer("cd '" + (cwd.empty() ? dir_ : cwd).string() + "' &&", args,
                                   (dir_ / "stderr.txt").string());
  }
  fs::path dir_;
};

// The pid a lock file names, once its holder wrote it (0 after the timeout).
pid_t wait_for_lock(const fs::path& lock_file, pid_t expected) {
  for (int i = 0; i < 600; ++i) {  // up to 60 s on a loaded machine
    const std::string text = read_file(lock_file);
    if (!text.empty() && std::atoi(text.c_str()) == expected) return expected;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return 0;
}

TEST_F(RunDirTest, ASecondRunIsRefusedWithTheHoldersPidAndAKilledHolderLeavesNoLock) {
  // The first run: far more steps than it will live for, no checkpoint on the way.
  const pid_t first = ::fork();
  ASSERT_GE(first, 0);
  if (first == 0) {
    if (::chdir(dir_.c_str()) != 0) ::_exit(126);
    if (!std::freopen("/dev/null", "w", stdout) || !std::freopen("first_stderr.txt", "w", stderr)) ::_exit(126);
    ::execl(LINFORMER_CLI_PATH, LINFORMER_CLI_PATH, "train", "--data", "data.txt", "--out", "run", "--d-model", "16",
            "--layers", "1", "--heads", "2", "--attention-options", "{\"k\": 4}", "--threads", "1", "--warmup", "1",
            "--batch-size", "2", "--seq-len", "16", "--eval-batches", "1", "--valid-fraction", "0.1",
            "--test-fraction", "0.1", "--steps", "100000000", "--eval-every", "0", "--save-every", "0",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // The CLI re-executes itself once (its OpenMP settings), keeping its pid.
  const pid_t seen = wait_for_lock(dir_ / "run" / ".linformer-lock", first);
  if (seen != first) {
    ::kill(first, SIGKILL);
    ::waitpid(first, nullptr, 0);
    FAIL() << "the first run never held the lock; its stderr: " << read_file(dir_ / "first_stderr.txt");
  }
  const CliResult second = run("train --data data.txt --out run " TINY_RUN "--steps 2");
  EXPECT_EQ(second.status, 1) << second.err;
  EXPECT_TRUE(contains(second.err, "is in use by another training run (pid " + std::to_string(first) + ")"))
      << second.err;
  EXPECT_TRUE(contains(second.err, "--out")) << second.err;
  // --resume and --force do not get past the lock either.
  const CliResult forced = run("train --data data.txt --out run " TINY_RUN "--steps 2 --force");
  EXPECT_EQ(forced.status, 1) << forced.err;
  EXPECT_TRUE(contains(forced.err, "pid " + std::to_string(first))) << forced.err;

  ASSERT_EQ(::kill(first, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(first, &status, 0), first);
  EXPECT_TRUE(WIFSIGNALED(status));
  // Killed, it holds nothing: the directory (ours, with no checkpoint) takes a new run at once.
  const CliResult third = run("train --data data.txt --out run " TINY_RUN "--steps 2");
  EXPECT_EQ(third.status, 0) << third.err;
  EXPECT_TRUE(fs::exists(dir_ / "run" / "checkpoints" / "step-00000002" / "model.safetensors"));
}

TEST_F(RunDirTest, ADirectoryWithAUsersFilesIsRefusedAndForceLeavesThemAlone) {
  fs::create_directories(dir_ / "mine");
  write_file(dir_ / "mine" / "notes.txt", "my notes\n");
  const CliResult refused = run("train --data data.txt --out mine " TINY_RUN "--steps 2");
  EXPECT_EQ(refused.status, 1) << refused.err;
  EXPECT_TRUE(contains(refused.err, "'mine' is not empty (notes.txt)")) << refused.err;
  EXPECT_TRUE(contains(refused.err, "--force")) << refused.err;
  EXPECT_FALSE(fs::exists(dir_ / "mine" / ".linformer-lock")) << "a refused directory is left as it was";
  EXPECT_FALSE(fs::exists(dir_ / "mine" / "checkpoints"));

  const CliResult forced = run("train --data data.txt --out mine " TINY_RUN "--steps 2");
  EXPECT_EQ(forced.status, 1);
  const CliResult ok = run("train --data data.txt --out mine " TINY_RUN "--steps 2 --force");
  ASSERT_EQ(ok.status, 0) << ok.err;
  EXPECT_EQ(read_file(dir_ / "mine" / "notes.txt"), "my notes\n");
  EXPECT_TRUE(fs::exists(dir_ / "mine" / "checkpoints" / "step-00000002" / "model.safetensors"));

  // A user's log.jsonl (or checkpoints/) where the run would write: refused even with --force.
  fs::create_directories(dir_ / "theirs");
  write_file(dir_ / "theirs" / "log.jsonl", "{\"mine\": 1}\n");
  const CliResult log = run("train --data data.txt --out theirs " TINY_RUN "--steps 2 --force");
  EXPECT_EQ(log.status, 1) << log.err;
  EXPECT_TRUE(contains(log.err, "theirs/log.jsonl' exists in a directory linformer train did not make")) << log.err;
  EXPECT_EQ(read_file(dir_ / "theirs" / "log.jsonl"), "{\"mine\": 1}\n");
}

TEST_F(RunDirTest, AUsersFileInACheckpointSurvivesPruningResumeAndForce) {
  ASSERT_EQ(run("train --data data.txt --out run " TINY_RUN "--steps 2 --save-every 1 --keep-checkpoints 5").status, 0);
  const fs::path step1 = dir_ / "run" / "checkpoints" / "step-00000001";
  const fs::path step2 = dir_ / "run" / "checkpoints" / "step-00000002";
  write_file(step1 / "notes.txt", "one\n");
  write_file(dir_ / "run" / "README", "my run\n");

  // Resumed with fewer checkpoints kept: step 1 is pruned, its notes stay (with a warning).
  const CliResult resumed = run("train --resume --out run --steps 4 --keep-checkpoints 1");
  ASSERT_EQ(resumed.status, 0) << resumed.err;
  EXPECT_TRUE(contains(resumed.err, "resume: --keep-checkpoints 5 -> 1")) << resumed.err;
  EXPECT_TRUE(contains(resumed.err, "resume: --steps 2 -> 4")) << resumed.err;
  EXPECT_TRUE(contains(resumed.err, "warning: 'run/checkpoints/step-00000001' holds files linformer did not write (notes.txt)"))
      << resumed.err;
  EXPECT_EQ(read_file(step1 / "notes.txt"), "one\n");
  EXPECT_FALSE(fs::exists(step1 / "model.safetensors"));
  EXPECT_FALSE(fs::exists(step2)) << "pruning removes a checkpoint of ours entirely";
  EXPECT_TRUE(fs::exists(dir_ / "run" / "checkpoints" / "step-00000004" / "model.safetensors"));
  EXPECT_EQ(read_file(dir_ / "run" / "README"), "my run\n");

  // A fresh run into the run: refused, naming --resume and --force.
  write_file(dir_ / "run" / "checkpoints" / "step-00000004" / "mine.txt", "four\n");
  const CliResult again = run("train --data data.txt --out run " TINY_RUN "--steps 4");
  EXPECT_EQ(again.status, 1) << again.err;
  EXPECT_TRUE(contains(again.err, "already holds a training run")) << again.err;
  EXPECT_TRUE(contains(again.err, "--resume")) << again.err;
  EXPECT_TRUE(contains(again.err, "--force")) << again.err;
  // --force starts it over; the user's files stay where they were, the new step-4 beside mine.txt.
  const CliResult over = run("train --data data.txt --out run " TINY_RUN "--steps 4 --save-every 2");
  EXPECT_EQ(over.status, 1);
  const CliResult forced = run("train --data data.txt --out run " TINY_RUN "--steps 4 --save-every 2 --force");
  ASSERT_EQ(forced.status, 0) << forced.err;
  EXPECT_EQ(read_file(dir_ / "run" / "checkpoints" / "step-00000004" / "mine.txt"), "four\n");
  EXPECT_TRUE(fs::exists(dir_ / "run" / "checkpoints" / "step-00000004" / "model.safetensors"));
  EXPECT_EQ(read_file(step1 / "notes.txt"), "one\n");
  EXPECT_EQ(read_file(dir_ / "run" / "README"), "my run\n");
  // The log is the new run's alone (the two earlier runs each ended in a summary).
  const std::string log = read_file(dir_ / "run" / "log.jsonl");
  size_t summaries = 0;
  for (size_t at = log.find("\"type\":\"summary\""); at != std::string::npos; at = log.find("\"type\":\"summary\"", at + 1))
    ++summaries;
  EXPECT_EQ(summaries, 1u) << log;
}

TEST_F(RunDirTest, TheDataPathIsStoredAbsoluteAndAMissingOneSaysWhereItLooked) {
  ASSERT_EQ(run("train --data data.txt --out run " TINY_RUN "--steps 2").status, 0);
  const fs::path state = dir_ / "run" / "checkpoints" / "step-00000002" / "trainer_state.json";
  json j = json::parse(read_file(state));
  EXPECT_EQ(j["options"]["data_path"], (dir_ / "data.txt").string());
  // From another directory, eval finds the data.
  fs::create_directories(dir_ / "elsewhere");
  const CliResult away = run("eval --checkpoint '" + (dir_ / "run").string() + "'", dir_ / "elsewhere");
  EXPECT_EQ(away.status, 0) << away.err;
  // A checkpoint of an older version holds the path relative: read from here, or a clear message.
  j["options"]["data_path"] = "data.txt";
  write_file(state, j.dump());
  EXPECT_EQ(run("eval --checkpoint run").status, 0);
  const CliResult old = run("eval --checkpoint '" + (dir_ / "run").string() + "'", dir_ / "elsewhere");
  EXPECT_EQ(old.status, 1) << old.err;
  EXPECT_TRUE(contains(old.err, "looked for from the current directory as '" + (dir_ / "elsewhere" / "data.txt").string()))
      << old.err;
  EXPECT_TRUE(contains(old.err, "--data")) << old.err;
  // Resuming it from elsewhere: --data gives the file's place.
  const CliResult resumed = run("train --resume --out '" + (dir_ / "run").string() + "' --steps 3 --data ../data.txt",
                                dir_ / "elsewhere");
  EXPECT_EQ(resumed.status, 0) << resumed.err;
}

TEST_F(RunDirTest, DataTooSmallIsSaidInTheUsersTermsAndLeavesNoDirectory) {
  write_file(dir_ / "small.txt", words(2048).substr(0, 2048));
  const CliResult r = run("train --data small.txt --out run " TINY "--steps 2");
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "the valid split of")) << r.err;
  EXPECT_TRUE(contains(r.err, "--valid-fraction 0.01 of 2048 bytes")) << r.err;
  EXPECT_TRUE(contains(r.err, "raise --valid-fraction, lower --batch-size or --seq-len, or give more data")) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "run")) << "a refused run leaves no directory behind";
  fs::create_directories(dir_ / "adir");
  const CliResult d = run("train --data adir --out run " TINY "--steps 2");
  EXPECT_EQ(d.status, 1) << d.err;
  EXPECT_TRUE(contains(d.err, "is a directory")) << d.err;
  EXPECT_FALSE(contains(d.err, "EiB")) << d.err;
  EXPECT_FALSE(fs::exists(dir_ / "run"));
}

TEST_F(RunDirTest, ResumeRefusesWhatWouldChangeTheRunAndNamesEachFlag) {
  ASSERT_EQ(run("train --data data.txt --out run " TINY_RUN "--steps 2").status, 0);
  const CliResult model = run("train --resume --out run --steps 3 --d-model 32 --heads 4");
  EXPECT_EQ(model.status, 2) << model.err;
  EXPECT_TRUE(contains(model.err, "--resume continues the checkpoint's model, so --d-model, --heads cannot change"))
      << model.err;
  const CliResult lr = run("train --resume --out run --steps 3 --lr 0.1 --seq-len 32");
  EXPECT_EQ(lr.status, 2) << lr.err;
  EXPECT_TRUE(contains(lr.err, "--lr (saved 0.001, given 0.1), --seq-len (saved 16, given 32)")) << lr.err;
  write_file(dir_ / "other.txt", words(4000));
  const CliResult other = run("train --resume --out run --steps 3 --data other.txt");
  EXPECT_EQ(other.status, 2) << other.err;
  EXPECT_TRUE(contains(other.err, "--data (saved '" + (dir_ / "data.txt").string())) << other.err;
  const CliResult fewer = run("train --resume --out run --steps 1");
  EXPECT_EQ(fewer.status, 2) << fewer.err;
  EXPECT_TRUE(contains(fewer.err, "--steps 1 is below the checkpoint's step 2")) << fewer.err;
  // The same values as saved are no change; a bookkeeping flag is taken with a notice.
  const CliResult same = run("train --resume --out run --steps 3 --lr 0.001 --seq-len 16 --eval-every 1");
  EXPECT_EQ(same.status, 0) << same.err;
  EXPECT_TRUE(contains(same.err, "resume: --eval-every 200 -> 1")) << same.err;
}

TEST_F(RunDirTest, FlagsOfAnotherTaskAMistypedFlagAndACheckpointsConfig) {
  const CliResult mask = run("train --task clm --data data.txt --out run " TINY_RUN "--steps 2 --mask-prob 0.3");
  EXPECT_EQ(mask.status, 2) << mask.err;
  EXPECT_TRUE(contains(mask.err, "--mask-prob (masking is the masked LM's (--task mlm) objective) does not apply to "
                                 "--task clm"))
      << mask.err;
  const CliResult classes = run("train --data data.txt --out run " TINY_RUN "--steps 2 --classes 3 --pooling mean");
  EXPECT_EQ(classes.status, 2) << classes.err;
  EXPECT_TRUE(contains(classes.err, "--classes (only a classifier (--task classify) has classes), --pooling")) << classes.err;
  EXPECT_FALSE(fs::exists(dir_ / "run"));

  const CliResult typo = run("train --data data.txt --out run --step 20");
  EXPECT_EQ(typo.status, 2) << typo.err;
  EXPECT_TRUE(contains(typo.err, "unknown option --step; did you mean --steps?")) << typo.err;
  const CliResult far = run("eval --checkpoint run --frobnicate");
  EXPECT_EQ(far.status, 2) << far.err;
  EXPECT_TRUE(contains(far.err, "unknown option --frobnicate (see 'linformer eval --help')")) << far.err;

  // A checkpoint's own config.json is a model configuration.
  ASSERT_EQ(run("train --data data.txt --out run " TINY_RUN "--steps 2 --dropout 0").status, 0);
  const CliResult from = run("train --config run/checkpoints/step-00000002/config.json --data data.txt --out again "
                             "--threads 1 --warmup 1 --batch-size 2 --seq-len 16 --eval-batches 1 --valid-fraction 0.1 "
                             "--test-fraction 0.1 --steps 2");
  ASSERT_EQ(from.status, 0) << from.err;
  EXPECT_EQ(json::parse(read_file(dir_ / "run" / "checkpoints" / "step-00000002" / "config.json")),
            json::parse(read_file(dir_ / "again" / "checkpoints" / "step-00000002" / "config.json")));
}

}  // namespace
