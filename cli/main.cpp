// The `linformer` command line. It only parses arguments and calls the library: global options
// (--threads, --version) live here, each subcommand in its own file (cli/<name>.cpp) that adds itself
// to the app and hands back the function that runs it. Every failure ends as one line
// `linformer: error: <message>` on stderr and exit status 2 (usage, invalid argument) or 1 (anything
// else); nothing escapes as an uncaught exception.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include <unistd.h>

#include "cli/common.h"
#include "linformer/allocator.h"
#include "linformer/error.h"
#include "linformer/memory.h"
#include "linformer/runtime.h"
#include "ops/parallelism.h"

#ifndef LINFORMER_VERSION
#define LINFORMER_VERSION "0.1.0"  // keep in step with project(VERSION) in CMakeLists.txt
#endif

namespace lf::cli {

// One declaration per subcommand file: adds the subcommand to `app` and sets `run`, called after a
// successful parse when that subcommand was given; it returns the exit status.
CLI::App* add_info_command(CLI::App& app, std::function<int()>& run);
CLI::App* add_train_command(CLI::App& app, std::function<int()>& run);
CLI::App* add_eval_command(CLI::App& app, std::function<int()>& run);
CLI::App* add_predict_command(CLI::App& app, std::function<int()>& run);
CLI::App* add_bench_command(CLI::App& app, std::function<int()>& run);
CLI::App* add_convert_command(CLI::App& app, std::function<int()>& run);
CLI::App* add_spectrum_command(CLI::App& app, std::function<int()>& run);
CLI::App* add_plot_command(CLI::App& app, std::function<int()>& run);
CLI::App* add_embed_command(CLI::App& app, std::function<int()>& run);
CLI::App* add_serve_command(CLI::App& app, std::function<int()>& run);
CLI::App* add_generate_command(CLI::App& app, std::function<int()>& run);

namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

// One line, whatever the message holds (JSON parse errors can quote the input, newlines included),
// with the library's option names shown as this CLI's flags.
int fail(int status, const std::string& message) {
  std::string line = with_flag_names(message);
  for (char& c : line)
    if (c == '\n' || c == '\r') c = ' ';
  std::fflush(stdout);  // whatever was printed before the error comes first
  std::fprintf(stderr, "linformer: error: %s\n", line.c_str());
  return status;
}

// --threads N: a positive integer. Checked on the string so that 0, -1 and "abc" give one message.
std::string check_threads(std::string& value) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || errno != 0 || v <= 0 || v > kMaxThreads)
    return str_cat("must be a positive thread count (1 to ", kMaxThreads, "), got '", value, "'");
  return {};
}

// libgomp's idle threads spin-wait GOMP_SPINCOUNT rounds (300 000 unless OMP_WAIT_POLICY says
// otherwise: milliseconds) before they sleep. On cores other processes share, a spinning worker takes
// the core the thread it waits for needs, and a parallel region can cost a scheduler slice; passive
// waiting (no spin) pays a futex wake per region instead. On 2 quiet Zen 4 cores (small training step,
// n = 256, d = 128; scripts/contention_probe.sh, docs/cli.md "Spin-waiting"): idle, 1000 spins took
// 22.8 ms against 40.0 passive and 37.7 at --threads 1; with a busy loop on one core, 66.9 against
// 42.3 passive, 38.0 at --threads 1, 145 at 10 000 spins (the earlier choice). A larger step (n = 512,
// d = 256): idle 142 ms (1000) / 183 (passive) / 264 (1 thread); busy 301 / 271 / 261 (10 000: 515).
// So 1000 spins: the fastest idle, and within 1.2-1.8x of one thread when a core is taken. libgomp
// reads the variables when it loads, before main, so the CLI re-executes itself once with
// GOMP_SPINCOUNT=1000 unless the user set either variable (which keeps the user's choice). If the
// re-execution fails, it runs as it is.
void prefer_short_spin_waits(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  if (setenv("GOMP_SPINCOUNT", "1000", 0) != 0) return;
  execv("/proc/self/exe", argv);
}

// Levenshtein distance, for the nearest flag to a mistyped one.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// "unknown option --step; did you mean --steps?" for the first --flag in argv that neither the
// subcommand given nor the global options know; "" when every flag is known (another parse error).
std::string unknown_flag_message(const CLI::App& app, const CLI::App* sub, int argc, char** argv) {
  std::vector<std::string> known;
  for (const CLI::App* a : {&app, sub})
    if (a)
      for (const CLI::Option* o : a->get_options())
        for (const std::string& name : o->get_lnames()) known.push_back("--" + name);
  for (int i = 1; i < argc; ++i) {
    std::string word = argv[i];
    if (word == "--") break;
    if (word.rfind("--", 0) != 0) continue;
    word = word.substr(0, word.find('='));
    if (std::find(known.begin(), known.end(), word) != known.end()) continue;
    std::string best;
    size_t best_distance = std::max<size_t>(2, word.size() / 3) + 1;  // farther than this is no suggestion
    for (const std::string& k : known)
      if (const size_t d = edit_distance(word, k); d < best_distance) best = k, best_distance = d;
    const std::string where = sub ? "linformer " + sub->get_name() + " --help" : "linformer --help";
    return best.empty() ? str_cat("unknown option ", word, " (see '", where, "')")
                        : str_cat("unknown option ", word, "; did you mean ", best, "? (see '", where, "')");
  }
  return "";
}

