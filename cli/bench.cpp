// `linformer bench`: time and memory of every attention kind, as a layer (forward, forward+backward)
// and inside a whole model (training step, inference), over a grid of sequence lengths n and, for
// Linformer, projected lengths k. Each configuration runs in a child process of its own (fork), so
// its peak RSS is its own; the heap accounting of this binary (cli/heap_accounting.cpp) gives the
// bytes our buffers took. Configurations whose estimated memory exceeds --max-mem-gib are skipped
// and reported as such. Measurements: layer_forward (inference: nothing kept for a backward),
// layer_forward_backward, model_train_step (the library's Trainer::step: forward, cross-entropy, backward, clipping, AdamW),
// model_train_step_checkpointed (the same with activation checkpointing), model_inference. Every run
// also measures the machine's sgemm rate (2048³, the row kind = sgemm, what = gemm_peak), so the
// achieved GFLOP/s can be set against it. Results: a CSV (the columns of scripts/peer_bench.py, so
// the two can be set side by side) and a markdown table. With --profile FILE.csv, each model and
// layer configuration also runs once more after its timed runs under the op profiler
// (linformer/profile.h), and FILE.csv gets that run's time per op (and per GEMM shape).
#include <CLI/CLI.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <sstream>
#include <tuple>

#include "cli/common.h"
#include "cli/heap_accounting.h"
#include "io/atomic_file.h"
#include "linformer/attention.h"
#include "linformer/checkpoint.h"
#include "linformer/memory.h"
#include "linformer/model.h"
#include "linformer/profile.h"
#include "linformer/rng.h"
#include "linformer/runtime.h"
#include "linformer/trainer.h"
#include "ops/matmul.h"
#include "ops/parallelism.h"
#include "train/run_log.h"

