// JSONL metrics log, progress display and memory reporting; see run_log.h.
#include "train/run_log.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <utility>
#include <vector>

#include "linformer/error.h"

namespace lf {

namespace {

std::string sys_error(int err) { return std::strerror(err); }

// All of `data`, retrying short writes and EINTR; false with errno set on failure.
bool write_all(int fd, const char* data, size_t size) {
  size_t done = 0;
  while (done < size) {
    const ssize_t w = ::write(fd, data + done, size - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return false;
    done += size_t(w);
  }
  return true;
}

// The offset just past the last '\n' among the file's first `size` bytes (0 when none), reading
// backwards in blocks; -1 with errno set on a read error.
int64_t complete_lines_end(int fd, int64_t size) {
  char buf[4096];
  for (int64_t end = size; end > 0;) {
    const int64_t begin = std::max<int64_t>(0, end - int64_t(sizeof buf));
    const ssize_t got = ::pread(fd, buf, size_t(end - begin), begin);
    if (got != end - begin) {
      if (got >= 0) errno = EIO;
      return -1;
    }
    for (int64_t i = end - begin - 1; i >= 0; --i)
      if (buf[i] == '\n') return begin + i + 1;
    end = begin;
  }
  return 0;
}

std::string fmt(const char* format, double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, x);
  return buf;
}

// 950, 12.3k, 1.25M: a rate at a glance.
std::string human_count(double x) {
  if (!std::isfinite(x)) return "?";
  if (x < 1e3) return fmt("%.0f", x);
  if (x < 1e6) return fmt("%.1fk", x / 1e3);
  if (x < 1e9) return fmt("%.2fM", x / 1e6);
  return fmt("%.2fG", x / 1e9);
}

}  // namespace

// --- JsonlLog -------------------------------------------------------------------------------------

JsonlLog::JsonlLog(JsonlLog&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)) {}

JsonlLog& JsonlLog::operator=(JsonlLog&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
  }
  return *this;
}

void JsonlLog::open(const std::string& path, bool append) {
  close();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0644);
  if (fd < 0)
    throw IoError(str_cat("cannot open log file '", path, "': ", sys_error(errno),
                          " (does its directory exist and is it writable?)"));
  // A run killed in the middle of a line (or a full disk) may have left a partial last line: drop it
  // so that the next record is not glued to it and every line parses.
  if (append) {
    const int64_t size = ::lseek(fd, 0, SEEK_END);
    const int64_t keep = size > 0 ? complete_lines_end(fd, size) : 0;
    if (size < 0 || keep < 0 || (keep < size && ::ftruncate(fd, keep) != 0)) {
      const int e = errno;
      ::close(fd);
      throw IoError(str_cat("cannot repair the end of log file '", path, "': ", sys_error(e)));
    }
  }
  fd_ = fd;
  path_ = path;
}

void JsonlLog::write(const nlohmann::json& record) {
  LF_REQUIRE(is_open(), "JsonlLog::write: the log is not open (call open(path, append) first)");
  LF_REQUIRE(record.is_object(), "JsonlLog::write: a record must be a JSON object, got ", record.type_name());
  // One write(2) per line: the kernel has the whole line when this returns, so a killed process
  // loses nothing it logged, and there is no user-space buffer to flush.
  const std::string line = record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  if (!write_all(fd_, line.data(), line.size()))
    throw IoError(str_cat("cannot write to log file '", path_, "': ", sys_error(errno)));
}

void JsonlLog::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void rewind_jsonl_log(const std::string& path, int64_t step) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) return;
  if (fd < 0) throw IoError(str_cat("cannot open log file '", path, "': ", sys_error(errno)));
  auto fail = [&](const char* what) {
    const int e = errno;
    ::close(fd);
    return IoError(str_cat("cannot ", what, " log file '", path, "': ", sys_error(e)));
  };
  std::string text;
  char buf[1 << 16];
  for (ssize_t got; (got = ::read(fd, buf, sizeof buf)) != 0;) {
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw fail("read");
    text.append(buf, size_t(got));
  }
  // Keep whole lines up to the first record of a later step; a line that does not parse (written by
  // an older version after a torn line) is kept as it is.
  size_t keep = 0;
  for (size_t end; (end = text.find('\n', keep)) != std::string::npos; keep = end + 1) {
    const auto record = nlohmann::json::parse(text.begin() + std::ptrdiff_t(keep), text.begin() + std::ptrdiff_t(end),
                                              nullptr, /*allow_exceptions=*/false);
    if (!record.is_object()) continue;
    const auto at = record.contains("step") ? record.find("step") : record.find("steps");
    if (at != record.end() && at->is_number_integer() && at->get<int64_t>() > step) break;
  }
  if (keep < text.size()) {
    if (::ftruncate(fd, off_t(keep)) != 0 || ::fsync(fd) != 0) throw fail("truncate");
  }
  ::close(fd);
}

