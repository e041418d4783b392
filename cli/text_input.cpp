#include "cli/text_input.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "io/atomic_file.h"
#include "linformer/error.h"

namespace lf::cli {

namespace fs = std::filesystem;

TextInput::TextInput(const std::string& path, bool blank_lines_allowed) : path_(path), blank_ok_(blank_lines_allowed) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw IoError(str_cat("--input '", path, "' is a directory, not a file of texts"));
  in_.open(path, std::ios::binary);
  if (!in_) throw IoError(str_cat("--input: cannot open '", path, "': no such file or not readable"));
  size_ = double(fs::file_size(path, ec));
  jsonl_ = fs::path(path).extension() == ".jsonl" || in_.peek() == '{';
}

std::vector<InputText> TextInput::next(size_t max) {
  std::vector<InputText> out;
  std::string line;
  while (out.size() < max && std::getline(in_, line)) {
    ++line_;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const std::string where = str_cat(path_, ":", line_);
    if (line.find_first_not_of(" \t") == std::string::npos) {
      if (!blank_ok_)
        throw IoError(str_cat(where, ": the line is blank; embed writes one row per line, so remove blank lines"));
      continue;
    }
    InputText t{line_, {}, nullptr};
    if (jsonl_) {
      json j;
      try {
        j = json::parse(line);
      } catch (const json::exception& e) {
        throw IoError(str_cat(where, ": not valid JSON (a JSONL file holds one object per line): ", e.what()));
      }
      if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
        throw IoError(str_cat(where, ": has no string \"text\" field (each JSONL line is an object like {\"text\": \"...\"})"));
      t.text = j["text"].get<std::string>();
      if (j.contains("id")) t.id = j["id"];
    } else {
      t.text = std::move(line);
    }
    if (t.text.size() > kMaxTextBytes)
      throw IoError(str_cat(where, ": the text has ", t.text.size(), " bytes, more than the ", kMaxTextBytes,
                            " a text may have; split it"));
    if (t.text.empty())
      throw IoError(str_cat(where, ": the text is empty"));
    out.push_back(std::move(t));
  }
  if (in_.bad()) throw IoError(str_cat("--input '", path_, "': read error after line ", line_));
  texts_ += int64_t(out.size());
  if (out.empty() && texts_ == 0)
    throw IoError(str_cat("--input '", path_, "' has no text: it is empty", line_ > 0 ? " or holds only blank lines" : ""));
  return out;
}

double TextInput::fraction_read() {
  if (size_ <= 0) return 1;
  const std::streamoff at = in_.good() ? std::streamoff(in_.tellg()) : std::streamoff(size_);
  return std::min(1.0, double(at) / size_);
}

OutputStream::OutputStream(const std::string& path) : path_(path == "-" ? "" : path) {
  if (path_.empty()) return;
  const fs::path target(path_);
  tmp_ = (target.parent_path() / str_cat(".", target.filename().string(), ".tmp.", ::getpid())).string();
  f_ = std::fopen(tmp_.c_str(), "wb");
  if (!f_) throw IoError(str_cat("--output '", path_, "': cannot create a file in its directory: ", std::strerror(errno)));
}

OutputStream::~OutputStream() {
  if (path_.empty() || !f_) return;
  std::fclose(f_);
  std::remove(tmp_.c_str());
}

void OutputStream::write_line(const std::string& line) {
  std::fwrite(line.data(), 1, line.size(), f_);
  std::fputc('\n', f_);
}

void OutputStream::flush() {
  if (std::fflush(f_) != 0 || std::ferror(f_))
    throw IoError(str_cat("writing ", path_.empty() ? "stdout" : "'" + tmp_ + "'", " failed: ", std::strerror(errno)));
}

void OutputStream::commit() {
  flush();
  if (path_.empty()) return;
  const bool synced = ::fsync(fileno(f_)) == 0;
  std::fclose(f_);
  f_ = nullptr;
  if (!synced || std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp_.c_str());
    throw IoError(str_cat("--output '", path_, "': could not be written: ", why));
  }
  const fs::path parent = fs::path(path_).parent_path();
  fsync_directory(parent.empty() ? "." : parent.string(), str_cat("'", path_, "' was written but is not yet durable"));
}

BatchProgress::BatchProgress(std::string command) : command_(std::move(command)), enabled_(::isatty(STDERR_FILENO)) {}

void BatchProgress::update(int64_t done, double fraction) {
  if (!enabled_) return;
  winsize w{};
  const size_t width = ::ioctl(STDERR_FILENO, TIOCGWINSZ, &w) == 0 && w.ws_col > 0 ? w.ws_col : 80;
  std::string line = str_cat(command_, ": ", done, " texts, ", int(fraction * 100 + 0.5), "%");
  if (line.size() >= width) line.resize(width - 1);  // one row, so \r redraws it in place
  std::fprintf(stderr, "\r%s\x1b[K", line.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void BatchProgress::finish() {
  if (drawn_) std::fputs("\r\x1b[K", stderr);
  drawn_ = false;
}

std::string json_line(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace lf::cli
