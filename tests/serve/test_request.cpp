// parse_request: what a body must be for each endpoint, and that every refusal names the field or the
// limit (the HTTP tests in test_server.cpp check that these reach the client as 400s).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "linformer/error.h"
#include "serve/request.h"

namespace lf::serve {
namespace {

RequestLimits small_limits() {
  RequestLimits l;
  l.max_texts = 3;
  l.max_text_bytes = 10;
  l.max_new_tokens = 50;
  return l;
}

std::string refusal(Endpoint e, const std::string& body) {
  try {
    parse_request(e, body, small_limits());
  } catch (const InvalidArgument& err) {
    return err.what();
  }
  return "(accepted)";
}

TEST(ServeRequest, AcceptsOneTextOrAList) {
  const Request one = parse_request(Endpoint::classify, R"({"text": "abc"})", small_limits());
  EXPECT_TRUE(one.single);
  EXPECT_EQ(one.texts, std::vector<std::string>{"abc"});
  const Request many = parse_request(Endpoint::embed, R"({"texts": ["a", "bc", "def"]})", small_limits());
  EXPECT_FALSE(many.single);
  EXPECT_EQ(many.texts, (std::vector<std::string>{"a", "bc", "def"}));
}

TEST(ServeRequest, ReadsTheOptionsOfItsEndpoint) {
  const Request p = parse_request(Endpoint::predict, R"({"text": "a#c", "mask_char": "#"})", small_limits());
  EXPECT_EQ(p.mask_char, '#');
  const Request g = parse_request(
      Endpoint::generate, R"({"text": "ab", "max_new_tokens": 7, "temperature": 0.5, "top_k": 3, "top_p": 0.9, "seed": 4})",
      small_limits());
  EXPECT_EQ(g.sampling.max_new_tokens, 7);
  EXPECT_DOUBLE_EQ(g.sampling.temperature, 0.5);
  EXPECT_EQ(g.sampling.top_k, 3);
  EXPECT_DOUBLE_EQ(g.sampling.top_p, 0.9);
  EXPECT_EQ(g.sampling.seed, 4u);
  const Request stops = parse_request(Endpoint::generate, R"({"text": "ab", "stop": ["\n", "."]})", small_limits());
  EXPECT_EQ(stops.sampling.stop, (std::vector<std::string>{"\n", "."}));
  EXPECT_LE(stops.sampling.max_new_tokens, 50) << "the default is capped by the limit";
  EXPECT_EQ(parse_request(Endpoint::embed, R"({"text": "ab", "pooling": "cls"})", small_limits()).pooling, Pooling::kFirst);
  // Texts batch together only with equal options.
  const Request g2 = parse_request(Endpoint::generate, R"({"text": "zz", "max_new_tokens": 7, "temperature": 0.5,
                                                          "top_k": 3, "top_p": 0.9, "seed": 4})", small_limits());
  EXPECT_EQ(g.batch_key(), g2.batch_key());
  EXPECT_NE(g.batch_key(), parse_request(Endpoint::generate, R"({"text": "ab"})", small_limits()).batch_key());
  // Options that differ past the 6th digit do not share a batch (it would run with the first's).
  EXPECT_NE(parse_request(Endpoint::generate, R"({"text": "a", "temperature": 0.7})", small_limits()).batch_key(),
            parse_request(Endpoint::generate, R"({"text": "a", "temperature": 0.7000001})", small_limits()).batch_key());
}

TEST(ServeRequest, RefusesWithAMessageNamingTheProblem) {
  const struct {
    Endpoint endpoint;
    const char* body;
    const char* message;
  } cases[] = {
      {Endpoint::classify, "", "not valid JSON"},
      {Endpoint::classify, "{\"text\": ", "not valid JSON"},
      {Endpoint::classify, "[\"a\"]", "must be a JSON object, got array"},
      {Endpoint::classify, "null", "must be a JSON object, got null"},
      {Endpoint::classify, "{}", "missing field 'text'"},
      {Endpoint::classify, R"({"text": "a", "texts": ["b"]})", "not both"},
      {Endpoint::classify, R"({"text": 5})", "'text' must be a string, got number"},
      {Endpoint::classify, R"({"text": ""})", "'text' is empty"},
      {Endpoint::classify, R"({"text": "01234567890"})", "11 bytes, above the limit of 10 (--max-seq-len)"},
      {Endpoint::classify, R"({"texts": "a"})", "'texts' must be a list of strings, got string"},
      {Endpoint::classify, R"({"texts": []})", "'texts' is empty"},
      {Endpoint::classify, R"({"texts": ["a", 2]})", "'texts'[1] must be a string, got number"},
      {Endpoint::classify, R"({"texts": ["a", "b", "c", "d"]})", "4 texts, above the limit of 3 (--max-texts)"},
      {Endpoint::classify, R"({"text": "a", "mask_char": "#"})", "unknown field 'mask_char' for /v1/classify"},
      {Endpoint::predict, R"({"text": "abc"})", "'text' has no mask character '_'"},
      {Endpoint::predict, R"({"text": "a_c", "mask_char": "##"})", "'mask_char' must be one byte"},
      {Endpoint::predict, R"({"text": "a_c", "mask_char": 1})", "'mask_char' must be a string, got number"},
      {Endpoint::generate, R"({"text": "a", "max_new_tokens": 51})", "'max_new_tokens' must be in [1, 50]"},
      {Endpoint::generate, R"({"text": "a", "max_new_tokens": 1.5})", "'max_new_tokens' must be an integer"},
      {Endpoint::generate, R"({"text": "a", "max_new_tokens": 18446744073709551615})", "must be in [1, 50]"},
      {Endpoint::generate, R"({"text": "a", "temperature": "hot"})", "'temperature' must be a number, got string"},
      {Endpoint::generate, R"({"text": "a", "temperature": -1})", "'temperature' must be in [0, 100]"},
      {Endpoint::generate, R"({"text": "a", "top_p": 0})", "`top_p` must be in (0, 1]"},
      {Endpoint::generate, R"({"text": "a", "stop": "x"})", "'stop' must be a list of at most 8 strings, got string"},
      {Endpoint::generate, R"({"text": "a", "stop": [""]})", "'stop' must hold non-empty strings"},
      {Endpoint::embed, R"({"text": "a", "pooling": "median"})", "`pooling` must be mean, first (or cls), last or max"},
      {Endpoint::embed, R"({"text": "a", "pooling": 3})", "'pooling' must be one of mean"},
      {Endpoint::generate, R"({"text": "a", "top_k": 300})", "'top_k' must be in [0, 256]"},
      {Endpoint::generate, R"({"text": "a", "seed": -1})", "'seed' must be in [0, "},
  };
  for (const auto& c : cases) {
    const std::string got = refusal(c.endpoint, c.body);
    EXPECT_NE(got.find(c.message), std::string::npos) << c.body << " -> " << got;
  }
}

TEST(ServeRequest, DeepNestingAndInvalidUtf8AreRefusedCleanly) {
  EXPECT_NE(refusal(Endpoint::embed, std::string(100000, '[')).find("not valid JSON"), std::string::npos);
  EXPECT_NE(refusal(Endpoint::embed, std::string(50000, '[') + std::string(50000, ']')).find("must be a JSON object"),
            std::string::npos);
  EXPECT_NE(refusal(Endpoint::embed, "{\"text\": \"\xff\xfe\"}").find("not valid JSON"), std::string::npos);
}

}  // namespace
}  // namespace lf::serve
