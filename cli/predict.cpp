// `linformer predict`: use a trained model. Masked LM: fill the characters marked with the mask
// character ('_' by default) in --text. Classifier: the class of --text with its probabilities.
// Causal LM: continue --text greedily by --generate bytes.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <string>

#include "cli/common.h"
#include "data/mask_text.h"
#include "linformer/tokenizer.h"
#include "model/head.h"

namespace lf::cli {
namespace {

struct PredictCommand {
  std::string checkpoint, text;
  std::string mask_char = "_";
  int64_t generate = 64;
};

int32_t argmax_byte(const float* row, int64_t V) {  // the most likely real byte (never a special id)
  return int32_t(std::max_element(row, row + std::min<int64_t>(V, 256)) - row);
}

// The text and a newline, byte for byte: a predicted byte may be 0, which printf("%s") would cut at.
void print_bytes_line(const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
}

// Masked LM: the text with each masked character filled by the most likely byte.
void fill_masks(const PredictCommand& c, LoadedModel& m) {
  const ModelConfig& cfg = m.config;
  const int64_t V = m.model->logits_per_row();
  const MaskedText mt = mask_text(c.text, c.mask_char[0]);
  const int64_t n = int64_t(mt.tokens.size());
  std::string filled(c.text);
  if (n <= cfg.max_len) {
    const float* logits = m.model->forward(mt.tokens.data(), nullptr, 1, n, false, 0, /*keep_for_backward=*/false);
    for (int64_t pos : mt.masked_positions) filled[size_t(pos)] = char(argmax_byte(logits + pos * V, V));
  } else {
    // Longer than the model: each mask is read from the window of max_len bytes centred on it.
    for (int64_t pos : mt.masked_positions) {
      const int64_t start = std::clamp<int64_t>(pos - cfg.max_len / 2, 0, n - cfg.max_len);
      const float* logits = m.model->forward(mt.tokens.data() + start, nullptr, 1, cfg.max_len, false, 0, /*keep_for_backward=*/false);
      filled[size_t(pos)] = char(argmax_byte(logits + (pos - start) * V, V));
    }
  }
  print_bytes_line(filled);
}

// Causal LM: the prompt continued greedily by --generate bytes.
void continue_prompt(const PredictCommand& c, LoadedModel& m) {
  const ModelConfig& cfg = m.config;
  const int64_t V = m.model->logits_per_row();
  std::vector<int32_t> ids = encode(c.text);
  LF_REQUIRE(!ids.empty(), "--text (the prompt) is empty");
  std::string out = c.text;
  for (int64_t i = 0; i < c.generate; ++i) {
    const int64_t start = std::max<int64_t>(0, int64_t(ids.size()) - cfg.max_len);
    const int64_t n = int64_t(ids.size()) - start;
    const float* logits = m.model->forward(ids.data() + start, nullptr, 1, n, false, 0, /*keep_for_backward=*/false);
    const int32_t next = argmax_byte(logits + (n - 1) * V, V);
    ids.push_back(next);
    out.push_back(char(next));
  }
  print_bytes_line(out);
}

// Classifier: the most likely class of the text (its first max_len bytes) and every class's probability.
void classify_text(const PredictCommand& c, LoadedModel& m) {
  const int64_t V = m.model->logits_per_row();
  std::vector<int32_t> ids = encode(c.text);
  LF_REQUIRE(!ids.empty(), "--text is empty");
  if (int64_t(ids.size()) > m.config.max_len) ids.resize(size_t(m.config.max_len));
  const float* logits = m.model->forward(ids.data(), nullptr, 1, int64_t(ids.size()), false, 0, /*keep_for_backward=*/false);
  const float mx = *std::max_element(logits, logits + V);
  double sum = 0;
  for (int64_t k = 0; k < V; ++k) sum += std::exp(double(logits[k] - mx));
  const int64_t best = std::max_element(logits, logits + V) - logits;
  // Classes are named by the label map saved in config.json (the training TSV's labels).
  std::printf("class %s\n", m.config.class_name(best).c_str());
  for (int64_t k = 0; k < V; ++k)
    std::printf("  p(%s) = %.4f\n", m.config.class_name(k).c_str(), std::exp(double(logits[k] - mx)) / sum);
}

// What predict does for each training objective (HeadInfo::objective): a head trained on an existing
// objective needs nothing here.
const std::map<std::string, void (*)(const PredictCommand&, LoadedModel&)> kPredictions = {
    {"masked_lm", fill_masks}, {"causal_lm", continue_prompt}, {"classification", classify_text}};

int run_predict(const PredictCommand& c) {
  // The model reads bytes, so a mask is one byte: a character of several UTF-8 bytes cannot be one.
  const unsigned char lead = c.mask_char.empty() ? 0 : static_cast<unsigned char>(c.mask_char[0]);
  const size_t utf8_len = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
  LF_REQUIRE(c.mask_char.size() != utf8_len || utf8_len == 1, "--mask-char must be one byte: '", c.mask_char,
             "' is one character but ", utf8_len, " bytes in UTF-8; pick an ASCII character, e.g. _ or #");
  LF_REQUIRE(c.mask_char.size() == 1, "--mask-char must be a single character (one byte, e.g. _ or #), got '",
             c.mask_char, "'");
  LF_REQUIRE(c.generate >= 0, "--generate must be >= 0, got ", c.generate);
  LoadedModel m = open_model(c.checkpoint);
  const std::string& objective = head_info(m.config.task).objective;
  const auto predict = kPredictions.find(objective);
  LF_REQUIRE(predict != kPredictions.end(), "predict has no output for the head '", m.config.task,
             "' (its objective '", objective, "')");
  build_model(m, 1, std::clamp<int64_t>(int64_t(c.text.size()), 1, m.config.max_len), 0, "predict",
              "this checkpoint's model is too large for this machine");
  predict->second(c, m);
  return 0;
}

}  // namespace

CLI::App* add_predict_command(CLI::App& app, std::function<int()>& run) {
  auto cmd = std::make_shared<PredictCommand>();
  CLI::App* sub = app.add_subcommand("predict", "Fill masked characters, classify a text, or continue a prompt");
  sub->add_option("--checkpoint", cmd->checkpoint, "checkpoint directory, or a run directory (its latest)")->required();
  sub->add_option("--text", cmd->text, "the input text (MLM: mark characters to fill with the mask character)")->required();
  sub->add_option("--mask-char", cmd->mask_char, "MLM: the character that marks a masked position (default _)");
  sub->add_option("--generate", cmd->generate, "causal LM: bytes to generate (default 64)");
  run = [cmd] { return run_predict(*cmd); };
  return sub;
}

}  // namespace lf::cli
