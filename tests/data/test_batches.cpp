// Batch makers: determinism in (seed, step), the BERT masking statistics, targets holding the
// original bytes (found by locating each crop in the data), evaluation batches that repeat and never
// overlap, the CLM shift, classification TSV parsing with every error row, and refusals.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "linformer/batches.h"
#include "linformer/error.h"
#include "linformer/rng.h"
#include "linformer/tokenizer.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace lf {
namespace {

// Uniformly random bytes: a crop of a few dozen bytes occurs at exactly one offset.
std::vector<uint8_t> random_bytes(int64_t n, uint64_t seed) {
  std::vector<uint8_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = uint8_t(uniform01(seed, 11, uint64_t(i)) * 256.0f);
  return v;
}

bool same(const TokenBatch& a, const TokenBatch& b) {
  return a.B == b.B && a.n == b.n && a.tokens == b.tokens && a.targets == b.targets && a.padding == b.padding;
}

// The offsets in `data` where row b of an MLM batch can come from: positions not scored must equal the
// data byte, scored positions' targets must. Checks nothing else.
std::vector<int64_t> mlm_row_origins(const std::vector<uint8_t>& data, const TokenBatch& batch, int64_t b) {
  std::vector<int64_t> found;
  const int32_t* tok = batch.tokens.data() + b * batch.n;
  const int32_t* tgt = batch.targets.data() + b * batch.n;
  for (int64_t s = 0; s + batch.n <= int64_t(data.size()); ++s) {
    bool ok = true;
    for (int64_t t = 0; t < batch.n && ok; ++t) {
      const int32_t want = data[size_t(s + t)];
      ok = tgt[t] == kIgnoreIndex ? tok[t] == want : tgt[t] == want;
    }
    if (ok) found.push_back(s);
  }
  return found;
}

TEST(MlmBatch, ShapesAndDeterminism) {
  const std::vector<uint8_t> data = random_bytes(5000, 1);
  const TokenBatch a = mlm_batch(data, 4, 64, 42, 7);
  EXPECT_EQ(a.B, 4);
  EXPECT_EQ(a.n, 64);
  EXPECT_EQ(a.tokens.size(), 256u);
  EXPECT_EQ(a.targets.size(), 256u);
  EXPECT_TRUE(a.padding.empty());
  EXPECT_TRUE(same(a, mlm_batch(data, 4, 64, 42, 7)));
  EXPECT_FALSE(same(a, mlm_batch(data, 4, 64, 42, 8)));
  EXPECT_FALSE(same(a, mlm_batch(data, 4, 64, 43, 7)));
  // Tokens are bytes or MASK only.
  for (int32_t t : a.tokens) EXPECT_TRUE((t >= 0 && t < 256) || t == kMask) << t;
}

// short_seq_prob: the chosen crops end at a length L in [1, n], padding after it (PAD, marked, never
// scored), at least one scored position before it; the full-length rows are what short_seq_prob = 0
// gives, bit for bit, and 0 leaves the batch exactly as before the option existed.
TEST(MlmBatch, ShortSequencesArePaddedAndNeverScoredThere) {
  const std::vector<uint8_t> data = random_bytes(20000, 5);
  const int64_t B = 64, n = 48;
  const TokenBatch plain = mlm_batch(data, B, n, 3, 9), zero = mlm_batch(data, B, n, 3, 9, {.prob = 0.15, .short_seq_prob = 0.0});
  EXPECT_TRUE(same(plain, zero));
  for (double p : {0.25, 1.0}) {
    SCOPED_TRACE(testing::Message() << "short_seq_prob=" << p);
    const TokenBatch b = mlm_batch(data, B, n, 3, 9, {.prob = 0.15, .short_seq_prob = p});
    ASSERT_EQ(b.padding.size(), size_t(B * n));
    int64_t cut = 0;
    std::set<int64_t> lengths;
    for (int64_t r = 0; r < B; ++r) {
      int64_t L = n;
      while (L > 0 && b.padding[size_t(r * n + L - 1)]) --L;
      ASSERT_GE(L, 1);
      lengths.insert(L);
      cut += L < n;
      bool scored = false;
      for (int64_t t = 0; t < n; ++t) {
        const size_t i = size_t(r * n + t);
        if (t >= L) {
          EXPECT_EQ(b.padding[i], 1);
          EXPECT_EQ(b.tokens[i], kPad);
          EXPECT_EQ(b.targets[i], kIgnoreIndex);
        } else {
          EXPECT_EQ(b.padding[i], 0);  // padding is a suffix
          scored = scored || b.targets[i] != kIgnoreIndex;
        }
      }
      EXPECT_TRUE(scored) << "row " << r;
      if (L == n)  // an uncut row is the row of the plain batch
        for (int64_t t = 0; t < n; ++t) {
          EXPECT_EQ(b.tokens[size_t(r * n + t)], plain.tokens[size_t(r * n + t)]);
          EXPECT_EQ(b.targets[size_t(r * n + t)], plain.targets[size_t(r * n + t)]);
        }
    }
    if (p == 1.0) {
      EXPECT_GT(cut, B * 9 / 10);         // L = n is one draw in n
      EXPECT_GT(lengths.size(), 20u);     // lengths spread over [1, n]
    } else {
      EXPECT_GT(cut, 4);
      EXPECT_LT(cut, B / 2);
    }
  }
  EXPECT_THROW(mlm_batch(data, B, n, 3, 9, {.short_seq_prob = -0.1}), InvalidArgument);
  EXPECT_THROW(mlm_batch(data, B, n, 3, 9, {.short_seq_prob = 1.5}), InvalidArgument);
}

TEST(MlmBatch, TargetsHoldTheOriginalBytes) {
  const std::vector<uint8_t> data = random_bytes(4000, 2);
  for (uint64_t step = 0; step < 5; ++step) {
    const TokenBatch batch = mlm_batch(data, 8, 48, 9, step);
    for (int64_t b = 0; b < batch.B; ++b) {
      const std::vector<int64_t> origins = mlm_row_origins(data, batch, b);
      EXPECT_EQ(origins.size(), 1u) << "step " << step << " row " << b << ": the crop does not match the data";
    }
  }
}

TEST(MlmBatch, CropsReachBothEnds) {
  // Data of n + 3 bytes: the four possible starts 0..3 all occur, and nothing beyond.
  const int64_t n = 40;
  const std::vector<uint8_t> data = random_bytes(n + 3, 3);
  std::set<int64_t> starts;
  for (uint64_t step = 0; step < 50; ++step) {
    const TokenBatch batch = mlm_batch(data, 4, n, 1, step);
    for (int64_t b = 0; b < batch.B; ++b) {
      const std::vector<int64_t> o = mlm_row_origins(data, batch, b);
      ASSERT_EQ(o.size(), 1u);
      starts.insert(o[0]);
    }
  }
  EXPECT_EQ(starts, (std::set<int64_t>{0, 1, 2, 3}));
  // Data of exactly n bytes: every row is the whole data.
  const std::vector<uint8_t> exact = random_bytes(n, 4);
  const TokenBatch batch = mlm_batch(exact, 3, n, 1, 0);
  for (int64_t b = 0; b < 3; ++b) EXPECT_EQ(mlm_row_origins(exact, batch, b), (std::vector<int64_t>{0}));
}

TEST(MlmBatch, MaskingStatistics) {
  const std::vector<uint8_t> data = random_bytes(100000, 5);
  const int64_t B = 16, n = 128;
  int64_t positions = 0, chosen = 0, masked = 0, replaced = 0, kept = 0;
  for (uint64_t step = 0; step < 200; ++step) {
    const TokenBatch batch = mlm_batch(data, B, n, 2024, step);
    for (size_t i = 0; i < batch.tokens.size(); ++i) {
      ++positions;
      if (batch.targets[i] == kIgnoreIndex) continue;
      ++chosen;
      if (batch.tokens[i] == kMask) ++masked;
      else if (batch.tokens[i] == batch.targets[i]) ++kept;  // includes random bytes that drew the original
      else ++replaced;
    }
  }
  const double c = double(chosen);
  EXPECT_NEAR(c / double(positions), 0.15, 0.01);
  EXPECT_NEAR(double(masked) / c, 0.80, 0.02);
  EXPECT_NEAR(double(replaced) / c, 0.10, 0.02);
  EXPECT_NEAR(double(kept) / c, 0.10, 0.02);
}

TEST(MlmBatch, MaskProbabilityIsHonoured) {
  const std::vector<uint8_t> data = random_bytes(20000, 6);
  int64_t chosen = 0, positions = 0;
  for (uint64_t step = 0; step < 50; ++step) {
    const TokenBatch batch = mlm_batch(data, 8, 128, 1, step, {.prob = 0.4});
    positions += int64_t(batch.targets.size());
    for (int32_t t : batch.targets) chosen += t != kIgnoreIndex;
  }
  EXPECT_NEAR(double(chosen) / double(positions), 0.4, 0.01);
}

// Span masking (SpanBERT): the same fraction of positions, in runs whose mean length grows with the
// span (per position at 0.15 the mean run is 1/(1 − 0.15) ≈ 1.18); the 80/10/10 choice is the span's,
// so within a run that came from one span every position is MASK or none is; targets hold the data
// bytes; span = 1 is the per-position masking bit for bit; bad spans are refused.
TEST(MlmBatch, SpanMaskingChoosesRunsAtTheSameRate) {
  const std::vector<uint8_t> data = random_bytes(30000, 8);
  const int64_t B = 8, n = 256;
  EXPECT_TRUE(same(mlm_batch(data, B, n, 4, 2), mlm_batch(data, B, n, 4, 2, {.prob = 0.15, .span = 1.0})));
  double previous_run = 0;
  for (double span : {1.0, 3.0, 8.0}) {
    SCOPED_TRACE(testing::Message() << "span=" << span);
    int64_t chosen = 0, positions = 0, runs = 0, masked = 0, mixed_short_runs = 0, short_runs = 0;
    for (uint64_t step = 0; step < 40; ++step) {
      const TokenBatch batch = mlm_batch(data, B, n, 4, step, {.prob = 0.15, .span = span});
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t t = 0; t < n; ++t) {
          const size_t i = size_t(b * n + t);
          ++positions;
          if (batch.targets[i] == kIgnoreIndex) continue;
          ++chosen;
          masked += batch.tokens[i] == kMask;
          if (t > 0 && batch.targets[i - 1] != kIgnoreIndex) continue;
          ++runs;
          int64_t end = t;  // a run [t, end)
          while (end < n && batch.targets[size_t(b * n + end)] != kIgnoreIndex) ++end;
          // Runs of 2 or 3 positions are mostly one span (two spans rarely touch): all MASK or none.
          if (span > 1 && end - t >= 2 && end - t <= 3) {
            ++short_runs;
            int64_t m = 0;
            for (int64_t u = t; u < end; ++u) m += batch.tokens[size_t(b * n + u)] == kMask;
            mixed_short_runs += m != 0 && m != end - t;
          }
        }
        for (int64_t t = 0; t < n; ++t) {  // unscored positions are the data bytes, never masks
          if (batch.targets[size_t(b * n + t)] == kIgnoreIndex) {
            EXPECT_NE(batch.tokens[size_t(b * n + t)], kMask);
          }
        }
      }
      if (step == 0) {
        for (int64_t b = 0; b < B; ++b) EXPECT_EQ(mlm_row_origins(data, batch, b).size(), 1u) << "row " << b;
      }
    }
    const double rate = double(chosen) / double(positions), mean_run = double(chosen) / double(runs);
    EXPECT_NEAR(rate, 0.15, span > 1 ? 0.02 : 0.01);
    EXPECT_NEAR(double(masked) / double(chosen), 0.8, 0.05);
    EXPECT_GT(mean_run, previous_run + 0.5) << "mean run " << mean_run;
    if (span == 1.0) {
      EXPECT_NEAR(mean_run, 1.0 / 0.85, 0.05);
    }
    if (span > 1) {
      ASSERT_GT(short_runs, 50);
      EXPECT_LT(double(mixed_short_runs) / double(short_runs), 0.1);
    }
    previous_run = mean_run;
  }
  for (double bad : {0.5, 0.0, 65.0, std::nan("")})
    EXPECT_THROW(mlm_batch(data, B, n, 4, 2, {.span = bad}), InvalidArgument) << bad;
  // A rate near 1 with long spans ends (the draw cap) with nearly every position chosen.
  const TokenBatch all = mlm_batch(data, 2, 64, 1, 1, {.prob = 1.0, .span = 4.0});
  int64_t scored = 0;
  for (int32_t t : all.targets) scored += t != kIgnoreIndex;
  EXPECT_GE(scored, 120);
}

