// Deterministic batch makers: MLM (training and evaluation), CLM, classification. See batches.h.
#include "linformer/batches.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <numeric>
#include <string_view>
#include <utility>

#include "linformer/corpus.h"
#include "linformer/error.h"
#include "linformer/rng.h"
#include "linformer/tokenizer.h"

namespace lf {

namespace {

// Draw counters are (purpose << 48) | element, so the purposes below never share a draw. Elements
// (b·n + t, or b) stay below 2^48 because B·n is capped at kMaxElements.
enum Purpose : uint64_t {
  kMlmCrop = 1, kMlmChoose, kMlmForce, kMlmAction, kMlmByte,
  kEvalChoose, kEvalForce, kEvalAction, kEvalByte,
  kClmCrop, kClsPick,
  kMlmShort, kMlmLength,  // appended: the draws of the purposes above stay what they were
  kMlmSpanStart, kMlmSpanLength, kMlmSpanAction,
};
constexpr int64_t kMaxElements = int64_t(1) << 40;

inline uint64_t counter(Purpose p, int64_t element) { return (uint64_t(p) << 48) | uint64_t(element); }

// An integer uniform in [0, count), from 53 random bits: 24 (uniform01) would leave most offsets of
// a corpus above 16 MB unreachable.
int64_t uniform_index(uint64_t seed, uint64_t stream, uint64_t ctr, int64_t count) {
  const int64_t i = int64_t(uniform01_f64(seed, stream, ctr) * double(count));
  return std::min(i, count - 1);
}

void check_shape(int64_t B, int64_t n) {
  LF_REQUIRE(B >= 1 && n >= 1, "batch size B = ", B, " and sequence length n = ", n, " must both be at least 1");
  LF_REQUIRE(B <= kMaxElements / n, "a batch of B = ", B, " × n = ", n, " tokens is too large");
}

void check_length(std::span<const uint8_t> data, int64_t need, const char* what) {
  LF_REQUIRE(int64_t(data.size()) >= need, "the data has ", data.size(), " bytes, shorter than one ", what, " of ",
             need, " bytes; use a shorter sequence length or more data (a larger split)");
}

struct MaskPurposes {
  Purpose choose, force, action, byte;
};

// Span masking of row b (positions [0, L)): spans at uniform starts with Geometric(1/mean_span)
// lengths until round(mask_prob · L) positions are chosen; action[t] is the span's 80/10/10 draw.
// The draw count is capped (8L + 64 spans) so a probability near 1 cannot loop for long; the cap is
// far above what covering the budget needs.
void choose_spans(int64_t b, int64_t L, int64_t n, double mask_prob, double mean_span, uint64_t seed,
                  uint64_t stream, std::vector<uint8_t>& chosen, std::vector<float>& action) {
  const int64_t budget = std::max<int64_t>(1, std::llround(mask_prob * double(L)));
  const int64_t max_draws = 8 * L + 64, cap = int64_t(std::ceil(3 * mean_span));
  const double log_q = std::log1p(-1.0 / mean_span);  // P(length > l) = q^l, q = 1 − 1/mean
  int64_t count = 0;
  for (int64_t i = 0; i < max_draws && count < budget; ++i) {
    const int64_t element = b * (8 * n + 64) + i;
    const int64_t start = uniform_index(seed, stream, counter(kMlmSpanStart, element), L);
    const double u = uniform01_f64(seed, stream, counter(kMlmSpanLength, element));
    const int64_t length = std::min(cap, 1 + int64_t(std::floor(std::log1p(-u) / log_q)));
    const float a = uniform01(seed, stream, counter(kMlmSpanAction, element));
    for (int64_t t = start; t < std::min(L, start + length); ++t) {
      if (chosen[size_t(t)]) continue;
      chosen[size_t(t)] = 1;
      action[size_t(t)] = a;
      ++count;
    }
  }
}

// Fills tokens/targets of `batch` from the B crops starting at starts[b], masking with draws keyed by
// (seed, stream); mean_span > 1 masks spans (choose_spans) instead of single positions.
// lengths[b] < n (or empty: all n) cuts crop b there; the rest is padding.
void mask_crops(std::span<const uint8_t> data, const std::vector<int64_t>& starts, double mask_prob, uint64_t seed,
                uint64_t stream, MaskPurposes p, TokenBatch& batch, const std::vector<int64_t>& lengths = {},
                double mean_span = 1.0) {
  LF_REQUIRE(mask_prob > 0 && mask_prob <= 1, "mask probability ", mask_prob, " is outside (0, 1]; use e.g. 0.15");
  LF_REQUIRE(mean_span >= 1 && mean_span <= kMaxMaskSpan, "mean mask span ", mean_span, " is outside [1, ",
             kMaxMaskSpan, "]; use 1 for BERT's per-position masking or e.g. 3 for spans");
  const int64_t B = batch.B, n = batch.n;
  batch.tokens.resize(size_t(B * n));
  batch.targets.assign(size_t(B * n), kIgnoreIndex);
  batch.padding.clear();
  const bool cut = std::any_of(lengths.begin(), lengths.end(), [n](int64_t L) { return L < n; });
  if (cut) batch.padding.assign(size_t(B * n), 0);
  std::vector<uint8_t> chosen(static_cast<size_t>(n));
  std::vector<float> action(static_cast<size_t>(n));
  for (int64_t b = 0; b < B; ++b) {
    const uint8_t* src = data.data() + starts[size_t(b)];
    int32_t* tok = batch.tokens.data() + b * n;
    int32_t* tgt = batch.targets.data() + b * n;
    const int64_t L = lengths.empty() ? n : lengths[size_t(b)];
    if (mean_span > 1) {
      std::fill(chosen.begin(), chosen.end(), 0);
      choose_spans(b, L, n, mask_prob, mean_span, seed, stream, chosen, action);
    } else {
      bool any = false;
      for (int64_t t = 0; t < L; ++t) {
        chosen[size_t(t)] = uniform01(seed, stream, counter(p.choose, b * n + t)) < mask_prob;
        any = any || chosen[size_t(t)];
      }
      // A sequence with nothing to predict would contribute no gradient; choose one position instead.
      if (!any) chosen[size_t(uniform_index(seed, stream, counter(p.force, b), L))] = 1;
      for (int64_t t = 0; t < L; ++t)
        if (chosen[size_t(t)]) action[size_t(t)] = uniform01(seed, stream, counter(p.action, b * n + t));
    }
    for (int64_t t = L; t < n; ++t) {
      tok[t] = kPad;
      batch.padding[size_t(b * n + t)] = 1;
    }
    for (int64_t t = 0; t < L; ++t) {
      tok[t] = src[t];
      if (!chosen[size_t(t)]) continue;
      tgt[t] = src[t];
      const float a = action[size_t(t)];
      if (a < 0.8f)
        tok[t] = kMask;
      else if (a < 0.9f)
        tok[t] = int32_t(uniform_index(seed, stream, counter(p.byte, b * n + t), 256));
      // else: left unchanged, so the model cannot assume an unmasked byte is always correct
    }
  }
}

int64_t eval_batch_count(std::span<const uint8_t> data, int64_t B, int64_t n) {
  check_shape(B, n);
  check_length(data, n, "evaluation window");
  const int64_t windows = int64_t(data.size()) / n;
  LF_REQUIRE(windows >= B, "the data has ", data.size(), " bytes: ", windows, " disjoint windows of n = ", n,
             ", fewer than one evaluation batch of B = ", B, "; use a smaller batch or more held-out data");
  return windows / B;
}

}  // namespace

TokenBatch mlm_batch(std::span<const uint8_t> data, int64_t B, int64_t n, uint64_t seed, uint64_t step,
                     const MlmMasking& masking) {
  const double short_seq_prob = masking.short_seq_prob;
  check_shape(B, n);
  LF_REQUIRE(short_seq_prob >= 0 && short_seq_prob <= 1, "short-sequence probability ", short_seq_prob,
             " is outside [0, 1]; use e.g. 0.1");
  check_length(data, n, "sequence");
  const int64_t count = int64_t(data.size()) - n + 1;  // possible start offsets
  std::vector<int64_t> starts(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) starts[size_t(b)] = uniform_index(seed, step, counter(kMlmCrop, b), count);
  TokenBatch batch;
  batch.B = B;
  batch.n = n;
  std::vector<int64_t> lengths;
  if (short_seq_prob > 0) {
    lengths.assign(size_t(B), n);
    for (int64_t b = 0; b < B; ++b)
      if (uniform01_f64(seed, step, counter(kMlmShort, b)) < short_seq_prob)
        lengths[size_t(b)] = 1 + uniform_index(seed, step, counter(kMlmLength, b), n);
  }
  mask_crops(data, starts, masking.prob, seed, step, {kMlmChoose, kMlmForce, kMlmAction, kMlmByte}, batch, lengths,
             masking.span);
  return batch;
}

int64_t mlm_eval_batches(std::span<const uint8_t> data, int64_t B, int64_t n, int64_t max_batches) {
  LF_REQUIRE(max_batches >= 0, "max_batches is ", max_batches, "; give 0 for no cap or a positive cap");
  const int64_t total = eval_batch_count(data, B, n);
  return max_batches > 0 ? std::min(total, max_batches) : total;
}

TokenBatch mlm_eval_batch(std::span<const uint8_t> data, int64_t B, int64_t n, uint64_t index, uint64_t seed,
                          double mask_prob) {
  const int64_t total = eval_batch_count(data, B, n);
  LF_REQUIRE(index < uint64_t(total), "evaluation batch index ", index, " is out of range: the data gives ", total,
             " batches of B = ", B, " × n = ", n);
  // Slot j visits window (j·s) mod W with s coprime to W, a permutation of the windows; s ≈ W/φ makes
  // every prefix of slots spread evenly over the data (the three-distance theorem).
  const uint64_t W = uint64_t(data.size()) / uint64_t(n);
  uint64_t s = std::max<uint64_t>(1, uint64_t(std::llround(double(W) * 0.6180339887498949)));
  while (std::gcd(s, W) != 1) ++s;
  std::vector<int64_t> starts(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    const uint64_t j = index * uint64_t(B) + uint64_t(b);
    const uint64_t w = uint64_t((static_cast<unsigned __int128>(j) * s) % W);
    starts[size_t(b)] = int64_t(w) * n;
  }
  TokenBatch batch;
  batch.B = B;
  batch.n = n;
  mask_crops(data, starts, mask_prob, seed, index, {kEvalChoose, kEvalForce, kEvalAction, kEvalByte}, batch);
  return batch;
}

TokenBatch clm_batch(std::span<const uint8_t> data, int64_t B, int64_t n, uint64_t seed, uint64_t step) {
  check_shape(B, n);
  check_length(data, n + 1, "causal sequence (n + 1 bytes: n inputs and the byte after them)");
  const int64_t count = int64_t(data.size()) - n;  // starts of n + 1 bytes
  TokenBatch batch;
  batch.B = B;
  batch.n = n;
  batch.tokens.resize(size_t(B * n));
  batch.targets.resize(size_t(B * n));
  for (int64_t b = 0; b < B; ++b) {
    const uint8_t* src = data.data() + uniform_index(seed, step, counter(kClmCrop, b), count);
    for (int64_t t = 0; t < n; ++t) {
      batch.tokens[size_t(b * n + t)] = src[t];
      batch.targets[size_t(b * n + t)] = src[t + 1];
    }
  }
  return batch;
}

namespace {

// A label that is an integer (optional '-', then digits, within int64): such labels sort numerically.
bool integer_label(std::string_view label, int64_t* value = nullptr) {
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(label.data(), label.data() + label.size(), v);
  if (label.empty() || ec != std::errc() || end != label.data() + label.size()) return false;
  if (value) *value = v;
  return true;
}

bool ascii_iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

}  // namespace

ClassificationData ClassificationData::load(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  return parse(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), path);
}

