// Run logging: JSONL lines parse back (also while the log is still open, and after appending to a
// file cut mid-line), the log cut back for a resumed run, the progress display in plain and terminal modes (written to a temporary file),
// the h:mm:ss and byte formatting, and the peak-RSS reading.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "linformer/error.h"
#include "test_util.h"
#include "train/run_log.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace lf {
namespace {

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string contents(FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) s.append(buf, n);
  return s;
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> lines;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

bool has(const std::string& s, const std::string& frag) { return s.find(frag) != std::string::npos; }

class RunLog : public test::TempDirTest {
 protected:
  RunLog() : TempDirTest("lf_run_log") {}
};

TEST_F(RunLog, JsonlLinesParseBackAndAreOnDiskAtOnce) {
  const std::string p = path("metrics.jsonl");
  JsonlLog log(p, /*append=*/false);
  ASSERT_TRUE(log.is_open());
  EXPECT_EQ(log.path(), p);
  log.write({{"step", 1}, {"loss", 2.5}, {"split", "train"}});
  // Read while the log is still open: a killed run keeps every line written so far.
  ASSERT_EQ(read_lines(p).size(), 1u);
  log.write({{"step", 2}, {"loss", std::numeric_limits<double>::quiet_NaN()}, {"text", "line\nbreak"}});
  const std::vector<std::string> lines = read_lines(p);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(json::parse(lines[0]), (json{{"step", 1}, {"loss", 2.5}, {"split", "train"}}));
  const json second = json::parse(lines[1]);
  EXPECT_EQ(second["step"], 2);
  EXPECT_TRUE(second["loss"].is_null()) << "NaN must be written as null";
  EXPECT_EQ(second["text"], "line\nbreak");
}

TEST_F(RunLog, JsonlAppendTruncateAndCutLines) {
  const std::string p = path("metrics.jsonl");
  {
    JsonlLog log(p, false);
    log.write({{"step", 1}});
  }
  {
    JsonlLog log;
    log.open(p, /*append=*/true);
    log.write({{"step", 2}});
  }
  EXPECT_EQ(read_lines(p).size(), 2u);
  // A run killed mid-line: the partial line is dropped, every line parses.
  std::ofstream(p, std::ios::app) << "{\"step\": 3, \"lo";
  {
    JsonlLog log(p, true);
    log.write({{"step", 4}});
  }
  const std::vector<std::string> lines = read_lines(p);
  ASSERT_EQ(lines.size(), 3u);
  for (const std::string& line : lines) EXPECT_NO_THROW(json::parse(line)) << line;
  EXPECT_EQ(json::parse(lines[2]), (json{{"step", 4}}));
  // A file that is one partial line (killed during its first write) becomes empty.
  std::ofstream(path("torn.jsonl")) << "{\"st";
  JsonlLog(path("torn.jsonl"), true).write({{"step", 1}});
  EXPECT_EQ(read_lines(path("torn.jsonl")), std::vector<std::string>{"{\"step\":1}"});
  {
    JsonlLog log(p, false);
    log.write({{"step", 0}});
  }
  EXPECT_EQ(read_lines(p).size(), 1u) << "append = false must truncate";
}

// A run killed after logging steps its last checkpoint does not hold: resuming from step 3 cuts the
// log back to what an uninterrupted run had logged by then.
TEST_F(RunLog, RewindForResume) {
  const std::string p = path("log.jsonl");
  const std::string head =
      "{\"type\":\"train\",\"step\":1}\n{\"type\":\"train\",\"step\":2}\nnot json (an old torn line)\n"
      "{\"type\":\"train\",\"step\":3}\n{\"type\":\"eval\",\"step\":3}\n";
  std::ofstream(p) << head << "{\"type\":\"train\",\"step\":4}\n{\"type\":\"eval\",\"step\":3}\n{\"type\":\"tr";
  rewind_jsonl_log(p, 3);
  EXPECT_EQ(read_lines(p), split_lines(head)) << "records from the first later step on are dropped";
  rewind_jsonl_log(p, 3);
  EXPECT_EQ(read_lines(p), split_lines(head)) << "idempotent";
  // Only the torn tail goes when nothing is ahead of the step; a summary counts by its "steps".
  std::ofstream(p, std::ios::app) << "{\"type\":\"summary\",\"steps\":3}\n{\"type\":\"tra";
  rewind_jsonl_log(p, 3);
  EXPECT_EQ(read_lines(p).size(), 6u);
  EXPECT_EQ(json::parse(read_lines(p).back())["steps"], 3);
  rewind_jsonl_log(p, 2);
  EXPECT_EQ(read_lines(p).size(), 3u);
  rewind_jsonl_log(p, 0);
  EXPECT_TRUE(read_lines(p).empty());
  EXPECT_NO_THROW(rewind_jsonl_log(path("missing.jsonl"), 5));
  EXPECT_FALSE(fs::exists(path("missing.jsonl")));
}

TEST_F(RunLog, JsonlErrors) {
  JsonlLog log;
  EXPECT_THROW(log.write({{"a", 1}}), InvalidArgument);
  try {
    log.open(path("missing/metrics.jsonl"), true);
    ADD_FAILURE() << "opening in a missing directory must throw";
  } catch (const IoError& e) {
    EXPECT_TRUE(has(e.what(), "missing/metrics.jsonl")) << e.what();
  }
  log.open(path("m.jsonl"), true);
  EXPECT_THROW(log.write(json::array({1, 2})), InvalidArgument);
  EXPECT_THROW(log.write(json(3)), InvalidArgument);
  JsonlLog moved = std::move(log);
  EXPECT_FALSE(log.is_open());
  moved.write({{"ok", true}});
  EXPECT_EQ(read_lines(path("m.jsonl")).size(), 1u);
}

TEST(Progress, PlainLinesEveryPrintEvery) {
  FILE* sink = std::tmpfile();
  ASSERT_NE(sink, nullptr);
  {
    Progress p(10, sink);  // Auto: a regular file is not a terminal
    EXPECT_FALSE(p.terminal());
    for (int64_t step = 1; step <= 25; ++step) {
      p.update(step, 25, 3.0 - 0.1 * double(step), 12345.0);
      if (step == 12) p.message("eval loss 1.2345");
    }
    p.finish();
  }
  const std::string out = contents(sink);
  std::fclose(sink);
  EXPECT_FALSE(has(out, "\r")) << out;
  const std::vector<std::string> lines = split_lines(out);
  ASSERT_EQ(lines.size(), 4u) << out;
  EXPECT_TRUE(has(lines[0], "step 10/25 (40%)")) << lines[0];
  // The mean of the window's losses (3 - 0.1 s for s = 1 … 10), as log.jsonl records it.
  EXPECT_TRUE(has(lines[0], "loss 2.4500 (mean of 10 steps)")) << lines[0];
  EXPECT_TRUE(has(lines[0], "12.3k tok/s")) << lines[0];
  EXPECT_TRUE(has(lines[0], "eta ")) << lines[0];
  EXPECT_EQ(lines[1], "eval loss 1.2345");
  EXPECT_TRUE(has(lines[2], "step 20/25")) << lines[2];
  EXPECT_TRUE(has(lines[2], "loss 1.4500 (mean of 10 steps)")) << lines[2];
  EXPECT_TRUE(has(lines[3], "step 25/25 (100%)")) << lines[3];
  EXPECT_TRUE(has(lines[3], "loss 0.7000 (mean of 5 steps)")) << lines[3];
  EXPECT_TRUE(has(lines[3], "eta 0:00:00")) << lines[3];
}

TEST(Progress, FinishShowsTheLastUnprintedStep) {
  FILE* sink = std::tmpfile();
  ASSERT_NE(sink, nullptr);
  {
    Progress p(10, sink, Progress::Mode::Plain);
    for (int64_t step = 1; step <= 13; ++step) p.update(step, 100, 1.0, 500);
  }  // the destructor finishes
  const std::vector<std::string> lines = split_lines(contents(sink));
  std::fclose(sink);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_TRUE(has(lines[0], "step 10/100")) << lines[0];
  EXPECT_TRUE(has(lines[1], "step 13/100")) << lines[1];
  EXPECT_TRUE(has(lines[1], "500 tok/s")) << lines[1];
}

TEST(Progress, TerminalModeRedrawsOneLine) {
  FILE* sink = std::tmpfile();
  ASSERT_NE(sink, nullptr);
  {
    Progress p(1000, sink, Progress::Mode::Terminal, /*width=*/120);
    EXPECT_TRUE(p.terminal());
    p.update(1, 4, 2.0, 1e6);
    p.message("checkpoint saved");
    p.update(4, 4, 1.0, 2.5e6);
    p.finish();
    p.finish();  // idempotent
  }
  const std::string out = contents(sink);
  std::fclose(sink);
  EXPECT_TRUE(has(out, "\r[######..................] step 1/4 (25%) | loss 2.0000 (mean of 1 step) | 1.00M tok/s"))
      << out;
  EXPECT_TRUE(has(out, "\rcheckpoint saved\n")) << out;
  EXPECT_TRUE(has(out, "\r[########################] step 4/4 (100%) | loss 1.5000 (mean of 2 steps) | 2.50M tok/s | "
                       "eta 0:00:00"))
      << out;
  // Exactly two newlines: the message and the end of the bar.
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 2) << out;
  EXPECT_EQ(out.back(), '\n');
}

