// `linformer embed`: the pooled final hidden states of a checkpoint's encoder for each text, as a
// (N, d_model) float32 matrix in a .npy or .safetensors file (written atomically at the end).
#include <CLI/CLI.hpp>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "cli/common.h"
#include "cli/text_input.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "linformer/error.h"
#include "linformer/inference.h"

namespace lf::cli {
namespace {

struct EmbedCommand {
  std::string checkpoint, input, output, pooling = "mean";
  std::vector<std::string> texts;
  int64_t batch_size = 16;
};

int run_embed(EmbedCommand& c) {
  const std::string ext = std::filesystem::path(c.output).extension().string();
  LF_REQUIRE(ext == ".npy" || ext == ".safetensors", "--output must end in .npy or .safetensors, got '", c.output, "'");
  LF_REQUIRE(c.batch_size > 0, "--batch-size must be positive, got ", c.batch_size);
  const Pooling pooling = [&] {
    try {
      return parse_pooling(c.pooling);
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(with_flag_names(e.what()));
    }
  }();
  for (const std::string& t : c.texts) LF_REQUIRE(!t.empty(), "--text is empty");
  check_writable(c.output, "--output");
  PredictorOptions options;
  options.runtime = runtime_options();
  options.batch_size = c.batch_size;
  options.caller = "embed";
  Predictor p(c.checkpoint, options);

  const int64_t d = p.config().d_model;
  std::vector<float> values;
  int64_t rows = 0, truncated = 0;
  auto add = [&](const std::vector<std::string>& texts) {
    const Embeddings e = p.embed(texts, pooling);
    values.insert(values.end(), e.values.begin(), e.values.end());
    rows += e.rows;
    for (bool t : e.truncated) truncated += t;
  };
  if (c.input.empty()) {
    add(c.texts);
  } else {
    TextInput in(c.input, /*blank_lines_allowed=*/false);
    BatchProgress progress("embed");
    for (std::vector<InputText> batch; !(batch = in.next(size_t(4 * c.batch_size))).empty();) {
      std::vector<std::string> texts;
      for (InputText& t : batch) texts.push_back(std::move(t.text));
      add(texts);
      progress.update(in.texts(), in.fraction_read());
    }
    progress.finish();
  }
  if (truncated > 0)
    std::fprintf(stderr, "linformer: note: %lld texts were longer than max_len %lld; their first %lld bytes were read\n",
                 (long long)truncated, (long long)p.max_len(), (long long)p.max_len());
  if (ext == ".npy") {
    write_npy_f32(c.output, rows, d, values.data());
  } else {
    SafeTensorsWriter w;
    w.add_f32("embeddings", {rows, d}, values);
    w.set_metadata("pooling", pooling_name(pooling));
    w.set_metadata("checkpoint", p.checkpoint_dir());
    w.write(c.output);
  }
  std::printf("wrote %lld x %lld embeddings (%s pooling) to %s\n", (long long)rows, (long long)d, pooling_name(pooling),
              c.output.c_str());
  return 0;
}

}  // namespace

CLI::App* add_embed_command(CLI::App& app, std::function<int()>& run) {
  auto cmd = std::make_shared<EmbedCommand>();
  CLI::App* sub = app.add_subcommand("embed", "Pooled encoder vectors of texts, to .npy or .safetensors");
  sub->add_option("--checkpoint", cmd->checkpoint, "checkpoint directory, or a run directory (its latest)")->required();
  CLI::Option* text = sub->add_option("--text", cmd->texts, "a text to embed (repeatable: one row each)");
  CLI::Option* input = sub->add_option("--input", cmd->input,
                                       "a file of texts: one per line (no blank lines: one row per line), or JSONL "
                                       "(.jsonl or a first byte '{') with a \"text\" field");
  text->excludes(input);
  sub->add_option("--output", cmd->output, "X.npy or X.safetensors (tensor \"embeddings\"): (N, d_model) float32")->required();
  sub->add_option("--pooling", cmd->pooling, "how a text's hidden states become one vector: mean | first (cls) | last | max (default mean)");
  sub->add_option("--batch-size", cmd->batch_size, "texts per forward pass (default 16)");
  run = [cmd, text, input] {
    LF_REQUIRE(text->count() + input->count() > 0, "embed needs --text or --input");
    return run_embed(*cmd);
  };
  return sub;
}

}  // namespace lf::cli