ClassificationData ClassificationData::parse(std::string_view text, const std::string& path) {
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // a UTF-8 byte-order mark (spreadsheet exports)
  auto bad = [&](int64_t line, const std::string& problem) {
    throw IoError(str_cat("classification file '", path, "' line ", line, ": ", problem,
                          "; each line must be <label><TAB><text>"));
  };
  ClassificationData d;
  int64_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    const size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    const size_t tab = line.find('\t');
    if (tab == std::string_view::npos) bad(line_no, "no tab between the label and the text");
    if (tab == 0) bad(line_no, "empty label before the tab");
    if (tab + 1 == line.size()) bad(line_no, "empty text after the tab");
    d.names_.emplace_back(line.substr(0, tab));
    d.texts_.emplace_back(line.substr(tab + 1));
    d.lines_.push_back(line_no);
  }
  // A header: its label column says "label", or it alone is not an integer (e.g. "sentiment" over 0/1).
  if (!d.names_.empty()) {
    const bool named = ascii_iequals(d.names_[0], "label");
    const bool lone_word = d.names_.size() > 1 && !integer_label(d.names_[0]) &&
                           std::all_of(d.names_.begin() + 1, d.names_.end(), [](const std::string& n) { return integer_label(n); });
    if (named || lone_word) {
      d.has_header_ = true;
      d.names_.erase(d.names_.begin());
      d.texts_.erase(d.texts_.begin());
      d.lines_.erase(d.lines_.begin());
    }
  }
  if (d.names_.empty())
    throw IoError(str_cat("classification file '", path, "' has no examples (only blank lines",
                          d.has_header_ ? " and a header" : "", ")"));
  d.source_ = path;
  return d.with_classes(sorted_classes(d.names_), "the file's");
}

