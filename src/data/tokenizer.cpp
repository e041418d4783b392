// Byte-level tokenizer. See tokenizer.h.
#include "linformer/tokenizer.h"

#include "linformer/error.h"

namespace lf {

std::vector<int32_t> encode(std::string_view text) {
  std::vector<int32_t> ids(text.size());
  // Through unsigned char: char is signed on x86, and bytes >= 0x80 must map to 128..255.
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string decode(const int32_t* ids, int64_t n) {
  LF_REQUIRE(n >= 0, "decode: negative length ", n);
  std::string out;
  out.reserve(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    const int32_t id = ids[i];
    LF_REQUIRE(id >= 0 && id < kVocabSize, "decode: token id ", id, " at position ", i, " is outside [0, ",
               kVocabSize, "); ids come from a model with the byte vocabulary");
    switch (id) {
      case kPad: out += "<pad>"; break;
      case kMask: out += "<mask>"; break;
      case kBos: out += "<bos>"; break;
      case kEos: out += "<eos>"; break;
      default: out += static_cast<char>(static_cast<unsigned char>(id));
    }
  }
  return out;
}

}  // namespace lf
