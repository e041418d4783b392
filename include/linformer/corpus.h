// A training corpus: one file of bytes, plain or gzip-compressed (dictzip files such as Debian's
// /usr/share/dictd/*.dict.dz are gzip too), held in memory and split contiguously into train, valid
// and test. Contiguous splits (rather than sampled lines) keep the held-out text unseen in any
// window a training crop can reach, except across the two split boundaries.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace lf {

// The bytes of a file, decompressed when it starts with the gzip magic (1f 8b), at most max_bytes of
// them (0 = all). Throws lf::InvalidArgument for max_bytes < 0, and lf::IoError naming the path for a
// missing or unreadable file, a directory, a file with no bytes (after decompression), and corrupt or
// truncated gzip data. When max_bytes stops the read early, the rest of the file is not checked.
std::vector<uint8_t> read_file_bytes(const std::string& path, int64_t max_bytes = 0);

// The most bytes a corpus may hold (after decompression): half the machine's physical memory. A
// larger file, or a gzip bomb, is refused with lf::IoError before memory runs out.
uint64_t default_corpus_cap();

// read_file_bytes on bytes already in memory (the file's contents): decompressed when they start with
// the gzip magic, at most max_bytes of them (0 = all), and no more than `cap` (more is lf::IoError
// unless max_bytes stops the read first). `source` names the bytes in messages.
std::vector<uint8_t> decode_corpus_bytes(std::span<const uint8_t> bytes, int64_t max_bytes, const std::string& source,
                                         uint64_t cap = default_corpus_cap());

enum class Split { Train, Valid, Test };
const char* split_name(Split which);  // "train", "valid", "test"

// Fractions of the corpus held out, each in [0, 0.5). Sizes are rounded to the nearest byte.
struct SplitFractions {
  double valid = 0.01, test = 0.01;
};

class Corpus {
 public:
  // Reads the file with read_file_bytes (same errors) and splits it: train is the beginning, then
  // valid, then test at the end. Throws lf::InvalidArgument for a fraction outside [0, 0.5) and for a
  // corpus too small to give every requested split (non-zero fraction, and train) at least one byte.
  // Whether a split holds enough bytes for one sequence is the caller's check.
  static Corpus load(const std::string& path, int64_t max_bytes = 0, SplitFractions fractions = {});
  // The same on bytes already in memory; `source` names them in messages.
  static Corpus from_bytes(std::vector<uint8_t> bytes, SplitFractions fractions = {},
                           std::string source = "<memory>");

  std::span<const uint8_t> split(Split which) const;
  std::span<const uint8_t> bytes() const { return {bytes_.data(), bytes_.size()}; }  // all splits
  int64_t size() const { return int64_t(bytes_.size()); }
  const std::string& source() const { return source_; }
  bool compressed() const { return compressed_; }  // the file was gzip

 private:
  std::vector<uint8_t> bytes_;
  int64_t valid_begin_ = 0, test_begin_ = 0;  // train = [0, valid_begin_), valid, test = [test_begin_, size)
  std::string source_;
  bool compressed_ = false;
};

// The entropy of the byte-unigram distribution of `bytes`, in bits per byte: the loss (in bits) of the
// best model that ignores context, so the baseline any trained model must beat. Throws
// lf::InvalidArgument for empty input.
double unigram_entropy_bits(std::span<const uint8_t> bytes);

}  // namespace lf
