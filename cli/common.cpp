#include "cli/common.h"

#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "core/join.h"
#include "linformer/error.h"
#include "linformer/tokenizer.h"
#include "model/head.h"

namespace lf::cli {

std::string with_flag_names(const std::string& message) {
  static const std::map<std::string, std::string> kRenamed = {
      {"run_dir", "out"}, {"data_path", "data"}, {"warmup_steps", "warmup"}, {"n_layers", "layers"}};
  std::string out;
  size_t i = 0;
  while (i < message.size()) {
    size_t end = message[i] == '`' ? i + 1 : std::string::npos;
    if (end != std::string::npos)
      while (end < message.size() && (std::islower(static_cast<unsigned char>(message[end])) ||
                                      std::isdigit(static_cast<unsigned char>(message[end])) || message[end] == '_'))
        ++end;
    if (end == std::string::npos || end == i + 1 || end >= message.size() || message[end] != '`') {
      out += message[i++];
      continue;
    }
    std::string name = message.substr(i + 1, end - i - 1);
    if (const auto it = kRenamed.find(name); it != kRenamed.end()) name = it->second;
    for (char& c : name)
      if (c == '_') c = '-';
    out += "--" + name;
    i = end + 1;
  }
  return out;
}

namespace {
RuntimeOptions g_runtime;  // the CLI's own: one command per process
}

const RuntimeOptions& runtime_options() { return g_runtime; }
void set_runtime_options(const RuntimeOptions& options) { g_runtime = options; }

json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw IoError(str_cat("cannot read '", path, "': no such file or not readable"));
  std::stringstream s;
  s << in.rdbuf();
  json j;
  try {
    j = json::parse(s.str());
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number like 1e999
    throw InvalidArgument(str_cat("'", path, "' is not valid JSON: ", e.what()));
  }
  LF_REQUIRE(j.is_object(), "'", path, "' must hold a JSON object, got ", j.type_name());
  return j;
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string find_plot_python() {
  std::vector<std::string> candidates;
  if (const char* e = std::getenv("LINFORMER_PYTHON"); e && *e) candidates.push_back(e);
  candidates.push_back(LINFORMER_SOURCE_DIR "/.venv-bench/bin/python");
  candidates.push_back("python3");
  candidates.push_back("/usr/bin/python3");
  for (const std::string& py : candidates)
    if (std::system((shell_quote(py) + " -c 'import matplotlib' >/dev/null 2>&1").c_str()) == 0) return py;
  return "";
}

namespace {
bool given(const CLI::App& app, const std::string& flag) {
  const CLI::Option* o = app.get_option_no_throw(flag);
  return o && o->count() > 0;
}
}  // namespace

void ModelFlags::add(CLI::App& app) {
  app.add_option("--task", task, "the model's head: " + join(HeadRegistry::instance().names(), " | ") + " (default mlm)")
      ->check(CLI::IsMember(HeadRegistry::instance().names()));
  app.add_option("--d-model", d_model, "model width (default 128)");
  app.add_option("--layers", layers, "number of blocks (default 4)");
  app.add_option("--heads", heads, "attention heads (default 4)");
  app.add_option("--d-ff", d_ff, "FFN width (default 4·d_model)");
  app.add_option("--max-len", max_len, "longest sequence the model accepts (default: --seq-len)");
  app.add_option("--attention", attention, "attention kind of every layer (default linformer; see `info --list-attention`)");
  app.add_option("--attention-options", attention_options, "the kind's options as JSON, e.g. '{\"k\": 64}'");
  app.add_flag("--post-ln", post_ln, "post-LN blocks (default pre-LN)");
  app.add_option("--dropout", dropout, "one rate for embedding, attention and FFN dropout (default 0.1)");
  app.add_option("--position", position, "position information: learned | sinusoidal | none (default sinusoidal for a new model)")
      ->check(CLI::IsMember({"learned", "sinusoidal", "none"}));
  app.add_option("--conv-kernel", conv_kernel,
                 "taps of a depthwise convolution along the sequence before each attention, odd; 0 = none (default 5 for a new model)");
  app.add_flag("--scale-tied-output,!--no-scale-tied-output", scale_tied_output,
               "scale the LM head's input by d^-1/2 before the tied embedding (T5; default on for a new LM with "
               "the tied output, so that its first loss is near ln 260)");
  app.add_option("--classes", classes, "classifier: number of classes (default: the training split's distinct labels, which it must equal)");
  app.add_option("--pooling", pooling, "classifier pooling: mean | first")->check(CLI::IsMember({"mean", "first"}));
}

ModelConfig ModelFlags::resolve(const CLI::App& app, const json& file) const {
  json j = file.value("model", json::object());
  LF_REQUIRE(j.is_object(), "the config file's \"model\" must be an object");
  if (given(app, "--task") || !j.contains("task")) j["task"] = task;
  if (given(app, "--d-model")) j["d_model"] = d_model;
  if (given(app, "--layers")) j["n_layers"] = layers;
  if (given(app, "--heads")) j["n_heads"] = heads;
  if (given(app, "--max-len")) j["max_len"] = max_len;
  if (given(app, "--d-ff"))
    j["d_ff"] = d_ff;
  else if (!j.contains("d_ff") && j.contains("d_model") && j["d_model"].is_number_integer())  // else from_json names the bad field
    j["d_ff"] = 4 * j["d_model"].get<int64_t>();
  if (given(app, "--post-ln")) j["pre_ln"] = !post_ln;
  if (given(app, "--dropout")) j["dropout_embedding"] = j["dropout_attention"] = j["dropout_ffn"] = dropout;
  if (given(app, "--position")) j["position"] = position;
  if (given(app, "--conv-kernel")) j["conv_kernel"] = conv_kernel;
  if (given(app, "--scale-tied-output") || given(app, "--no-scale-tied-output")) {
    j["scale_tied_output"] = scale_tied_output;
  } else if (!j.contains("scale_tied_output") && j.value("output_head", std::string("default")) == "default" &&
             j["task"].is_string() && HeadRegistry::instance().has(j["task"].get<std::string>()) &&
             head_info(j["task"].get<std::string>()).targets != HeadTargets::kClasses) {
    // The tied output with N(0, 1) embeddings gives logits of scale √d (a first loss of ~50 nats at
    // d = 256, against ln 260 = 5.56 for a uniform guess); d^-1/2 brings them to unit scale. The
    // library's own default stays off: configs written before the option existed keep their meaning.
    j["scale_tied_output"] = true;
  }
  // A new model gets the sequence recipe of docs/long_sequences.md: without it a byte model stays near
  // the unigram entropy for long. The default `train` (1000 steps, d 128, n 128) reached 4.16 bits/byte
  // of GCIDE's valid split without it and 2.11 with it (unigram 4.66; 2:34 against 2:43 on 2 Zen 4
  // cores). The library's defaults (learned, no convolution) keep older configs' meaning.
  if (!given(app, "--conv-kernel") && !j.contains("conv_kernel")) j["conv_kernel"] = 5;
  if (!given(app, "--position") && !j.contains("position")) j["position"] = "sinusoidal";
  if (given(app, "--classes")) j["n_classes"] = classes;
  if (given(app, "--pooling")) j["pooling"] = pooling;
  if (given(app, "--attention") || given(app, "--attention-options")) {
    // --attention-options alone keeps the config file's kind (one kind for every layer), else linformer.
    std::string kind = attention;
    if (kind.empty() && j.contains("attention")) {
      const json& fa = j["attention"];
      for (const json& e : fa.is_array() ? fa : json::array({fa})) {
        const std::string k =
            e.is_object() && e.contains("kind") && e["kind"].is_string() ? e["kind"].get<std::string>() : "linformer";
        LF_REQUIRE(kind.empty() || kind == k, "--attention-options: the config file's layers use different attention "
                   "kinds ('", kind, "', '", k, "'); give --attention too");
        kind = k;
      }
    }
    json a = {{"kind", kind.empty() ? "linformer" : kind}};
    if (!attention_options.empty()) {
      try {
        a["options"] = json::parse(attention_options);
      } catch (const json::parse_error& e) {
        throw InvalidArgument(str_cat("--attention-options is not valid JSON: ", e.what()));
      }
    }
    j["attention"] = a;
  }
  j["vocab_size"] = kVocabSize;
  return ModelConfig::from_json(j);
}

void TrainFlags::add(CLI::App& app) {
  app.add_option("--data", opt.data_path, "training data: text (plain or gzip) for mlm/clm, label<TAB>text TSV for classify");
  app.add_option("--out", opt.run_dir, "run directory: checkpoints/, log.jsonl");
  app.add_option("--max-bytes", opt.max_bytes, "read at most this many bytes of the data (0 = all)");
  app.add_option("--valid-fraction", opt.valid_fraction, "held-out fraction for validation (default 0.01)");
  app.add_option("--test-fraction", opt.test_fraction, "held-out fraction for test (default 0.01)");
  app.add_option("--batch-size", opt.batch_size, "sequences per micro-batch (default 16)");
  app.add_option("--seq-len", opt.seq_len, "tokens per sequence (default 128)");
  app.add_option("--grad-accum", opt.grad_accum, "micro-batches per optimizer step (default 1)");
  app.add_option("--steps", opt.steps, "optimizer steps (default 1000)");
  app.add_option("--warmup", opt.warmup_steps, "linear warm-up steps (default 100)");
  app.add_option("--lr", opt.lr, "peak learning rate (default 1e-3)");
  app.add_option("--min-lr-ratio", opt.min_lr_ratio, "cosine floor as a fraction of --lr (default 0.1)");
  app.add_option("--weight-decay", opt.weight_decay, "AdamW decoupled weight decay (default 0.01)");
  app.add_option("--clip-norm", opt.clip_norm, "clip gradients to this global norm, 0 = off (default 1)");
  app.add_option("--mask-prob", opt.mask_prob, "MLM: fraction of positions masked (default 0.15)");
  app.add_option("--mask-span", opt.mask_span,
                 "MLM: mean length of masked spans; 1 = BERT's per-position masking, > 1 = SpanBERT's geometric "
                 "spans (default 1)");
  app.add_option("--short-seq-prob", opt.short_seq_prob,
                 "MLM: fraction of training sequences cut to a random shorter length and padded (default 0)");
  app.add_option("--log-every", opt.log_every, "steps between log lines (default 10)");
  app.add_option("--eval-every", opt.eval_every, "steps between evaluations, 0 = at the end (default 200)");
  app.add_option("--eval-batches", opt.eval_batches, "batches per evaluation (default 20)");
  app.add_option("--save-every", opt.save_every, "steps between checkpoints, 0 = at the end (default 500)");
  app.add_option("--keep-checkpoints", opt.keep_checkpoints, "checkpoints kept (default 2)");
  app.add_option("--seed", opt.seed, "seed for initialisation, data order, masking and dropout (default 1)");
  app.add_flag("--checkpoint-activations", opt.checkpoint_activations,
               "recompute each block's activations in the backward: less memory, one more forward");
}

json TrainFlags::given_options(const CLI::App& app) const {
  const json from_flags = opt.to_json();
  json out = json::object();
  const std::pair<const char*, const char*> map[] = {
      {"--data", "data_path"}, {"--out", "run_dir"}, {"--max-bytes", "max_bytes"}, {"--valid-fraction", "valid_fraction"},
      {"--test-fraction", "test_fraction"}, {"--batch-size", "batch_size"}, {"--seq-len", "seq_len"},
      {"--grad-accum", "grad_accum"}, {"--steps", "steps"}, {"--warmup", "warmup_steps"}, {"--lr", "lr"},
      {"--min-lr-ratio", "min_lr_ratio"}, {"--weight-decay", "weight_decay"}, {"--clip-norm", "clip_norm"},
      {"--mask-prob", "mask_prob"}, {"--mask-span", "mask_span"}, {"--short-seq-prob", "short_seq_prob"},
      {"--log-every", "log_every"}, {"--eval-every", "eval_every"}, {"--eval-batches", "eval_batches"},
      {"--save-every", "save_every"}, {"--keep-checkpoints", "keep_checkpoints"}, {"--seed", "seed"},
      {"--checkpoint-activations", "checkpoint_activations"}};
  for (const auto& [flag, key] : map)
    if (app.get_option(flag)->count() > 0) out[key] = from_flags.at(key);
  return out;
}

TrainOptions TrainFlags::resolve(const CLI::App& app, const json& file) const {
  json merged = TrainOptions::from_json(file.value("train", json::object())).to_json();
  merged.update(given_options(app));
  return TrainOptions::from_json(merged);
}

}  // namespace lf::cli

