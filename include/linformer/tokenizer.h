// Byte-level tokenizer: ids 0..255 are the bytes themselves, so any file (text in any encoding, or
// binary) encodes without an unknown token and decodes back exactly. Four special ids follow the
// bytes. There is nothing to train and nothing to save: the vocabulary is fixed at kVocabSize.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "linformer/tokens.h"  // the ids: kPad, kMask, kBos, kEos, kVocabSize

namespace lf {

// One id per byte of text, in order.
std::vector<int32_t> encode(std::string_view text);

// The bytes of ids [0, 256) in order, with specials rendered as "<pad>", "<mask>", "<bos>", "<eos>".
// Throws lf::InvalidArgument naming the first id outside [0, kVocabSize).
std::string decode(const int32_t* ids, int64_t n);
inline std::string decode(const std::vector<int32_t>& ids) { return decode(ids.data(), int64_t(ids.size())); }

// True for PAD, MASK, BOS and EOS.
inline bool is_special(int32_t id) { return id >= kPad && id < kVocabSize; }

}  // namespace lf
