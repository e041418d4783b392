// The loader fixes the fuzzers led to, each checked directly: size bounds of a model config, exact
// JSON numbers (no silent 2.7 -> 2 or undefined 1e300 -> int64), parameter-count overflow, element
// counts of safetensors shapes, JSON number overflow in config.json, and the corpus memory cap that
// bounds a gzip bomb.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "linformer/arena.h"
#include "linformer/checkpoint.h"
#include "linformer/config.h"
#include "linformer/corpus.h"
#include "linformer/error.h"
#include "linformer/trainer.h"

namespace lf {
namespace {

json small_model_json() {
  return json{{"d_model", 16}, {"n_heads", 2}, {"n_layers", 2}, {"d_ff", 32}, {"max_len", 32},
              {"attention", {{"kind", "full"}}}};
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(LoaderLimits, ConfigSizesAreBounded) {
  EXPECT_NO_THROW(ModelConfig::from_json(small_model_json()));
  for (const char* key : {"d_model", "d_ff", "max_len", "n_layers", "vocab_size"}) {
    json j = small_model_json();
    j[key] = int64_t(1) << 40;
    if (std::string(key) == "d_model") j["n_heads"] = 1;
    const std::string msg = error_of([&] { ModelConfig::from_json(j); });
    EXPECT_NE(msg.find(key), std::string::npos) << msg;
    EXPECT_NE(msg.find("above the limit"), std::string::npos) << msg;
  }
}

TEST(LoaderLimits, ConfigIntegersMustBeExact) {
  for (const json& bad : {json(1e300), json(2.5), json(-1e300), json(18446744073709551615ull), json("8")}) {
    json j = small_model_json();
    j["d_model"] = bad;
    const std::string msg = error_of([&] { ModelConfig::from_json(j); });
    EXPECT_NE(msg.find("'d_model' has the wrong type or is out of range"), std::string::npos) << bad << ": " << msg;
  }
  json j = small_model_json();
  j["version"] = 1e300;
  EXPECT_NE(error_of([&] { ModelConfig::from_json(j); }).find("'version'"), std::string::npos);
  j = small_model_json();
  j["attention"] = {{"kind", "local"}, {"options", {{"window", 9223372036854775808ull}}}};
  EXPECT_NE(error_of([&] { ModelConfig::from_json(j); }).find("int64 range"), std::string::npos);
}

TEST(LoaderLimits, TrainOptionIntegersMustBeExact) {
  EXPECT_EQ(TrainOptions::from_json(json{{"steps", 7}}).steps, 7);
  EXPECT_EQ(TrainOptions::from_json(json{{"lr", 1}}).lr, 1.0);  // an integer is a fine double
  for (const json& bad : {json{{"steps", 1e300}}, json{{"steps", 2.5}}, json{{"seed", -1}},
                          json{{"keep_checkpoints", int64_t(1) << 40}}, json{{"checkpoint_activations", 1}}})
    EXPECT_NE(error_of([&] { TrainOptions::from_json(bad); }).find("wrong type or is out of range"), std::string::npos)
        << bad;
}

TEST(LoaderLimits, ParameterCountOverflowIsRefused) {
  ParamArena<float> a;
  EXPECT_NE(error_of([&] { a.declare("w", {int64_t(1) << 40, int64_t(1) << 40}, Init::zeros()); }).find("too large"),
            std::string::npos);
  a.declare("x", {int64_t(1) << 62}, Init::zeros());
  EXPECT_NE(error_of([&] { a.declare("y", {int64_t(1) << 62}, Init::zeros()); }).find("overflow"), std::string::npos);
  a.declare("z", {1}, Init::zeros());  // the refused ones left no trace
  EXPECT_EQ(a.numel(), (int64_t(1) << 62) + 1);
}

std::vector<uint8_t> raw_file(const std::string& header) {
  std::vector<uint8_t> out(8 + header.size());
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}

TEST(LoaderLimits, SafetensorsElementCountMustFitInt64) {
  // 2^32 · 2^31 · 0 bytes: zero bytes, but numel() would overflow int64 on the way.
  const std::string msg = error_of([&] {
    SafeTensorsFile::parse(raw_file(R"({"a":{"dtype":"U8","shape":[4294967296,2147483648,0],"data_offsets":[0,0]}})"),
                           "x.safetensors");
  });
  EXPECT_NE(msg.find("is too large"), std::string::npos) << msg;
  EXPECT_NO_THROW(SafeTensorsFile::parse(
      raw_file(R"({"a":{"dtype":"U8","shape":[4294967296,0,2147483648],"data_offsets":[0,0]}})"), "x.safetensors"));
}

TEST(LoaderLimits, ConfigJsonNumberOverflowIsAnIoError) {
  const std::string msg = error_of([] { parse_checkpoint_config(R"({"ln_eps": 1e999})", "ck/config.json"); });
  EXPECT_NE(msg.find("ck/config.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not valid JSON"), std::string::npos) << msg;
}

std::vector<uint8_t> gzip_zeros(size_t n) {
  const std::vector<uint8_t> zeros(n, 0);
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::vector<uint8_t> out(deflateBound(&zs, uLong(n)));
  zs.next_in = const_cast<Bytef*>(zeros.data());
  zs.avail_in = uInt(n);
  zs.next_out = out.data();
  zs.avail_out = uInt(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

TEST(LoaderLimits, GzipBombStopsAtTheCap) {
  const std::vector<uint8_t> bomb = gzip_zeros(size_t(16) << 20);  // 16 MiB of zeros in ~16 KB
  ASSERT_LT(bomb.size(), 64u * 1024);
  const std::string msg = error_of([&] { decode_corpus_bytes(bomb, 0, "bomb.gz", uint64_t(1) << 20); });
  EXPECT_NE(msg.find("bomb.gz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("decompresses to more than 1048576 bytes"), std::string::npos) << msg;
  // Under the cap, or a prefix asked for, it reads.
  EXPECT_EQ(decode_corpus_bytes(bomb, 0, "bomb.gz", uint64_t(32) << 20).size(), size_t(16) << 20);
  EXPECT_EQ(decode_corpus_bytes(bomb, 1000, "bomb.gz", uint64_t(1) << 20).size(), 1000u);
  EXPECT_GT(default_corpus_cap(), uint64_t(1) << 20);
}

TEST(LoaderLimits, GzipMembersAndTrailingBytes) {
  const std::vector<uint8_t> a = gzip_zeros(10);
  std::vector<uint8_t> two = a;
  two.insert(two.end(), a.begin(), a.end());
  EXPECT_EQ(decode_corpus_bytes(two, 0, "two.gz").size(), 20u);
  std::vector<uint8_t> trailing = a;
  trailing.insert(trailing.end(), {0, 0, 0, 0});  // padding after the last member is ignored, as gzip does
  EXPECT_EQ(decode_corpus_bytes(trailing, 0, "pad.gz").size(), 10u);
  std::vector<uint8_t> cut = two;
  cut.resize(a.size() + 5);  // the second member's header cut short
  EXPECT_NE(error_of([&] { decode_corpus_bytes(cut, 0, "cut.gz"); }).find("truncated gzip"), std::string::npos);
}

}  // namespace
}  // namespace lf
