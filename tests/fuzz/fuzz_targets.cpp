// The loaders' fuzz targets and their generated seed corpus. See fuzz_targets.h.
#include "fuzz/fuzz_targets.h"

#include <zlib.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string_view>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "linformer/arena.h"
#include "linformer/attention.h"
#include "linformer/batches.h"
#include "linformer/checkpoint.h"
#include "linformer/config.h"
#include "linformer/corpus.h"
#include "linformer/error.h"
#include "linformer/model.h"
#include "linformer/tokenizer.h"
#include "linformer/trainer.h"
#include "serve/request.h"
#include "tiny_model_config.h"
#include "train/checkpoint_internal.h"

namespace lf::fuzz {
namespace {

using json = nlohmann::json;

// A broken invariant of an accepted input: reported like a crash, so the fuzzer keeps the input.
#define FUZZ_CHECK(cond)                                                             \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "fuzz check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      std::abort();                                                                  \
    }                                                                                \
  } while (0)

constexpr uint64_t kCorpusCap = uint64_t(8) << 20;  // decompressed bytes a fuzzed corpus may hold

std::string_view as_text(const uint8_t* data, size_t size) { return {reinterpret_cast<const char*>(data), size}; }

// Runs a loader: 1 accepted, 0 refused with lf::Error. Every other exception escapes.
template <class F>
int accepted(F&& load) {
  try {
    load();
    return 1;
  } catch (const Error&) {
    return 0;
  }
}

// --- safetensors ----------------------------------------------------------------------------------

void touch_views(const SafeTensorsFile& f) {
  for (const std::string& name : f.names()) {
    const StoredTensor t = f.get(name);
    const size_t itemsize = safetensors_dtype_size(t.dtype);
    FUZZ_CHECK(itemsize > 0);
    FUZZ_CHECK(t.numel() >= 0 && uint64_t(t.numel()) * itemsize == t.nbytes);
    uint8_t sum = 0;
    for (size_t i = 0; i < t.nbytes; ++i) sum ^= t.data[i];  // every byte is readable (ASan)
    (void)sum;
    if (t.dtype != "F16" && t.dtype != "BF16" && t.dtype != "F8_E4M3" && t.dtype != "F8_E5M2")
      FUZZ_CHECK(int64_t(to_vector<double>(t).size()) == t.numel());
  }
}

// A tiny model's parameter arena (allocated, no gradients): what the checkpoint target loads into.
ModelConfig tiny_config() {
  ModelConfig c = test::tiny_model_config();
  c.dropout_attention = c.dropout_embedding = c.dropout_ffn = 0;
  return c;
}

struct TinyModel {
  ParamArena<float> arena;
  Model<float> model{tiny_config(), arena};
  TinyModel() {
    arena.allocate(/*with_grads=*/false);
    arena.initialize(1);
  }
};

TinyModel& tiny_model() {
  static TinyModel m;
  return m;
}

// --- config -----------------------------------------------------------------------------------------

void exercise_config(const ModelConfig& c) {
  for (int64_t i = 0; i < c.n_layers; ++i) validate_attention(c.attention_spec(i));
  // What to_json writes, from_json reads back to the same configuration.
  const json j = c.to_json();
  FUZZ_CHECK(ModelConfig::from_json(j).to_json() == j);
  const double act = Model<float>::activation_bytes(c, 2, c.max_len);
  FUZZ_CHECK(std::isfinite(act) && act >= 0);
  // Declaring the parameters allocates nothing but the layers' own tables: only for small models.
  if (c.d_model <= 256 && c.d_ff <= 1024 && c.max_len <= 512 && c.n_layers <= 8 && c.vocab_size <= 4096 &&
      c.n_classes <= 4096) {
    ParamArena<float> arena;
    Model<float> model(c, arena);
    FUZZ_CHECK(arena.numel() > 0);
    FUZZ_CHECK(std::isfinite(model.forward_flops(c.max_len)));
  }
}

void exercise_train_options(const json& j) {
  const TrainOptions o = TrainOptions::from_json(j);
  FUZZ_CHECK(TrainOptions::from_json(o.to_json()).to_json() == o.to_json());
  o.validate();
}

// --- gzip, for seeds ------------------------------------------------------------------------------

