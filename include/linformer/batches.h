// Batch makers for training and evaluation. Every random choice is a Philox draw keyed by
// (seed, stream, counter), with the training step (or the evaluation batch index) as the stream, so a
// batch is a pure function of its arguments: no generator state to save, and a run resumed from step
// s sees exactly the batches it would have seen, on any thread count.
//
// Masked language modelling follows BERT/RoBERTa: each position is chosen with probability
// mask_prob (at least one per sequence); a chosen byte becomes MASK 80% of the time, a uniformly
// random byte 10%, and stays itself 10%; the model is scored on the chosen positions only. Training
// batches may instead mask contiguous spans (SpanBERT); evaluation batches always mask per position,
// so held-out figures stay comparable across training choices.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "linformer/tokens.h"  // kIgnoreIndex (-100), the target of positions that are not scored

namespace lf {

struct TokenBatch {
  int64_t B = 0, n = 0;
  std::vector<int32_t> tokens;    // (B, n) ids in [0, kVocabSize)
  std::vector<int32_t> targets;   // (B, n), or (B) for classification; kIgnoreIndex = not scored
  std::vector<uint8_t> padding;   // (B, n) nonzero = padding (key padding mask), or empty: none
};

// How a training batch is masked.
//   prob            fraction of each sequence's positions scored, in (0, 1].
//   span            mean masked span length. 1: BERT, each position chosen independently with
//                   probability prob. > 1: SpanBERT, spans of Geometric(1/span) length (support 1, 2,
//                   …, capped at ⌈3·span⌉, so the realised mean is a little below `span`) at uniform
//                   starts are masked until round(prob · L) positions of the sequence's L are chosen
//                   (the last span may overshoot); the 80/10/10 choice is drawn once per span, as
//                   SpanBERT does. At most kMaxMaskSpan.
//   short_seq_prob  see mlm_batch.
struct MlmMasking {
  double prob = 0.15;
  double span = 1.0;
  double short_seq_prob = 0.0;
};
inline constexpr double kMaxMaskSpan = 64;

// B crops of n bytes, each starting uniformly in [0, size − n], masked as `masking` says; targets
// hold the original byte at chosen positions. With probability short_seq_prob a crop is cut to a
// length L drawn uniformly in [1, n] and positions L … n−1 become padding (PAD, marked in `padding`,
// not scored), as BERT's short_seq_prob: a model trained only at n otherwise meets shorter inputs
// (a short text to fill) for the first time at inference, and Linformer's E/F columns beyond L never
// learned to be absent. Throws lf::InvalidArgument for data shorter than n, B or n < 1, prob outside
// (0, 1], span outside [1, kMaxMaskSpan] or short_seq_prob outside [0, 1]. The default masking
// draws exactly what it drew before spans existed.
TokenBatch mlm_batch(std::span<const uint8_t> data, int64_t B, int64_t n, uint64_t seed, uint64_t step,
                     const MlmMasking& masking = {});

// How many evaluation batches mlm_eval_batch can make from the data: the data holds
// W = size / n disjoint windows of n bytes, so W / B batches, capped at max_batches when that is > 0.
// Throws lf::InvalidArgument when not even one batch fits (data shorter than B·n), or for
// max_batches < 0.
int64_t mlm_eval_batches(std::span<const uint8_t> data, int64_t B, int64_t n, int64_t max_batches = 0);

// Evaluation batch `index` in [0, mlm_eval_batches(data, B, n)): crops at fixed offsets (the disjoint
// windows [w·n, (w+1)·n), visited in an order that spreads every prefix of batches over the whole
// data, so a capped evaluation still samples it evenly), masked as mlm_batch with draws that depend
// only on (seed, index). Every evaluation of any model with the same arguments sees the same batch.
TokenBatch mlm_eval_batch(std::span<const uint8_t> data, int64_t B, int64_t n, uint64_t index, uint64_t seed,
                          double mask_prob = 0.15);

// Causal language modelling: B crops of n + 1 bytes starting uniformly in [0, size − n − 1]; tokens
// are the first n, targets the last n (targets[t] = tokens[t + 1]). Throws lf::InvalidArgument for
// data shorter than n + 1.
TokenBatch clm_batch(std::span<const uint8_t> data, int64_t B, int64_t n, uint64_t seed, uint64_t step);

// Labelled texts for sequence classification. Each example keeps its label as written (its name) and
// its class, the label's index in the label map `classes()` (class k is named classes()[k]).
class ClassificationData {
 public:
  // A TSV file (plain or gzip), one example per line: `label<TAB>text`, the label any string without a
  // tab (integers, or names such as `pos`), the text everything after the first tab (a trailing \r is
  // dropped; blank lines are skipped). The first line is a header, and skipped, when its label column
  // is `label` (any case), or when it is not an integer while every other line's label is. The label
  // map is sorted_classes() of every label. Throws lf::IoError naming the path (and the line number for
  // a bad line): unreadable or empty file, a line without a tab, an empty label or text, no examples.
  static ClassificationData load(const std::string& path);
  // The same on the (decompressed) contents of such a file; `source` names it in messages.
  static ClassificationData parse(std::string_view text, const std::string& source);
  // Examples in memory whose labels are already classes: labels[i] (>= 0) is the class of texts[i],
  // named by its number, and the map is the identity "0" … "max label" (empty classes included).
  // Throws lf::InvalidArgument for a negative label, an empty text or unequal lengths.
  static ClassificationData from_examples(std::vector<int32_t> labels, std::vector<std::string> texts,
                                          std::string source = "<memory>");

  // The label map of a training set: its distinct labels, sorted numerically when every one is an
  // integer (so labels 1 … K become classes 0 … K−1) and byte by byte otherwise.
  static std::vector<std::string> sorted_classes(const std::vector<std::string>& label_names);

  // Examples [begin, end), with the same label map.
  ClassificationData slice(int64_t begin, int64_t end) const;
  // The same examples under another label map. Throws lf::IoError naming the source, the line (or the
  // example's index) and the label when a label is not in `classes`; `whose` says whose map it is in
  // that message (e.g. "the training split's").
  ClassificationData with_classes(std::vector<std::string> classes, const std::string& whose) const;

  int64_t size() const { return int64_t(labels_.size()); }
  int64_t num_classes() const { return int64_t(classes_.size()); }
  const std::vector<int32_t>& labels() const { return labels_; }            // each example's class
  const std::vector<std::string>& label_names() const { return names_; }    // each example's label as written
  const std::vector<int64_t>& line_numbers() const { return lines_; }       // 1-based file lines (0: in memory)
  const std::vector<std::string>& classes() const { return classes_; }      // the label map
  const std::vector<std::string>& texts() const { return texts_; }
  const std::string& source() const { return source_; }
  bool has_header() const { return has_header_; }

 private:
  std::vector<int32_t> labels_;
  std::vector<std::string> names_;
  std::vector<int64_t> lines_;
  std::vector<std::string> classes_;
  std::vector<std::string> texts_;
  std::string source_;
  bool has_header_ = false;
};

// B examples drawn uniformly (with replacement); each text is encoded and truncated to n bytes or
// padded to n with kPad, padding marking the pad positions; targets (B) are the labels.
TokenBatch classification_batch(const ClassificationData& data, int64_t B, int64_t n, uint64_t seed, uint64_t step);

}  // namespace lf
