// Corpus reading and splitting: gzip and plain files give the same bytes, Debian's dictzip
// dictionary loads, every broken file (missing, directory, empty, corrupt or truncated gzip) is an
// lf::IoError naming the path, splits are contiguous with the sizes asked for, and the unigram
// entropy matches closed forms.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "linformer/corpus.h"
#include "linformer/error.h"
#include "linformer/rng.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace lf {
namespace {

constexpr const char* kGcide = "/usr/share/dictd/gcide.dict.dz";

// Text-like bytes with a skewed distribution (so gzip compresses it and its entropy is not 8 bits).
std::vector<uint8_t> sample_text(int64_t n, uint64_t seed) {
  const std::string alphabet = "eeeeettttaaoinshrdlu  \n\t.,;ABCxyz\x01\xff";
  std::vector<uint8_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    v[size_t(i)] = uint8_t(alphabet[size_t(uniform01(seed, 1, uint64_t(i)) * float(alphabet.size()))]);
  return v;
}

class CorpusFiles : public test::TempDirTest {
 protected:
  CorpusFiles() : TempDirTest("lf_corpus") {}

  std::string write_plain(const std::string& name, const std::vector<uint8_t>& bytes) {
    const std::string p = path(name);
    std::ofstream f(p, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    return p;
  }
  std::string write_gzip(const std::string& name, const std::vector<uint8_t>& bytes) {
    const std::string p = path(name);
    gzFile g = gzopen(p.c_str(), "wb9");
    EXPECT_NE(g, nullptr);
    if (!bytes.empty()) {
      EXPECT_EQ(gzwrite(g, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
    }
    EXPECT_EQ(gzclose(g), Z_OK);
    return p;
  }
  static std::vector<uint8_t> file_bytes(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
  }

  // Loading `file` must throw lf::IoError whose message names the file and contains `problem`.
  static void expect_load_error(const std::string& file, const std::string& problem) {
    try {
      Corpus::load(file, 0, {0, 0});
      ADD_FAILURE() << "loading " << file << " did not throw (expected: " << problem << ")";
    } catch (const IoError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(file), std::string::npos) << "message does not name the file: " << msg;
      EXPECT_NE(msg.find(problem), std::string::npos) << "expected '" << problem << "' in: " << msg;
    }
  }
};

TEST_F(CorpusFiles, GzipReadsLikePlain) {
  const std::vector<uint8_t> content = sample_text(300000, 3);
  const std::string plain = write_plain("c.txt", content);
  const std::string gz = write_gzip("c.txt.gz", content);
  ASSERT_LT(fs::file_size(gz), content.size()) << "the test data should compress";
  const Corpus a = Corpus::load(plain, 0, {0, 0});
  const Corpus b = Corpus::load(gz, 0, {0, 0});
  EXPECT_FALSE(a.compressed());
  EXPECT_TRUE(b.compressed());
  ASSERT_EQ(a.size(), int64_t(content.size()));
  ASSERT_EQ(b.size(), int64_t(content.size()));
  EXPECT_TRUE(std::equal(a.bytes().begin(), a.bytes().end(), content.begin()));
  EXPECT_TRUE(std::equal(b.bytes().begin(), b.bytes().end(), content.begin()));
  EXPECT_EQ(a.source(), plain);
}

TEST_F(CorpusFiles, MaxBytesKeepsThePrefix) {
  const std::vector<uint8_t> content = sample_text(50000, 4);
  const std::string plain = write_plain("c.txt", content);
  const std::string gz = write_gzip("c.gz", content);
  for (const std::string& p : {plain, gz}) {
    const std::vector<uint8_t> head = read_file_bytes(p, 12345);
    ASSERT_EQ(head.size(), 12345u) << p;
    EXPECT_TRUE(std::equal(head.begin(), head.end(), content.begin())) << p;
    EXPECT_EQ(read_file_bytes(p, 10000000).size(), content.size()) << p;  // a cap above the size reads all
  }
  EXPECT_THROW(read_file_bytes(plain, -1), InvalidArgument);
}

TEST_F(CorpusFiles, TinyFilesWithoutMagicArePlain) {
  EXPECT_EQ(read_file_bytes(write_plain("one", {0x1f})), (std::vector<uint8_t>{0x1f}));
  EXPECT_EQ(read_file_bytes(write_plain("two", {0x1f, 0x8c})), (std::vector<uint8_t>{0x1f, 0x8c}));
}

TEST(Corpus, GcideDictzipLoads) {
  if (!fs::exists(kGcide)) GTEST_SKIP() << kGcide << " is absent (Debian package dict-gcide)";
  const Corpus c = Corpus::load(kGcide);
  EXPECT_TRUE(c.compressed());
  EXPECT_GT(c.size(), int64_t(fs::file_size(kGcide))) << "the dictionary was not decompressed";
  const double h = unigram_entropy_bits(c.bytes());
  EXPECT_GT(h, 4.0);
  EXPECT_LT(h, 5.0);
  // The default 1% held-out splits are non-empty and their entropy is of the same order.
  EXPECT_NEAR(unigram_entropy_bits(c.split(Split::Valid)), h, 0.5);
}

TEST_F(CorpusFiles, MissingFile) { expect_load_error(path("nope.txt"), "No such file"); }

TEST_F(CorpusFiles, Directory) { expect_load_error(dir_.string(), "directory"); }

TEST_F(CorpusFiles, EmptyFile) {
  expect_load_error(write_plain("empty.txt", {}), "empty");
  expect_load_error(write_gzip("empty.gz", {}), "no bytes");
}

TEST_F(CorpusFiles, CorruptGzip) {
  // Valid magic, then bytes that are not a gzip stream (compression method 0x77).
  expect_load_error(write_plain("garbage.gz", {0x1f, 0x8b, 0x77, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}),
                    "corrupt gzip");
  // A real gzip file with its deflate data scrambled in the middle: inflate fails or the CRC does not match.
  std::vector<uint8_t> gz = file_bytes(write_gzip("good.gz", sample_text(100000, 5)));
  for (size_t i = gz.size() / 3; i < gz.size() / 3 + 64; ++i) gz[i] ^= 0x5a;
  expect_load_error(write_plain("scrambled.gz", gz), "corrupt gzip");
  // Only the CRC-32 in the trailer is wrong: every byte decompresses, the check still catches it.
  std::vector<uint8_t> crc = file_bytes(write_gzip("crc.gz", sample_text(1000, 6)));
  crc[crc.size() - 8] ^= 0xff;
  expect_load_error(write_plain("crc_bad.gz", crc), "corrupt gzip");
}

TEST_F(CorpusFiles, TruncatedGzip) {
  const std::vector<uint8_t> gz = file_bytes(write_gzip("good.gz", sample_text(100000, 7)));
  expect_load_error(write_plain("half.gz", std::vector<uint8_t>(gz.begin(), gz.begin() + long(gz.size() / 2))),
                    "truncated");
  // Cut inside the 8-byte trailer: all data is there but the stream is not complete.
  expect_load_error(write_plain("notrailer.gz", std::vector<uint8_t>(gz.begin(), gz.end() - 4)), "truncated");
}

TEST(Corpus, SplitSizesAndContiguity) {
  std::vector<uint8_t> bytes(1000);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = uint8_t(i * 7);
  const Corpus c = Corpus::from_bytes(bytes, {0.1, 0.05}, "mem");
  const auto train = c.split(Split::Train), valid = c.split(Split::Valid), test = c.split(Split::Test);
  EXPECT_EQ(train.size(), 850u);
  EXPECT_EQ(valid.size(), 100u);
  EXPECT_EQ(test.size(), 50u);
  // train, valid, test in that order, back to back, test ending with the data.
  EXPECT_EQ(train.data(), c.bytes().data());
  EXPECT_EQ(train.data() + train.size(), valid.data());
  EXPECT_EQ(valid.data() + valid.size(), test.data());
  EXPECT_EQ(test.data() + test.size(), c.bytes().data() + c.size());
  EXPECT_EQ(valid[0], bytes[850]);
  EXPECT_EQ(test[49], bytes[999]);
  EXPECT_STREQ(split_name(Split::Valid), "valid");
}

TEST(Corpus, SplitSizesRoundToNearest) {
  const Corpus c = Corpus::from_bytes(std::vector<uint8_t>(1234, 'x'), {0.01, 0.02});
  EXPECT_EQ(c.split(Split::Valid).size(), 12u);  // 12.34
  EXPECT_EQ(c.split(Split::Test).size(), 25u);   // 24.68
  EXPECT_EQ(c.split(Split::Train).size(), 1234u - 37u);
}

TEST(Corpus, ZeroFractionsGiveEmptySplits) {
  const Corpus c = Corpus::from_bytes(std::vector<uint8_t>(10, 'x'), {0, 0});
  EXPECT_EQ(c.split(Split::Train).size(), 10u);
  EXPECT_TRUE(c.split(Split::Valid).empty());
  EXPECT_TRUE(c.split(Split::Test).empty());
}

TEST(Corpus, RefusesBadFractionsAndEmptySplits) {
  const std::vector<uint8_t> bytes(1000, 'x');
  for (double f : {-0.01, 0.5, 0.9, std::numeric_limits<double>::quiet_NaN()}) {
    EXPECT_THROW(Corpus::from_bytes(bytes, {f, 0.01}), InvalidArgument) << f;
    EXPECT_THROW(Corpus::from_bytes(bytes, {0.01, f}), InvalidArgument) << f;
  }
  try {
    Corpus::from_bytes(std::vector<uint8_t>(20, 'x'), {0.01, 0.0}, "small.txt");
    ADD_FAILURE() << "an empty valid split was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("small.txt"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("valid"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Corpus::from_bytes(std::vector<uint8_t>(20, 'x'), {0.0, 0.01}), InvalidArgument);
  // Both held-out splits round up to one byte each: nothing left for training.
  EXPECT_THROW(Corpus::from_bytes(std::vector<uint8_t>(2, 'x'), {0.4, 0.4}), InvalidArgument);
}

TEST_F(CorpusFiles, LoadRefusesBadFractionsBeforeReading) {
  // The file does not exist: the fraction is reported, not the missing file.
  EXPECT_THROW(Corpus::load(path("missing"), 0, {0.7, 0}), InvalidArgument);
}

TEST(Corpus, UnigramEntropy) {
  std::vector<uint8_t> all(256 * 3);
  for (size_t i = 0; i < all.size(); ++i) all[i] = uint8_t(i);
  EXPECT_DOUBLE_EQ(unigram_entropy_bits(all), 8.0);
  EXPECT_DOUBLE_EQ(unigram_entropy_bits(std::vector<uint8_t>(100, 'a')), 0.0);
  EXPECT_DOUBLE_EQ(unigram_entropy_bits(std::vector<uint8_t>{'a', 'b', 'a', 'b'}), 1.0);
  // p = (1/2, 1/4, 1/4): 1.5 bits.
  EXPECT_DOUBLE_EQ(unigram_entropy_bits(std::vector<uint8_t>{'a', 'a', 'b', 'c'}), 1.5);
  EXPECT_THROW(unigram_entropy_bits({}), InvalidArgument);
}

}  // namespace
}  // namespace lf