TEST(MlmBatch, AtLeastOnePositionPerSequence) {
  // With a tiny probability almost no position is drawn: each row still gets exactly one.
  const std::vector<uint8_t> data = random_bytes(3000, 7);
  std::set<int64_t> where;
  for (uint64_t step = 0; step < 20; ++step) {
    const TokenBatch batch = mlm_batch(data, 8, 64, 3, step, {.prob = 1e-7});
    for (int64_t b = 0; b < batch.B; ++b) {
      int64_t count = 0;
      for (int64_t t = 0; t < batch.n; ++t)
        if (batch.targets[size_t(b * batch.n + t)] != kIgnoreIndex) {
          ++count;
          where.insert(t);
        }
      EXPECT_EQ(count, 1) << "step " << step << " row " << b;
    }
  }
  EXPECT_GT(where.size(), 20u) << "the forced position should vary";
}

TEST(MlmBatch, Refusals) {
  const std::vector<uint8_t> data = random_bytes(100, 8);
  try {
    mlm_batch(data, 2, 101, 0, 0);
    ADD_FAILURE() << "data shorter than n was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("100 bytes"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("101"), std::string::npos) << e.what();
  }
  EXPECT_THROW(mlm_batch({}, 1, 1, 0, 0), InvalidArgument);
  EXPECT_THROW(mlm_batch(data, 0, 10, 0, 0), InvalidArgument);
  EXPECT_THROW(mlm_batch(data, 2, 0, 0, 0), InvalidArgument);
  EXPECT_THROW(mlm_batch(data, 2, 10, 0, 0, {.prob = 0.0}), InvalidArgument);
  EXPECT_THROW(mlm_batch(data, 2, 10, 0, 0, {.prob = 1.5}), InvalidArgument);
  EXPECT_NO_THROW(mlm_batch(data, 2, 100, 0, 0));
}

