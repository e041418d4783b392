// Classification metrics (train/metrics.h).
#include "train/metrics.h"

#include <algorithm>

#include "linformer/error.h"

namespace lf {

ClassificationReport classification_report(const std::vector<int64_t>& confusion, int64_t C, int64_t majority_class) {
  LF_REQUIRE(C >= 1 && int64_t(confusion.size()) == C * C, "a confusion matrix of ", C, " classes needs ", C * C,
             " counts, got ", confusion.size());
  LF_REQUIRE(majority_class >= -1 && majority_class < C, "majority class ", majority_class, " is outside [0, ", C, ")");
  ClassificationReport r;
  r.confusion = confusion;
  r.classes.resize(size_t(C));
  r.majority_class = majority_class;
  int64_t correct = 0;
  for (int64_t t = 0; t < C; ++t)
    for (int64_t p = 0; p < C; ++p) {
      const int64_t n = confusion[size_t(t * C + p)];
      LF_REQUIRE(n >= 0, "a confusion count is negative: ", n);
      r.classes[size_t(t)].support += n;
      r.classes[size_t(p)].predicted += n;
      r.count += n;
      if (t == p) correct += n;
    }
  double f1_sum = 0;
  int64_t seen = 0;
  for (int64_t k = 0; k < C; ++k) {
    ClassMetrics& m = r.classes[size_t(k)];
    const double hit = double(confusion[size_t(k * C + k)]);
    m.precision = m.predicted ? hit / double(m.predicted) : 0;
    m.recall = m.support ? hit / double(m.support) : 0;
    m.f1 = m.precision + m.recall > 0 ? 2 * m.precision * m.recall / (m.precision + m.recall) : 0;
    if (m.support || m.predicted) {
      f1_sum += m.f1;
      ++seen;
    }
  }
  r.accuracy = r.count ? double(correct) / double(r.count) : 0;
  r.macro_f1 = seen ? f1_sum / double(seen) : 0;
  if (majority_class >= 0 && r.count)
    r.majority_accuracy = double(r.classes[size_t(majority_class)].support) / double(r.count);
  return r;
}

int64_t most_frequent_class(const std::vector<int32_t>& classes, int64_t C) {
  if (classes.empty() || C <= 0) return -1;
  std::vector<int64_t> counts(size_t(C), 0);
  for (int32_t k : classes)
    if (k >= 0 && k < C) ++counts[size_t(k)];
  return std::max_element(counts.begin(), counts.end()) - counts.begin();
}

bool looks_overfitted(double train_accuracy, double heldout_accuracy, double majority_accuracy) {
  return train_accuracy >= kMemorisedAccuracy && heldout_accuracy < majority_accuracy;
}

std::string overfitting_warning(double train_accuracy, double heldout_accuracy, double majority_accuracy,
                                const std::string& majority_name, const std::string& heldout) {
  return str_cat("the model looks overfitted: training accuracy ", train_accuracy, " but ", heldout, " accuracy ",
                 heldout_accuracy, " is below the ", majority_accuracy, " of always answering the most frequent class '",
                 majority_name, "'; it memorised the training examples: train fewer steps, raise --dropout or "
                 "--weight-decay, use a smaller model or more data");
}

nlohmann::json report_to_json(const ClassificationReport& r, const std::vector<std::string>& names) {
  const int64_t C = int64_t(r.classes.size());
  LF_REQUIRE(int64_t(names.size()) == C, names.size(), " class names for ", C, " classes");
  nlohmann::json classes = nlohmann::json::array(), confusion = nlohmann::json::array();
  for (int64_t k = 0; k < C; ++k) {
    const ClassMetrics& m = r.classes[size_t(k)];
    classes.push_back({{"name", names[size_t(k)]}, {"support", m.support}, {"predicted", m.predicted},
                       {"precision", m.precision}, {"recall", m.recall}, {"f1", m.f1}});
    confusion.push_back(std::vector<int64_t>(r.confusion.begin() + k * C, r.confusion.begin() + (k + 1) * C));
  }
  nlohmann::json j = {{"accuracy", r.accuracy}, {"macro_f1", r.macro_f1}, {"classes", classes}, {"confusion", confusion}};
  if (r.majority_class >= 0) {
    j["majority_class"] = names[size_t(r.majority_class)];
    j["majority_accuracy"] = r.majority_accuracy;
  }
  return j;
}

}  // namespace lf
