// The bad-input table, docs/bad_input.md, run row by row: each row is its own test
// (BadInput/Row.Case/<id>) that runs the real CLI in a scratch directory with the row's arguments
// (placeholders replaced by fixtures made here) and checks the exit status, that stderr is exactly
// one `linformer: error:` line holding the row's fragment, that stdout is empty and that nothing
// crashed. BadInputTable.* check the table itself: it parses, it is long enough, and every
// (subcommand, case) pair that applies has a row.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/cli_runner.h"
#include "io/safetensors.h"
#include "tiny_model_config.h"

namespace {

namespace fs = std::filesystem;
using lf::test::read_file;
using lf::test::write_file;
using json = nlohmann::json;
using lf::test::CliResult;

struct TableRow {
  std::string id, subcommand, kase, args, fragment;
  int status = -1;
};

// Splits "| a | b |" into its trimmed cells; backticks around a cell are removed.
std::vector<std::string> cells(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  for (size_t i = 1; i < line.size(); ++i) {
    if (line[i] != '|') {
      cur += line[i];
      continue;
    }
    const size_t b = cur.find_first_not_of(' '), e = cur.find_last_not_of(' ');
    std::string cell = b == std::string::npos ? "" : cur.substr(b, e - b + 1);
    if (cell.size() >= 2 && cell.front() == '`' && cell.back() == '`') cell = cell.substr(1, cell.size() - 2);
    out.push_back(cell);
    cur.clear();
  }
  return out;
}

// gtest names a failing row by its id (not a dump of its bytes).
void PrintTo(const TableRow& r, std::ostream* os) { *os << r.id; }

struct Table {
  std::vector<TableRow> rows;
  std::string error;  // why the table could not be parsed; empty when it could
};

Table parse_table() {
  Table t;
  std::ifstream in(LINFORMER_SOURCE_DIR "/docs/bad_input.md");
  if (!in) {
    t.error = "cannot read " LINFORMER_SOURCE_DIR "/docs/bad_input.md";
    return t;
  }
  bool in_table = false;
  std::set<std::string> ids;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("## ", 0) == 0) in_table = line == "## The table";
    if (!in_table || line.rfind("|", 0) != 0) continue;
    const std::vector<std::string> c = cells(line);
    if (c.size() != 6) {
      t.error = "a row without 6 cells: " + line;
      return t;
    }
    if (c[0] == "id" || c[0].rfind("---", 0) == 0) continue;  // header and separator
    TableRow r{c[0], c[1], c[2], c[3], c[5]};
    if (c[4] != "1" && c[4] != "2") {
      t.error = "row " + r.id + ": the exit status must be 1 or 2, got '" + c[4] + "'";
      return t;
    }
    r.status = std::stoi(c[4]);
    for (char ch : r.id)
      if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_') {
        t.error = "row id '" + r.id + "' must be letters, digits and '_' (it names the test)";
        return t;
      }
    if (!ids.insert(r.id).second || r.args.rfind(r.subcommand + " ", 0) != 0 || r.fragment.empty()) {
      t.error = "row " + r.id + ": duplicate id, arguments not starting with its subcommand, or no message";
      return t;
    }
    t.rows.push_back(r);
  }
  if (t.rows.empty() && t.error.empty()) t.error = "no rows under '## The table'";
  return t;
}

const Table& table() {
  static const Table t = parse_table();
  return t;
}

std::vector<TableRow> rows_or_empty() { return table().error.empty() ? table().rows : std::vector<TableRow>{}; }

// Deterministic bytes without tab or newline (so a TSV reader stops at "no tab" on line 1), starting
// with 0xff bytes (so a safetensors header length is far beyond the limit).
std::string garbage(size_t n) {
  std::string out(8, '\xff');
  uint64_t x = 99;
  while (out.size() < n) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    const char c = char(x >> 56);
    if (c != '\t' && c != '\n' && c != '\r') out += c;
  }
  return out;
}

