#include "serve/request.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>

#include "linformer/error.h"

namespace lf::serve {

const char* endpoint_name(Endpoint e) {
  static const char* const names[kNumEndpoints] = {"predict", "embed", "classify", "generate"};
  return names[int(e)];
}

// Anything else is refused, so a misspelt option is not silently ignored.
const std::set<std::string>& option_names(Endpoint e) {
  static const std::set<std::string> none, predict = {"mask_char"}, embed = {"pooling"},
                                           generate = {"max_new_tokens", "temperature", "top_k", "top_p",
                                                       "repetition_penalty", "seed", "stop"};
  return e == Endpoint::predict ? predict : e == Endpoint::embed ? embed : e == Endpoint::generate ? generate : none;
}

namespace {

constexpr size_t kMaxStops = 8;

// The shortest text that reads back as x: 0.7 and 0.7000001 are different keys (str_cat's 6 digits
// would make them one).
std::string exact(double x) {
  char buf[32];
  const auto end = std::to_chars(buf, buf + sizeof buf, x).ptr;
  return std::string(buf, end);
}

const char* type_name(const json& v) { return v.type_name(); }

int64_t get_int(const json& body, const char* key, int64_t lo, int64_t hi) {
  const json& v = body[key];
  LF_REQUIRE(v.is_number_integer(), "'", key, "' must be an integer, got ", type_name(v));
  // Unsigned values above INT64_MAX read as negative here and fail the range check.
  const int64_t x = v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX) ? -1 : v.get<int64_t>();
  LF_REQUIRE(x >= lo && x <= hi, "'", key, "' must be in [", lo, ", ", hi, "], got ", v.dump());
  return x;
}

double get_number(const json& body, const char* key, double lo, double hi) {
  const json& v = body[key];
  LF_REQUIRE(v.is_number(), "'", key, "' must be a number, got ", type_name(v));
  const double x = v.get<double>();
  LF_REQUIRE(std::isfinite(x) && x >= lo && x <= hi, "'", key, "' must be in [", lo, ", ", hi, "], got ", v.dump());
  return x;
}

void add_text(Request& r, const json& v, size_t index, const RequestLimits& limits) {
  const std::string where = r.single ? "'text'" : str_cat("'texts'[", index, "]");
  LF_REQUIRE(v.is_string(), where, " must be a string, got ", type_name(v));
  const std::string& text = v.get_ref<const std::string&>();
  LF_REQUIRE(!text.empty(), where, " is empty");
  LF_REQUIRE(int64_t(text.size()) <= limits.max_text_bytes, where, " has ", text.size(),
             " bytes, above the limit of ", limits.max_text_bytes, " (--max-seq-len)");
  r.texts.push_back(text);
}

}  // namespace

// Every option a backend reads must be in the key: a batch runs with its first request's options.
std::string Request::batch_key() const {
  switch (endpoint) {
    case Endpoint::predict: return str_cat("predict/", int(static_cast<unsigned char>(mask_char)));
    case Endpoint::embed: return str_cat("embed/", pooling_name(pooling));
    case Endpoint::generate: {
      const SamplingOptions& o = sampling;
      std::string key = str_cat("generate/", o.max_new_tokens, "/", exact(o.temperature), "/", o.top_k, "/",
                                exact(o.top_p), "/", exact(o.repetition_penalty), "/", o.seed);
      for (const std::string& stop : o.stop) key += str_cat("/", stop.size(), ":", stop);  // sizes: no ambiguity
      return key;
    }
    default: return endpoint_name(endpoint);
  }
}