#include <filesystem>

#include "linformer/checkpoint.h"
#include "linformer/memory.h"

namespace lf::cli {

LoadedModel open_model(const std::string& path) {
  namespace fs = std::filesystem;
  LoadedModel m;
  m.dir = path;
  if (!fs::exists(fs::path(path) / "config.json")) {
    const std::string latest = fs::is_directory(path) ? latest_checkpoint(path) : std::string();
    if (!latest.empty()) m.dir = latest;
  }
  // trainer_state.json is optional here: a model-only checkpoint can be evaluated and used.
  LoadedCheckpoint ck = load_checkpoint(m.dir);
  m.dir = ck.dir;
  m.config = ck.config;
  m.trainer_state = std::move(ck.trainer_state);
  return m;
}

void build_model(LoadedModel& m, int64_t B, int64_t n, double extra_bytes, const std::string& command,
                 const std::string& advice) {
  MemoryEstimate need = estimate_memory(m.config, Workload::Inference, B, n, false, extra_bytes);
  need.buffers += need.parameters;  // model.safetensors is read whole
  require_memory(need, runtime_options(), command, advice);
  m.arena = std::make_unique<ParamArena<float>>();
  m.model = std::make_unique<Model<float>>(m.config, *m.arena);
  m.arena->allocate(/*with_grads=*/false);  // eval, predict and info only run forward passes
  load_checkpoint_weights(m.dir, *m.arena, nullptr);
}

std::vector<int64_t> parse_list(const std::string& text, const char* flag) {
  std::vector<int64_t> out;
  std::stringstream s(text);
  for (std::string item; std::getline(s, item, ',');) {
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    LF_REQUIRE(!item.empty() && *end == '\0' && v > 0, flag, ": '", item, "' is not a positive integer");
    out.push_back(v);
  }
  LF_REQUIRE(!out.empty(), flag, " is empty");
  return out;
}

std::string checkpoint_data_path(const std::string& saved, const std::string& given) {
  namespace fs = std::filesystem;
  if (!given.empty()) return given;
  LF_REQUIRE(!saved.empty(), "no data: give --data FILE (the checkpoint does not name its training data)");
  std::error_code ec;
  if (!fs::exists(saved, ec))
    throw IoError(str_cat("the checkpoint's training data '", saved, "' is missing",
                          fs::path(saved).is_relative()
                              ? str_cat(" (a relative path, looked for from the current directory as '",
                                        fs::absolute(saved).lexically_normal().string(), "')")
                              : std::string(),
                          ": give the data with --data FILE"));
  return saved;
}

void check_writable(const std::string& path, const char* flag) {
  namespace fs = std::filesystem;
  const fs::path parent = fs::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (ec || (!parent.empty() && !fs::is_directory(parent)))
    throw IoError(str_cat(flag, " '", path, "': cannot create the directory '", parent.string(), "': ",
                          ec ? ec.message() : "not a directory"));
  const fs::path probe = (parent.empty() ? fs::path(".") : parent) / str_cat(".linformer-probe-", getpid());
  {
    std::ofstream f(probe);
    if (!f) throw IoError(str_cat(flag, " '", path, "': the directory '", parent.string(), "' is not writable"));
  }
  fs::remove(probe, ec);
}

void add_sampling_flags(CLI::App* sub, SamplingOptions& s, const std::string& prefix) {
  sub->add_option("--temperature", s.temperature, prefix + "sampling temperature, 0 = greedy (default 0.8)");
  sub->add_option("--top-k", s.top_k, prefix + "sample from the k most likely bytes, 0 = all (default 0)");
  sub->add_option("--top-p", s.top_p, prefix + "sample from the most likely bytes holding this probability (default 0.95)");
  sub->add_option("--repetition-penalty", s.repetition_penalty,
                  prefix + "divide the logits of bytes already in the context by this, 1 = off (default 1)");
  sub->add_option("--seed", s.seed, prefix + "the sampling seed; the same seed gives the same text (default 1)");
  sub->add_option("--stop", s.stop, prefix + "stop after this string is generated, kept in the text (repeatable)");
}

}  // namespace lf::cli
