// Checkpoints: a save/load round trip of weights, optimizer moments, config and trainer state; loading
// into a model that does not match; corrupt and missing files; overwriting and the recovery from an
// overwrite interrupted between its renames; the `latest` pointer, its fallback, and pruning;
// write_file_atomic's failure modes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "linformer/arena.h"
#include "linformer/checkpoint.h"
#include "linformer/error.h"
#include "test_util.h"
#include "tiny_model_config.h"

namespace fs = std::filesystem;

namespace lf {
namespace {

// Which tensors a test arena declares: the reference set, or one with a tensor left out, added or
// reshaped.
enum class Variant { Same, MissingOne, ExtraOne, Reshaped };

ParamArena<float> make_arena(uint64_t seed, Variant variant = Variant::Same) {
  ParamArena<float> a;
  a.declare("embed.weight", {16, 8}, Init::normal(0.02));
  a.declare("layers.0.attn.E", {4, 16}, Init::normal(0.25), /*trainable=*/false);
  a.declare("layers.0.attn.q_proj.weight", {8, 8}, Init::xavier_uniform(8, 8));
  if (variant != Variant::MissingOne) a.declare("layers.0.attn.q_proj.bias", {8}, Init::uniform(0.1));
  a.declare("final_ln.weight", {variant == Variant::Reshaped ? 4 : 8}, Init::ones());
  if (variant == Variant::ExtraOne) a.declare("head.weight", {3, 8}, Init::normal(0.02));
  a.allocate();
  a.initialize(seed);
  return a;
}

OptimizerMoments make_moments(const ParamArena<float>& a, uint64_t seed) {
  OptimizerMoments m;
  m.m = test::random_vector<float>(a.numel(), seed);
  m.v = test::random_vector<float>(a.numel(), seed + 1, 0, 1);
  return m;
}

std::vector<float> values_of(ParamArena<float>& a) { return std::vector<float>(a.values(), a.values() + a.numel()); }

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs f, which must throw E with a message containing every fragment.
template <class E, class F>
void expect_error(F&& f, const std::vector<std::string>& fragments) {
  try {
    f();
    ADD_FAILURE() << "no exception thrown";
  } catch (const E& e) {
    for (const std::string& frag : fragments)
      EXPECT_NE(std::string(e.what()).find(frag), std::string::npos) << "'" << frag << "' not in: " << e.what();
  }
}

class Checkpoint : public test::TempDirTest {
 protected:
  Checkpoint() : TempDirTest("lf_checkpoint") {}