std::string words(size_t bytes) {
  static const char* w[] = {"the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "park", "home"};
  std::string out;
  uint64_t x = 12345;
  while (out.size() < bytes) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    out += std::string(out.empty() ? "" : " ") + w[(x >> 33) % 12];
  }
  return out;
}

// A copy of checkpoint `src` whose config.json is edited by `edit`.
void copy_with_config(const fs::path& src, const fs::path& dst, const std::function<void(json&)>& edit) {
  fs::copy(src, dst, fs::copy_options::recursive);
  json c = json::parse(read_file(src / "config.json"));
  edit(c);
  write_file(dst / "config.json", c.dump(2));
}

// A copy of checkpoint `src` whose embeddings.token.weight is stored as `dtype` (F16 or F64).
void copy_with_dtype(const fs::path& src, const fs::path& dst, const std::string& dtype) {
  fs::copy(src, dst, fs::copy_options::recursive);
  const lf::SafeTensorsFile in = lf::SafeTensorsFile::read((src / "model.safetensors").string());
  lf::SafeTensorsWriter out;
  for (const std::string& name : in.names()) {
    const lf::StoredTensor t = in.get(name);
    if (name == "embeddings.token.weight") {
      const std::vector<uint8_t> bytes(size_t(t.numel()) * lf::safetensors_dtype_size(dtype), 0);
      out.add(name, dtype, t.shape, bytes.data(), bytes.size());
    } else {
      out.add(name, t.dtype, t.shape, t.data, t.nbytes);
    }
  }
  out.write((dst / "model.safetensors").string());
}

// A run directory whose only checkpoint is a copy of `ckpt`.
void make_run(const fs::path& ckpt, const fs::path& run) {
  fs::create_directories(run / "checkpoints");
  fs::copy(ckpt, run / "checkpoints" / "step-00000002", fs::copy_options::recursive);
  write_file(run / "checkpoints" / "latest", "step-00000002\n");
}

// The scratch directory with every fixture, made once per process.
class Fixtures {
 public:
  static Fixtures& get() {
    static Fixtures f;
    return f;
  }
  fs::path dir;
  std::string error;  // why the fixtures could not be made