// Each width gets a line of at most width - 1 columns that still says what it can.
TEST(Progress, FormatFitsTheWidth) {
  ProgressFields f;
  f.step = 120;
  f.total = 1000;
  f.loss = 2.34567;
  f.loss_steps = 10;
  f.tokens_per_s = 12345;
  f.eta_s = 62;
  const std::string plain = format_progress(f, 0);
  EXPECT_EQ(plain, "step 120/1000 (12%) | loss 2.3457 (mean of 10 steps) | 12.3k tok/s | eta 0:01:02");
  EXPECT_EQ(format_progress(f, 200), "[##......................] " + plain);  // the widest bar: 24 cells
  for (int width = 1; width <= 200; ++width) {
    const std::string line = format_progress(f, width);
    EXPECT_LE(line.size(), size_t(std::max(width - 1, 1))) << width << ": " << line;
    EXPECT_FALSE(line.empty()) << width;
    if (width >= 40) {
      EXPECT_TRUE(has(line, "step 120/1000")) << width << ": " << line;
      EXPECT_TRUE(has(line, "mean") && has(line, "2.3457")) << width << ": " << line;  // labelled as a mean
    }
  }
  // The bar narrows before it goes, then the loss's label shortens, then tokens/s and the ETA go.
  EXPECT_EQ(format_progress(f, 94), "[#.........] " + plain);
  EXPECT_EQ(format_progress(f, 93), plain);
  EXPECT_EQ(format_progress(f, 81), plain);
  EXPECT_EQ(format_progress(f, 80), "step 120/1000 (12%) | mean loss 2.3457 | 12.3k tok/s | eta 0:01:02");
  EXPECT_EQ(format_progress(f, 66), "step 120/1000 (12%) | mean loss 2.3457 | eta 0:01:02");
  EXPECT_EQ(format_progress(f, 52), "step 120/1000 (12%) | mean loss 2.3457");
  f.loss_steps = 0;
  EXPECT_TRUE(has(format_progress(f, 0), "| loss - |")) << format_progress(f, 0);
}

