// `linformer plot RUN... [--out FILE.png] [--metric M]...`: draws the training curves of one or more
// run directories (their log.jsonl) to one PNG. The logs are checked here, so that a missing, empty or
// torn log is one clear error; the drawing is plot_runs.py's (matplotlib), which CMake copies beside
// this binary and installs under share/linformer.
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "core/join.h"
#include "linformer/error.h"

namespace lf::cli {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kMetrics = {"loss", "bits_per_byte", "valid_loss", "accuracy",
                                           "lr", "grad_norm", "tokens_per_s"};

struct PlotCommand {
  std::vector<std::string> runs;
  std::string out = "plot.png";
  std::vector<std::string> metrics;
};

// A run's log: RUN/log.jsonl, or RUN itself when it names a file. Every line must be a JSON object
// and at least one must be a training or evaluation record; lf::IoError otherwise, naming the line.
std::string checked_log(const std::string& run) {
  std::error_code ec;
  if (!fs::exists(run, ec))
    throw IoError(str_cat("plot: '", run, "' does not exist (give a run directory, the --out of `linformer train`)"));
  const std::string path = fs::is_directory(run, ec) ? (fs::path(run) / "log.jsonl").string() : run;
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw IoError(str_cat("plot: cannot open '", path, "'",
                          fs::is_directory(run, ec) ? " (is it a run directory of `linformer train`?)" : ""));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.empty()) throw IoError(str_cat("plot: '", path, "' is empty: the run has not logged a step yet"));
  int64_t records = 0, line_no = 0;
  for (size_t begin = 0; begin < text.size(); ++line_no) {
    const size_t nl = text.find('\n', begin);
    const bool last = nl == std::string::npos;
    const std::string line = text.substr(begin, last ? std::string::npos : nl - begin);
    begin = last ? text.size() : nl + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const json record = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!record.is_object()) {
      if (last && line[line.find_first_not_of(" \t")] == '{')  // a record begun, not finished
        throw IoError(str_cat("plot: the last line (", line_no + 1, ") of '", path, "' is cut short (a run killed while "
                              "writing it): `linformer train --resume` repairs the log, or delete that line"));
      throw IoError(str_cat("plot: line ", line_no + 1, " of '", path, "' is not a JSON record: not a log.jsonl of "
                            "`linformer train`"));
    }
    const std::string type = record.value("type", std::string());
    if (type == "train" || type == "eval") ++records;
  }
  if (records == 0)
    throw IoError(str_cat("plot: '", path, "' holds no training or evaluation record: nothing to draw"));
  return path;
}

// plot_runs.py beside the binary (the build tree), in the installed share/linformer, or in the sources.
std::string plot_script() {
  std::error_code ec;
  const fs::path exe_dir = fs::read_symlink("/proc/self/exe", ec).parent_path();
  for (const fs::path& p : {exe_dir / "plot_runs.py", exe_dir / ".." / "share" / "linformer" / "plot_runs.py",
                            fs::path(LINFORMER_SOURCE_DIR) / "scripts" / "plot_runs.py"})
    if (!ec && fs::is_regular_file(p)) return p.string();
  throw Error("plot: plot_runs.py is not installed beside the linformer binary nor in share/linformer: reinstall");
}

// Labels that tell the runs apart: the directory names, with the path when two share a name.
std::vector<std::string> labels(const std::vector<std::string>& runs) {
  std::vector<std::string> out;
  for (const std::string& r : runs) {
    const fs::path p = fs::path(r).lexically_normal();
    out.push_back(p.has_filename() && p.filename() != "log.jsonl" ? p.filename().string()
                                                                   : p.parent_path().filename().string());
  }
  for (size_t i = 0; i < out.size(); ++i)
    for (size_t j = 0; j < out.size(); ++j)
      if (i != j && out[i] == out[j]) out[i] = runs[i];
  return out;
}

// Refused before any drawing: an --out whose directory is missing or not writable.
void check_output(const std::string& out) {
  std::error_code ec;
  const fs::path parent = fs::absolute(out, ec).parent_path();
  if (fs::is_directory(out, ec)) throw IoError(str_cat("plot: --out '", out, "' is a directory: give a file name (.png)"));
  if (!fs::is_directory(parent, ec) || ::access(parent.c_str(), W_OK) != 0)
    throw IoError(str_cat("plot: cannot write '", out, "': its directory '", parent.string(),
                          "' does not exist or is not writable"));
}

int run_plot(const PlotCommand& c) {
  std::vector<std::string> logs;
  for (const std::string& r : c.runs) logs.push_back(checked_log(r));
  check_output(c.out);
  const std::string script = plot_script();
  const std::string py = find_plot_python();
  if (py.empty())
    throw Error("plot: no python3 with matplotlib found: install Debian's python3-matplotlib (scripts/setup.sh "
                "does) or set LINFORMER_PYTHON to a python that has matplotlib");
  const std::vector<std::string> metrics =
      c.metrics.empty() ? std::vector<std::string>{"loss", "bits_per_byte"} : c.metrics;
  std::string cmd = shell_quote(py) + " " + shell_quote(script) + " --out " + shell_quote(c.out);
  for (const std::string& m : metrics) cmd += " --metric " + m;
  const std::vector<std::string> names = labels(c.runs);
  for (size_t i = 0; i < logs.size(); ++i) cmd += " " + shell_quote(names[i] + "=" + logs[i]);
  // The script's only output is an error line; it becomes this command's error.
  FILE* pipe = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!pipe) throw Error("plot: cannot start " + py);
  std::string output;
  char buf[4096];
  for (size_t got; (got = std::fread(buf, 1, sizeof buf, pipe)) > 0;) output.append(buf, got);
  const int status = ::pclose(pipe);
  if (status != 0) {
    while (!output.empty() && (output.back() == '\n' || output.back() == '\r')) output.pop_back();
    const size_t nl = output.rfind('\n');
    const std::string last = nl == std::string::npos ? output : output.substr(nl + 1);
    throw IoError(str_cat("plot: ", last.empty() ? str_cat(script, " failed (status ", status, ")") : last));
  }
  std::printf("plot: %s (%s of %zu run%s)\n", c.out.c_str(), join(metrics, ", ").c_str(), logs.size(),
              logs.size() == 1 ? "" : "s");
  return 0;
}

}  // namespace

CLI::App* add_plot_command(CLI::App& app, std::function<int()>& run) {
  auto cmd = std::make_shared<PlotCommand>();
  CLI::App* sub = app.add_subcommand("plot", "Draw the training curves of runs (their log.jsonl) to a PNG");
  sub->add_option("runs", cmd->runs, "run directories (the --out of `linformer train`) or their log.jsonl files")
      ->required();
  sub->add_option("--out", cmd->out, "the PNG to write (default plot.png)");
  sub->add_option("--metric", cmd->metrics,
                  "a panel per metric, in order (default: loss and bits_per_byte): loss (training, the mean per log "
                  "interval), bits_per_byte, valid_loss, accuracy (held-out), lr, grad_norm, tokens_per_s")
      ->check(CLI::IsMember(kMetrics));
  run = [cmd] { return run_plot(*cmd); };
  return sub;
}

}  // namespace lf::cli