TEST(MlmEval, BatchCount) {
  const std::vector<uint8_t> data = random_bytes(10050, 9);  // 100 windows of 100, 50 bytes left over
  EXPECT_EQ(mlm_eval_batches(data, 8, 100), 12);
  EXPECT_EQ(mlm_eval_batches(data, 8, 100, 5), 5);
  EXPECT_EQ(mlm_eval_batches(data, 8, 100, 50), 12);
  EXPECT_EQ(mlm_eval_batches(data, 100, 100), 1);
  EXPECT_THROW(mlm_eval_batches(data, 101, 100), InvalidArgument);  // fewer windows than one batch
  EXPECT_THROW(mlm_eval_batches(data, 1, 20000), InvalidArgument);  // shorter than n
  EXPECT_THROW(mlm_eval_batches(data, 8, 100, -1), InvalidArgument);
}

TEST(MlmEval, RepeatableAndNonOverlapping) {
  const std::vector<uint8_t> data = random_bytes(10050, 10);
  const int64_t B = 8, n = 100;
  const int64_t batches = mlm_eval_batches(data, B, n);
  std::vector<int64_t> starts;
  for (int64_t i = 0; i < batches; ++i) {
    const TokenBatch batch = mlm_eval_batch(data, B, n, uint64_t(i), 5);
    EXPECT_TRUE(same(batch, mlm_eval_batch(data, B, n, uint64_t(i), 5))) << "batch " << i;
    for (int64_t b = 0; b < B; ++b) {
      const std::vector<int64_t> o = mlm_row_origins(data, batch, b);
      ASSERT_EQ(o.size(), 1u) << "batch " << i << " row " << b;
      starts.push_back(o[0]);
    }
  }
  std::sort(starts.begin(), starts.end());
  for (size_t k = 1; k < starts.size(); ++k)
    EXPECT_GE(starts[k] - starts[k - 1], n) << "windows at " << starts[k - 1] << " and " << starts[k] << " overlap";
  EXPECT_EQ(starts.size(), size_t(batches * B));
  EXPECT_LE(starts.back() + n, int64_t(data.size()));
  EXPECT_THROW(mlm_eval_batch(data, B, n, uint64_t(batches), 5), InvalidArgument);
}

