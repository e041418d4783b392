// Input for `linformer predict`: the user writes text with a placeholder character where the model
// should fill in bytes ("The c_t sat"), and every placeholder becomes a MASK token.
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

namespace lf {

struct MaskedText {
  std::vector<int32_t> tokens;             // encode(text) with every mask_char replaced by kMask
  std::vector<int64_t> masked_positions;   // the indices of those MASK tokens, ascending
};

// Throws lf::InvalidArgument when the text is empty or has no mask_char.
MaskedText mask_text(std::string_view text, char mask_char = '_');

}  // namespace lf