std::vector<uint8_t> gzip(std::string_view text) {
  z_stream zs{};
  if (deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
  std::vector<uint8_t> out(deflateBound(&zs, uLong(text.size())) + 32);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  zs.avail_in = uInt(text.size());
  zs.next_out = out.data();
  zs.avail_out = uInt(out.size());
  if (deflate(&zs, Z_FINISH) != Z_STREAM_END) std::abort();
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

std::vector<uint8_t> bytes_of(std::string_view s) { return {s.begin(), s.end()}; }

std::vector<uint8_t> concat(std::vector<uint8_t> a, const std::vector<uint8_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<uint8_t> truncated(std::vector<uint8_t> v, size_t keep) {
  v.resize(std::min(keep, v.size()));
  return v;
}

// A safetensors file with a hand-written header (for near-valid seeds the writer would refuse).
std::vector<uint8_t> raw_safetensors(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> out(8 + header.size() + data_bytes);
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  for (size_t i = 0; i < data_bytes; ++i) out[8 + header.size() + i] = uint8_t(i * 37 + 11);
  return out;
}

std::vector<uint8_t> json_bytes(const json& j) { return bytes_of(j.dump(2) + "\n"); }

std::string sample_text() {
  return "The quick brown fox jumps over the lazy dog.\nPack my box with five dozen liquor jugs.\n"
         "Sphinx of black quartz, judge my vow. 0123456789 \xc3\xa9\xc3\xa8\xe2\x82\xac\n";
}

}  // namespace

int fuzz_safetensors(const uint8_t* data, size_t size) {
  return accepted([&] {
    const SafeTensorsFile f = SafeTensorsFile::parse(std::vector<uint8_t>(data, data + size), "fuzz.safetensors");
    touch_views(f);
  });
}

int fuzz_checkpoint(const uint8_t* data, size_t size) {
  TinyModel& tiny = tiny_model();
  return accepted([&] {
    const SafeTensorsFile f = SafeTensorsFile::parse(std::vector<uint8_t>(data, data + size), "model.safetensors");
    check_model_tensors(f, tiny.arena);
    // What load_checkpoint_weights then copies: each parameter's bytes, exactly numel floats.
    for (const ParamInfo& p : tiny.arena.params()) {
      const StoredTensor t = f.get(p.name);
      FUZZ_CHECK(t.dtype == "F32" && t.nbytes == size_t(p.numel) * sizeof(float));
      std::memcpy(tiny.arena.values() + p.offset, t.data, t.nbytes);
    }
  });
}

int fuzz_config(const uint8_t* data, size_t size) {
  const std::string_view text = as_text(data, size);
  // As config.json of a checkpoint.
  const int as_checkpoint = accepted([&] { exercise_config(parse_checkpoint_config(text, "config.json")); });
  // As a --config file {"model": {...}, "train": {...}} (the CLI's structure), or bare train options.
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return as_checkpoint;
  int as_file = 0;
  if (j.contains("model") || j.contains("train")) {
    as_file = accepted([&] {
      if (j.contains("model")) exercise_config(ModelConfig::from_json(j["model"]));
      if (j.contains("train")) exercise_train_options(j["train"]);
    });
  } else {
    as_file = accepted([&] { exercise_train_options(j); });
  }
  return as_checkpoint | as_file;
}

int fuzz_corpus(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  std::vector<uint8_t> all;
  const int ok = accepted([&] {
    all = decode_corpus_bytes(bytes, 0, "fuzz.txt", kCorpusCap);
    FUZZ_CHECK(!all.empty() && all.size() <= kCorpusCap);
    const std::string text(all.begin(), all.end());
    FUZZ_CHECK(decode(encode(text)) == text);  // the byte tokenizer round-trips anything
    const Corpus c = Corpus::from_bytes(all, {0.1, 0.1}, "fuzz.txt");
    (void)unigram_entropy_bits(c.split(Split::Train));
  });
  // A prefix read stops early and must give the prefix of the whole.
  const int64_t max_bytes = int64_t(size % 251) + 1;
  accepted([&] {
    const std::vector<uint8_t> prefix = decode_corpus_bytes(bytes, max_bytes, "fuzz.txt", kCorpusCap);
    FUZZ_CHECK(int64_t(prefix.size()) <= max_bytes);
    if (ok) FUZZ_CHECK(std::equal(prefix.begin(), prefix.end(), all.begin()));
  });
  // The bytes as token ids: decode refuses ids outside the vocabulary with lf::InvalidArgument.
  std::vector<int32_t> ids(size / 4);
  if (!ids.empty()) std::memcpy(ids.data(), data, ids.size() * 4);
  accepted([&] { (void)decode(ids); });
  return ok;
}

int fuzz_tsv(const uint8_t* data, size_t size) {
  return accepted([&] {
    const std::vector<uint8_t> bytes = decode_corpus_bytes({data, size}, 0, "fuzz.tsv", kCorpusCap);
    const ClassificationData d =
        ClassificationData::parse(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), "fuzz.tsv");
    FUZZ_CHECK(d.size() > 0 && d.num_classes() > 0);
    const TokenBatch b = classification_batch(d, 2, 8, 1, 0);
    for (int32_t label : b.targets) FUZZ_CHECK(label >= 0 && label < d.num_classes());
  });
}

// The server's limits in the fuzz target: small, so that inputs reach them.
serve::RequestLimits fuzz_request_limits() {
  serve::RequestLimits l;
  l.max_texts = 4;
  l.max_text_bytes = 32;
  l.max_new_tokens = 16;
  return l;
}

int fuzz_serve_request(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto endpoint = serve::Endpoint(data[0] % serve::kNumEndpoints);
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  const serve::RequestLimits limits = fuzz_request_limits();
  return accepted([&] {
    const serve::Request r = serve::parse_request(endpoint, body, limits);
    FUZZ_CHECK(!r.texts.empty() && int64_t(r.texts.size()) <= limits.max_texts);
    FUZZ_CHECK(!r.single || r.texts.size() == 1);
    for (const std::string& t : r.texts) {
      FUZZ_CHECK(!t.empty() && int64_t(t.size()) <= limits.max_text_bytes);
      if (endpoint == serve::Endpoint::predict) FUZZ_CHECK(t.find(r.mask_char) != std::string::npos);
    }
    if (endpoint == serve::Endpoint::generate) {
      r.sampling.validate();  // accepted options are ones the sampler takes
      FUZZ_CHECK(r.sampling.max_new_tokens >= 1 && r.sampling.max_new_tokens <= limits.max_new_tokens);
    }
    // Equal bodies batch together.
    FUZZ_CHECK(serve::parse_request(endpoint, body, limits).batch_key() == r.batch_key());
  });
}

const std::vector<Target>& targets() {
  static const std::vector<Target> all = {{"safetensors", fuzz_safetensors},
                                          {"checkpoint", fuzz_checkpoint},
                                          {"config", fuzz_config},
                                          {"corpus", fuzz_corpus},
                                          {"tsv", fuzz_tsv},
                                          {"serve_request", fuzz_serve_request}};
  return all;
}

// --- the seed corpus --------------------------------------------------------------------------------

std::vector<Seed> seed_corpus(const std::string& target) {
  std::vector<Seed> s;
  auto add = [&](std::string name, std::vector<uint8_t> bytes) { s.push_back({std::move(name), std::move(bytes)}); };

  if (target == "safetensors" || target == "checkpoint") {
    // The tiny model's own checkpoint file, as save_checkpoint writes it.
    const ParamArena<float>& arena = tiny_model().arena;
    SafeTensorsWriter w;
    for (int i = 0; i < arena.count(); ++i) w.add_f32(arena.info(i).name, arena.info(i).shape, arena.value(i));
    w.set_metadata("format", "linformer");
    w.set_metadata("version", "1");
    const std::vector<uint8_t> model = w.serialize();
    add("ok-model.safetensors", model);
    if (target == "checkpoint") {
      SafeTensorsWriter wrong_shape, extra, wrong_format;
      for (int i = 0; i < arena.count(); ++i) {
        const ParamInfo& p = arena.info(i);
        std::vector<int64_t> shape = p.shape;
        if (i == 0) shape = {p.numel};  // flattened: same bytes, wrong shape
        wrong_shape.add_f32(p.name, shape, arena.value(i));
        extra.add_f32(p.name, p.shape, arena.value(i));
        wrong_format.add_f32(p.name, p.shape, arena.value(i));
      }
      extra.add_f32("layers.1.ffn.fc1.bias", {2}, std::vector<float>{1, 2});
      wrong_format.set_metadata("format", "pytorch");
      add("bad-wrong-shape.safetensors", wrong_shape.serialize());
      add("bad-extra-tensor.safetensors", extra.serialize());
      add("bad-format-marker.safetensors", wrong_format.serialize());
      add("bad-truncated.safetensors", truncated(model, model.size() - 5));
      return s;
    }
    SafeTensorsWriter kinds;
    const uint8_t raw[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    kinds.add("bf16", "BF16", {2, 2}, raw, 8);
    kinds.add("bool", "BOOL", {3}, raw, 3);
    kinds.add("empty", "F32", {0, 4}, nullptr, 0);
    kinds.add("f64", "F64", {1}, raw, 8);
    kinds.add("i64", "I64", {2}, raw, 16);
    kinds.add("scalar", "I32", {}, raw, 4);
    kinds.set_metadata("note", "dtypes");
    add("ok-dtypes.safetensors", kinds.serialize());
    add("ok-empty-header.safetensors", raw_safetensors("{}", 0));
    add("bad-short.safetensors", {1, 0, 0});
    add("bad-header-length.safetensors", truncated(model, 40));
    add("bad-overlap.safetensors",
        raw_safetensors(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                        R"("b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
                        8));
    add("bad-duplicate.safetensors",
        raw_safetensors(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                        R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                        2));
    add("bad-shape-size.safetensors",
        raw_safetensors(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8));
    add("bad-negative-dim.safetensors",
        raw_safetensors(R"({"a":{"dtype":"F32","shape":[-1,2],"data_offsets":[0,0]}})", 0));
    add("bad-metadata.safetensors", raw_safetensors(R"({"__metadata__":{"k":1}})", 0));
    return s;
  }

  if (target == "config") {
    ModelConfig base = tiny_config();
    add("ok-tiny.json", json_bytes(base.to_json()));
    // One config per attention kind (its default options), where the kind accepts the tiny sizes.
    for (const std::string& kind : AttentionRegistry::instance().names()) {
      ModelConfig c = base;
      c.attention = {LayerAttention{kind, json::object()}};
      c.max_len = 64;
      try {
        c.validate();
      } catch (const InvalidArgument&) {
        continue;
      }
      s.push_back({"ok-kind-" + kind + ".json", json_bytes(c.to_json()), /*from_registry=*/true});
    }
    ModelConfig layers = base;
    layers.n_layers = 3;
    layers.attention = {LayerAttention{"full", json::object()}, LayerAttention{"linformer", json{{"k", 4}}},
                        LayerAttention{"local", json::object()}};
    add("ok-per-layer.json", json_bytes(layers.to_json()));
    ModelConfig cls = base;
    cls.task = "classify";
    cls.n_classes = 3;
    cls.pooling = "first";
    add("ok-classify.json", json_bytes(cls.to_json()));
    ModelConfig clm = base;
    clm.task = "clm";
    clm.attention = {LayerAttention{"full", json::object()}};
    add("ok-clm.json", json_bytes(clm.to_json()));
    ModelConfig lm = base;  // lucidrains' LinformerLM: no final LayerNorm, an untied linear head
    lm.final_norm = false;
    lm.output_head = "linear";
    add("ok-linformer-lm.json", json_bytes(lm.to_json()));
    TrainOptions t;
    t.data_path = "data.txt";
    t.run_dir = "runs/a";
    add("ok-config-file.json", json_bytes({{"model", json{{"d_model", 16}, {"n_heads", 2}, {"attention", {{"kind", "full"}}}}},
                                           {"train", t.to_json()}}));
    add("ok-train-options.json", json_bytes(json{{"data_path", "x"}, {"run_dir", "y"}, {"lr", 0.01}, {"steps", 500}}));
    json bad = base.to_json();
    bad["n_heads"] = 3;
    add("bad-heads.json", json_bytes(bad));
    bad = base.to_json();
    bad["colour"] = "blue";
    add("bad-unknown-key.json", json_bytes(bad));
    add("bad-not-json.json", bytes_of("{\"d_model\": 8,"));
    add("bad-train-type.json", json_bytes({{"train", {{"steps", "many"}}}}));
    return s;
  }

  if (target == "corpus" || target == "tsv") {
    const std::string text = target == "corpus" ? sample_text() + sample_text()
                                                : "0\tgood movie\n1\tbad movie\r\n\n2\tso-so \xc3\xa9t\xc3\xa9\n";
    add("ok-plain.txt", bytes_of(text));
    const std::vector<uint8_t> gz = gzip(text);
    add("ok-gzip.gz", gz);
    add("ok-two-members.gz", concat(gz, gzip(text)));
    add("bad-truncated.gz", truncated(gz, gz.size() / 2));
    add("bad-no-trailer.gz", truncated(gz, gz.size() - 4));
    std::vector<uint8_t> crc = gz;
    crc[crc.size() - 6] ^= 0xff;  // the CRC-32 in the trailer
    add("bad-crc.gz", crc);
    add("bad-empty.gz", gzip(""));
    add("bad-magic-only.gz", {0x1f, 0x8b});
    if (target == "tsv") {
      add("ok-bom.tsv", bytes_of("\xEF\xBB\xBF" "3\tfirst\n0\tsecond"));
      add("bad-no-tab.tsv", bytes_of("0 no tab here\n"));
      add("ok-header.tsv", bytes_of("label\ttext\npos\tgood\n-1\tnegative\n"));
      add("bad-empty-label.tsv", bytes_of("0\tok\n\tnegative\n"));
      add("bad-empty-text.tsv", bytes_of("1\t\n"));
      add("bad-blank.tsv", bytes_of("\n\r\n"));
    } else {
      add("ok-binary.bin", {0, 1, 2, 255, 254, 0x1f, 0x8c, 10, 13});
      add("bad-empty.txt", {});
    }
    return s;
  }
  if (target == "serve_request") {
    // The first byte picks the endpoint: 0 predict, 1 embed, 2 classify, 3 generate.
    auto req = [&](std::string name, uint8_t endpoint, std::string_view body) {
      std::vector<uint8_t> b{endpoint};
      b.insert(b.end(), body.begin(), body.end());
      add(std::move(name), b);
    };
    req("ok-predict.json", 0, R"({"text": "the c_t sat"})");
    req("ok-predict-list.json", 0, R"({"texts": ["a#c", "#"], "mask_char": "#"})");
    req("ok-embed.json", 1, R"({"texts": ["one", "two"], "pooling": "max"})");
    req("ok-classify.json", 2, R"({"text": "good movie \u00e9t\u00e9"})");
    req("ok-generate.json", 3,
        R"({"text": "once", "max_new_tokens": 8, "temperature": 0.7, "top_k": 5, "top_p": 0.9, "repetition_penalty": 1.2, "seed": 7, "stop": ["\n"]})");
    req("bad-not-json.json", 2, R"({"text": )");
    req("bad-array.json", 2, R"(["text"])");
    req("bad-type.json", 1, R"({"texts": [1, 2]})");
    req("bad-empty-list.json", 1, R"({"texts": []})");
    req("bad-too-long.json", 2, R"({"text": "0123456789012345678901234567890123456789"})");
    req("bad-no-mask.json", 0, R"({"text": "nothing to fill"})");
    req("bad-unknown-field.json", 2, R"({"text": "a", "temperature": 1})");
    req("bad-top-p.json", 3, R"({"text": "a", "top_p": 0})");
    req("bad-utf8.json", 2, "{\"text\": \"\xff\"}");
    return s;
  }
  throw InvalidArgument(str_cat("no fuzz target named '", target, "'"));
}

void write_registry_seeds(const std::string& target, const std::string& dir) {
  std::filesystem::create_directories(dir);
  for (const Seed& seed : seed_corpus(target))
    if (seed.from_registry)
      std::ofstream(std::filesystem::path(dir) / seed.name, std::ios::binary)
          .write(reinterpret_cast<const char*>(seed.bytes.data()), std::streamsize(seed.bytes.size()));
}

}  // namespace lf::fuzz