TEST(MlmEval, FirstBatchesSpreadOverTheData) {
  // A capped evaluation (here 2 of 12 batches) must not only see the beginning of the split.
  const std::vector<uint8_t> data = random_bytes(10000, 12);
  int64_t lo = INT64_MAX, hi = 0;
  for (uint64_t i = 0; i < 2; ++i) {
    const TokenBatch batch = mlm_eval_batch(data, 8, 100, i, 1);
    for (int64_t b = 0; b < 8; ++b) {
      const int64_t s = mlm_row_origins(data, batch, b).at(0);
      lo = std::min(lo, s);
      hi = std::max(hi, s);
    }
  }
  EXPECT_LT(lo, 2000);
  EXPECT_GT(hi, 8000);
}

TEST(MlmEval, SeedChangesMasksNotCrops) {
  const std::vector<uint8_t> data = random_bytes(5000, 13);
  const TokenBatch a = mlm_eval_batch(data, 4, 50, 3, 1), b = mlm_eval_batch(data, 4, 50, 3, 2);
  EXPECT_NE(a.targets, b.targets);
  for (int64_t r = 0; r < 4; ++r) EXPECT_EQ(mlm_row_origins(data, a, r), mlm_row_origins(data, b, r));
  // Evaluation draws differ from the training draws of the same (seed, step).
  EXPECT_NE(a.targets, mlm_batch(data, 4, 50, 1, 3).targets);
}