// --- Progress -------------------------------------------------------------------------------------

std::string format_progress(const ProgressFields& f, int width) {
  const double frac = std::clamp(double(f.step) / double(std::max<int64_t>(f.total, 1)), 0.0, 1.0);
  const std::string counts = str_cat("step ", f.step, "/", f.total, " (", fmt("%.0f", 100 * frac), "%)");
  std::string loss_full = "loss -", loss_short = "loss -";
  if (f.loss_steps > 0) {
    const std::string x = fmt("%.4f", f.loss);
    loss_full = str_cat("loss ", x, " (mean of ", f.loss_steps, f.loss_steps == 1 ? " step)" : " steps)");
    loss_short = "mean loss " + x;
  }
  const std::string rate = human_count(f.tokens_per_s) + " tok/s", eta = "eta " + format_hms(f.eta_s);
  auto text = [&](const std::string& loss, bool with_rate, bool with_eta) {
    std::string t = counts + " | " + loss;
    if (with_rate) t += " | " + rate;
    if (with_eta) t += " | " + eta;
    return t;
  };
  if (width <= 0) return text(loss_full, true, true);
  const size_t room = size_t(std::max(width - 1, 1));
  auto bar = [&](size_t cells) {
    const size_t filled = std::min(cells, size_t(std::clamp(frac, 0.0, 1.0) * double(cells)));
    std::string b = "[";
    b.append(filled, '#');
    b.append(cells - filled, '.');
    return b += "] ";
  };
  constexpr size_t kBarMax = 24, kBarMin = 10, kBarFrame = 3;  // "[", "] "
  const std::string full = text(loss_full, true, true);
  if (full.size() + kBarFrame + kBarMin <= room)
    return bar(std::min(kBarMax, room - full.size() - kBarFrame)) + full;
  // Without the bar, from the most to the least detail; the first that fits.
  for (const std::string& t : {full, text(loss_short, true, true), text(loss_short, false, true),
                               text(loss_short, false, false)})
    if (t.size() <= room) return t;
  return text(loss_short, false, false).substr(0, room);
}

int terminal_width(int fd) {
  winsize ws{};
  if (::ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  if (const char* c = std::getenv("COLUMNS")) {
    char* end = nullptr;
    const long v = std::strtol(c, &end, 10);
    if (end != c && *end == '\0' && v > 0 && v < 100000) return int(v);
  }
  return 80;
}

Progress::Progress(int64_t print_every, FILE* sink, Mode mode, int width)
    : sink_(sink ? sink : stderr), print_every_(print_every), width_(width) {
  LF_REQUIRE(print_every >= 1, "Progress: print_every must be >= 1, got ", print_every);
  terminal_ = mode == Mode::Terminal || (mode == Mode::Auto && ::isatty(::fileno(sink_)));
}

std::string Progress::status_line(int width) const {
  ProgressFields f;
  f.step = step_;
  f.total = total_;
  f.loss = shown_loss_;
  f.loss_steps = shown_loss_steps_;
  f.tokens_per_s = tokens_per_s_;
  if (step_ >= total_) {
    f.eta_s = 0;
  } else if (started_ && step_ > first_step_) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - first_time_).count();
    if (elapsed > 0) f.eta_s = double(total_ - step_) * elapsed / double(step_ - first_step_);
  }
  return format_progress(f, width);
}

