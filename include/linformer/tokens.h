// Token-id conventions shared by the kernels (the loss), the model (its default vocabulary) and the
// data (tokenizer, batches), kept here so that no layer reaches into another for a constant.
#pragma once
#include <cstdint>

namespace lf {

// The byte vocabulary: ids 0..255 are the bytes themselves, four special ids follow.
inline constexpr int32_t kPad = 256;   // padding (classification batches; masked out of attention)
inline constexpr int32_t kMask = 257;  // masked-language-model mask
inline constexpr int32_t kBos = 258;   // beginning of sequence
inline constexpr int32_t kEos = 259;   // end of sequence
inline constexpr int32_t kVocabSize = 260;

// The target of a position that is not scored (PyTorch's default ignore_index).
inline constexpr int32_t kIgnoreIndex = -100;

}  // namespace lf