// Below 86 columns (the old fixed line's length), a terminal's redraws stay on one line: no drawn
// line, padding included, reaches the last column.
TEST(Progress, TerminalRedrawsFitANarrowTerminal) {
  FILE* sink = std::tmpfile();
  ASSERT_NE(sink, nullptr);
  {
    Progress p(10, sink, Progress::Mode::Terminal, /*width=*/50);
    for (int64_t step = 1; step <= 30; ++step) p.update(step, 30, 5.0, 1e6);
    p.finish();
  }
  const std::string out = contents(sink);
  std::fclose(sink);
  size_t draws = 0;
  for (size_t at = out.find('\r'); at != std::string::npos; at = out.find('\r', at + 1), ++draws) {
    const size_t end = out.find_first_of("\r\n", at + 1);
    const std::string drawn = out.substr(at + 1, (end == std::string::npos ? out.size() : end) - at - 1);
    EXPECT_LE(drawn.size(), 49u) << drawn;
    EXPECT_TRUE(has(drawn, "mean loss 5.0000")) << drawn;
  }
  EXPECT_GE(draws, 2u);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
}

TEST(Progress, TerminalWidthFromColumnsWhenNotATerminal) {
  FILE* sink = std::tmpfile();
  ASSERT_NE(sink, nullptr);
  const char* old = std::getenv("COLUMNS");
  const std::string saved = old ? old : "";
  setenv("COLUMNS", "63", 1);
  EXPECT_EQ(terminal_width(fileno(sink)), 63);
  setenv("COLUMNS", "wide", 1);
  EXPECT_EQ(terminal_width(fileno(sink)), 80);
  if (old) setenv("COLUMNS", saved.c_str(), 1); else unsetenv("COLUMNS");
  std::fclose(sink);
}