int run(int argc, char** argv) {
  prefer_short_spin_waits(argv);
  keep_freed_memory_for_reuse();
  CLI::App app{"Linformer: self-attention with linear complexity, on the CPU.", "linformer"};
  app.set_version_flag("--version", std::string("linformer ") + LINFORMER_VERSION + " (GEMM: " + ops::matmul_backend() + ")");
  app.require_subcommand(1);
  // Global options may also follow the subcommand: `linformer info --threads 4`.
  app.fallthrough();

  int threads = 0;
  app.add_option("--threads", threads,
                 "Threads for parallel loops and GEMM (default: $LINFORMER_NUM_THREADS, else all cores)")
      ->check(CLI::Validator(check_threads, "N", "thread count"));

  std::string max_memory;
  app.add_option("--max-memory", max_memory,
                 "Memory limit for the estimate that refuses too large a configuration, e.g. 512M, 8G "
                 "(default: $LINFORMER_MAX_MEMORY, else the available memory)");

  std::string precision = "fp32";
  app.add_option("--precision", precision,
                 "Precision of the matrix products: fp32; bf16 (bfloat16 operands, fp32 accumulation, results, "
                 "weights and optimizer state; needs a CPU with AVX512-BF16); or int8 (inference only: the linear "
                 "layers dynamically quantised, s8 weights per output channel, u8 inputs; needs AVX512-VNNI)")
      ->check(CLI::IsMember({"fp32", "bf16", "int8"}));

  // Train first: commands[0] is checked against --precision below.
  using AddCommand = CLI::App* (*)(CLI::App&, std::function<int()>&);
  constexpr AddCommand kAddCommands[] = {add_train_command,    add_eval_command,  add_predict_command, add_info_command,
                                         add_bench_command,    add_convert_command, add_spectrum_command, add_plot_command,
                                         add_embed_command,    add_serve_command, add_generate_command};
  std::vector<std::pair<CLI::App*, std::function<int()>>> commands(std::size(kAddCommands));
  for (size_t i = 0; i < commands.size(); ++i) commands[i].first = kAddCommands[i](app, commands[i].second);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);  // --help, --version
    std::string message = e.what();
    if (dynamic_cast<const CLI::RequiredError*>(&e) && app.get_subcommands().empty()) {
      const std::vector<std::string> extra = app.remaining();
      message = extra.empty() ? message : "unknown subcommand '" + extra.front() + "'";
      message += " (try 'linformer --help')";
    } else if (dynamic_cast<const CLI::ExtrasError*>(&e)) {
      const std::vector<CLI::App*> subs = app.get_subcommands();
      if (std::string unknown = unknown_flag_message(app, subs.empty() ? nullptr : subs.front(), argc, argv);
          !unknown.empty())
        message = unknown;
    }
    return fail(kExitUsage, message);
  }

  // The thread count is settled before any work; a malformed LINFORMER_NUM_THREADS is reported here.
  RuntimeOptions runtime;
  runtime.threads = resolve_threads(threads);
  // Likewise the memory limit: a malformed --max-memory or LINFORMER_MAX_MEMORY is refused here.
  if (app.get_option("--max-memory")->count() > 0) runtime.max_memory = parse_memory_size(max_memory, "--max-memory");
  memory_limit_bytes(runtime);
  runtime.precision = parse_precision(precision);
  if (const std::string why = precision_unsupported_reason(runtime.precision); !why.empty())
    return fail(kExitUsage, str_cat("--precision ", precision, " is not available: ", why));
  // int8 has no backward: training is refused before it reads anything (bench leaves its training
  // passes out by default and refuses them when --what names one).
  if (commands[0].first->parsed() && !precision_trains(runtime.precision))
    return fail(kExitUsage, str_cat("--precision ", precision, " is for inference only (eval, predict, bench's "
                                    "inference passes): train in fp32 or bf16, then run the checkpoint in ", precision));
  set_runtime_options(runtime);
  // The commands' own model passes (eval, predict, info, bench) run with it; library calls get it passed.
  const RuntimeScope scope(runtime);

  for (auto& [sub, command] : commands)
    if (sub->parsed()) return command();
  return fail(kExitUsage, "no subcommand given (try 'linformer --help')");
}

}  // namespace
}  // namespace lf::cli

int main(int argc, char** argv) {
  try {
    return lf::cli::run(argc, argv);
  } catch (const lf::InvalidArgument& e) {
    return lf::cli::fail(lf::cli::kExitUsage, e.what());
  } catch (const lf::Error& e) {
    return lf::cli::fail(lf::cli::kExitFailure, e.what());
  } catch (const CLI::Error& e) {
    return lf::cli::fail(lf::cli::kExitUsage, e.what());
  } catch (const std::exception& e) {
    return lf::cli::fail(lf::cli::kExitFailure, e.what());
  } catch (...) {
    return lf::cli::fail(lf::cli::kExitFailure, "unknown exception");
  }
}
