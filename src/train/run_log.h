// What a training run reports while it runs: a JSONL metrics log (one JSON object per line, each line
// on disk before write() returns, so a killed run keeps everything it logged), a progress display for
// the terminal (one updating line) or for logs (plain lines), and the process's peak memory.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

namespace lf {

class JsonlLog {
 public:
  JsonlLog() = default;
  JsonlLog(const std::string& path, bool append) { open(path, append); }
  ~JsonlLog() { close(); }
  JsonlLog(const JsonlLog&) = delete;
  JsonlLog& operator=(const JsonlLog&) = delete;
  JsonlLog(JsonlLog&& other) noexcept;
  JsonlLog& operator=(JsonlLog&& other) noexcept;

  // Opens (creating) the file; append = false truncates it. Appending to a file whose last line was
  // cut short (a killed run) first drops that partial line, so every line stays parseable. Throws
  // lf::IoError naming the path when the file cannot be opened or repaired.
  void open(const std::string& path, bool append);
  // Writes record.dump() and a newline with one write(2) call. record must be a JSON object
  // (lf::InvalidArgument otherwise, or when the log is not open); NaN/inf numbers are written as null
  // and invalid UTF-8 is replaced. lf::IoError when the write fails (full disk, ...).
  void write(const nlohmann::json& record);
  void close();
  bool is_open() const { return fd_ >= 0; }
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

// Makes a run's log fit a run resumed at `step`: drops a partial last line (a run killed mid-write)
// and every record from the first one of a later step ("step", or "steps" for a summary) on: those
// steps ran after the checkpoint resumed from and will be logged again. The log then reads as if the
// run had never been interrupted. One truncation, so a crash leaves the log before or after it.
// A missing file is left missing; lf::IoError when the file cannot be read or truncated.
void rewind_jsonl_log(const std::string& path, int64_t step);

// What one progress line shows; format_progress lays it out.
struct ProgressFields {
  int64_t step = 0, total = 1;
  double loss = 0;            // the mean loss over `loss_steps` steps
  int64_t loss_steps = 0;     // 0: no loss yet
  double tokens_per_s = 0;
  double eta_s = -1;          // < 0: not known yet
};

// The progress line in at most `width` - 1 columns (the last column is left free: writing it makes
// some terminals wrap, and every redraw would add a line). It drops detail as the width shrinks: the
// bar narrows (24 down to 10 cells) then goes, the loss's "(mean of N steps)" becomes "mean loss",
// then tokens/s and the ETA go, and a line still too long is cut. width <= 0: no limit, no bar
// (the plain lines of a log file).
std::string format_progress(const ProgressFields& f, int width);

// The terminal's width in columns: ioctl(TIOCGWINSZ) on `fd`, else $COLUMNS, else 80.
int terminal_width(int fd);

// Training progress. On a terminal: one line redrawn with '\r' (at most ~10 times a second, and always
// for the last step) fitted to the terminal's width (read at each redraw, so a resize is followed),
// showing a bar, step/total, the loss, tokens/s and the ETA as h:mm:ss. Elsewhere (a log file, a pipe):
// a plain line every `print_every` steps and at the last step. The loss shown is what the run's
// log.jsonl records: the mean over the steps since the last multiple of `print_every` (the trainer's
// log_every), the last complete window once there is one, labelled as a mean.
class Progress {
 public:
  enum class Mode { Auto, Terminal, Plain };  // Auto: Terminal when isatty(fileno(sink))

  // sink null: stderr. The sink is not closed. width > 0 fixes the terminal width (tests); 0 reads it.
  explicit Progress(int64_t print_every = 100, FILE* sink = nullptr, Mode mode = Mode::Auto, int width = 0);
  ~Progress() { finish(); }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // `step` steps of `total` are done (1-based: the first call after the first step passes 1). The
  // ETA comes from the wall time since the first update. Throws lf::InvalidArgument for total < 1 or
  // step < 0.
  void update(int64_t step, int64_t total, double loss, double tokens_per_s);
  // A full line (e.g. an evaluation result); on a terminal the bar is cleared, the line printed and
  // the bar drawn again beneath it.
  void message(const std::string& line);
  // Shows the latest update if it was not shown (throttled, or between print_every steps) and ends the
  // bar's line on a terminal. Idempotent; later updates start a new line. Called by the destructor.
  void finish();
  bool terminal() const { return terminal_; }

 private:
  std::string status_line(int width) const;
  void draw();

  FILE* sink_;
  int64_t print_every_;
  bool terminal_;
  bool bar_shown_ = false;  // a bar line is on screen without its newline
  size_t shown_len_ = 0;    // its length, to blank out leftovers of a longer previous line
  int width_;
  int64_t step_ = 0, total_ = 0;
  double tokens_per_s_ = 0;
  double window_sum_ = 0;       // losses since the last logged window
  int64_t window_steps_ = 0;
  double shown_loss_ = 0;       // the mean shown: the last complete window's, or the running one before
  int64_t shown_loss_steps_ = 0;
  bool window_logged_ = false;  // a window has ended (and the log holds its mean)
  bool dirty_ = false;  // the latest update has not been shown
  bool started_ = false;
  int64_t first_step_ = 0;
  std::chrono::steady_clock::time_point first_time_, last_draw_;
};

// Seconds as h:mm:ss ("0:00:07", "27:46:40"); "-:--:--" for a value that is negative, not finite or
// beyond a billion seconds (an ETA that is not known yet).
std::string format_hms(double seconds);

// A memory line of /proc/self/status ("VmHWM:   123 kB") in bytes, by its key ("VmHWM", "VmRSS");
// -1 when there is no such line (no /proc, or a malformed one).
int64_t proc_status_bytes(const std::string& key);

// The process's peak resident set size (VmHWM in /proc/self/status), in bytes; 0 when unavailable.
int64_t peak_rss_bytes();

// Bytes in binary units: "512 B", "1.5 KiB", "12.0 MiB", "3.2 GiB", "1.0 TiB".
std::string human_bytes(int64_t bytes);

}  // namespace lf
