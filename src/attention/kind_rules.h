// The rules an attention kind's validator enforces beyond the flags of its AttentionSupport, where an
// option or the causal mask decides (mixer is causal only with hidden = 0, reformer only with bucket
// chunking, ...), one sentence each, as data: what `linformer info --list-attention --verbose`
// prints under each kind. A kind states its own when it registers; attention_kind_rules adds those
// that follow from the support flags, which validate_input and the predictor enforce for every kind.
#pragma once
#include <string>
#include <vector>

#include "linformer/attention.h"

namespace lf {

// Records a kind's own rules (its registration calls it, beside register_kind).
void set_attention_kind_rules(const std::string& kind, std::vector<std::string> rules);

// The kind's own rules, then those that follow from its support flags: causal cross-attention needs
// m = n, a fixed length, and a padded sample's outputs (padding_invariant).
std::vector<std::string> attention_kind_rules(const AttentionKindInfo& info);

}  // namespace lf
