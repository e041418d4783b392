// Crash safety of a real training run: the built CLI trains a small model that saves a checkpoint
// every step, and is killed with SIGKILL at random moments (a seeded RNG; delays scaled by the step
// time measured on an uninterrupted reference run, so that they cover start-up, steps and saves on a
// fast or a sanitizer build alike) 50 times in a row, each round resuming the last. After every kill
// the run's latest checkpoint loads completely and is never older than after the previous kill, and
// every line of log.jsonl but a torn last one parses. A final resume then finishes the run, whose
// weights, optimizer moments and logged losses equal those of the reference run bit for bit, and
// which leaves no leftovers. A second test covers a run killed during its very first save.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "io/safetensors.h"
#include "linformer/arena.h"
#include "linformer/checkpoint.h"
#include "linformer/model.h"
#include "test_util.h"

extern char** environ;

namespace fs = std::filesystem;

namespace lf {
namespace {

constexpr int kKills = 50;
constexpr int kSteps = 80;  // more than 50 rounds reach (they gain ~0.8 steps each; if they got there, the
                            // later rounds would resume a finished run, which is fine too)

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

int count_lines_with(const std::string& text, const std::string& word) {
  std::istringstream in(text);
  int n = 0;
  for (std::string line; std::getline(in, line);) n += line.find(word) != std::string::npos;
  return n;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Starts the CLI with `args`, stdout and stderr to `output`; returns its pid.
pid_t spawn_cli(const std::vector<std::string>& args, const fs::path& output) {
  std::vector<std::string> words = {LINFORMER_CLI_PATH};
  words.insert(words.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  EXPECT_EQ(rc, 0) << "posix_spawn: " << std::strerror(rc);
  return rc == 0 ? pid : -1;
}

int wait_for(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

// The run's log as JSON records; `torn` is set when the last line is cut short (a kill mid-write).
std::vector<json> read_log(const fs::path& path, bool* torn = nullptr) {
  const std::string text = read_file(path);
  std::vector<json> records;
  size_t begin = 0;
  for (size_t end; (end = text.find('\n', begin)) != std::string::npos; begin = end + 1) {
    const std::string line = text.substr(begin, end - begin);
    try {
      records.push_back(json::parse(line));
    } catch (const json::exception& e) {
      ADD_FAILURE() << path << ": a complete line does not parse: " << line;
    }
  }
  if (torn) *torn = begin < text.size();
  return records;
}

std::vector<json> train_records(const std::vector<json>& log) {
  std::vector<json> out;
  for (const json& r : log)
    if (r.value("type", "") == "train") out.push_back(r);
  return out;
}

// Every tensor of both files equal bit for bit.
void expect_same_tensors(const fs::path& a_path, const fs::path& b_path) {
  const SafeTensorsFile a = SafeTensorsFile::read(a_path.string()), b = SafeTensorsFile::read(b_path.string());
  ASSERT_EQ(a.names(), b.names()) << a_path << " vs " << b_path;
  for (const std::string& name : a.names()) {
    const StoredTensor ta = a.get(name), tb = b.get(name);
    ASSERT_EQ(ta.nbytes, tb.nbytes) << name;
    EXPECT_EQ(0, std::memcmp(ta.data, tb.data, ta.nbytes)) << name << " differs from the uninterrupted run";
  }
}

// Loads the checkpoint completely, as `train --resume` does; returns its trainer_state step.
int64_t load_completely(const std::string& dir) {
  const LoadedCheckpoint ck = load_checkpoint(dir);
  EXPECT_TRUE(ck.has_optimizer) << dir;
  EXPECT_TRUE(ck.trainer_state.contains("options")) << dir;
  ParamArena<float> arena;
  Model<float> model(ck.config, arena);
  arena.allocate();
  OptimizerMoments moments;
  load_checkpoint_weights(ck.dir, arena, &moments);
  return ck.trainer_state.at("step").get<int64_t>();
}

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    names.push_back(it->path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

class CrashSafety : public test::TempDirTest {
 protected:
  CrashSafety() : TempDirTest("lf_crash_safety", /*keep_on_failure=*/true) {}
  void SetUp() override {
    TempDirTest::SetUp();
    // ~8 KB of text from a small vocabulary: a few milliseconds to load.
    static const char* words[] = {"the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "park", "home"};
    std::string text;
    for (uint64_t x = 7; text.size() < 8000;) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      text += std::string(text.empty() ? "" : " ") + words[(x >> 33) % 12];
    }
    std::ofstream(dir_ / "data.txt") << text;
  }

  // `linformer train` of a ~125k-parameter model (a checkpoint of 1.5 MB: model and moments) saving
  // every step, on one thread (resume is bit-exact for a fixed thread count).
  std::vector<std::string> fresh_args(const fs::path& run) const {
    return {"--threads", "1", "train", "--data", (dir_ / "data.txt").string(), "--out", run.string(),
            "--d-model", "64", "--layers", "2", "--heads", "4", "--attention-options", "{\"k\": 8}",
            "--seq-len", "32", "--batch-size", "2", "--steps", std::to_string(kSteps), "--warmup", "5",
            "--lr", "3e-3", "--eval-every", "25", "--eval-batches", "1", "--valid-fraction", "0.1",
            "--test-fraction", "0.1", "--log-every", "1", "--save-every", "1", "--keep-checkpoints", "2"};
  }
  std::vector<std::string> resume_args(const fs::path& run) const {
    return {"--threads", "1", "train", "--resume", "--out", run.string(), "--steps", std::to_string(kSteps)};
  }
};

TEST_F(CrashSafety, FiftyRandomKillsLoseNothing) {
  // The uninterrupted reference run, which also measures the step and start-up times.
  const fs::path ref = dir_ / "ref", run = dir_ / "run", out = dir_ / "output.txt";
  const auto t_ref = std::chrono::steady_clock::now();
  const int ref_status = wait_for(spawn_cli(fresh_args(ref), out));
  const double ref_s = seconds_since(t_ref);
  ASSERT_TRUE(WIFEXITED(ref_status) && WEXITSTATUS(ref_status) == 0) << read_file(out);
  const std::vector<json> ref_train = train_records(read_log(ref / "log.jsonl"));
  ASSERT_EQ(ref_train.size(), size_t(kSteps));
  const double step_s = (ref_train.back().at("elapsed_s").get<double>() - ref_train.front().at("elapsed_s").get<double>()) /
                        (kSteps - 1);
  const double startup_s = std::max(0.2 * step_s, ref_s - kSteps * step_s);
  // Kills land anywhere in start-up and the first three steps of a round (each step ends in a save).
  const double window_s = startup_s + 3 * step_s;

  std::mt19937_64 rng(20240607);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  int64_t step = -1;  // the latest checkpoint's step after the previous kill; -1: none yet
  int kills = 0, rounds = 0, completed = 0, refused = 0, torn_logs = 0, uncommitted = 0;
  size_t max_leftovers = 0;
  const auto t_kills = std::chrono::steady_clock::now();
  while (kills < kKills) {
    ASSERT_LT(++rounds, 3 * kKills) << "the runs keep finishing before the kill";
    const pid_t pid = spawn_cli(step < 0 ? fresh_args(run) : resume_args(run), out);
    ASSERT_GT(pid, 0);
    std::this_thread::sleep_for(std::chrono::duration<double>(uniform(rng) * window_s));
    ::kill(pid, SIGKILL);
    const int status = wait_for(pid);
    if (WIFSIGNALED(status)) {
      ASSERT_EQ(WTERMSIG(status), SIGKILL);
      ++kills;
    } else {
      ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "round " << rounds << ": " << read_file(out);
      ++completed;  // it finished first: the next round resumes a finished run
    }
    SCOPED_TRACE("after round " + std::to_string(rounds));

    const std::string latest = latest_checkpoint(run.string());
    if (latest.empty()) {
      ASSERT_LT(step, 0) << "the checkpoint of step " << step << " was lost";
      // Killed before its first save: --resume refuses in one line, the next round starts afresh.
      if (refused++ == 0) {
        const int s = wait_for(spawn_cli(resume_args(run), out));
        const std::string msg = read_file(out);
        EXPECT_TRUE(WIFEXITED(s) && WEXITSTATUS(s) == 2) << msg;
        EXPECT_NE(msg.find("linformer: error: --resume: no checkpoint found"), std::string::npos) << msg;
        EXPECT_NE(msg.find("without --resume"), std::string::npos) << msg;
        EXPECT_EQ(count_lines_with(msg, "error"), 1) << msg;
      }
      continue;
    }
    const int64_t named = std::stoll(fs::path(latest).filename().string().substr(5));
    ASSERT_GE(named, step) << "the latest checkpoint went backwards";
    ASSERT_EQ(load_completely(latest), named) << latest << ": trainer_state.json's step";
    step = named;
    // A save killed after its checkpoint was in place but before `latest` named it.
    uncommitted += fs::exists(checkpoint_dir_for_step(run.string(), step + 1));
    bool torn = false;
    read_log(run / "log.jsonl", &torn);
    torn_logs += torn;
    size_t leftovers = 0;
    for (const std::string& e : entries(run / "checkpoints"))
      leftovers += e.find(".tmp-") != std::string::npos || e.find(".old-") != std::string::npos ||
                   e.find(".del-") != std::string::npos;
    max_leftovers = std::max(max_leftovers, leftovers);
  }
  const double kills_s = seconds_since(t_kills);

  // The final resume finishes the run exactly like the uninterrupted one.
  const auto t_final = std::chrono::steady_clock::now();
  const int final_status = wait_for(spawn_cli(step < 0 ? fresh_args(run) : resume_args(run), out));
  const double final_s = seconds_since(t_final);
  ASSERT_TRUE(WIFEXITED(final_status) && WEXITSTATUS(final_status) == 0) << read_file(out);
  const std::string last = fs::path(checkpoint_dir_for_step(run.string(), kSteps)).filename().string();
  expect_same_tensors(ref / "checkpoints" / last / "model.safetensors", run / "checkpoints" / last / "model.safetensors");
  expect_same_tensors(ref / "checkpoints" / last / "optimizer.safetensors",
                      run / "checkpoints" / last / "optimizer.safetensors");
  EXPECT_EQ(entries(run / "checkpoints"),
            (std::vector<std::string>{"latest", fs::path(checkpoint_dir_for_step(run.string(), kSteps - 1)).filename().string(),
                                      last}))
      << "leftovers of killed saves remain";
  // The log reads as if the run had never been interrupted: one record per step, the same losses.
  bool torn = false;
  const std::vector<json> log = read_log(run / "log.jsonl", &torn);
  EXPECT_FALSE(torn);
  const std::vector<json> logged = train_records(log);
  ASSERT_EQ(logged.size(), ref_train.size());
  for (size_t i = 0; i < logged.size(); ++i) {
    EXPECT_EQ(logged[i].at("step"), ref_train[i].at("step"));
    EXPECT_EQ(logged[i].at("loss"), ref_train[i].at("loss")) << "step " << i + 1;
    EXPECT_EQ(logged[i].at("grad_norm"), ref_train[i].at("grad_norm")) << "step " << i + 1;
  }

  std::printf(
      "[ crash    ] reference run %.2f s (step %.1f ms, start-up %.1f ms); %d kills in %d rounds (%d finished "
      "first, %d before the first save) in %.2f s; checkpoint in place but not yet in `latest` after %d; torn "
      "log line after %d; at most %zu leftovers at once; final resume from step %lld: %.2f s\n",
      ref_s, 1e3 * step_s, 1e3 * startup_s, kills, rounds, completed, refused, kills_s, uncommitted, torn_logs,
      max_leftovers, static_cast<long long>(step), final_s);
}

// A run killed during its very first save has no checkpoint: --resume refuses in one line and says
// what to do; training it again without --resume starts cleanly over the leftovers.
TEST_F(CrashSafety, KillDuringTheFirstSave) {
  const fs::path run = dir_ / "run", out = dir_ / "output.txt";
  fs::create_directories(run / "checkpoints" / "step-00000001.tmp-999999999");  // a save built aside
  std::ofstream(run / "checkpoints" / "step-00000001.tmp-999999999" / "config.json") << "{\"d_mo";
  std::ofstream(run / "log.jsonl") << "{\"type\":\"train\",\"step\":1,\"loss\":5.5}\n{\"type\":\"tra";
  std::ofstream(run / ".linformer-run") << "{\"format\":\"linformer-run\",\"version\":1}\n";  // made by a run

  const int refused = wait_for(spawn_cli(resume_args(run), out));
  const std::string msg = read_file(out);
  EXPECT_TRUE(WIFEXITED(refused) && WEXITSTATUS(refused) == 2) << msg;
  EXPECT_NE(msg.find("linformer: error: --resume: no checkpoint found in '" + run.string() + "/checkpoints'"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("start the run again without --resume"), std::string::npos) << msg;
  EXPECT_EQ(count_lines_with(msg, "error"), 1) << msg;
  EXPECT_EQ(msg.find("terminate"), std::string::npos) << msg;

  std::vector<std::string> args = fresh_args(run);
  args[std::find(args.begin(), args.end(), "--steps") - args.begin() + 1] = "6";
  const int fresh = wait_for(spawn_cli(args, out));
  ASSERT_TRUE(WIFEXITED(fresh) && WEXITSTATUS(fresh) == 0) << read_file(out);
  EXPECT_EQ(entries(run / "checkpoints"), (std::vector<std::string>{"latest", "step-00000005", "step-00000006"}));
  bool torn = true;
  const std::vector<json> log = read_log(run / "log.jsonl", &torn);
  EXPECT_FALSE(torn);
  ASSERT_EQ(train_records(log).size(), 6u) << "a new run starts a new log";
  EXPECT_EQ(load_completely(latest_checkpoint(run.string())), 6);
}

}  // namespace
}  // namespace lf