Request parse_request(Endpoint endpoint, std::string_view body_text, const RequestLimits& limits) {
  // No exceptions out of the parser: a malformed body is a message, not an escape.
  const json body = json::parse(body_text.begin(), body_text.end(), nullptr, /*allow_exceptions=*/false);
  LF_REQUIRE(!body.is_discarded(), "the request body is not valid JSON");
  LF_REQUIRE(body.is_object(), "the request body must be a JSON object, got ", type_name(body));
  Request r;
  r.endpoint = endpoint;
  const std::set<std::string>& options = option_names(endpoint);
  for (const auto& [key, value] : body.items())
    LF_REQUIRE(key == "text" || key == "texts" || options.contains(key), "unknown field '", key, "' for /v1/",
               endpoint_name(endpoint));
  const bool has_text = body.contains("text"), has_texts = body.contains("texts");
  LF_REQUIRE(has_text != has_texts, has_text ? "give either 'text' or 'texts', not both"
                                             : "missing field 'text' (a string) or 'texts' (a list of strings)");
  r.single = has_text;
  if (has_text) {
    add_text(r, body["text"], 0, limits);
  } else {
    const json& list = body["texts"];
    LF_REQUIRE(list.is_array(), "'texts' must be a list of strings, got ", type_name(list));
    LF_REQUIRE(!list.empty(), "'texts' is empty");
    LF_REQUIRE(int64_t(list.size()) <= limits.max_texts, "'texts' has ", list.size(), " texts, above the limit of ",
               limits.max_texts, " (--max-texts)");
    for (size_t i = 0; i < list.size(); ++i) add_text(r, list[i], i, limits);
  }
  if (body.contains("mask_char")) {
    const json& m = body["mask_char"];
    LF_REQUIRE(m.is_string(), "'mask_char' must be a string, got ", type_name(m));
    LF_REQUIRE(m.get_ref<const std::string&>().size() == 1, "'mask_char' must be one byte, got ",
               m.get_ref<const std::string&>().size(), " bytes");
    r.mask_char = m.get_ref<const std::string&>()[0];
  }
  if (body.contains("pooling")) {
    const json& p = body["pooling"];
    LF_REQUIRE(p.is_string() && p.get_ref<const std::string&>().size() <= 16,
               "'pooling' must be one of mean, first (or cls), last, max");
    r.pooling = parse_pooling(p.get<std::string>());
  }
  SamplingOptions& s = r.sampling;
  s.max_new_tokens = std::min(s.max_new_tokens, limits.max_new_tokens);
  if (body.contains("max_new_tokens")) s.max_new_tokens = get_int(body, "max_new_tokens", 1, limits.max_new_tokens);
  if (body.contains("temperature")) s.temperature = get_number(body, "temperature", 0, 100);
  if (body.contains("top_k")) s.top_k = get_int(body, "top_k", 0, 256);
  if (body.contains("top_p")) s.top_p = get_number(body, "top_p", 0, 1);
  if (body.contains("repetition_penalty")) s.repetition_penalty = get_number(body, "repetition_penalty", 0, 100);
  if (body.contains("seed")) s.seed = uint64_t(get_int(body, "seed", 0, INT64_MAX));
  if (body.contains("stop")) {
    const json& stop = body["stop"];
    LF_REQUIRE(stop.is_array() && stop.size() <= kMaxStops, "'stop' must be a list of at most ", kMaxStops,
               " strings, got ", stop.is_array() ? str_cat(stop.size(), " items") : type_name(stop));
    for (const json& x : stop) {
      LF_REQUIRE(x.is_string() && !x.get_ref<const std::string&>().empty() && x.get_ref<const std::string&>().size() <= 64,
                 "'stop' must hold non-empty strings of at most 64 bytes");
      s.stop.push_back(x.get<std::string>());
    }
  }
  if (endpoint == Endpoint::generate) s.validate();  // what the ranges above do not cover (top_p = 0)
  // Checked here, not by the model: a text refused inside a batch would fail the texts batched with it.
  if (endpoint == Endpoint::predict)
    for (size_t i = 0; i < r.texts.size(); ++i)
      LF_REQUIRE(r.texts[i].find(r.mask_char) != std::string::npos, r.single ? "'text'" : str_cat("'texts'[", i, "]"),
                 " has no mask character '", std::string(1, r.mask_char), "' to fill (set another with 'mask_char')");
  return r;
}

}  // namespace lf::serve
