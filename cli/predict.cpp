// `linformer predict`: use a trained model through the library's Predictor (linformer/inference.h).
// Masked LM: fill the characters marked with the mask character ('_' by default). Classifier: the
// class with its probabilities. Causal LM: continue the prompt by --generate bytes, sampled
// (temperature, top-k, top-p, seed; --temperature 0 is greedy). One --text prints plain text;
// --input FILE (a text per line, or JSONL) prints a JSON object per text, batched and streamed.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <functional>
#include <map>
#include <string>

#include "cli/common.h"
#include "cli/text_input.h"
#include "linformer/error.h"
#include "linformer/inference.h"

namespace lf::cli {
namespace {

struct PredictCommand {
  std::string checkpoint, text, input, output;
  std::string mask_char = "_";
  int64_t generate = 64, batch_size = 16;
  SamplingOptions sampling;
};

// The text and a newline, byte for byte: a predicted byte may be 0, which printf("%s") would cut at.
void print_bytes_line(const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
}

void note_truncated(bool truncated, size_t bytes, int64_t max_len) {
  if (truncated)
    std::fprintf(stderr, "linformer: note: the text has %zu bytes; the model read its first %lld (max_len)\n", bytes,
                 (long long)max_len);
}

// --text: the answer as plain text, as predict always printed it.
void predict_one(const PredictCommand& c, Predictor& p) {
  if (p.objective() == "masked_lm") {
    print_bytes_line(p.fill_masks({c.text}, c.mask_char[0])[0]);
  } else if (p.objective() == "causal_lm") {
    LF_REQUIRE(!c.text.empty(), "--text (the prompt) is empty");
    print_bytes_line(c.text + p.generate(c.text, c.sampling));
  } else {
    const Classification r = p.classify({c.text})[0];
    note_truncated(r.truncated, c.text.size(), p.max_len());
    // Classes are named by the label map saved in config.json (the training TSV's labels).
    std::printf("class %s\n", p.config().class_name(r.label).c_str());
    for (size_t k = 0; k < r.probabilities.size(); ++k)
      std::printf("  p(%s) = %.4f\n", p.config().class_name(int64_t(k)).c_str(), r.probabilities[k]);
  }
}

// The JSON objects of a batch of texts, in their order: the line (and the JSONL "id"), then the answer.
std::vector<json> predict_batch(const PredictCommand& c, Predictor& p, const std::vector<InputText>& batch) {
  std::vector<std::string> texts;
  for (const InputText& t : batch) texts.push_back(t.text);
  std::vector<json> out(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    out[i] = {{"line", batch[i].line}};
    if (!batch[i].id.is_null()) out[i]["id"] = batch[i].id;
  }
  if (p.objective() == "masked_lm") {
    const std::vector<std::string> filled = p.fill_masks(texts, c.mask_char[0]);
    for (size_t i = 0; i < batch.size(); ++i) out[i]["text"] = filled[i];
  } else if (p.objective() == "causal_lm") {
    for (size_t i = 0; i < batch.size(); ++i) out[i]["generated"] = p.generate(texts[i], c.sampling);
  } else {
    const std::vector<Classification> r = p.classify(texts);
    for (size_t i = 0; i < batch.size(); ++i) {
      out[i]["class"] = r[i].label;
      out[i]["label"] = p.config().class_name(r[i].label);
      out[i]["probabilities"] = r[i].probabilities;
      out[i]["truncated"] = r[i].truncated;
    }
  }
  return out;
}

// Lines of the batch's texts that the model cannot take: each names its line, not its index.
void check_batch(const PredictCommand& c, const Predictor& p, const std::vector<InputText>& batch,
                 const std::string& input) {
  if (p.objective() != "masked_lm") return;
  for (const InputText& t : batch)
    if (t.text.find(c.mask_char[0]) == std::string::npos)
      throw IoError(str_cat(input, ":", t.line, ": the text has no '", c.mask_char,
                                    "' to fill; mark each byte the model should fill in with '", c.mask_char,
                                    "' (--mask-char)"));
}

void predict_file(const PredictCommand& c, Predictor& p) {
  TextInput in(c.input, /*blank_lines_allowed=*/true);
  OutputStream out(c.output);
  BatchProgress progress("predict");
  // Four batches at a time: enough texts to group by length, few enough to stream.
  for (std::vector<InputText> batch; !(batch = in.next(size_t(4 * c.batch_size))).empty();) {
    check_batch(c, p, batch, c.input);
    for (const json& j : predict_batch(c, p, batch)) out.write_line(json_line(j));
    out.flush();
    progress.update(in.texts(), in.fraction_read());
  }
  out.commit();
  progress.finish();
}

int run_predict(PredictCommand& c) {
  // The model reads bytes, so a mask is one byte: a character of several UTF-8 bytes cannot be one.
  const unsigned char lead = c.mask_char.empty() ? 0 : static_cast<unsigned char>(c.mask_char[0]);
  const size_t utf8_len = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
  LF_REQUIRE(c.mask_char.size() != utf8_len || utf8_len == 1, "--mask-char must be one byte: '", c.mask_char,
             "' is one character but ", utf8_len, " bytes in UTF-8; pick an ASCII character, e.g. _ or #");
  LF_REQUIRE(c.mask_char.size() == 1, "--mask-char must be a single character (one byte, e.g. _ or #), got '",
             c.mask_char, "'");
  LF_REQUIRE(c.generate >= 0, "--generate must be >= 0, got ", c.generate);
  LF_REQUIRE(c.batch_size > 0, "--batch-size must be positive, got ", c.batch_size);
  c.sampling.max_new_tokens = c.generate;
  try {
    c.sampling.validate();
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(with_flag_names(e.what()));
  }
  if (!c.output.empty()) check_writable(c.output, "--output");
  PredictorOptions options;
  options.runtime = runtime_options();
  options.batch_size = c.input.empty() ? 1 : c.batch_size;
  options.caller = "predict";
  Predictor p(c.checkpoint, options);
  if (c.input.empty())
    predict_one(c, p);
  else
    predict_file(c, p);
  return 0;
}

}  // namespace

CLI::App* add_predict_command(CLI::App& app, std::function<int()>& run) {
  auto cmd = std::make_shared<PredictCommand>();
  CLI::App* sub = app.add_subcommand("predict", "Fill masked characters, classify texts, or continue a prompt");
  sub->add_option("--checkpoint", cmd->checkpoint, "checkpoint directory, or a run directory (its latest)")->required();
  CLI::Option* text = sub->add_option("--text", cmd->text, "the input text (MLM: mark characters to fill with the mask character)");
  CLI::Option* input = sub->add_option("--input", cmd->input,
                                       "a file of texts: one per line, or JSONL (.jsonl or a first byte '{') with a "
                                       "\"text\" field; prints a JSON object per text");
  text->excludes(input);
  sub->add_option("--output", cmd->output, "--input: write the JSON lines to this file (whole at the end) instead of stdout")
      ->needs(input);
  sub->add_option("--batch-size", cmd->batch_size, "--input: texts per forward pass (default 16)");
  sub->add_option("--mask-char", cmd->mask_char, "MLM: the character that marks a masked position (default _)");
  sub->add_option("--generate", cmd->generate, "causal LM: bytes to generate (default 64)");
  add_sampling_flags(sub, cmd->sampling, "causal LM: ");
  run = [cmd, text, input] {
    LF_REQUIRE(text->count() + input->count() == 1, "predict needs --text or --input");
    return run_predict(*cmd);
  };
  return sub;
}

}  // namespace lf::cli