namespace lf::cli {
namespace {

struct BenchOptions {
  std::vector<std::string> kinds, whats = {"layer_forward", "layer_forward_backward", "model_train_step",
                                           "model_train_step_checkpointed", "model_inference"};
  std::vector<int64_t> ns = {512, 1024, 2048, 4096, 8192, 16384, 32768, 65536};
  std::vector<int64_t> ks = {128, 256, 512, 1024, 2048};
  int64_t d_model = 512, heads = 8, layers = 6, batch = 1, repeats = 5, warmup = 1;
  double max_seconds = 30, max_mem_gib = 16;
  std::string csv = "bench/ours.csv", markdown, profile;
};

struct Config {
  std::string kind, what;
  int64_t n = 0, k = 0;
};

struct Result {
  Config c;
  double time_ms = -1, gflops = 0;
  int64_t rss_bytes = 0, heap_bytes = 0;
  std::string note;
  OpProfile profile;  // with --profile: one more run of the configuration, op by op
};

bool is_layer(const std::string& what) { return what.rfind("layer_", 0) == 0; }
bool is_training(const std::string& what) { return what == "layer_forward_backward" || what.rfind("model_train_step", 0) == 0; }

json attention_options(const Config& c) { return c.kind == "linformer" ? json{{"k", c.k}} : json::object(); }

// The model a model_* configuration measures: LinformerLM's shape (d_ff = 4d), without dropout, as
// the peer's LinformerLM (dropout = 0 by default), so the step measures the same work.
ModelConfig bench_model_config(const BenchOptions& o, const Config& c) {
  ModelConfig mc;
  mc.d_model = o.d_model;
  mc.n_heads = o.heads;
  mc.n_layers = o.layers;
  mc.d_ff = 4 * o.d_model;
  mc.max_len = c.n;
  mc.attention = {LayerAttention{c.kind, attention_options(c)}};
  mc.dropout_embedding = mc.dropout_attention = mc.dropout_ffn = 0;
  return mc;
}

// Bytes a configuration is expected to need: a layer, from the kind's own estimate of its buffers
// (Attention::activation_bytes), its parameters (declared in an arena that is never allocated) and
// the benchmark's (B, n, d) buffers; a model, the library's estimate of a training step or an
// inference forward (estimate_memory).
double estimate_bytes(const BenchOptions& o, const Config& c) {
  if (c.kind == "sgemm") return 3.0 * sizeof(float) * double(c.n) * double(c.n);
  const bool training = is_training(c.what);
  if (!is_layer(c.what)) {
    const ModelConfig mc = bench_model_config(o, c);
    mc.validate();
    return estimate_memory(mc, training ? Workload::Training : Workload::Inference, o.batch, c.n,
                           c.what == "model_train_step_checkpointed")
        .total();
  }
  ParamArena<float> arena;  // declared only
  const auto layer = make_attention<float>({c.kind, {o.d_model, o.heads, c.n, false, 0.0}, attention_options(c), ""}, arena);
  const double x = sizeof(float) * double(o.batch) * double(c.n) * double(o.d_model);  // one (B, n, d) buffer
  return layer->activation_bytes(o.batch, c.n, c.n, training) + sizeof(float) * double(arena.numel()) * (training ? 2 : 1) +
         4 * x;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// Runs one configuration in this (child) process and returns its result.
Result run_one(const BenchOptions& o, const Config& c) {
  Result r;
  r.c = c;
  const int64_t rss0 = std::max<int64_t>(proc_status_bytes("VmRSS"), 0);
  heap_reset_peak();
  const int64_t heap0 = heap_current_bytes();
  std::function<void()> step;
  double flops = 0;
  ParamArena<float> arena;
  std::unique_ptr<Attention<float>> layer;
  std::unique_ptr<Model<float>> model;
  std::unique_ptr<Trainer> trainer;
  std::vector<TokenBatch> batch;
  std::vector<float> x, out, dout, dx;
  const int64_t B = o.batch, n = c.n, d = o.d_model;
  if (c.kind == "sgemm") {  // the machine's sgemm rate: C (n×n) = A·B
    x.assign(size_t(n * n), 0.5f);
    out.assign(size_t(n * n), 0.25f);
    dx.resize(size_t(n * n));
    flops = 2.0 * double(n) * double(n) * double(n);
    step = [&, n] { ops::matmul<float>(matrix(x.data(), n, n), matrix(out.data(), n, n), matrix(dx.data(), n, n)); };
  } else if (is_layer(c.what)) {
    layer = make_attention<float>({c.kind, {d, o.heads, n, false, 0.0}, attention_options(c), ""}, arena);
    arena.allocate(/*with_grads=*/c.what != "layer_forward");
    arena.initialize(1);
    x.resize(size_t(B * n * d));
    for (size_t i = 0; i < x.size(); ++i) x[i] = 2 * uniform01(3, 0, i) - 1;
    out.resize(x.size());
    AttentionInput<float> in{x.data(), B, n};
    flops = layer->forward_flops(B, n, n);
    if (c.what == "layer_forward") {  // inference: nothing kept for a backward
      in.keep_for_backward = false;
      step = [&, in] { layer->forward(in, out.data(), false, 0); };
    } else {
      dout.assign(x.size(), 1e-3f);
      dx.resize(x.size());
      flops *= 3;
      step = [&, in] {
        layer->forward(in, out.data(), true, 0);
        layer->backward(dout.data(), dx.data());
      };
    }
  } else {
    const ModelConfig mc = bench_model_config(o, c);
    batch.resize(1);
    TokenBatch& b = batch[0];
    b.B = B;
    b.n = n;
    b.tokens.resize(size_t(B * n));
    b.targets.resize(size_t(B * n));
    for (size_t i = 0; i < b.tokens.size(); ++i) {
      b.tokens[i] = int32_t(uniform01(4, 0, i) * 256);
      b.targets[i] = uniform01(5, 0, i) < 0.15f ? b.tokens[i] : kIgnoreIndex;
    }
    if (c.what == "model_inference") {
      model = std::make_unique<Model<float>>(mc, arena);
      arena.allocate(/*with_grads=*/false);
      arena.initialize(1);
      flops = double(B) * model->forward_flops(n);
      step = [&] { model->forward(b.tokens.data(), nullptr, B, n, false, 0, /*keep_for_backward=*/false); };
    } else {  // the library's training step: forward, cross-entropy, backward, clipping, AdamW
      TrainOptions to;
      to.batch_size = B;
      to.seq_len = n;
      to.steps = std::numeric_limits<int32_t>::max();  // the schedule's peak rate after warm-up, for every run
      to.warmup_steps = 0;
      to.checkpoint_activations = c.what == "model_train_step_checkpointed";
      trainer = std::make_unique<Trainer>(mc, to, runtime_options());
      flops = 3.0 * double(B) * trainer->model().forward_flops(n);
      step = [&] { trainer->step(batch); };
    }
  }
  auto timed = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  for (int64_t i = 0; i < o.warmup; ++i)
    if (timed() > 1000 * o.max_seconds) {
      r.note = str_cat("skipped: one run took over --max-seconds ", o.max_seconds);
      return r;
    }
  std::vector<double> times;
  for (int64_t i = 0; i < o.repeats; ++i) times.push_back(timed());
  r.time_ms = median(times);
  r.gflops = flops / (r.time_ms * 1e-3) * 1e-9;
  r.rss_bytes = peak_rss_bytes() - rss0;
  r.heap_bytes = heap_peak_bytes() - heap0;
  if (!o.profile.empty() && c.kind != "sgemm") {  // after the measurements, so they are not affected
    ProfileScope scope;
    step();
    r.profile = scope.stop();
  }
  return r;
}

json result_json(const Result& r) {
  json ops = json::array();
  for (const OpStat& s : r.profile.ops) ops.push_back({s.op, s.detail, s.calls, s.seconds, s.flops});
  return {{"time_ms", r.time_ms}, {"gflops", r.gflops}, {"rss", r.rss_bytes}, {"heap", r.heap_bytes}, {"note", r.note},
          {"profile_wall", r.profile.wall_seconds}, {"profile_ops", ops}};
}

// Forks a child that runs the configuration and reports one JSON line through a pipe.
Result run_isolated(const BenchOptions& o, const Config& c, int threads) {
  Result r;
  r.c = c;
  int fds[2];
  LF_REQUIRE(pipe(fds) == 0, "bench: pipe() failed");
  std::fflush(nullptr);
  const pid_t pid = fork();
  LF_REQUIRE(pid >= 0, "bench: fork() failed");
  if (pid == 0) {
    close(fds[0]);
    // A hung child dies. In double and clamped to a day: huge --repeats/--warmup/--max-seconds must
    // overflow neither the sum nor the conversion to unsigned.
    const double limit_s = std::min(o.max_seconds * (double(o.repeats) + double(o.warmup) + 2), 86400.0);
    alarm(unsigned(std::ceil(limit_s)) + 60);
    std::string line;
    try {
      RuntimeOptions child = runtime_options();
      child.threads = threads;
      const RuntimeScope scope(child);
      line = result_json(run_one(o, c)).dump();
    } catch (const std::exception& e) {
      line = json{{"time_ms", -1}, {"note", str_cat("failed: ", with_flag_names(e.what()))}}.dump();
    }
    line += "\n";
    if (write(fds[1], line.data(), line.size()) < 0) _exit(3);
    _exit(0);
  }
  close(fds[1]);
  std::string text;
  char buf[4096];
  for (ssize_t got; (got = read(fds[0], buf, sizeof buf)) > 0;) text.append(buf, size_t(got));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (text.empty()) {
    r.note = WIFSIGNALED(status) ? str_cat("failed: killed by signal ", WTERMSIG(status)) : "failed: no result";
    return r;
  }
  const json j = json::parse(text);
  r.time_ms = j.value("time_ms", -1.0);
  r.gflops = j.value("gflops", 0.0);
  r.rss_bytes = j.value("rss", int64_t(0));
  r.heap_bytes = j.value("heap", int64_t(0));
  r.note = j.value("note", std::string());
  r.profile.wall_seconds = j.value("profile_wall", 0.0);
  for (const json& s : j.value("profile_ops", json::array()))
    r.profile.ops.push_back({s[0].get<std::string>(), s[1].get<std::string>(), s[2].get<int64_t>(), s[3].get<double>(),
                             s[4].get<double>()});
  return r;
}

// The rows of --profile for one configuration: its ops, then "(outside ops)" (the run's wall time
// minus the ops' time: the code between the ops) and "(step)" (the run's wall time).
std::string profile_lines(const Result& r) {
  if (r.profile.wall_seconds <= 0) return "";
  auto line = [&](const std::string& op, const std::string& detail, int64_t calls, double seconds, double flops) {
    char nums[160];
    std::snprintf(nums, sizeof nums, "%lld,%.6f,%.6g,%s", (long long)calls, seconds * 1e3, flops * 1e-9,
                  flops > 0 && seconds > 0 ? str_cat(std::round(flops / seconds * 1e-7) / 100).c_str() : "");
    return str_cat(r.c.what, ",", r.c.kind, ",", r.c.n, ",", r.c.k, ",", op, ",", detail, ",", nums, "\n");
  };
  std::string out;
  for (const OpStat& s : r.profile.ops) out += line(s.op, s.detail, s.calls, s.seconds, s.flops);
  out += line("(outside ops)", "", 1, r.profile.wall_seconds - r.profile.op_seconds(), 0);
  out += line("(step)", "", 1, r.profile.wall_seconds, 0);
  return out;
}

std::string csv_line(const BenchOptions& o, const Result& r, int threads) {
  // The implementation column names the precision when it is not fp32 (the columns stay those of the
  // peers' CSVs, which name PyTorch's autocast the same way).
  const Precision p = runtime_options().precision;
  return str_cat("linformer-cpp", p == Precision::fp32 ? "" : str_cat("-", precision_name(p)), ",", r.c.kind, ",", r.c.what, ",", r.c.n, ",", r.c.k, ",", o.d_model, ",", o.heads, ",",
                 o.batch, ",", threads, ",", r.time_ms >= 0 ? str_cat(r.time_ms) : std::string(), ",",
                 r.time_ms >= 0 ? str_cat(r.rss_bytes) : std::string(), ",", o.repeats, ",",
                 r.time_ms >= 0 ? str_cat(r.heap_bytes) : std::string(), ",", r.gflops, ",", r.note, "\n");
}

int run_bench(BenchOptions o, const std::string& kinds, const std::string& whats, const std::string& ns,
              const std::string& ks) {
  const AttentionRegistry& reg = AttentionRegistry::instance();
  o.kinds.clear();
  if (kinds.empty()) {
    o.kinds = reg.names();
  } else {
    std::stringstream s(kinds);
    for (std::string k; std::getline(s, k, ',');) o.kinds.push_back(reg.get(k).info.name);  // unknown → error
  }
  if (!whats.empty()) {
    o.whats.clear();
    std::stringstream s(whats);
    for (std::string w; std::getline(s, w, ',');) {
      LF_REQUIRE(w == "layer_forward" || w == "layer_forward_backward" || w == "model_train_step" ||
                     w == "model_train_step_checkpointed" || w == "model_inference",
                 "--what: unknown measurement '", w,
                 "' (layer_forward, layer_forward_backward, model_train_step, model_train_step_checkpointed, "
                 "model_inference)");
      o.whats.push_back(w);
    }
  }
  if (const Precision p = runtime_options().precision; !precision_trains(p)) {
    if (whats.empty())  // the default passes are those this precision runs
      o.whats.erase(std::remove_if(o.whats.begin(), o.whats.end(), is_training), o.whats.end());
    for (const std::string& w : o.whats)
      LF_REQUIRE(!is_training(w), "--precision ", precision_name(p), " is for inference only: bench's --what ", w,
                 " trains; choose --what layer_forward,model_inference");
  }
  if (!ns.empty()) o.ns = parse_list(ns, "--n");
  if (!ks.empty()) o.ks = parse_list(ks, "--k");
  LF_REQUIRE(o.d_model > 0 && o.heads > 0 && o.d_model % o.heads == 0, "--d-model must be a positive multiple of --heads");
  LF_REQUIRE(o.batch > 0 && o.layers > 0 && o.repeats > 0 && o.warmup >= 0, "--batch, --layers and --repeats must be positive");
  LF_REQUIRE(o.max_seconds > 0 && o.max_mem_gib > 0, "--max-seconds and --max-mem-gib must be positive");
  const bool linformer = std::find(o.kinds.begin(), o.kinds.end(), "linformer") != o.kinds.end();
  if (linformer && !ks.empty())  // an explicit k that fits no n would silently measure nothing
    for (int64_t k : o.ks)
      LF_REQUIRE(k <= *std::max_element(o.ns.begin(), o.ns.end()), "--k ", k, " exceeds every --n (largest ",
                 *std::max_element(o.ns.begin(), o.ns.end()), "): Linformer's k must not exceed n");
  if (!o.csv.empty()) check_writable(o.csv, "--csv");
  if (!o.markdown.empty()) check_writable(o.markdown, "--markdown");
  if (!o.profile.empty()) check_writable(o.profile, "--profile");
  // The memory limit: --max-mem-gib, or less when the machine (--max-memory, LINFORMER_MAX_MEMORY,
  // available memory) has less.
  const double gib_limit = o.max_mem_gib * double(1ll << 30), machine_limit = memory_limit_bytes(runtime_options());
  const double mem_limit = std::min(gib_limit, machine_limit);
  const std::string limit_name = gib_limit <= machine_limit ? str_cat("--max-mem-gib ", o.max_mem_gib)
                                                            : str_cat(format_bytes(mem_limit), " (", memory_limit_source(runtime_options()), ")");
  const int threads = runtime_options().threads;

  std::vector<Config> configs = {{"sgemm", "gemm_peak", 2048, 0}};
  for (const std::string& what : o.whats)
    for (const std::string& kind : o.kinds)
      for (int64_t n : o.ns) {
        if (kind == "linformer") {
          for (int64_t k : o.ks)
            if (k <= n) configs.push_back({kind, what, n, k});
        } else {
          configs.push_back({kind, what, n, 0});
        }
      }
  // Estimates first, before anything runs: when no configuration fits in memory there is nothing to measure.
  std::vector<double> need(configs.size(), 0);
  std::vector<std::string> refused(configs.size());
  double smallest = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < configs.size(); ++i) {
    try {
      need[i] = estimate_bytes(o, configs[i]);
    } catch (const std::exception& e) {  // a configuration the kind refuses (e.g. an option out of range)
      refused[i] = with_flag_names(e.what());
    }
    if (configs[i].kind != "sgemm" && refused[i].empty()) smallest = std::min(smallest, need[i]);
  }
  if (configs.size() > 1 && std::isfinite(smallest) && smallest > mem_limit)
    throw Error(str_cat("bench: every configuration needs more memory than the limit: the smallest needs about ",
                        format_bytes(smallest), " > ", limit_name, "; lower --n, --d-model, --layers or --batch"));
  std::string csv = "impl,kind,what,n,k,d_model,heads,batch,threads,time_ms,peak_mem_bytes,repeats,heap_peak_bytes,gflops,note\n";
  std::string profile_csv = "what,kind,n,k,op,detail,calls,ms,gflops,gflop_per_s\n";
  std::vector<Result> results;
  // Per series (kind, what, k), the (n, ms) measured so far, to skip a longer n whose run would take
  // far longer than --max-seconds: the time is extrapolated with the series' own growth exponent
  // (from its last two points; linear from one), so nothing about a kind's cost is assumed.
  std::map<std::tuple<std::string, std::string, int64_t>, std::vector<std::pair<int64_t, double>>> series;
  std::map<std::tuple<std::string, std::string, int64_t>, int64_t> too_slow_at;  // n that exceeded --max-seconds
  for (size_t ci = 0; ci < configs.size(); ++ci) {
    const Config& c = configs[ci];
    Result r;
    r.c = c;
    const auto key = std::make_tuple(c.kind, c.what, c.k);
    const std::vector<std::pair<int64_t, double>>& seen = series[key];
    double predicted_ms = 0;
    if (!seen.empty()) {
      const auto [n1, t1] = seen.back();
      double exponent = 1;
      if (seen.size() >= 2) {
        const auto [n0, t0] = seen[seen.size() - 2];
        exponent = std::clamp(std::log(t1 / t0) / std::log(double(n1) / double(n0)), 1.0, 3.0);
      }
      predicted_ms = t1 * std::pow(double(c.n) / double(n1), exponent);
    }
    if (!refused[ci].empty()) {
      r.note = str_cat("failed: ", refused[ci]);
    } else if (need[ci] > mem_limit) {
      r.note = str_cat("skipped: needs about ", format_bytes(need[ci]), " > ", limit_name);
    } else if (too_slow_at.count(key) && too_slow_at[key] < c.n) {
      r.note = str_cat("skipped: n = ", too_slow_at[key], " already took over --max-seconds ", o.max_seconds);
    } else if (predicted_ms > 1500 * o.max_seconds) {
      r.note = str_cat("skipped: one run predicted to take ", std::round(predicted_ms / 100) / 10,
                       " s (from the shorter n of this series) > --max-seconds ", o.max_seconds);
    } else {
      r = run_isolated(o, c, threads);
      if (r.time_ms > 0) series[key].emplace_back(c.n, r.time_ms);
      if (r.note.rfind("skipped: one run took", 0) == 0) too_slow_at[key] = c.n;
    }
    std::fprintf(stderr, "bench: %-10s %-22s n=%-6lld k=%-5lld %s\n", c.kind.c_str(), c.what.c_str(), (long long)c.n,
                 (long long)c.k,
                 r.time_ms >= 0 ? str_cat(r.time_ms, " ms, ", r.gflops, " GFLOP/s, RSS +", human_bytes(r.rss_bytes),
                                          ", heap ", human_bytes(r.heap_bytes)).c_str()
                                : r.note.c_str());
    csv += csv_line(o, r, threads);
    profile_csv += profile_lines(r);
    results.push_back(r);
  }
  auto write_csv = [](const std::string& path, const std::string& text) {
    if (path.empty()) return;
    const std::filesystem::path parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent);
    write_file_atomic(path, text);
    std::printf("bench: wrote %s\n", path.c_str());
  };
  write_csv(o.csv, csv);
  write_csv(o.profile, profile_csv);
  // Markdown: one table per measurement, rows n, a column per kind (and k).
  std::string md;
  for (const Result& r : results)
    if (r.c.kind == "sgemm" && r.time_ms >= 0)
      md += str_cat("\nsgemm (", ops::matmul_backend(), ") ", r.c.n, "³ on ", threads, " threads: ", std::round(r.gflops),
                    " GFLOP/s, the peak the GFLOP/s figures compare with\n");
  for (const std::string& what : o.whats) {
    std::vector<std::string> cols;
    std::map<std::pair<std::string, int64_t>, const Result*> cell;
    for (const Result& r : results) {
      if (r.c.what != what) continue;
      const std::string col = r.c.kind == "linformer" ? str_cat("linformer k=", r.c.k) : r.c.kind;
      if (std::find(cols.begin(), cols.end(), col) == cols.end()) cols.push_back(col);
      cell[{col, r.c.n}] = &r;
    }
    md += str_cat("\n### ", what, " (d = ", o.d_model, ", h = ", o.heads, is_layer(what) ? "" : str_cat(", ", o.layers, " layers"),
                  ", batch ", o.batch, ", ", threads, " threads, ",
                  precision_name(runtime_options().precision), "): median ms / peak RSS growth\n\n| n |");
    for (const auto& col : cols) md += " " + col + " |";
    md += "\n|---|";
    for (size_t i = 0; i < cols.size(); ++i) md += "---|";
    md += "\n";
    for (int64_t n : o.ns) {
      md += str_cat("| ", n, " |");
      for (const auto& col : cols) {
        auto it = cell.find({col, n});
        if (it == cell.end())
          md += " – |";
        else if (it->second->time_ms < 0)
          md += " skipped |";
        else
          md += str_cat(" ", std::round(it->second->time_ms * 10) / 10, " / ", human_bytes(it->second->rss_bytes), " |");
      }
      md += "\n";
    }
  }
  if (!o.markdown.empty())
    write_file_atomic(o.markdown, md);
  else
    std::printf("%s", md.c_str());
  return 0;
}

}  // namespace

