// Errors. User mistakes (bad shapes, configs, files) throw typed exceptions carrying a message that
// says what is wrong and how to fix it; the CLI prints it and exits non-zero. Asserts are only for
// programmer bugs. A message names a user-facing option by its own name in backticks (`seq_len`,
// `run_dir`), never by a command-line flag: the CLI shows the flag in its place (--seq-len, --out).
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace lf {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A configuration, shape or argument the caller got wrong.
struct InvalidArgument : Error {
  using Error::Error;
};
// A file that is missing, unreadable, truncated or malformed.
struct IoError : Error {
  using Error::Error;
};

template <class... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream s;
  (s << ... << args);
  return s.str();
}

}  // namespace lf

// Throws lf::InvalidArgument with the streamed message when cond is false.
#define LF_REQUIRE(cond, ...)                                      \
  do {                                                             \
    if (!(cond)) throw ::lf::InvalidArgument(::lf::str_cat(__VA_ARGS__)); \
  } while (0)
