// The `linformer` command line. It only parses arguments and calls the library: global options
// (--threads, --version) live here, each subcommand in its own file (cli/<name>.cpp) that adds itself
// to the app and hands back the function that runs it. Every failure ends as one line
// `linformer: error: <message>` on stderr and exit status 2 (usage, invalid argument) or 1 (anything
// else); nothing escapes as an uncaught exception.
#include <CLI/CLI.hpp>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
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
CLI::App* add_embed_command(CLI::App& app, std::function<int()>& run);
CLI::App* add_serve_command(CLI::App& app, std::function<int()>& run);

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
// the core the thread it waits for needs, and a parallel region can cost a scheduler slice: the 6-layer
// training step at n = 4096 on 2 busy cores (load 4-6) took 8.9-11.2 s with the default and 5.6-8.3 s
// with 10 000 rounds; idle, the two were the same (2594-2771 against 2576-2755 ms; inference 842-895
// against 837-846 ms; docs/benchmarks.md, "Small ops and threads"). libgomp reads the variables when
// it loads, before main, so the CLI re-executes itself once with GOMP_SPINCOUNT=10000 unless the user
// set either variable (which keeps the user's choice). If the re-execution fails, it runs as it is.
void prefer_short_spin_waits(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  if (setenv("GOMP_SPINCOUNT", "10000", 0) != 0) return;
  execv("/proc/self/exe", argv);
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

  std::vector<std::pair<CLI::App*, std::function<int()>>> commands(9);
  commands[0].first = add_train_command(app, commands[0].second);
  commands[1].first = add_eval_command(app, commands[1].second);
  commands[2].first = add_predict_command(app, commands[2].second);
  commands[3].first = add_info_command(app, commands[3].second);
  commands[4].first = add_bench_command(app, commands[4].second);
  commands[5].first = add_convert_command(app, commands[5].second);
  commands[6].first = add_spectrum_command(app, commands[6].second);
  commands[7].first = add_embed_command(app, commands[7].second);
  commands[8].first = add_serve_command(app, commands[8].second);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);  // --help, --version
    std::string message = e.what();
    if (dynamic_cast<const CLI::RequiredError*>(&e) && app.get_subcommands().empty()) {
      const std::vector<std::string> extra = app.remaining();
      message = extra.empty() ? message : "unknown subcommand '" + extra.front() + "'";
      message += " (try 'linformer --help')";
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
