// The kinds' option-dependent rules (attention/kind_rules.h): recorded at registration, read by `info`.
#include "attention/kind_rules.h"

#include <map>
#include <mutex>

namespace lf {
namespace {

std::map<std::string, std::vector<std::string>>& own_rules() {
  static std::map<std::string, std::vector<std::string>> rules;
  return rules;
}
std::mutex& rules_mutex() {
  static std::mutex m;
  return m;
}

}  // namespace

void set_attention_kind_rules(const std::string& kind, std::vector<std::string> rules) {
  const std::lock_guard<std::mutex> lock(rules_mutex());
  own_rules()[kind] = std::move(rules);
}

std::vector<std::string> attention_kind_rules(const AttentionKindInfo& info) {
  AttentionRegistry::instance();  // the built-in kinds (and their rules) are registered on first use
  std::vector<std::string> rules;
  {
    const std::lock_guard<std::mutex> lock(rules_mutex());
    if (const auto it = own_rules().find(info.name); it != own_rules().end()) rules = it->second;
  }
  const AttentionSupport& s = info.support;
  // validate_input's (registry.cpp) and the predictor's (inference/predictor.cpp), from the flags.
  if (s.causal && s.cross_attention)
    rules.push_back("causal cross-attention needs a context as long as the query (m = n)");
  if (!s.variable_length) rules.push_back("sequences of exactly max_len positions");
  if (s.key_padding_mask && !s.padding_invariant)
    rules.push_back("a padded sample's outputs differ from its unpadded run: the predictor batches equal lengths only");
  return rules;
}

}  // namespace lf