ClassificationData ClassificationData::from_examples(std::vector<int32_t> labels, std::vector<std::string> texts,
                                                     std::string source) {
  LF_REQUIRE(labels.size() == texts.size(), "classification data '", source, "': ", labels.size(), " labels for ",
             texts.size(), " texts; give one label per text");
  LF_REQUIRE(!labels.empty(), "classification data '", source, "' has no examples");
  ClassificationData d;
  int32_t max_label = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    LF_REQUIRE(labels[i] >= 0, "classification data '", source, "' example ", i, ": negative label ", labels[i]);
    LF_REQUIRE(!texts[i].empty(), "classification data '", source, "' example ", i, ": empty text");
    max_label = std::max(max_label, labels[i]);
    d.names_.push_back(std::to_string(labels[i]));
  }
  for (int32_t k = 0; k <= max_label; ++k) d.classes_.push_back(std::to_string(k));
  d.lines_.assign(labels.size(), 0);
  d.labels_ = std::move(labels);
  d.texts_ = std::move(texts);
  d.source_ = std::move(source);
  return d;
}

std::vector<std::string> ClassificationData::sorted_classes(const std::vector<std::string>& label_names) {
  std::vector<std::string> classes = label_names;
  std::sort(classes.begin(), classes.end());
  classes.erase(std::unique(classes.begin(), classes.end()), classes.end());
  if (std::all_of(classes.begin(), classes.end(), [](const std::string& c) { return integer_label(c); }))
    std::stable_sort(classes.begin(), classes.end(), [](const std::string& a, const std::string& b) {
      int64_t x = 0, y = 0;
      integer_label(a, &x);
      integer_label(b, &y);
      return x < y;  // "01" and "1" are distinct labels of equal value: byte order between them
    });
  return classes;
}

