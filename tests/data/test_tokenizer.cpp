// The byte tokenizer (every byte round-trips, specials render by name, bad ids are refused) and
// mask_text, the input parser of `linformer predict`.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "data/mask_text.h"
#include "linformer/error.h"
#include "linformer/tokenizer.h"

namespace lf {
namespace {

TEST(Tokenizer, VocabularyLayout) {
  EXPECT_EQ(kPad, 256);
  EXPECT_EQ(kMask, 257);
  EXPECT_EQ(kBos, 258);
  EXPECT_EQ(kEos, 259);
  EXPECT_EQ(kVocabSize, 260);
  for (int32_t id = 0; id < 256; ++id) EXPECT_FALSE(is_special(id)) << id;
  for (int32_t id : {kPad, kMask, kBos, kEos}) EXPECT_TRUE(is_special(id)) << id;
  EXPECT_FALSE(is_special(-1));
  EXPECT_FALSE(is_special(kVocabSize));
}

TEST(Tokenizer, AllBytesRoundTrip) {
  std::string all;
  for (int i = 255; i >= 0; --i) all.push_back(static_cast<char>(i));  // descending: order matters too
  const std::vector<int32_t> ids = encode(all);
  ASSERT_EQ(ids.size(), 256u);
  for (int i = 0; i < 256; ++i) EXPECT_EQ(ids[size_t(i)], 255 - i);
  const std::string back = decode(ids);
  EXPECT_EQ(back.size(), 256u);
  EXPECT_EQ(back, all);
}

TEST(Tokenizer, Utf8IsBytes) {
  const std::vector<int32_t> ids = encode("a\xC3\xA9");  // "aé"
  EXPECT_EQ(ids, (std::vector<int32_t>{'a', 0xC3, 0xA9}));
  EXPECT_TRUE(encode("").empty());
}

TEST(Tokenizer, SpecialsDecodeByName) {
  const std::vector<int32_t> ids = {kBos, 'h', 'i', kMask, kEos, kPad, kPad};
  EXPECT_EQ(decode(ids), "<bos>hi<mask><eos><pad><pad>");
  EXPECT_EQ(decode(ids.data(), 0), "");
}

TEST(Tokenizer, DecodeRefusesOutOfRangeIds) {
  for (int32_t bad : {-1, kVocabSize, 100000}) {
    const std::vector<int32_t> ids = {'a', bad};
    try {
      decode(ids);
      ADD_FAILURE() << "id " << bad << " was accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(std::to_string(bad)), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("position 1"), std::string::npos) << e.what();
    }
  }
}

TEST(MaskText, PlaceholdersBecomeMask) {
  const MaskedText m = mask_text("th_ c_t");
  EXPECT_EQ(m.tokens, (std::vector<int32_t>{'t', 'h', kMask, ' ', 'c', kMask, 't'}));
  EXPECT_EQ(m.masked_positions, (std::vector<int64_t>{2, 5}));
}

TEST(MaskText, CustomMaskCharLeavesUnderscores) {
  const MaskedText m = mask_text("a_?", '?');
  EXPECT_EQ(m.tokens, (std::vector<int32_t>{'a', '_', kMask}));
  EXPECT_EQ(m.masked_positions, (std::vector<int64_t>{2}));
}

TEST(MaskText, RefusesEmptyTextAndTextWithoutMask) {
  EXPECT_THROW(mask_text(""), InvalidArgument);
  try {
    mask_text("no placeholder here");
    ADD_FAILURE() << "text without '_' was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'_'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lf