TEST(Progress, RejectsBadArguments) {
  EXPECT_THROW(Progress(0), InvalidArgument);
  FILE* sink = std::tmpfile();
  Progress p(1, sink, Progress::Mode::Plain);
  EXPECT_THROW(p.update(1, 0, 1, 1), InvalidArgument);
  EXPECT_THROW(p.update(-1, 10, 1, 1), InvalidArgument);
  p.finish();
  std::fclose(sink);
}

TEST(RunLogFormat, Hms) {
  EXPECT_EQ(format_hms(0), "0:00:00");
  EXPECT_EQ(format_hms(7.4), "0:00:07");
  EXPECT_EQ(format_hms(59.6), "0:01:00");
  EXPECT_EQ(format_hms(3661), "1:01:01");
  EXPECT_EQ(format_hms(100000), "27:46:40");
  EXPECT_EQ(format_hms(-1), "-:--:--");
  EXPECT_EQ(format_hms(std::numeric_limits<double>::quiet_NaN()), "-:--:--");
  EXPECT_EQ(format_hms(std::numeric_limits<double>::infinity()), "-:--:--");
}

TEST(RunLogFormat, HumanBytes) {
  EXPECT_EQ(human_bytes(0), "0 B");
  EXPECT_EQ(human_bytes(1023), "1023 B");
  EXPECT_EQ(human_bytes(1024), "1.0 KiB");
  EXPECT_EQ(human_bytes(1536), "1.5 KiB");
  EXPECT_EQ(human_bytes(1048575), "1.0 MiB");
  EXPECT_EQ(human_bytes(12 * 1024 * 1024), "12.0 MiB");
  EXPECT_EQ(human_bytes(int64_t(3.25 * 1024 * 1024 * 1024)), "3.2 GiB");
  EXPECT_EQ(human_bytes(int64_t(1) << 40), "1.0 TiB");
  EXPECT_EQ(human_bytes(-2048), "-2.0 KiB");
  EXPECT_EQ(human_bytes(std::numeric_limits<int64_t>::min()), "-8.0 EiB");
}

TEST(RunLogFormat, PeakRssCoversWhatWasTouched) {
  if (!fs::exists("/proc/self/status")) GTEST_SKIP() << "no /proc on this system";
  constexpr size_t kBytes = 64u << 20;
  std::vector<char> block(kBytes, 1);  // touched: resident
  const int64_t peak = peak_rss_bytes();
  EXPECT_GE(peak, int64_t(kBytes)) << human_bytes(peak);
  EXPECT_LT(peak, int64_t(1) << 40);
  EXPECT_EQ(block[kBytes / 2], 1);
}

TEST(RunLogFormat, ProcStatusLinesByKey) {
  if (!fs::exists("/proc/self/status")) GTEST_SKIP() << "no /proc on this system";
  const int64_t rss = proc_status_bytes("VmRSS"), hwm = proc_status_bytes("VmHWM");
  EXPECT_GT(rss, 0);
  EXPECT_GE(hwm, rss);  // the peak is at least what is resident now
  EXPECT_LE(hwm, peak_rss_bytes());  // the peak only grows (under ASan, between the two reads too)
  EXPECT_EQ(proc_status_bytes("VmNoSuchLine"), -1);
  EXPECT_EQ(proc_status_bytes("Name"), -1);  // a line without a kB figure
}

}  // namespace
}  // namespace lf
