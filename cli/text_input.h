// Input and output of the batch commands (`predict --input`, `embed --input`): texts read from a
// file a batch at a time, results streamed to stdout or to a file that appears whole at the end,
// and a progress line on stderr when it is a terminal.
#pragma once
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "linformer/config.h"

namespace lf::cli {

// The longest text a line may hold: far more than any model reads, short enough to bound memory.
inline constexpr size_t kMaxTextBytes = size_t(1) << 20;

struct InputText {
  int64_t line = 0;  // 1-based line number in the file
  std::string text;
  json id;           // JSONL: the line's "id", echoed in the output; null otherwise
};

// A text per line (a trailing '\r' dropped), or JSONL — when the name ends in .jsonl or the file's
// first byte is '{' — one object per line with a string "text" (and optionally an "id"). Blank lines
// are skipped, or refused with `blank_lines_allowed` = false (embed: one row per line). Errors are
// lf::IoError naming the file and line: unreadable, not valid JSON, no "text", longer than
// kMaxTextBytes, and (at the end) a file without any text.
class TextInput {
 public:
  TextInput(const std::string& path, bool blank_lines_allowed);
  bool jsonl() const { return jsonl_; }
  // The next texts, up to `max`; empty at the end of the file.
  std::vector<InputText> next(size_t max);
  double fraction_read();  // of the file's bytes, for the progress line
  int64_t texts() const { return texts_; }

 private:
  std::string path_;
  std::ifstream in_;
  bool jsonl_ = false, blank_ok_ = true;
  int64_t line_ = 0, texts_ = 0;
  double size_ = 0;
};

// stdout, or `path` written through a temporary file in its directory that is renamed over it by
// commit() (fsynced), so a reader never sees half a file; without commit() it is removed.
class OutputStream {
 public:
  explicit OutputStream(const std::string& path);  // "" or "-": stdout
  ~OutputStream();
  OutputStream(const OutputStream&) = delete;
  OutputStream& operator=(const OutputStream&) = delete;
  void write_line(const std::string& line);  // and '\n'; flushed per batch by flush()
  void flush();
  void commit();

 private:
  std::string path_, tmp_;
  std::FILE* f_ = stdout;
};

// "predict: 1200 texts, 45%" on stderr, redrawn in place, only when stderr is a terminal; fitted to
// its width.
class BatchProgress {
 public:
  explicit BatchProgress(std::string command);
  void update(int64_t done, double fraction);
  void finish();

 private:
  std::string command_;
  bool enabled_;
  bool drawn_ = false;
};

// A JSON object as one line; invalid UTF-8 (a byte a model filled in) becomes U+FFFD.
std::string json_line(const json& j);

}  // namespace lf::cli