CLI::App* add_bench_command(CLI::App& app, std::function<int()>& run) {
  auto o = std::make_shared<BenchOptions>();
  auto kinds = std::make_shared<std::string>(), whats = std::make_shared<std::string>(),
       ns = std::make_shared<std::string>(), ks = std::make_shared<std::string>();
  CLI::App* sub = app.add_subcommand("bench", "Time and memory of every attention kind, as a layer and in a model");
  sub->add_option("--kinds", *kinds, "comma-separated attention kinds (default: all registered)");
  sub->add_option("--what", *whats,
                  "comma-separated: layer_forward, layer_forward_backward, model_train_step, "
                  "model_train_step_checkpointed, model_inference (default: all; with --precision int8, "
                  "those that do not train)");
  sub->add_option("--n", *ns, "comma-separated sequence lengths (default 512,...,65536)");
  sub->add_option("--k", *ks, "comma-separated Linformer k (default 128,256,512,1024,2048; k <= n)");
  sub->add_option("--d-model", o->d_model, "model width (default 512)");
  sub->add_option("--heads", o->heads, "heads (default 8)");
  sub->add_option("--layers", o->layers, "layers of the model measurements (default 6)");
  sub->add_option("--batch", o->batch, "batch size (default 1)");
  sub->add_option("--repeats", o->repeats, "timed runs per configuration; the median is reported (default 5)");
  sub->add_option("--warmup", o->warmup, "untimed runs first (default 1)");
  sub->add_option("--max-seconds", o->max_seconds, "skip a configuration whose warm-up run takes longer (default 30)");
  sub->add_option("--max-mem-gib", o->max_mem_gib, "skip configurations estimated to need more memory (default 16)");
  sub->add_option("--csv", o->csv, "CSV output (default bench/ours.csv; empty: none)");
  sub->add_option("--markdown", o->markdown, "markdown output (default: print it)");
  sub->add_option("--profile", o->profile,
                  "also profile one more run of each configuration op by op (per op and GEMM shape: calls, ms, "
                  "GFLOP/s) into this CSV");
  run = [o, kinds, whats, ns, ks] { return run_bench(*o, *kinds, *whats, *ns, *ks); };
  return sub;
}

}  // namespace lf::cli
