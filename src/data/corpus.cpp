// Corpus reading (plain or gzip through zlib) and contiguous splitting. See corpus.h.
#include "linformer/corpus.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>

#include "linformer/error.h"

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

// Inflates gzip data pulled from `read_in` (same contract as read_chunks' `read`) into `out`, up to
// `limit` bytes; returns whether the input ended. Several concatenated members are read as one
// stream and bytes after the last member that do not start another are ignored, as gzip -d and
// zlib's gzread do. Corrupt data, a failed CRC or an input that ends inside a member are errors.
template <class ReadIn>
bool inflate_gzip(std::vector<uint8_t>& out, uint64_t limit, ReadIn read_in, const std::string& source) {
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) fail(source, "cannot start zlib: out of memory");
  std::vector<uint8_t> in(kChunk);
  bool in_ended = false;
  // At least `min` unread input bytes in `in` unless the input ended first.
  auto fill = [&](size_t min) {
    while (zs.avail_in < min && !in_ended) {
      std::memmove(in.data(), zs.next_in, zs.avail_in);  // keep the unread bytes at the front
      const size_t got = read_in(in.data() + zs.avail_in, in.size() - zs.avail_in);
      if (got == 0) in_ended = true;
      zs.next_in = in.data();
      zs.avail_in += uInt(got);
    }
  };
  zs.next_in = in.data();
  try {
    for (;;) {
      fill(1);
      const uint64_t left = limit - out.size();
      if (left == 0) {
        inflateEnd(&zs);
        return false;
      }
      const size_t want = size_t(std::min<uint64_t>(left, kChunk));
      const size_t old = out.size();
      out.resize(old + want);
      zs.next_out = out.data() + old;
      zs.avail_out = uInt(want);
      const uInt avail_before = zs.avail_in;
      const int r = inflate(&zs, Z_NO_FLUSH);
      out.resize(old + want - zs.avail_out);
      if (r == Z_STREAM_END) {
        fill(2);  // another member follows only if the gzip magic does
        if (zs.avail_in < 2 || zs.next_in[0] != 0x1f || zs.next_in[1] != 0x8b) break;
        inflateReset(&zs);
        continue;
      }
      if (r == Z_MEM_ERROR) fail(source, "zlib ran out of memory");
      if (r == Z_DATA_ERROR || r == Z_NEED_DICT || r == Z_STREAM_ERROR)
        fail(source, str_cat("corrupt gzip data (zlib: ", zs.msg ? zs.msg : "invalid data",
                             "); the file is damaged: download or compress it again"));
      // Z_OK or Z_BUF_ERROR: no input left and no output made means the input ended inside a member.
      if (in_ended && avail_before == 0 && zs.avail_out == uInt(want))
        fail(source, str_cat("truncated gzip file (zlib: unexpected end of file) after ", out.size(),
                             " decompressed bytes; download or compress it again"));
    }
  } catch (...) {
    inflateEnd(&zs);
    throw;
  }
  inflateEnd(&zs);
  return true;
}

// `what` (a file's bytes, or their decompression) must end within `cap` bytes, the corpus being held
// in memory: this bounds a gzip bomb.
void check_cap(bool ended, uint64_t cap, uint64_t limit, bool gzip, const std::string& source) {
  if (ended || limit < cap) return;
  fail(source, str_cat(gzip ? "decompresses to" : "holds", " more than ", cap,
                       " bytes, the most a corpus may hold in memory; read a prefix with `max_bytes`"));
}

uint64_t limit_for(int64_t max_bytes, uint64_t cap) {
  LF_REQUIRE(max_bytes >= 0, "max_bytes is ", max_bytes, "; give 0 to read the whole file or a positive limit");
  return max_bytes == 0 ? cap : std::min<uint64_t>(uint64_t(max_bytes), cap);
}

void require_bytes(const std::vector<uint8_t>& out, bool gzip, const std::string& source) {
  if (out.empty())
    fail(source, gzip ? "decompresses to no bytes; give a non-empty corpus" : "is empty; give a non-empty corpus");
}

// read_file_bytes, also telling whether the file was gzip.
std::vector<uint8_t> read_any(const std::string& path, int64_t max_bytes, bool* gzip) {
  const uint64_t cap = default_corpus_cap();
  const uint64_t limit = limit_for(max_bytes, cap);
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail(path, "is a directory; give the path of a file");

  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail(path, str_cat("cannot open: ", std::strerror(errno)));
  unsigned char magic[2] = {0, 0};
  const size_t nmagic = std::fread(magic, 1, 2, f);
  *gzip = nmagic == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
  std::rewind(f);
  auto read = [&](uint8_t* dst, size_t n) -> size_t {
    const size_t r = std::fread(dst, 1, n, f);
    if (r < n && std::ferror(f)) fail(path, str_cat("read error: ", std::strerror(errno)));
    return r;
  };
  std::vector<uint8_t> out;
  bool ended = false;
  try {
    ended = *gzip ? inflate_gzip(out, limit, read, path) : read_chunks(out, limit, read);
  } catch (...) {
    std::fclose(f);
    throw;
  }
  std::fclose(f);
  check_cap(ended, cap, limit, *gzip, path);
  require_bytes(out, *gzip, path);
  return out;
}

void check_fractions(const SplitFractions& fractions) {
  LF_REQUIRE(fractions.valid >= 0 && fractions.valid < 0.5, "valid fraction ", fractions.valid,
             " is outside [0, 0.5); use e.g. 0.01");
  LF_REQUIRE(fractions.test >= 0 && fractions.test < 0.5, "test fraction ", fractions.test,
             " is outside [0, 0.5); use e.g. 0.01");
}

}  // namespace

uint64_t default_corpus_cap() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return uint64_t(1) << 34;  // 16 GiB when the memory size is unknown
  return uint64_t(pages) * uint64_t(page) / 2;
}

std::vector<uint8_t> decode_corpus_bytes(std::span<const uint8_t> bytes, int64_t max_bytes, const std::string& source,
                                         uint64_t cap) {
  const uint64_t limit = limit_for(max_bytes, cap);
  const bool gzip = bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b;
  size_t pos = 0;
  auto read = [&](uint8_t* dst, size_t n) -> size_t {
    const size_t k = std::min(n, bytes.size() - pos);
    if (k) std::memcpy(dst, bytes.data() + pos, k);
    pos += k;
    return k;
  };
  std::vector<uint8_t> out;
  const bool ended = gzip ? inflate_gzip(out, limit, read, source) : read_chunks(out, limit, read);
  check_cap(ended, cap, limit, gzip, source);
  require_bytes(out, gzip, source);
  return out;
}

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
