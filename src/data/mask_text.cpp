// Placeholder characters to MASK tokens for `linformer predict`. See mask_text.h.
#include "data/mask_text.h"

#include "linformer/error.h"
#include "linformer/tokenizer.h"

namespace lf {

MaskedText mask_text(std::string_view text, char mask_char) {
  LF_REQUIRE(!text.empty(), "the text to predict is empty; give text with '", mask_char,
             "' where bytes should be filled in");
  MaskedText m;
  m.tokens = encode(text);
  for (size_t i = 0; i < text.size(); ++i)
    if (text[i] == mask_char) {
      m.tokens[i] = kMask;
      m.masked_positions.push_back(int64_t(i));
    }
  LF_REQUIRE(!m.masked_positions.empty(), "the text has no '", mask_char,
             "' to predict; mark each byte the model should fill in with '", mask_char, "'");
  return m;
}

}  // namespace lf
