#include "linformer/memory.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>

#include "linformer/arena.h"
#include "linformer/error.h"
#include "linformer/model.h"
#include "model/head.h"

namespace lf {

namespace {

constexpr double kFloat = sizeof(float);

// A quick lower bound on the parameters, without building anything: embeddings, the FFNs and the
// four d×d attention maps. Guards the exact count below against configurations whose attention
// layers would be absurd to even declare.
double rough_parameter_count(const ModelConfig& c) {
  const double d = double(c.d_model);
  return (double(c.vocab_size) + double(c.max_len)) * d + double(c.n_layers) * (4 * d * d + 2 * d * double(c.d_ff));
}

}  // namespace

std::string format_bytes(double bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"};
  if (!std::isfinite(bytes)) return "unlimited";
  double x = std::abs(bytes);
  if (x < 1024) return str_cat(static_cast<long long>(bytes), " B");
  int u = 0;
  while (x >= 1023.95 && u < 8) x /= 1024, ++u;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s%.1f %s", bytes < 0 ? "-" : "", x, kUnits[u]);
  return buf;
}

std::string MemoryEstimate::breakdown() const {
  std::string s = str_cat("parameters ", format_bytes(parameters));
  if (gradients > 0) s += str_cat(", gradients ", format_bytes(gradients));
  if (optimizer > 0) s += str_cat(", AdamW moments ", format_bytes(optimizer));
  s += str_cat(", activations ", format_bytes(activations));
  if (buffers > 0) s += str_cat(", data and buffers ", format_bytes(buffers));
  return s;
}

double parameter_count(const ModelConfig& config) {
  const double rough = rough_parameter_count(config);
  if (rough > 1e15) return rough;  // four petabytes of floats or more: no need to be exact
  ParamArena<float> arena;         // declared only: nothing is allocated
  const Model<float> model(config, arena);
  return double(arena.numel());
}

MemoryEstimate estimate_memory(const ModelConfig& c, Workload workload, int64_t B_in, int64_t n_in,
                               bool checkpoint_activations, double extra_bytes) {
  const bool training = workload == Workload::Training;
  const double B = double(B_in), n = double(n_in), d = double(c.d_model), ff = double(c.d_ff);
  MemoryEstimate e;
  const double P = parameter_count(c);
  e.parameters = kFloat * P;
  if (training) {
    e.gradients = kFloat * P;
    e.optimizer = 2 * kFloat * P;
  }
  // Each block: the attention kind's own estimate of its buffers, plus (training) the ten (B, n, d)
  // and two (B, n, d_ff) tensors the block keeps, or (inference) two (B, n, d) buffers and the FFN's
  // hidden rows of one chunk.
  const bool exact_attention = rough_parameter_count(c) <= 1e15 && B * n <= 1e15;
  double blocks = 0, largest_block = 0;
  for (int64_t i = 0; i < c.n_layers; ++i) {
    double attn = kFloat * B * n * (6 * d + double(c.n_heads) * n);  // fallback: a score matrix per head
    if (exact_attention) {
      ParamArena<float> arena;  // declared only
      attn = make_attention<float>(c.attention_spec(i), arena)->activation_bytes(B_in, n_in, n_in, training);
    }
    const double rest = training ? kFloat * B * n * (10 * d + 2 * ff)
                                 : kFloat * (4 * B * n * d + std::min(B * n, double(kInferenceFfnRows)) * ff * 2);
    blocks += attn + rest;
    largest_block = std::max(largest_block, attn + rest);
  }
  // Embeddings, the final LayerNorm and the gradient flowing back to the blocks: about five (B, n, d);
  // the head's logits and buffers (and, training, their gradients) by its own count.
  const double head = kFloat * 5 * B * n * d + head_activation_bytes(c, B, n, training);
  if (!training)
    e.activations = largest_block + head;
  else if (checkpoint_activations)
    e.activations = kFloat * (double(c.n_layers) + 1) * B * n * d + largest_block + head;
  else
    e.activations = blocks + head;
  // The batch: tokens, targets (int32) and padding (bytes), training and evaluation batches.
  e.buffers = 2 * B * n * 9 + extra_bytes;
  return e;
}

double data_file_bytes(const std::string& path, int64_t max_bytes) {
  // A directory opens as a stream whose end lies near 2^63: say what it is rather than estimate that.
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw IoError(str_cat("data file '", path, "': is a directory; give the path of a file"));
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) return 0;
  const double size = double(f.tellg());
  double bytes = size;
  unsigned char magic[2] = {0, 0};
  f.seekg(0);
  if (size >= 18 && f.read(reinterpret_cast<char*>(magic), 2) && magic[0] == 0x1f && magic[1] == 0x8b) {
    unsigned char isize[4];  // the uncompressed size modulo 2^32 (of the last member)
    f.seekg(-4, std::ios::end);
    if (f.read(reinterpret_cast<char*>(isize), 4))
      bytes = std::max(size, double(uint32_t(isize[0]) | uint32_t(isize[1]) << 8 | uint32_t(isize[2]) << 16 |
                                    uint32_t(isize[3]) << 24));
  }
  return max_bytes > 0 ? std::min(bytes, double(max_bytes)) : bytes;
}

double parse_memory_size(const std::string& text, const std::string& what) {
  const char* begin = text.c_str();
  char* end = nullptr;
  const double value = std::strtod(begin, &end);
  std::string unit(end);
  if (!unit.empty() && (unit.back() == 'B' || unit.back() == 'b')) unit.pop_back();
  if (unit.size() == 2 && (unit[1] == 'i' || unit[1] == 'I')) unit.pop_back();
  double scale = 0;
  if (unit.empty()) scale = 1;
  else if (unit.size() == 1) {
    const char u = char(std::toupper(static_cast<unsigned char>(unit[0])));
    scale = u == 'K' ? 1024.0 : u == 'M' ? 1048576.0 : u == 'G' ? 1073741824.0 : u == 'T' ? 1099511627776.0 : 0;
  }
  LF_REQUIRE(end != begin && scale > 0 && std::isfinite(value) && value > 0, what,
             " must be a positive size such as 512M, 2G or 1.5GiB, got '", text, "'");
  return value * scale;
}

double available_memory_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  for (std::string line; std::getline(meminfo, line);)
    if (line.rfind("MemAvailable:", 0) == 0) return std::strtod(line.c_str() + 13, nullptr) * 1024;
  return 0;
}

double memory_limit_bytes(const RuntimeOptions& runtime) {
  runtime.validate();
  if (runtime.max_memory > 0) return runtime.max_memory;
  if (const char* env = std::getenv(kMaxMemoryEnv); env && *env) return parse_memory_size(env, kMaxMemoryEnv);
  const double available = available_memory_bytes();
  return available > 0 ? available : std::numeric_limits<double>::infinity();
}

std::string memory_limit_source(const RuntimeOptions& runtime) {
  if (runtime.max_memory > 0) return "`max_memory`";
  if (const char* env = std::getenv(kMaxMemoryEnv); env && *env) return kMaxMemoryEnv;
  return available_memory_bytes() > 0 ? "the available memory; raise it with `max_memory`" : "none";
}

void require_memory(const MemoryEstimate& estimate, const RuntimeOptions& runtime, const std::string& command,
                    const std::string& advice) {
  const double limit = memory_limit_bytes(runtime);
  const double need = estimate.total();
  if (need <= limit) return;
  throw Error(str_cat(command, " needs about ", format_bytes(need), " (", estimate.breakdown(), ") but the memory limit is ",
                      format_bytes(limit), " (", memory_limit_source(runtime), "): ", advice));
}

}  // namespace lf