TEST(ClmBatch, TargetsAreShiftedByOne) {
  const std::vector<uint8_t> data = random_bytes(3000, 14);
  const int64_t B = 6, n = 32;
  const TokenBatch batch = clm_batch(data, B, n, 8, 2);
  ASSERT_EQ(batch.tokens.size(), size_t(B * n));
  ASSERT_EQ(batch.targets.size(), size_t(B * n));
  EXPECT_TRUE(batch.padding.empty());
  for (int64_t b = 0; b < B; ++b) {
    const int32_t* tok = batch.tokens.data() + b * n;
    const int32_t* tgt = batch.targets.data() + b * n;
    for (int64_t t = 0; t + 1 < n; ++t) EXPECT_EQ(tgt[t], tok[t + 1]);
    // The n + 1 bytes (tokens, then the last target) are one contiguous piece of the data.
    int64_t matches = 0;
    for (int64_t s = 0; s + n + 1 <= int64_t(data.size()); ++s) {
      bool ok = data[size_t(s + n)] == tgt[n - 1];
      for (int64_t t = 0; t < n && ok; ++t) ok = data[size_t(s + t)] == tok[t];
      matches += ok;
    }
    EXPECT_EQ(matches, 1) << "row " << b;
  }
  EXPECT_TRUE(same(batch, clm_batch(data, B, n, 8, 2)));
  EXPECT_FALSE(same(batch, clm_batch(data, B, n, 8, 3)));
}

TEST(ClmBatch, NeedsNPlusOneBytes) {
  const std::vector<uint8_t> data = random_bytes(64, 15);
  EXPECT_THROW(clm_batch(data, 1, 64, 0, 0), InvalidArgument);
  const TokenBatch batch = clm_batch(data, 2, 63, 0, 0);
  for (int64_t b = 0; b < 2; ++b) {
    EXPECT_EQ(batch.tokens[size_t(b * 63)], data[0]);
    EXPECT_EQ(batch.targets[size_t(b * 63 + 62)], data[63]);
  }
}

class ClassificationFiles : public test::TempDirTest {
 protected:
  ClassificationFiles() : TempDirTest("lf_cls") {}

  std::string write(const std::string& content) {
    const std::string p = (dir_ / ("f" + std::to_string(counter_++) + ".tsv")).string();
    std::ofstream(p, std::ios::binary) << content;
    return p;
  }
  // Loading `content` must throw lf::IoError naming the file and containing each of `parts`.
  void expect_error(const std::string& content, const std::vector<std::string>& parts) {
    const std::string p = write(content);
    try {
      ClassificationData::load(p);
      ADD_FAILURE() << "accepted: " << content;
    } catch (const IoError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(p), std::string::npos) << msg;
      for (const std::string& part : parts) EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg;
    }
  }

  int counter_ = 0;
};

