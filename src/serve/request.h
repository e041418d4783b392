// The requests of `linformer serve`: their JSON bodies parsed and checked against the server's limits
// before anything is queued, so that a bad request costs no model time and gets a 400 naming the field
// or the limit. The HTTP side (server.h) and the fuzz target call parse_request.
#pragma once
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "linformer/inference.h"
#include "linformer/sampling.h"

namespace lf::serve {

using json = nlohmann::json;

// The model endpoints, in the order of kEndpointNames.
enum class Endpoint { predict, embed, classify, generate };
inline constexpr int kNumEndpoints = 4;
const char* endpoint_name(Endpoint e);  // "predict", ...
// The fields a request to `e` may hold besides "text"/"texts" (the OpenAPI document's test reads them).
const std::set<std::string>& option_names(Endpoint e);

// What a request may ask for; a request beyond one is refused whole.
struct RequestLimits {
  int64_t max_texts = 64;        // texts in one request
  int64_t max_text_bytes = 512;  // bytes of one text (a byte is a token): the sequence-length limit
  int64_t max_new_tokens = 256;  // generate: bytes to generate
};

// One request: its texts and the options that must be equal for texts to share a batch.
struct Request {
  Endpoint endpoint = Endpoint::predict;
  std::vector<std::string> texts;
  bool single = true;  // {"text": ...} (answered {"result": ...}) rather than {"texts": [...]}
  // predict: the character marking a masked byte; embed: the pooling; generate: sampling (the
  // library's defaults unless the request sets them). Only the fields of the endpoint are read.
  char mask_char = '_';
  Pooling pooling = Pooling::kMean;
  SamplingOptions sampling;
  // The options above as a string: texts batch together only when their keys are equal.
  std::string batch_key() const;
};

// Parses and checks a request body for `endpoint`. lf::InvalidArgument with a one-line message (the
// field, what it must be, or the limit and its flag) for anything else: not JSON, not an object,
// unknown or missing fields, wrong types, empty or too many texts, a text too long.
Request parse_request(Endpoint endpoint, std::string_view body, const RequestLimits& limits);

}  // namespace lf::serve
