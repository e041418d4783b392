// A host program of the public API, built with include/ alone on its include path and linked against
// liblinformer.so (registered with ctest as host_program_public_api): it trains a tiny Linformer
// masked LM for a few steps with its own runtime options, evaluates it, saves a checkpoint, loads it
// into a second Trainer and checks that the evaluation is the same. Exits non-zero on any failure.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "linformer/linformer.h"

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "host_train: FAILED: %s\n", what.c_str());
    ++failures;
  }
}

// A small text corpus with structure a tiny model learns: a few sentences in a fixed shuffled order.
std::string write_corpus(const std::filesystem::path& dir) {
  const char* sentences[] = {"the cat sat on the mat. ", "a dog ran in the park. ", "the sun is warm today. ",
                             "we read a good book. "};
  const std::filesystem::path path = dir / "corpus.txt";
  std::ofstream out(path);
  for (int i = 0; i < 600; ++i) out << sentences[(i * 7 + i / 3) % 4];
  return path.string();
}

lf::ModelConfig tiny_linformer() {
  lf::ModelConfig c;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 2;
  c.d_ff = 64;
  c.max_len = 32;
  c.attention = {lf::LayerAttention{"linformer", {{"k", 8}}}};
  return c;
}

}  // namespace

int main() {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("linformer_host_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  try {
    lf::TrainOptions opt;
    opt.data_path = write_corpus(dir);
    opt.valid_fraction = opt.test_fraction = 0.1;
    opt.batch_size = 4;
    opt.seq_len = 32;
    opt.steps = 6;
    opt.warmup_steps = 1;
    opt.lr = 3e-3;
    const lf::TaskData data = lf::TaskData::load("mlm", opt);

    lf::RuntimeOptions runtime;  // this host's own settings, not the process's
    runtime.threads = 1;
    runtime.max_memory = 256.0 * 1024 * 1024;
    lf::Trainer trainer(tiny_linformer(), opt, runtime);
    check(trainer.runtime().threads == 1, "the trainer runs with the host's thread count");
    const lf::EvalResult before = trainer.evaluate(data, lf::Split::Valid, 4, 32, 2, opt.mask_prob);
    double first_loss = 0, last_loss = 0;
    for (int64_t step = 0; step < opt.steps; ++step) {
      const std::vector<lf::TokenBatch> batch = {
          data.train_batch(opt.batch_size, opt.seq_len, opt.seed, uint64_t(step), {opt.mask_prob, 1.0, 0.0})};
      const lf::StepResult r = trainer.step(batch);
      check(r.step == step + 1 && std::isfinite(r.loss) && r.grad_norm > 0, "step " + std::to_string(step));
      (step == 0 ? first_loss : last_loss) = r.loss;
    }
    const lf::EvalResult trained = trainer.evaluate(data, lf::Split::Valid, 4, 32, 2, opt.mask_prob);
    check(trained.count > 0 && trained.loss < before.loss, "training lowers the held-out loss");
    check(last_loss < first_loss, "the training loss falls");

    const std::string checkpoint = trainer.save((dir / "run").string(), lf::json::object());
    check(lf::latest_checkpoint((dir / "run").string()) == checkpoint, "the saved checkpoint is the run's latest");

    lf::Trainer restored(lf::read_checkpoint_config(checkpoint), opt, runtime);
    restored.load(checkpoint, trainer.steps_done());
    const lf::EvalResult again = restored.evaluate(data, lf::Split::Valid, 4, 32, 2, opt.mask_prob);
    check(again.loss == trained.loss && again.accuracy == trained.accuracy && again.count == trained.count,
          "the loaded checkpoint evaluates as the trainer that saved it");
    check(restored.steps_done() == opt.steps, "the loaded trainer continues from the saved step");

    // The memory guard reads this instance's limit: far too little is refused with a reason.
    lf::RuntimeOptions tiny = runtime;
    tiny.max_memory = 1024;
    lf::Trainer starved(tiny_linformer(), opt, tiny);
    bool refused = false;
    try {
      starved.evaluate(data, lf::Split::Valid, 4, 32, 2, opt.mask_prob);
    } catch (const lf::Error& e) {
      refused = std::string(e.what()).find("memory limit") != std::string::npos;
    }
    check(refused, "an evaluation above the instance's memory limit is refused");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "host_train: error: %s\n", e.what());
    ++failures;
  }
  fs::remove_all(dir);
  if (failures == 0) std::printf("host_train: public API and shared library OK\n");
  return failures == 0 ? 0 : 1;
}
