// Runs the built `linformer` binary (LINFORMER_CLI_PATH) through the shell, as a user would, and
// captures stdout, stderr, the exit status and a killing signal. Shared by the CLI tests.
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace lf::test {

struct CliResult {
  int status = -1;  // exit status; -1 when the process did not exit normally (killed by a signal)
  int signal = 0;
  std::string out, err;
};

// `prefix` runs before the binary in the same shell command (e.g. "cd DIR &&" or "VAR=1");
// args are shell words (quote JSON). stderr goes through err_path.
inline CliResult run_linformer(const std::string& prefix, const std::string& args, const std::string& err_path) {
  const std::string cmd = prefix + (prefix.empty() ? "" : " ") + "'" LINFORMER_CLI_PATH "' " + args + " 2>'" + err_path + "'";
  CliResult r;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (!pipe) {
    ADD_FAILURE() << "popen failed for: " << cmd;
    return r;
  }
  char buf[4096];
  for (size_t got; (got = std::fread(buf, 1, sizeof buf, pipe)) > 0;) r.out.append(buf, got);
  const int raw = ::pclose(pipe);
  if (WIFEXITED(raw)) {
    r.status = WEXITSTATUS(raw);
    if (r.status > 128) r.signal = r.status - 128;  // the shell reports a killed child as 128 + signal
  } else if (WIFSIGNALED(raw)) {
    r.signal = WTERMSIG(raw);
  }
  std::ifstream err(err_path, std::ios::binary);
  std::stringstream ss;
  ss << err.rdbuf();
  r.err = ss.str();
  std::remove(err_path.c_str());
  return r;
}

inline std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream s(text);
  for (std::string line; std::getline(s, line);) out.push_back(line);
  return out;
}

// A file's bytes, written or read whole (the fixtures and outputs of the CLI tests).
inline void write_file(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

}  // namespace lf::test