ClassificationData ClassificationData::slice(int64_t begin, int64_t end) const {
  LF_REQUIRE(0 <= begin && begin < end && end <= size(), "classification data '", source_, "': examples [", begin,
             ", ", end, ") are not a non-empty part of its ", size());
  ClassificationData d;
  auto part = [&](const auto& v) { return std::decay_t<decltype(v)>(v.begin() + begin, v.begin() + end); };
  d.labels_ = part(labels_);
  d.names_ = part(names_);
  d.lines_ = part(lines_);
  d.texts_ = part(texts_);
  d.classes_ = classes_;
  d.source_ = source_;
  d.has_header_ = has_header_;
  return d;
}

ClassificationData ClassificationData::with_classes(std::vector<std::string> classes, const std::string& whose) const {
  LF_REQUIRE(!classes.empty() && classes.size() <= size_t(INT32_MAX), "a label map needs 1 to 2^31 − 1 classes, got ",
             classes.size());
  std::vector<std::pair<std::string_view, int32_t>> index;  // sorted by name, for lookups
  for (size_t k = 0; k < classes.size(); ++k) index.emplace_back(classes[k], int32_t(k));
  std::sort(index.begin(), index.end());
  ClassificationData d = *this;
  d.labels_.resize(names_.size());  // parse() comes here with the names only
  for (size_t i = 0; i < names_.size(); ++i) {
    const auto it = std::lower_bound(index.begin(), index.end(), std::pair<std::string_view, int32_t>(names_[i], -1));
    if (it == index.end() || it->first != names_[i]) {
      std::string listed;
      for (size_t k = 0; k < std::min<size_t>(classes.size(), 10); ++k) listed += (k ? ", " : "") + classes[k];
      if (classes.size() > 10) listed += ", …";
      throw IoError(str_cat("classification file '", source_, "' ",
                            lines_[i] > 0 ? str_cat("line ", lines_[i]) : str_cat("example ", i), ": label '", names_[i],
                            "' is not one of ", whose, " ", classes.size(), " classes (", listed,
                            "); a classifier predicts only the labels it was trained on: fix or drop the line, or "
                            "train on data that has the label"));
    }
    d.labels_[i] = it->second;
  }
  d.classes_ = std::move(classes);
  return d;
}

TokenBatch classification_batch(const ClassificationData& data, int64_t B, int64_t n, uint64_t seed, uint64_t step) {
  check_shape(B, n);
  LF_REQUIRE(data.size() > 0, "classification data '", data.source(), "' has no examples");
  TokenBatch batch;
  batch.B = B;
  batch.n = n;
  batch.tokens.assign(size_t(B * n), kPad);
  batch.padding.assign(size_t(B * n), 1);
  batch.targets.resize(size_t(B));
  for (int64_t b = 0; b < B; ++b) {
    const int64_t i = uniform_index(seed, step, counter(kClsPick, b), data.size());
    const std::string& text = data.texts()[size_t(i)];
    const int64_t len = std::min<int64_t>(n, int64_t(text.size()));
    for (int64_t t = 0; t < len; ++t) {
      batch.tokens[size_t(b * n + t)] = static_cast<unsigned char>(text[size_t(t)]);
      batch.padding[size_t(b * n + t)] = 0;
    }
    batch.targets[size_t(b)] = data.labels()[size_t(i)];
  }
  return batch;
}

}  // namespace lf