void Progress::draw() {
  const int width = width_ > 0 ? width_ : terminal_width(::fileno(sink_));
  const std::string line = status_line(width);
  // Spaces blank out the tail of a longer previous line (no terminal escape codes needed), never past
  // the width the line was fitted to.
  const size_t target = std::min(shown_len_, size_t(std::max(width - 1, 1)));
  const std::string pad(target > line.size() ? target - line.size() : 0, ' ');
  std::fputs(("\r" + line + pad).c_str(), sink_);
  std::fflush(sink_);
  shown_len_ = line.size();
  bar_shown_ = true;
  dirty_ = false;
  last_draw_ = std::chrono::steady_clock::now();
}

void Progress::update(int64_t step, int64_t total, double loss, double tokens_per_s) {
  LF_REQUIRE(total >= 1, "Progress::update: total must be >= 1, got ", total);
  LF_REQUIRE(step >= 0, "Progress::update: step must be >= 0, got ", step);
  const auto now = std::chrono::steady_clock::now();
  if (!started_) {
    started_ = true;
    first_step_ = step;
    first_time_ = now;
  }
  step_ = step;
  total_ = total;
  tokens_per_s_ = tokens_per_s;
  // The same windows as the trainer's log records: they end at multiples of print_every and at the end.
  // Until the first window ends, its running mean stands in.
  window_sum_ += loss;
  ++window_steps_;
  const bool window_ends = step % print_every_ == 0 || step >= total;
  if (window_ends || !window_logged_) {
    shown_loss_ = window_sum_ / double(window_steps_);
    shown_loss_steps_ = window_steps_;
  }
  if (window_ends) {
    window_logged_ = true;
    window_sum_ = 0;
    window_steps_ = 0;
  }
  dirty_ = true;
  if (terminal_) {
    // Redrawing every step of a fast run would spend its time in the terminal.
    if (!bar_shown_ || step >= total || now - last_draw_ >= std::chrono::milliseconds(100)) draw();
  } else if (step % print_every_ == 0 || step >= total) {
    std::fputs((status_line(0) + "\n").c_str(), sink_);
    std::fflush(sink_);
    dirty_ = false;
  }
}

void Progress::message(const std::string& line) {
  if (terminal_ && bar_shown_) {
    std::string out = "\r";
    out.append(shown_len_, ' ').append("\r").append(line) += '\n';
    std::fputs(out.c_str(), sink_);
    shown_len_ = 0;
    draw();
  } else {
    std::fputs((line + "\n").c_str(), sink_);
    std::fflush(sink_);
  }
}

void Progress::finish() {
  if (dirty_) {
    if (terminal_) {
      draw();
    } else {
      std::fputs((status_line(0) + "\n").c_str(), sink_);
      dirty_ = false;
    }
  }
  if (terminal_ && bar_shown_) std::fputs("\n", sink_);
  bar_shown_ = false;
  shown_len_ = 0;
  std::fflush(sink_);
}

// --- helpers --------------------------------------------------------------------------------------

std::string format_hms(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0 || seconds > 1e9) return "-:--:--";
  const long long s = std::llround(seconds);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
  return buf;
}

int64_t proc_status_bytes(const std::string& key) {
  std::ifstream in("/proc/self/status");
  const std::string prefix = key + ":";
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(prefix, 0) != 0) continue;
    long long kb = 0;
    char unit[8] = {};
    if (std::sscanf(line.c_str() + prefix.size(), "%lld %7s", &kb, unit) == 2 && std::strcmp(unit, "kB") == 0 &&
        kb >= 0)
      return int64_t(kb) * 1024;
    return -1;
  }
  return -1;
}

int64_t peak_rss_bytes() { return std::max<int64_t>(proc_status_bytes("VmHWM"), 0); }

std::string human_bytes(int64_t bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  const char* sign = bytes < 0 ? "-" : "";
  double x = std::abs(double(bytes));  // via double: INT64_MIN has no positive int64
  if (x < 1024) return str_cat(sign, static_cast<long long>(x), " B");
  int u = 0;
  // 1023.95 and up would print as "1024.0": move to the next unit instead.
  while (x >= 1023.95 && u < 6) x /= 1024, ++u;
  char buf[48];
  std::snprintf(buf, sizeof buf, "%s%.1f %s", sign, x, kUnits[u]);
  return buf;
}

}  // namespace lf