  std::vector<std::string> entries(const fs::path& dir) const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
};

TEST_F(Checkpoint, RoundTripWithOptimizerAndTrainerState) {
  const ModelConfig config = test::tiny_model_config();
  ParamArena<float> a = make_arena(1);
  const OptimizerMoments moments = make_moments(a, 5);
  const json state = {{"step", 42}, {"seed", 7}, {"data_position", {{"epoch", 1}, {"offset", 1234}}}, {"best", 1.5}};
  const std::string dir = path("ckpt");
  save_checkpoint(dir, config, a, &moments, state);

  EXPECT_EQ(entries(dir), (std::vector<std::string>{"config.json", "model.safetensors", "optimizer.safetensors",
                                                     "trainer_state.json"}));
  EXPECT_EQ(entries(dir_), std::vector<std::string>{"ckpt"}) << "temporary directories left behind";
  EXPECT_NE(read_file(fs::path(dir) / "config.json").find("\n  \""), std::string::npos) << "not pretty-printed";

  // The files follow the documented layout.
  const SafeTensorsFile model = SafeTensorsFile::read(dir + "/model.safetensors");
  EXPECT_EQ(model.metadata().at("format"), "linformer");
  EXPECT_EQ(model.metadata().at("version"), "1");
  EXPECT_EQ(model.names(), (std::vector<std::string>{"embed.weight", "final_ln.weight", "layers.0.attn.E",
                                                     "layers.0.attn.q_proj.bias", "layers.0.attn.q_proj.weight"}));
  EXPECT_EQ(model.get("embed.weight").dtype, "F32");
  EXPECT_EQ(model.get("embed.weight").shape, (std::vector<int64_t>{16, 8}));
  const SafeTensorsFile opt = SafeTensorsFile::read(dir + "/optimizer.safetensors");
  EXPECT_EQ(opt.size(), 10u);
  EXPECT_EQ(opt.get("exp_avg_sq.layers.0.attn.q_proj.weight").shape, (std::vector<int64_t>{8, 8}));
  const auto q = a.info(a.find("layers.0.attn.q_proj.weight"));
  EXPECT_EQ(to_vector<float>(opt.get("exp_avg.layers.0.attn.q_proj.weight")),
            std::vector<float>(moments.m.begin() + q.offset, moments.m.begin() + q.offset + q.numel));

  const LoadedCheckpoint loaded = load_checkpoint(dir);
  EXPECT_EQ(loaded.config.to_json(), config.to_json());
  EXPECT_EQ(loaded.trainer_state, state);
  EXPECT_TRUE(loaded.has_optimizer);
  EXPECT_EQ(loaded.dir, dir);
  EXPECT_EQ(read_checkpoint_config(dir).to_json(), config.to_json());
  EXPECT_EQ(read_trainer_state(dir), state);

  ParamArena<float> b = make_arena(2);
  ASSERT_NE(values_of(b), values_of(a));
  OptimizerMoments back;
  load_checkpoint_weights(dir, b, &back);
  EXPECT_EQ(values_of(b), values_of(a));
  EXPECT_EQ(back.m, moments.m);
  EXPECT_EQ(back.v, moments.v);
}

TEST_F(Checkpoint, ModelOnly) {
  ParamArena<float> a = make_arena(1);
  const std::string dir = path("export");
  save_checkpoint(dir, test::tiny_model_config(), a, nullptr, json());
  EXPECT_EQ(entries(dir), (std::vector<std::string>{"config.json", "model.safetensors"}));
  const LoadedCheckpoint loaded = load_checkpoint(dir);
  EXPECT_FALSE(loaded.has_optimizer);
  EXPECT_EQ(loaded.trainer_state, json::object());
  ParamArena<float> b = make_arena(2);
  load_checkpoint_weights(dir, b, nullptr);
  EXPECT_EQ(values_of(b), values_of(a));
  OptimizerMoments m;
  expect_error<IoError>([&] { load_checkpoint_weights(dir, b, &m); }, {"optimizer.safetensors", "no optimizer state"});
  expect_error<IoError>([&] { read_trainer_state(dir); }, {"trainer_state.json", "model-only"});
}

TEST_F(Checkpoint, RejectsBadSaveArguments) {
  ParamArena<float> a = make_arena(1);
  OptimizerMoments short_moments{std::vector<float>(3), std::vector<float>(3)};
  expect_error<InvalidArgument>([&] { save_checkpoint(path("c"), test::tiny_model_config(), a, &short_moments, json::object()); },
                                {"moments", "elements"});
  expect_error<InvalidArgument>([&] { save_checkpoint(path("c"), test::tiny_model_config(), a, nullptr, json::array()); },
                                {"trainer_state must be a JSON object"});
  ModelConfig bad = test::tiny_model_config();
  bad.n_heads = 3;
  expect_error<InvalidArgument>([&] { save_checkpoint(path("c"), bad, a, nullptr, json()); }, {"n_heads"});
  ParamArena<float> unallocated;
  unallocated.declare("w", {2}, Init::zeros());
  expect_error<InvalidArgument>([&] { save_checkpoint(path("c"), test::tiny_model_config(), unallocated, nullptr, json()); },
                                {"not allocated"});
  EXPECT_TRUE(entries(dir_).empty()) << "a refused save left files behind";
}

TEST_F(Checkpoint, LoadIntoMismatchedModelNamesTheTensor) {
  ParamArena<float> a = make_arena(1);
  const OptimizerMoments moments = make_moments(a, 5);
  const std::string dir = path("ckpt");
  save_checkpoint(dir, test::tiny_model_config(), a, &moments, json::object());

  {  // The file has a tensor the model lacks.
    ParamArena<float> b = make_arena(2, Variant::MissingOne);
    const std::vector<float> before = values_of(b);
    expect_error<IoError>([&] { load_checkpoint_weights(dir, b, nullptr); },
                          {"model.safetensors", "unexpected tensor 'layers.0.attn.q_proj.bias' (8) F32",
                           "does not match the model"});
    EXPECT_EQ(values_of(b), before) << "a refused load modified the arena";
  }
  {  // The model has a tensor the file lacks.
    ParamArena<float> b = make_arena(2, Variant::ExtraOne);
    expect_error<IoError>([&] { load_checkpoint_weights(dir, b, nullptr); },
                          {"tensor 'head.weight' (expected (3, 8) F32) is missing"});
    OptimizerMoments m;
    expect_error<IoError>([&] { load_checkpoint_weights(dir, b, &m); },
                          {"'head.weight'", "problem"});
  }
  {  // Same name, other shape; the optimizer file is checked too.
    ParamArena<float> b = make_arena(2, Variant::Reshaped);
    expect_error<IoError>([&] { load_checkpoint_weights(dir, b, nullptr); },
                          {"tensor 'final_ln.weight': expected (4) F32, found (8) F32"});
  }
  {  // Optimizer file mismatch alone: the model file matches, the moments do not.
    ParamArena<float> b = make_arena(2);
    SafeTensorsWriter w;
    for (const ParamInfo& p : b.params()) w.add_f32("exp_avg." + p.name, p.shape, std::vector<float>(size_t(p.numel)));
    w.write(dir + "/optimizer.safetensors");
    const std::vector<float> before = values_of(b);
    OptimizerMoments m;
    expect_error<IoError>([&] { load_checkpoint_weights(dir, b, &m); },
                          {"optimizer.safetensors", "tensor 'exp_avg_sq.embed.weight' (expected (16, 8) F32) is missing"});
    EXPECT_EQ(values_of(b), before) << "a refused load modified the arena";
    EXPECT_TRUE(m.m.empty());
  }
}

TEST_F(Checkpoint, WrongDtypeIsRefused) {
  ParamArena<float> a = make_arena(1);
  const std::string dir = path("ckpt");
  save_checkpoint(dir, test::tiny_model_config(), a, nullptr, json());
  SafeTensorsWriter w;
  for (const ParamInfo& p : a.params()) {
    if (p.name == "embed.weight") w.add_f64(p.name, p.shape, std::vector<double>(size_t(p.numel)));
    else w.add_f32(p.name, p.shape, std::vector<float>(size_t(p.numel)));
  }
  w.write(dir + "/model.safetensors");
  expect_error<IoError>([&] { load_checkpoint_weights(dir, a, nullptr); },
                        {"tensor 'embed.weight': expected (16, 8) F32, found (16, 8) F64"});
}

TEST_F(Checkpoint, TruncatedModelFileIsAnIoError) {
  ParamArena<float> a = make_arena(1);
  const std::string dir = path("ckpt");
  save_checkpoint(dir, test::tiny_model_config(), a, nullptr, json());
  const fs::path file = fs::path(dir) / "model.safetensors";
  fs::resize_file(file, fs::file_size(file) - 100);
  ParamArena<float> b = make_arena(2);
  expect_error<IoError>([&] { load_checkpoint_weights(dir, b, nullptr); }, {"model.safetensors", "corrupt"});
  fs::resize_file(file, 5);
  expect_error<IoError>([&] { load_checkpoint_weights(dir, b, nullptr); }, {"model.safetensors"});
  fs::remove(file);
  expect_error<IoError>([&] { load_checkpoint_weights(dir, b, nullptr); }, {"model.safetensors", "missing"});
}

TEST_F(Checkpoint, MissingOrCorruptConfigIsAnIoError) {
  ParamArena<float> a = make_arena(1);
  const std::string dir = path("ckpt");
  save_checkpoint(dir, test::tiny_model_config(), a, nullptr, json::object());
  std::ofstream(fs::path(dir) / "config.json") << "{\"d_model\": 8,";
  expect_error<IoError>([&] { read_checkpoint_config(dir); }, {"config.json", "not valid JSON"});
  std::ofstream(fs::path(dir) / "config.json") << "{\"d_model\": 7, \"n_heads\": 2}";
  expect_error<IoError>([&] { read_checkpoint_config(dir); }, {"config.json", "not a valid model configuration"});
  std::ofstream(fs::path(dir) / "trainer_state.json") << "[1, 2]";
  expect_error<IoError>([&] { read_trainer_state(dir); }, {"trainer_state.json", "JSON object"});
  fs::remove(fs::path(dir) / "config.json");
  expect_error<IoError>([&] { load_checkpoint(dir); }, {"not a linformer checkpoint directory", "config.json"});
  expect_error<IoError>([&] { load_checkpoint_weights(dir, a, nullptr); }, {"config.json"});
  expect_error<IoError>([&] { load_checkpoint(path("nowhere")); }, {"nowhere", "does not exist"});
}

TEST_F(Checkpoint, OverwriteKeepsALoadableCheckpoint) {
  const std::string dir = path("ckpt");
  ParamArena<float> a = make_arena(1), b = make_arena(2);
  save_checkpoint(dir, test::tiny_model_config(), a, nullptr, json{{"step", 1}});
  save_checkpoint(dir, test::tiny_model_config(), b, nullptr, json{{"step", 2}});
  EXPECT_EQ(entries(dir_), std::vector<std::string>{"ckpt"}) << "the old checkpoint was not removed";
  ParamArena<float> c = make_arena(3);
  load_checkpoint_weights(dir, c, nullptr);
  EXPECT_EQ(values_of(c), values_of(b));
  EXPECT_EQ(read_trainer_state(dir)["step"], 2);

  // A crash between the two renames leaves only <dir>.old-<pid> (and maybe the half-built
  // <dir>.tmp-<pid>): the readers fall back to the old copy.
  fs::rename(dir, dir + ".old-99999");
  fs::create_directories(dir + ".tmp-99999");
  std::ofstream(dir + ".tmp-99999/config.json") << "{";
  const LoadedCheckpoint loaded = load_checkpoint(dir);
  EXPECT_EQ(loaded.dir, dir + ".old-99999");
  EXPECT_EQ(loaded.trainer_state["step"], 2);
  ParamArena<float> d = make_arena(4);
  load_checkpoint_weights(dir, d, nullptr);
  EXPECT_EQ(values_of(d), values_of(b));

  // The next save puts a checkpoint back under the name and clears the leftovers.
  save_checkpoint(dir, test::tiny_model_config(), a, nullptr, json{{"step", 3}});
  EXPECT_EQ(entries(dir_), std::vector<std::string>{"ckpt"});
  EXPECT_EQ(read_trainer_state(dir)["step"], 3);
}

TEST_F(Checkpoint, FailedSaveLeavesThePreviousOne) {
  const std::string dir = path("ckpt");
  ParamArena<float> a = make_arena(1);
  save_checkpoint(dir, test::tiny_model_config(), a, nullptr, json{{"step", 1}});
  // The parent path is a file: the save cannot even start, the old checkpoint is untouched.
  std::ofstream(path("blocker")) << "x";
  expect_error<IoError>([&] { save_checkpoint(path("blocker") + "/ckpt", test::tiny_model_config(), a, nullptr, json()); },
                        {"blocker"});
  EXPECT_EQ(read_trainer_state(dir)["step"], 1);
  EXPECT_EQ(entries(dir_), (std::vector<std::string>{"blocker", "ckpt"}));
}

TEST_F(Checkpoint, StepDirectoriesAndLatestPointer) {
  const std::string run = path("run");
  EXPECT_EQ(checkpoint_dir_for_step(run, 5), run + "/checkpoints/step-00000005");
  EXPECT_EQ(checkpoint_dir_for_step("r", 123456789), "r/checkpoints/step-123456789");
  EXPECT_THROW(checkpoint_dir_for_step(run, -1), InvalidArgument);
  EXPECT_EQ(latest_checkpoint(run), "") << "a run without checkpoints";

  ParamArena<float> a = make_arena(1);
  const OptimizerMoments m = make_moments(a, 3);
  for (int64_t step : {10, 20, 30})
    EXPECT_EQ(save_step_checkpoint(run, step, test::tiny_model_config(), a, &m, json{{"step", step}}),
              checkpoint_dir_for_step(run, step));
  const fs::path ck = fs::path(run) / "checkpoints";
  EXPECT_EQ(read_file(ck / "latest"), "step-00000030\n");
  EXPECT_EQ(latest_checkpoint(run), checkpoint_dir_for_step(run, 30));

  // The pointer wins over the scan when it names a complete checkpoint.
  write_file_atomic((ck / "latest").string(), "step-00000020\n");
  EXPECT_EQ(latest_checkpoint(run), checkpoint_dir_for_step(run, 20));
  // A dangling, malformed or missing pointer falls back to the highest complete step-*.
  write_file_atomic((ck / "latest").string(), "step-00000099\n");
  EXPECT_EQ(latest_checkpoint(run), checkpoint_dir_for_step(run, 30));
  write_file_atomic((ck / "latest").string(), "../../etc\n");
  EXPECT_EQ(latest_checkpoint(run), checkpoint_dir_for_step(run, 30));
  fs::remove(ck / "latest");
  EXPECT_EQ(latest_checkpoint(run), checkpoint_dir_for_step(run, 30));
  // An interrupted save (.tmp-*) and an incomplete directory are not checkpoints.
  fs::create_directories(ck / "step-00000040.tmp-123");
  std::ofstream(ck / "step-00000040.tmp-123" / "config.json") << "{}";
  std::ofstream(ck / "step-00000040.tmp-123" / "model.safetensors") << "";
  fs::create_directories(ck / "step-00000050");
  std::ofstream(ck / "step-00000050" / "config.json") << "{}";
  EXPECT_EQ(latest_checkpoint(run), checkpoint_dir_for_step(run, 30));
  // An overwrite interrupted between its renames still counts (the readers use the .old-* copy).
  fs::rename(ck / "step-00000030", ck / "step-00000060.old-77");
  EXPECT_EQ(latest_checkpoint(run), checkpoint_dir_for_step(run, 60));
  EXPECT_EQ(load_checkpoint(latest_checkpoint(run)).trainer_state["step"], 30);
}

TEST_F(Checkpoint, Prune) {
  const std::string run = path("run");
  ParamArena<float> a = make_arena(1);
  for (int64_t step = 1; step <= 5; ++step) save_step_checkpoint(run, step, test::tiny_model_config(), a, nullptr, json::object());
  const fs::path ck = fs::path(run) / "checkpoints";
  prune_checkpoints(run, 2);
  EXPECT_EQ(entries(ck), (std::vector<std::string>{"latest", "step-00000004", "step-00000005"}));

  // The checkpoint `latest` names survives even when older than the kept ones.
  for (int64_t step = 6; step <= 7; ++step) save_step_checkpoint(run, step, test::tiny_model_config(), a, nullptr, json::object());
  write_file_atomic((ck / "latest").string(), "step-00000004\n");
  prune_checkpoints(run, 1);
  EXPECT_EQ(entries(ck), (std::vector<std::string>{"latest", "step-00000004", "step-00000007"}));

  // save_step_checkpoint prunes when asked.
  save_step_checkpoint(run, 8, test::tiny_model_config(), a, nullptr, json::object(), /*keep=*/2);
  EXPECT_EQ(entries(ck), (std::vector<std::string>{"latest", "step-00000007", "step-00000008"}));
  EXPECT_EQ(latest_checkpoint(run), checkpoint_dir_for_step(run, 8));

  EXPECT_THROW(prune_checkpoints(run, 0), InvalidArgument);
  EXPECT_NO_THROW(prune_checkpoints(path("no_such_run"), 3));
}

// Pruning, overwriting and starting over remove only a checkpoint's own files: a user's file in a
// checkpoint directory stays where the user put it, and the warning handler hears of it.
TEST_F(Checkpoint, OnlyCheckpointFilesAreEverRemoved) {
  const std::string run = path("run");
  std::vector<std::string> warnings;
  const CheckpointWarningHandler previous =
      set_checkpoint_warning_handler([&](const std::string& m) { warnings.push_back(m); });
  ParamArena<float> a = make_arena(1);
  for (int64_t step = 1; step <= 3; ++step) save_step_checkpoint(run, step, test::tiny_model_config(), a, nullptr, json::object());
  const fs::path ck = fs::path(run) / "checkpoints";
  write_file_atomic((ck / "step-00000001" / "notes.txt").string(), "one");
  write_file_atomic((ck / "step-00000003" / "notes.txt").string(), "three");
  prune_checkpoints(run, 1);
  EXPECT_EQ(entries(ck), (std::vector<std::string>{"latest", "step-00000001", "step-00000003"}));
  EXPECT_EQ(entries(ck / "step-00000001"), std::vector<std::string>{"notes.txt"});
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("step-00000001' holds files linformer did not write (notes.txt)"), std::string::npos)
      << warnings[0];
  // What is left is no checkpoint: neither counted as one kept nor warned about again.
  save_step_checkpoint(run, 4, test::tiny_model_config(), a, nullptr, json::object(), /*keep=*/1);
  EXPECT_EQ(entries(ck), (std::vector<std::string>{"latest", "step-00000001", "step-00000003", "step-00000004"}));
  EXPECT_EQ(entries(ck / "step-00000003"), std::vector<std::string>{"notes.txt"});
  EXPECT_EQ(warnings.size(), 2u);
  // Saving over a directory holding a user's file: the new checkpoint, with the file beside it.
  save_step_checkpoint(run, 3, test::tiny_model_config(), a, nullptr, json{{"again", true}});
  EXPECT_EQ(entries(ck / "step-00000003"),
            (std::vector<std::string>{"config.json", "model.safetensors", "notes.txt", "trainer_state.json"}));
  EXPECT_EQ(read_file(ck / "step-00000003" / "notes.txt"), "three");
  EXPECT_EQ(load_checkpoint(checkpoint_dir_for_step(run, 3)).trainer_state["again"], true);
  // Starting the run over: every checkpoint goes, the user's files stay.
  remove_run_checkpoints(run);
  EXPECT_EQ(entries(ck), (std::vector<std::string>{"step-00000001", "step-00000003"}));
  EXPECT_EQ(latest_checkpoint(run), "");
  EXPECT_EQ(read_file(ck / "step-00000003" / "notes.txt"), "three");
  set_checkpoint_warning_handler(previous);
}

TEST_F(Checkpoint, WriteFileAtomic) {
  const std::string p = path("file.txt");
  write_file_atomic(p, "first");
  write_file_atomic(p, "second\n");
  EXPECT_EQ(read_file(p), "second\n");
  write_file_atomic(p, "");
  EXPECT_EQ(read_file(p), "");
  EXPECT_EQ(entries(dir_), std::vector<std::string>{"file.txt"}) << "temporary files left behind";

  // A missing directory: an error naming the path, and nothing created.
  const std::string missing = path("no_dir/file.txt");
  expect_error<IoError>([&] { write_file_atomic(missing, "x"); }, {missing, "does the directory"});
  EXPECT_FALSE(fs::exists(path("no_dir")));
  // The target is a non-empty directory: the rename fails, the temporary file is removed.
  fs::create_directories(path("target/inner"));
  expect_error<IoError>([&] { write_file_atomic(path("target"), "x"); }, {path("target")});
  EXPECT_EQ(entries(dir_), (std::vector<std::string>{"file.txt", "target"}));
}

}  // namespace
}  // namespace lf
