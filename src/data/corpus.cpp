// Corpus reading (plain or gzip through zlib) and contiguous splitting. See corpus.h.
#include "data/corpus.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>

#include "core/error.h"

namespace lf {

namespace {

constexpr size_t kChunk = size_t(1) << 20;  // bytes per read call

[[noreturn]] void fail(const std::string& path, const std::string& problem) {
  throw IoError(str_cat("data file '", path, "': ", problem));
}

// Appends bytes from `read` (fills a buffer, returns the count, 0 at the end of the input) to `out`
// until the input ends or `out` holds `limit` bytes; returns whether the input ended.
template <class Read>
bool read_chunks(std::vector<uint8_t>& out, uint64_t limit, Read read) {
  for (;;) {
    const uint64_t left = limit - out.size();
    if (left == 0) return false;
    const size_t want = size_t(std::min<uint64_t>(left, kChunk));
    const size_t old = out.size();
    out.resize(old + want);
    const size_t got = read(out.data() + old, want);
    out.resize(old + got);
    if (got == 0) return true;
  }
}

std::vector<uint8_t> read_gzip(const std::string& path, uint64_t limit) {
  errno = 0;  // gzopen fails without setting errno only when it runs out of memory
  gzFile g = gzopen(path.c_str(), "rb");
  if (!g) fail(path, str_cat("cannot open: ", errno ? std::strerror(errno) : "out of memory"));
  gzbuffer(g, 1u << 17);
  std::vector<uint8_t> out;
  bool reached_end = false;
  try {
    reached_end = read_chunks(out, limit, [&](uint8_t* dst, size_t n) -> size_t {
      const int r = gzread(g, dst, unsigned(n));
      if (r < 0) {
        int code = 0;
        const char* msg = gzerror(g, &code);
        if (code == Z_ERRNO) fail(path, str_cat("read error: ", std::strerror(errno)));
        fail(path, str_cat("corrupt gzip data (zlib: ", msg, "); the file is damaged: download or compress it again"));
      }
      return size_t(r);
    });
    // zlib returns the data it has when the input stops mid-stream and flags Z_BUF_ERROR: a truncated
    // download would otherwise pass for a shorter corpus.
    int code = Z_OK;
    const char* msg = gzerror(g, &code);
    if (reached_end && code == Z_BUF_ERROR)
      fail(path, str_cat("truncated gzip file (zlib: ", msg, ") after ", out.size(),
                         " decompressed bytes; download or compress it again"));
  } catch (...) {
    gzclose(g);
    throw;
  }
  gzclose(g);
  return out;
}

// read_file_bytes, also telling whether the file was gzip.
std::vector<uint8_t> read_any(const std::string& path, int64_t max_bytes, bool* gzip) {
  LF_REQUIRE(max_bytes >= 0, "max_bytes is ", max_bytes, "; give 0 to read the whole file or a positive limit");
  const uint64_t limit = max_bytes == 0 ? UINT64_MAX : uint64_t(max_bytes);
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail(path, "is a directory; give the path of a file");

  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail(path, str_cat("cannot open: ", std::strerror(errno)));
  unsigned char magic[2] = {0, 0};
  const size_t nmagic = std::fread(magic, 1, 2, f);
  *gzip = nmagic == 2 && magic[0] == 0x1f && magic[1] == 0x8b;

  std::vector<uint8_t> out;
  if (*gzip) {
    std::fclose(f);
    out = read_gzip(path, limit);
  } else {
    std::rewind(f);
    read_chunks(out, limit, [&](uint8_t* dst, size_t n) -> size_t {
      const size_t r = std::fread(dst, 1, n, f);
      if (r < n && std::ferror(f)) {
        const int e = errno;
        std::fclose(f);
        fail(path, str_cat("read error: ", std::strerror(e)));
      }
      return r;
    });
    std::fclose(f);
  }
  if (out.empty())
    fail(path, *gzip ? "decompresses to no bytes; give a non-empty corpus" : "is empty; give a non-empty corpus");
  return out;
}

void check_fractions(const SplitFractions& fractions) {
  LF_REQUIRE(fractions.valid >= 0 && fractions.valid < 0.5, "valid fraction ", fractions.valid,
             " is outside [0, 0.5); use e.g. 0.01");
  LF_REQUIRE(fractions.test >= 0 && fractions.test < 0.5, "test fraction ", fractions.test,
             " is outside [0, 0.5); use e.g. 0.01");
}

}  // namespace

std::vector<uint8_t> read_file_bytes(const std::string& path, int64_t max_bytes) {
  bool gzip = false;
  return read_any(path, max_bytes, &gzip);
}

const char* split_name(Split which) {
  switch (which) {
    case Split::Train: return "train";
    case Split::Valid: return "valid";
    case Split::Test: return "test";
  }
  return "?";
}

Corpus Corpus::load(const std::string& path, int64_t max_bytes, SplitFractions fractions) {
  check_fractions(fractions);  // before reading a possibly large file
  bool gzip = false;
  std::vector<uint8_t> bytes = read_any(path, max_bytes, &gzip);
  Corpus c = from_bytes(std::move(bytes), fractions, path);
  c.compressed_ = gzip;
  return c;
}

Corpus Corpus::from_bytes(std::vector<uint8_t> bytes, SplitFractions fractions, std::string source) {
  check_fractions(fractions);
  const int64_t size = int64_t(bytes.size());
  const int64_t valid = std::llround(double(size) * fractions.valid);
  const int64_t test = std::llround(double(size) * fractions.test);
  const int64_t train = size - valid - test;
  LF_REQUIRE(fractions.valid == 0 || valid > 0, "corpus '", source, "' has ", size, " bytes: a valid fraction of ",
             fractions.valid, " leaves the valid split empty; use a larger corpus or fraction");
  LF_REQUIRE(fractions.test == 0 || test > 0, "corpus '", source, "' has ", size, " bytes: a test fraction of ",
             fractions.test, " leaves the test split empty; use a larger corpus or fraction");
  LF_REQUIRE(train > 0, "corpus '", source, "' has ", size, " bytes: nothing is left for training after the ",
             valid, " valid and ", test, " test bytes; use a larger corpus");
  Corpus c;
  c.bytes_ = std::move(bytes);
  c.valid_begin_ = train;
  c.test_begin_ = train + valid;
  c.source_ = std::move(source);
  return c;
}

std::span<const uint8_t> Corpus::split(Split which) const {
  const uint8_t* p = bytes_.data();
  switch (which) {
    case Split::Train: return {p, size_t(valid_begin_)};
    case Split::Valid: return {p + valid_begin_, size_t(test_begin_ - valid_begin_)};
    case Split::Test: return {p + test_begin_, bytes_.size() - size_t(test_begin_)};
  }
  return {};
}

double unigram_entropy_bits(std::span<const uint8_t> bytes) {
  LF_REQUIRE(!bytes.empty(), "cannot compute the byte entropy of no data; the split is empty");
  int64_t counts[256] = {};
  for (uint8_t b : bytes) ++counts[b];
  const double total = double(bytes.size());
  double h = 0;
  for (int64_t c : counts)
    if (c > 0) {
      const double p = double(c) / total;
      h -= p * std::log2(p);
    }
  return h;
}

}  // namespace lf
