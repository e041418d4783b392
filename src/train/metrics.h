// A classifier's metrics from its confusion matrix: per-class precision, recall, F1 and support,
// macro-F1, and the majority-class baseline, plus the overfitting rule that `train` and `eval` share.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lf {

struct ClassMetrics {
  int64_t support = 0;    // examples of the class
  int64_t predicted = 0;  // examples predicted as the class
  double precision = 0;   // correct / predicted; 0 when nothing was predicted as it (as scikit-learn)
  double recall = 0;      // correct / support; 0 without support
  double f1 = 0;          // harmonic mean of the two; 0 when both are 0
};

struct ClassificationReport {
  std::vector<ClassMetrics> classes;  // one per class
  std::vector<int64_t> confusion;     // C × C, row = true class, column = predicted
  int64_t count = 0;                  // examples
  double accuracy = 0;
  // Mean F1 over the classes that occur in the examples or the predictions (scikit-learn's "macro"
  // average over the labels seen): a class of the model absent from both would only add a 0.
  double macro_f1 = 0;
  int64_t majority_class = -1;  // the training split's most frequent class (-1: not known)
  double majority_accuracy = 0;  // accuracy of always answering it on these examples
};

// confusion: C × C counts (row = true class, column = predicted). majority_class in [0, C) or -1.
// Throws lf::InvalidArgument when confusion is not C × C or a count is negative.
ClassificationReport classification_report(const std::vector<int64_t>& confusion, int64_t C, int64_t majority_class);

// The most frequent class among `classes` (ties: the lowest index); -1 when empty.
int64_t most_frequent_class(const std::vector<int32_t>& classes, int64_t C);

// Overfitting as a user would spot it: the training examples are (almost) all right while the
// held-out accuracy is below that of always answering the most frequent class.
inline constexpr double kMemorisedAccuracy = 0.99;
bool looks_overfitted(double train_accuracy, double heldout_accuracy, double majority_accuracy);
// The warning's text (without a "warning: " prefix).
std::string overfitting_warning(double train_accuracy, double heldout_accuracy, double majority_accuracy,
                                const std::string& majority_name, const std::string& heldout);

// {"accuracy", "macro_f1", "majority_class", "majority_accuracy", "classes": [{"name", "support",
// "predicted", "precision", "recall", "f1"}...], "confusion": [[...], ...]}; names[k] names class k.
nlohmann::json report_to_json(const ClassificationReport& r, const std::vector<std::string>& names);

}  // namespace lf