TEST_F(ClassificationFiles, Parses) {
  const ClassificationData d = ClassificationData::load(write("1\tgood film\n0\tbad\tfilm\r\n\n3\t x \n"));
  EXPECT_EQ(d.size(), 3);
  EXPECT_FALSE(d.has_header());
  EXPECT_EQ(d.classes(), (std::vector<std::string>{"0", "1", "3"}));  // no empty class 2
  EXPECT_EQ(d.labels(), (std::vector<int32_t>{1, 0, 2}));
  EXPECT_EQ(d.label_names(), (std::vector<std::string>{"1", "0", "3"}));
  EXPECT_EQ(d.line_numbers(), (std::vector<int64_t>{1, 2, 4}));  // the blank line still counts
  EXPECT_EQ(d.texts(), (std::vector<std::string>{"good film", "bad\tfilm", " x "}));
  EXPECT_EQ(d.num_classes(), 3);
  // No trailing newline, and a byte-order mark at the start.
  const ClassificationData e = ClassificationData::load(write("\xEF\xBB\xBF" "0\ta\n1\tb"));
  EXPECT_EQ(e.labels(), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(e.texts(), (std::vector<std::string>{"a", "b"}));
}

TEST_F(ClassificationFiles, HeaderRowIsSkipped) {
  // The label column says "label" (any case): a header, whatever the labels below it.
  const ClassificationData d = ClassificationData::load(write("Label\ttext\npos\tgreat\nneg\tawful\n"));
  EXPECT_TRUE(d.has_header());
  EXPECT_EQ(d.texts(), (std::vector<std::string>{"great", "awful"}));
  EXPECT_EQ(d.classes(), (std::vector<std::string>{"neg", "pos"}));
  EXPECT_EQ(d.line_numbers(), (std::vector<int64_t>{2, 3}));
  // A word above integer labels is a header too.
  const ClassificationData e = ClassificationData::load(write("sentiment\tsentence\n1\ta\n0\tb\n"));
  EXPECT_TRUE(e.has_header());
  EXPECT_EQ(e.labels(), (std::vector<int32_t>{1, 0}));
  // String labels throughout: the first line is data.
  const ClassificationData f = ClassificationData::load(write("pos\ta\nneg\tb\n"));
  EXPECT_FALSE(f.has_header());
  EXPECT_EQ(f.size(), 2);
  expect_error("label\ttext\n\n", {"no examples", "header"});
}

TEST_F(ClassificationFiles, StringLabelsSortByteByByte) {
  const ClassificationData d = ClassificationData::load(write("b\tx\na\ty\nc d\tz\na\tw\n"));
  EXPECT_EQ(d.classes(), (std::vector<std::string>{"a", "b", "c d"}));
  EXPECT_EQ(d.labels(), (std::vector<int32_t>{1, 0, 2, 0}));
}

TEST_F(ClassificationFiles, IntegerLabelsSortNumerically) {
  // 1-based labels map to 0 … K−1; negative and multi-digit ones in numeric, not byte, order.
  const ClassificationData one = ClassificationData::load(write("1\ta\n3\tb\n2\tc\n3\td\n"));
  EXPECT_EQ(one.classes(), (std::vector<std::string>{"1", "2", "3"}));
  EXPECT_EQ(one.labels(), (std::vector<int32_t>{0, 2, 1, 2}));
  const ClassificationData d = ClassificationData::load(write("10\ta\n9\tb\n-1\tc\n10\td\n"));
  EXPECT_EQ(d.classes(), (std::vector<std::string>{"-1", "9", "10"}));
  EXPECT_EQ(d.labels(), (std::vector<int32_t>{2, 1, 0, 2}));
  // One non-integer label among integers that is not the first line: every label is then a string.
  const ClassificationData m = ClassificationData::load(write("10\ta\n9\tb\nx\tc\n"));
  EXPECT_EQ(m.classes(), (std::vector<std::string>{"10", "9", "x"}));
}

TEST_F(ClassificationFiles, UnknownLabelNamesTheFileLineAndLabel) {
  const std::string p = write("pos\ta\nneg\tb\n\nmaybe\tc\n");
  const ClassificationData d = ClassificationData::load(p);
  try {
    (void)d.with_classes({"neg", "pos"}, "the model's");
    ADD_FAILURE() << "an unknown label was accepted";
  } catch (const IoError& e) {
    const std::string msg = e.what();
    for (const std::string& part : {p, std::string("line 4"), std::string("'maybe'"), std::string("the model's 2 classes (neg, pos)")})
      EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg;
  }
  // The same labels under another map: classes follow it, and a slice keeps the lines.
  const ClassificationData ok = d.slice(0, 2).with_classes({"pos", "neg", "other"}, "the model's");
  EXPECT_EQ(ok.labels(), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(ok.num_classes(), 3);
  EXPECT_EQ(d.slice(2, 3).line_numbers(), (std::vector<int64_t>{4}));
}

TEST_F(ClassificationFiles, EveryErrorRow) {
  expect_error("0\tok\n1 no tab\n", {"line 2", "tab"});
  expect_error("0\tok\n\n1\tok\nabc no tab\n", {"line 4", "tab"});  // blank lines still count
  expect_error("0\tok\n\tx\n", {"line 2", "empty label"});
  expect_error("0\tok\n2\t\n", {"line 2", "empty text"});
  expect_error("", {"empty"});
  expect_error("\n\r\n\n", {"no examples"});
  EXPECT_THROW(ClassificationData::load((dir_ / "missing.tsv").string()), IoError);
}

TEST(ClassificationData, FromExamplesChecks) {
  EXPECT_THROW(ClassificationData::from_examples({0, 1}, {"a"}), InvalidArgument);
  EXPECT_THROW(ClassificationData::from_examples({}, {}), InvalidArgument);
  EXPECT_THROW(ClassificationData::from_examples({-1}, {"a"}), InvalidArgument);
  EXPECT_THROW(ClassificationData::from_examples({0}, {""}), InvalidArgument);
  EXPECT_EQ(ClassificationData::from_examples({0, 6, 2}, {"a", "b", "c"}).num_classes(), 7);
}

TEST(ClassificationBatch, TruncatesPadsAndLabels) {
  // Unique texts of lengths 1..30 with label = length % 3, so each row can be traced to its example.
  std::vector<int32_t> labels;
  std::vector<std::string> texts;
  for (int len = 1; len <= 30; ++len) {
    labels.push_back(len % 3);
    texts.push_back(std::string(size_t(len), char('a' + len % 26)) + std::to_string(len));
  }
  const ClassificationData data = ClassificationData::from_examples(labels, texts);
  const int64_t B = 16, n = 12;
  std::set<int64_t> seen;
  for (uint64_t step = 0; step < 10; ++step) {
    const TokenBatch batch = classification_batch(data, B, n, 77, step);
    ASSERT_EQ(batch.tokens.size(), size_t(B * n));
    ASSERT_EQ(batch.padding.size(), size_t(B * n));
    ASSERT_EQ(batch.targets.size(), size_t(B));
    for (int64_t b = 0; b < B; ++b) {
      const int32_t* tok = batch.tokens.data() + b * n;
      const uint8_t* pad = batch.padding.data() + b * n;
      int64_t len = 0;
      while (len < n && !pad[len]) ++len;
      for (int64_t t = len; t < n; ++t) {
        EXPECT_NE(pad[t], 0) << "padding must be a suffix";
        EXPECT_EQ(tok[t], kPad);
      }
      const std::string prefix = decode(tok, len);
      int64_t match = -1;
      for (size_t i = 0; i < texts.size(); ++i)
        if (texts[i].substr(0, size_t(n)) == prefix) match = int64_t(i);
      ASSERT_GE(match, 0) << "row " << b << " '" << prefix << "' is no example's text truncated to n";
      EXPECT_EQ(len, std::min<int64_t>(n, int64_t(texts[size_t(match)].size())));
      EXPECT_EQ(batch.targets[size_t(b)], labels[size_t(match)]);
      seen.insert(match);
    }
  }
  EXPECT_GT(seen.size(), 20u) << "examples should be drawn from the whole set";
  EXPECT_TRUE(same(classification_batch(data, B, n, 77, 3), classification_batch(data, B, n, 77, 3)));
  EXPECT_FALSE(same(classification_batch(data, B, n, 77, 3), classification_batch(data, B, n, 77, 4)));
}

}  // namespace
}  // namespace lf
