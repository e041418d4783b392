// Checkpoints under a crash at each point of a step save: a forked child runs save_step_checkpoint
// and ends itself (_exit, as abruptly as SIGKILL for the disk) where checkpoint_crash_hook names the
// point. Afterwards the run's latest checkpoint must load completely with the expected step, no
// directory under a readable name may be partial, and the next save (another process, as a resumed
// run) must leave exactly the kept checkpoints and `latest`, with no leftovers.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "linformer/arena.h"
#include "linformer/checkpoint.h"
#include "test_util.h"
#include "tiny_model_config.h"
#include "train/checkpoint_internal.h"

namespace fs = std::filesystem;

namespace lf {
namespace {

constexpr int kCrashed = 42;  // the child's exit status when it reached the crash point

ParamArena<float> step_arena(int64_t step) {
  ParamArena<float> a;
  a.declare("embed.weight", {16, 8}, Init::normal(0.02));
  a.declare("layers.0.q_proj.weight", {8, 8}, Init::xavier_uniform(8, 8));
  a.declare("final_ln.weight", {8}, Init::ones());
  a.allocate();
  a.initialize(uint64_t(step));
  return a;
}

OptimizerMoments step_moments(const ParamArena<float>& a, int64_t step) {
  return {test::random_vector<float>(a.numel(), uint64_t(step)), test::random_vector<float>(a.numel(), uint64_t(step) + 1, 0, 1)};
}

// A checkpoint as a training run saves it at `step`: weights and moments drawn from the step.
void save_step(const std::string& run, int64_t step) {
  const ParamArena<float> a = step_arena(step);
  const OptimizerMoments m = step_moments(a, step);
  save_step_checkpoint(run, step, test::tiny_model_config(), a, &m, json{{"step", step}}, /*keep=*/2);
}

// Loads `dir` completely and checks it holds what save_step(step) saved.
void expect_checkpoint_of_step(const std::string& dir, int64_t step) {
  SCOPED_TRACE(dir);
  const LoadedCheckpoint ck = load_checkpoint(dir);
  EXPECT_EQ(ck.trainer_state.value("step", int64_t(-1)), step);
  ASSERT_TRUE(ck.has_optimizer);
  ParamArena<float> a = step_arena(0);
  OptimizerMoments m;
  load_checkpoint_weights(ck.dir, a, &m);
  ParamArena<float> want = step_arena(step);
  EXPECT_TRUE(std::equal(a.values(), a.values() + a.numel(), want.values()));
  EXPECT_EQ(m.m, step_moments(want, step).m);
  EXPECT_EQ(m.v, step_moments(want, step).v);
}

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

const char* g_crash_point = nullptr;

// Runs save_step(run, step) in a child that dies at `point`; returns the child's pid (reaped).
pid_t crash_during_save(const std::string& run, int64_t step, const char* point) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    g_crash_point = point;
    checkpoint_crash_hook = [](const char* at) {
      if (std::strcmp(at, g_crash_point) == 0) ::_exit(kCrashed);
    };
    try {
      save_step(run, step);
    } catch (...) {
      ::_exit(3);
    }
    ::_exit(0);  // the point was never reached
  }
  int status = 0;
  EXPECT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == kCrashed) << point << ": not reached (status " << status << ")";
  return pid;
}

class CheckpointCrash : public test::TempDirTest {
 protected:
  CheckpointCrash() : TempDirTest("lf_ckpt_crash") {}
};

struct CrashCase {
  const char* point;
  int64_t saving;       // the step the killed process was saving (steps 1 and 2 are committed)
  int64_t latest_after; // the step the run resumes from after the crash
  const char* leftover; // a name the crash leaves in checkpoints/ ("" when none; %d: the child's pid)
};

TEST_F(CheckpointCrash, EveryPointOfAStepSaveLeavesALoadableRun) {
  const CrashCase cases[] = {
      {"tmp-written", 3, 2, "step-00000003.tmp-%d"},   // the new checkpoint built aside, not yet in place
      {"renamed-in", 3, 2, "step-00000003"},           // in place, `latest` not yet rewritten: not committed
      {"saved", 3, 2, "step-00000003"},                // ditto, the save's own tidying done
      {"latest-written", 3, 3, "step-00000001"},       // committed, not yet pruned
      {"discarding", 3, 3, "step-00000001.del-%d"},    // pruning killed between its rename and its removal
      {"moved-aside", 2, 2, "step-00000002.old-%d"},   // a re-save of step 2 killed between its two renames
  };
  for (const CrashCase& c : cases) {
    SCOPED_TRACE(c.point);
    const std::string run = (dir_ / c.point).string();
    const fs::path ck = fs::path(run) / "checkpoints";
    save_step(run, 1);
    save_step(run, 2);
    const pid_t child = crash_during_save(run, c.saving, c.point);
    char leftover[64];
    std::snprintf(leftover, sizeof leftover, c.leftover, int(child));
    const std::vector<std::string> after_crash = entries(ck);
    EXPECT_NE(std::find(after_crash.begin(), after_crash.end(), leftover), after_crash.end())
        << "the crash should have left " << leftover << " (the hook is at the wrong place?)";

    // The run resumes from a complete checkpoint of the expected step.
    const std::string latest = latest_checkpoint(run);
    EXPECT_EQ(latest, checkpoint_dir_for_step(run, c.latest_after));
    expect_checkpoint_of_step(latest, c.latest_after);
    // Nothing under a readable name is partial: every step-N and step-N.old-* loads as step N.
    for (const std::string& name : after_crash) {
      if (name.rfind("step-", 0) != 0 || name.find(".tmp-") != std::string::npos || name.find(".del-") != std::string::npos)
        continue;
      expect_checkpoint_of_step((ck / name).string(), std::stoll(name.substr(5, 8)));
    }

    // The resumed run (this process) saves the next step: only the two newest and `latest` remain.
    save_step(run, c.latest_after + 1);
    const std::vector<std::string> want = {"latest", fs::path(checkpoint_dir_for_step(run, c.latest_after)).filename().string(),
                                           fs::path(checkpoint_dir_for_step(run, c.latest_after + 1)).filename().string()};
    EXPECT_EQ(entries(ck), want);
    expect_checkpoint_of_step(latest_checkpoint(run), c.latest_after + 1);
  }
}

// Leftovers of processes that were killed elsewhere (a write of `latest` cut short, a save built
// aside) go with the next save; those of a live process stay.
TEST_F(CheckpointCrash, LeftoversOfDeadProcessesAreSwept) {
  const std::string run = (dir_ / "run").string();
  const fs::path ck = fs::path(run) / "checkpoints";
  save_step(run, 1);
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);
  const std::string d = std::to_string(dead), live = std::to_string(::getppid());  // our parent runs
  std::ofstream(ck / ("latest.tmp-" + d + "-0")) << "step-000";
  fs::create_directories(ck / ("step-00000009.tmp-" + d));
  std::ofstream(ck / ("step-00000009.tmp-" + d) / "config.json") << "{";
  fs::create_directories(ck / ("step-00000007.tmp-" + live));
  fs::create_directories(ck / ("step-00000005.del-" + live));
  save_step(run, 2);
  EXPECT_EQ(entries(ck), (std::vector<std::string>{"latest", "step-00000001", "step-00000002",
                                                   "step-00000007.tmp-" + live}));
}

}  // namespace
}  // namespace lf