 private:
  Fixtures() {
    dir = fs::path(::testing::TempDir()) / ("linformer_bad_input_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    write_file(dir / "data.txt", words(4000));
    write_file(dir / "empty", "");
    fs::create_directories(dir / "empty_dir");
    write_file(dir / "garbage", garbage(3000));
    write_file(dir / "gz_garbage", std::string("\x1f\x8b\x08\x00", 4) + garbage(200));
    write_file(dir / "file", "a regular file\n");
    fs::create_directories(dir / "ro_dir");
    ::chmod((dir / "ro_dir").c_str(), 0555);
    write_file(dir / "config_type.json", R"({"model": {"d_model": "wide"}})");
    write_file(dir / "config_train_type.json", R"({"train": {"lr": "fast"}})");
    // Input files of the batch commands (predict --input, embed --input).
    write_file(dir / "lines.txt", "th_ cat\nno mask here\n");
    write_file(dir / "blank_lines.txt", "one\n\ntwo\n");
    write_file(dir / "long_line.txt", "th_ " + std::string(size_t(1) << 20, 'a') + "\n");
    write_file(dir / "no_text.jsonl", "{\"text\": \"th_\"}\n{\"txt\": \"th_\"}\n");
    write_file(dir / "bad.jsonl", "{\"text\": \"th_\"}\n{\"text\": \"d_g\"}\n{\"text\": \"th_\"\n");
    const CliResult r = lf::test::run_linformer(
        "cd '" + dir.string() + "' &&",
        "train --data data.txt --out run --d-model 16 --layers 1 --heads 2 --attention-options '{\"k\": 4}' --steps 2 "
        "--warmup 1 --batch-size 2 --seq-len 16 --eval-batches 1 --valid-fraction 0.1 --test-fraction 0.1",
        (dir / "train_stderr.txt").string());
    if (r.status != 0) {
      error = "training the fixture checkpoint failed: " + r.err;
      return;
    }
    const fs::path ck = dir / "run" / "checkpoints" / "step-00000002";
    fs::copy(ck, dir / "ckpt", fs::copy_options::recursive);
    copy_with_dtype(ck, dir / "ckpt_f16", "F16");
    copy_with_dtype(ck, dir / "ckpt_f64", "F64");
    fs::copy(ck, dir / "ckpt_empty", fs::copy_options::recursive);
    write_file(dir / "ckpt_empty" / "model.safetensors", "");
    fs::copy(ck, dir / "ckpt_garbage", fs::copy_options::recursive);
    write_file(dir / "ckpt_garbage" / "model.safetensors", garbage(3000));
    fs::copy(ck, dir / "ckpt_config_empty", fs::copy_options::recursive);
    write_file(dir / "ckpt_config_empty" / "config.json", "");
    fs::copy(ck, dir / "ckpt_config_garbage", fs::copy_options::recursive);
    write_file(dir / "ckpt_config_garbage" / "config.json", garbage(500));
    copy_with_config(ck, dir / "ckpt_config_type", [](json& c) { c["d_model"] = "16"; });
    copy_with_config(ck, dir / "ckpt_k", [](json& c) { c["attention"][0]["options"]["k"] = 32; });
    copy_with_config(ck, dir / "ckpt_heads", [](json& c) { c["n_heads"] = 3; });
    copy_with_config(ck, dir / "ckpt_zero", [](json& c) { c["n_layers"] = 0; });
    copy_with_config(ck, dir / "ckpt_huge", [](json& c) {
      c["d_model"] = 32768;
      c["d_ff"] = 65536;
      c["n_layers"] = 64;
    });
    // An exact-attention model (every layer `full`) for `spectrum`, which refuses any other kind.
    const CliResult exact = lf::test::run_linformer(
        "cd '" + dir.string() + "' &&",
        "train --data data.txt --out run_exact --d-model 16 --layers 1 --heads 2 --attention full --steps 2 "
        "--warmup 1 --batch-size 2 --seq-len 16 --eval-batches 1 --valid-fraction 0.1 --test-fraction 0.1",
        (dir / "train_exact_stderr.txt").string());
    if (exact.status != 0) {
      error = "training the exact-attention fixture checkpoint failed: " + exact.err;
      return;
    }
    const fs::path ck_exact = dir / "run_exact" / "checkpoints" / "step-00000002";
    fs::copy(ck_exact, dir / "ckpt_exact", fs::copy_options::recursive);
    copy_with_dtype(ck_exact, dir / "ckpt_exact_f16", "F16");
    // Classification TSVs (a header, string labels) and a classifier trained on the first.
    std::string tsv = "label\ttext\n";
    for (int i = 0; i < 20; ++i) tsv += i % 2 ? "pos\tgood fine nice\n" : "neg\tbad poor sad\n";
    write_file(dir / "tsv", tsv);
    write_file(dir / "tsv_unseen", tsv + "maybe\tso so\n");  // line 22, held out at --valid-fraction 0.1
    std::string one_label;
    for (int i = 0; i < 20; ++i) one_label += "pos\tgood\n";
    write_file(dir / "tsv_one_label", one_label);
    const CliResult cls = lf::test::run_linformer(
        "cd '" + dir.string() + "' &&",
        "train --task classify --data tsv --out run_cls --d-model 16 --layers 1 --heads 2 --attention-options "
        "'{\"k\": 4}' --steps 2 --warmup 1 --batch-size 2 --seq-len 16 --eval-batches 1 --valid-fraction 0.1",
        (dir / "train_cls_stderr.txt").string());
    if (cls.status != 0) {
      error = "training the classifier fixture checkpoint failed: " + cls.err;
      return;
    }
    fs::copy(dir / "run_cls" / "checkpoints" / "step-00000002", dir / "ckpt_cls", fs::copy_options::recursive);
    // Run logs for `plot`: empty, ending in a torn record, garbage lines.
    const std::string record = R"({"type": "train", "step": 1, "loss": 5.5, "lr": 0.001})";
    fs::create_directories(dir / "run_empty_log");
    write_file(dir / "run_empty_log" / "log.jsonl", "");
    fs::create_directories(dir / "run_torn_log");
    write_file(dir / "run_torn_log" / "log.jsonl", record + "\n" + record.substr(0, 20));
    fs::create_directories(dir / "run_garbage_log");
    write_file(dir / "run_garbage_log" / "log.jsonl", garbage(3000) + "\n" + record + "\n");
    // A causal LM for `generate` (random weights: its refusals come before any text).
    lf::test::save_random_checkpoint((dir / "ckpt_clm").string(), lf::test::small_byte_model_config("clm", "full", 1, 16), 3);
    make_run(dir / "ckpt_f16", dir / "run_f16");
    make_run(dir / "ckpt_huge", dir / "run_huge");
    make_run(dir / "ckpt", dir / "run_ok");
    // Run-directory and data-size cases.
    write_file(dir / "data_small.txt", words(2048).substr(0, 2048));
    fs::create_directories(dir / "user_dir");
    write_file(dir / "user_dir" / "notes.txt", "a user's notes\n");
    fs::create_directories(dir / "user_log_dir");
    write_file(dir / "user_log_dir" / "log.jsonl", "{\"a user's\": \"log\"}\n");
    fs::copy(ck, dir / "ckpt_relative", fs::copy_options::recursive);
    json state = json::parse(read_file(ck / "trainer_state.json"));
    state["options"]["data_path"] = "moved/data.txt";  // as older versions stored it: relative
    write_file(dir / "ckpt_relative" / "trainer_state.json", state.dump(2));
  }
  ~Fixtures() {
    std::error_code ec;
    fs::permissions(dir / "ro_dir", fs::perms::owner_all, ec);
    fs::remove_all(dir, ec);
  }
};

// Replaces every {name} in text: fixtures by their relative path, {out} by a fresh directory.
std::string substitute(std::string text, const std::string& id) {
  static const std::map<std::string, std::string> paths = {
      {"data", "data.txt"}, {"missing", "no_such_file.txt"}, {"missing_dir", "no_such_dir"}, {"empty", "empty"},
      {"empty_dir", "empty_dir"}, {"garbage", "garbage"}, {"gz_garbage", "gz_garbage"}, {"file", "file"},
      {"ro_dir", "ro_dir"}, {"config_type", "config_type.json"}, {"config_train_type", "config_train_type.json"},
      {"ckpt", "ckpt"}, {"ckpt_f16", "ckpt_f16"}, {"ckpt_f64", "ckpt_f64"}, {"ckpt_empty", "ckpt_empty"},
      {"ckpt_garbage", "ckpt_garbage"}, {"ckpt_config_empty", "ckpt_config_empty"},
      {"ckpt_config_garbage", "ckpt_config_garbage"}, {"ckpt_config_type", "ckpt_config_type"}, {"ckpt_k", "ckpt_k"},
      {"ckpt_heads", "ckpt_heads"}, {"ckpt_zero", "ckpt_zero"}, {"ckpt_huge", "ckpt_huge"}, {"run_f16", "run_f16"},
      {"run_huge", "run_huge"}, {"ckpt_exact", "ckpt_exact"}, {"ckpt_exact_f16", "ckpt_exact_f16"},
      {"tsv", "tsv"}, {"tsv_unseen", "tsv_unseen"}, {"tsv_one_label", "tsv_one_label"}, {"ckpt_cls", "ckpt_cls"}, {"ckpt_clm", "ckpt_clm"},
      {"run", "run_ok"}, {"data_small", "data_small.txt"}, {"user_dir", "user_dir"}, {"user_log_dir", "user_log_dir"},
      {"ckpt_relative", "ckpt_relative"}, {"run_log", "run"}, {"run_empty_log", "run_empty_log"},
      {"run_torn_log", "run_torn_log"}, {"run_garbage_log", "run_garbage_log"}, {"out", ""},
      {"lines", "lines.txt"}, {"blank_lines", "blank_lines.txt"}, {"long_line", "long_line.txt"},
      {"no_text_jsonl", "no_text.jsonl"}, {"bad_jsonl", "bad.jsonl"}};
  std::string out;
  for (size_t i = 0; i < text.size();) {
    const size_t close = text[i] == '{' ? text.find('}', i) : std::string::npos;
    const std::string name = close == std::string::npos ? "" : text.substr(i + 1, close - i - 1);
    auto it = paths.find(name);
    if (it == paths.end()) {  // not a placeholder (e.g. JSON in an argument)
      out += text[i++];
      continue;
    }
    out += name == "out" ? "out_" + id : it->second;
    i = close + 1;
  }
  return out;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

class Row : public ::testing::TestWithParam<TableRow> {};  // the tests are BadInput/Row.Case/<id>

TEST_P(Row, Case) {
  const TableRow& row = GetParam();
  const Fixtures& f = Fixtures::get();
  ASSERT_EQ(f.error, "");
  // Permission bits do not stop root: as root, a row writing into the mode-0555 directory runs the
  // CLI as `nobody` (setpriv, util-linux), as an ordinary user would meet it.
  const bool as_nobody = contains(row.args, "{ro_dir}") && ::geteuid() == 0;
  const std::string args = substitute(row.args, row.id);
  const std::string fragment = substitute(row.fragment, row.id);
  SCOPED_TRACE("linformer " + args);
  const CliResult r = lf::test::run_linformer(
      "cd '" + f.dir.string() + "' &&" + (as_nobody ? " setpriv --reuid=65534 --regid=65534 --clear-groups" : ""),
      args, (f.dir / ("stderr_" + row.id + ".txt")).string());
  EXPECT_EQ(r.signal, 0) << "killed by signal " << r.signal << "; stderr: " << r.err;
  EXPECT_EQ(r.status, row.status) << "stderr: " << r.err;
  EXPECT_EQ(r.out, "") << "a failing command prints no (partial) result";
  const std::vector<std::string> lines = lf::test::split_lines(r.err);
  ASSERT_EQ(lines.size(), 1u) << "stderr must be exactly one line: " << r.err;
  EXPECT_EQ(lines[0].rfind("linformer: error: ", 0), 0u) << lines[0];
  EXPECT_TRUE(contains(lines[0], fragment)) << "missing '" << fragment << "' in: " << lines[0];
  for (const char* crash : {"terminate called", "what():", "Aborted", "Segmentation", "core dumped", "Assertion",
                            "Sanitizer", "runtime error:", "#0 0x", "stack trace", "std::bad_alloc"})
    EXPECT_FALSE(contains(r.err, crash)) << "crash output in stderr: " << r.err;
}

INSTANTIATE_TEST_SUITE_P(BadInput, Row, ::testing::ValuesIn(rows_or_empty()),
                         [](const ::testing::TestParamInfo<TableRow>& info) { return info.param.id; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Row);  // an unparsable table fails BadInputTable.Parses

TEST(BadInputTable, Parses) {
  EXPECT_EQ(table().error, "");
  EXPECT_GE(table().rows.size(), 100u) << "rows were lost from docs/bad_input.md";
}

// Every (subcommand, case) pair that applies has at least one row; docs/bad_input.md says in one line
// why each missing pair does not apply.
TEST(BadInputTable, CoversEveryCaseThatApplies) {
  const std::map<std::string, std::vector<std::string>> required = {
      {"train",
       {"missing file", "empty file", "binary garbage", "wrong dtype", "sequence too long", "k > n",
        "heads not dividing d", "zero or negative size", "non-finite learning rate", "unwritable output directory",
        "too large for memory", "bad labels", "directory as data file", "data too small", "unsafe run directory",
        "bad option value"}},
      {"eval",
       {"missing file", "empty file", "binary garbage", "wrong dtype", "sequence too long", "k > n",
        "heads not dividing d", "zero or negative size", "too large for memory", "bad labels", "directory as data file",
        "data too small", "bad option value"}},
      {"predict",
       {"missing file", "empty file", "binary garbage", "wrong dtype", "k > n", "heads not dividing d",
        "zero or negative size", "too large for memory", "unwritable output directory", "bad option value",
        "bad input file"}},
      {"embed",
       {"missing file", "empty file", "binary garbage", "wrong dtype", "k > n", "heads not dividing d",
        "zero or negative size", "too large for memory", "unwritable output directory", "bad option value",
        "bad input file"}},
      {"info",
       {"missing file", "empty file", "binary garbage", "wrong dtype", "sequence too long", "k > n",
        "heads not dividing d", "zero or negative size"}},
      {"bench", {"k > n", "heads not dividing d", "zero or negative size", "unwritable output directory",
                 "too large for memory"}},
      {"convert",
       {"missing file", "empty file", "binary garbage", "wrong dtype", "sequence too long", "k > n",
        "heads not dividing d", "zero or negative size", "non-finite learning rate", "unwritable output directory",
        "too large for memory", "impossible conversion", "bad option value"}},
      {"spectrum",
       {"missing file", "empty file", "binary garbage", "wrong dtype", "sequence too long", "k > n",
        "heads not dividing d", "zero or negative size", "unwritable output directory", "too large for memory",
        "wrong attention kind", "bad option value", "directory as data file"}},
      {"plot",
       {"missing file", "empty file", "binary garbage", "torn log line", "unwritable output directory", "bad option value"}},
      {"serve",
       {"missing file", "empty file", "binary garbage", "wrong dtype", "k > n", "heads not dividing d",
        "zero or negative size", "too large for memory", "bad option value"}},
      {"generate",
       {"missing file", "empty file", "binary garbage", "wrong dtype", "sequence too long", "k > n",
        "heads not dividing d", "zero or negative size", "too large for memory", "bad option value",
        "bad input file", "wrong task"}},
  };
  ASSERT_EQ(table().error, "");
  std::set<std::pair<std::string, std::string>> present;
  for (const TableRow& r : table().rows) present.insert({r.subcommand, r.kase});
  for (const auto& [sub, cases] : required)
    for (const std::string& c : cases) EXPECT_TRUE(present.count({sub, c})) << "no row for " << sub << " / " << c;
  // A row's case must be one of the categories (no stray spelling).
  std::set<std::string> known;
  for (const auto& [sub, cases] : required) known.insert(cases.begin(), cases.end());
  for (const TableRow& r : table().rows) {
    EXPECT_TRUE(known.count(r.kase)) << r.id << ": unknown case '" << r.kase << "'";
    EXPECT_TRUE(required.count(r.subcommand)) << r.id << ": unknown subcommand '" << r.subcommand << "'";
  }
}

// The one case of the table that is not an error: info describes a model it could never allocate,
// with its memory estimate, and allocates nothing.
TEST(BadInputTable, InfoDescribesAHugeModel) {
  const Fixtures& f = Fixtures::get();
  ASSERT_EQ(f.error, "");
  const CliResult r = lf::test::run_linformer("cd '" + f.dir.string() + "' &&", "info --checkpoint ckpt_huge --batch 8",
                                              (f.dir / "stderr_info_huge.txt").string());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "training memory")) << r.out;
  EXPECT_TRUE(contains(r.out, "TiB")) << r.out;
}

}  // namespace
