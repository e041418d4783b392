// Checkpoint directories: atomic save (build aside, rename in), validated load, rolling step-*
// checkpoints with a `latest` pointer. See checkpoint.h for the layout and the crash guarantees.
#include "linformer/checkpoint.h"
#include "train/checkpoint_internal.h"

#include "io/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "io/safetensors.h"

namespace lf {

namespace fs = std::filesystem;

namespace {

constexpr const char* kConfigFile = "config.json";
constexpr const char* kModelFile = "model.safetensors";
constexpr const char* kOptimizerFile = "optimizer.safetensors";
constexpr const char* kTrainerStateFile = "trainer_state.json";
constexpr const char* kFormat = "linformer";
constexpr const char* kVersion = "1";
constexpr const char* kLatestFile = "latest";
constexpr const char* kStepPrefix = "step-";
constexpr const char* kOldInfix = ".old-";
constexpr const char* kTmpInfix = ".tmp-";
constexpr const char* kDelInfix = ".del-";  // a directory being deleted (see discard_dir)

std::string sys_error(int err) { return std::strerror(err); }

std::string join_names(const std::vector<std::string>& names) {
  constexpr size_t kShown = 5;
  std::string out;
  for (size_t i = 0; i < names.size() && i < kShown; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > kShown) out += str_cat(" and ", names.size() - kShown, " more");
  return out;
}

void crash_point(const char* point) {
  if (checkpoint_crash_hook) checkpoint_crash_hook(point);
}

// "a/b/" and "a/b" name the same checkpoint; the trailing slash would make filename() empty.
fs::path normalized(const std::string& dir) {
  LF_REQUIRE(!dir.empty(), "checkpoint directory must not be empty");
  fs::path p = fs::path(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p;
}

fs::path parent_or_dot(const fs::path& p) { return p.parent_path().empty() ? fs::path(".") : p.parent_path(); }

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

void fsync_dir(const fs::path& dir, const std::string& context) { fsync_directory(dir.string(), context); }

std::string read_text_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(str_cat("cannot read '", path.string(), "': ", sys_error(errno)));
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) throw IoError(str_cat("reading '", path.string(), "' failed"));
  return s.str();
}

// A JSON file of the checkpoint; corrupt contents are reported as such, naming the file.
json parse_json_text(std::string_view text, const std::string& source) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number like 1e999
    throw IoError(str_cat("'", source, "' is not valid JSON (", e.what(),
                          "): the checkpoint is corrupt; load another checkpoint or save this one again"));
  }
}

json read_json_file(const fs::path& path) { return parse_json_text(read_text_file(path), path.string()); }

bool exists_nothrow(const fs::path& p) {
  std::error_code ec;
  return fs::exists(fs::symlink_status(p, ec));
}

// Written completely: the directory only ever appears by a rename of a finished one, so these two
// files are enough to tell it from stray directories.
bool is_complete(const fs::path& dir) {
  std::error_code ec;
  return fs::is_directory(dir, ec) && fs::is_regular_file(dir / kConfigFile, ec) &&
         fs::is_regular_file(dir / kModelFile, ec);
}

// The newest complete <dir>.old-* (an overwrite interrupted between its two renames), if any.
std::optional<fs::path> newest_old_copy(const fs::path& dir) {
  const fs::path parent = parent_or_dot(dir);
  const std::string prefix = dir.filename().string() + kOldInfix;
  std::optional<fs::path> best;
  fs::file_time_type best_time{};
  std::error_code ec;
  for (fs::directory_iterator it(parent, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path p = it->path();
    if (!starts_with(p.filename().string(), prefix) || !is_complete(p)) continue;
    std::error_code tec;
    const auto t = fs::last_write_time(p, tec);
    if (tec) continue;
    if (!best || t > best_time) best = p, best_time = t;
  }
  return best;
}

// Readable under this name: present and complete, or missing with a complete .old-* copy.
bool checkpoint_available(const fs::path& dir) {
  if (exists_nothrow(dir)) return is_complete(dir);
  return newest_old_copy(dir).has_value();
}

// The step of a directory named exactly step-<digits>.
std::optional<int64_t> parse_step_name(const std::string& name) {
  if (!starts_with(name, kStepPrefix)) return std::nullopt;
  const std::string digits = name.substr(std::strlen(kStepPrefix));
  if (digits.empty() || digits.size() > 18) return std::nullopt;
  for (char c : digits)
    if (c < '0' || c > '9') return std::nullopt;
  return std::stoll(digits);
}

// The checkpoint name a (run's) directory entry belongs to: "step-5.old-12" belongs to "step-5".
std::string base_name(const std::string& name) {
  size_t cut = name.size();
  for (const char* infix : {kOldInfix, kTmpInfix, kDelInfix}) cut = std::min(cut, name.find(infix));
  return name.substr(0, cut);
}

CheckpointWarningHandler& warning_handler() {
  static CheckpointWarningHandler handler = [](const std::string& m) {
    std::fprintf(stderr, "linformer: warning: %s\n", m.c_str());
  };
  return handler;
}

void warn(const std::string& message) {
  if (warning_handler()) warning_handler()(message);
}

// The files a checkpoint directory of ours consists of, and write_file_atomic's temporaries of them
// ("<file>.tmp-<pid>-<n>"). Anything else in a checkpoint directory is someone else's.
bool is_checkpoint_file(const std::string& name) {
  for (const char* f : {kConfigFile, kModelFile, kOptimizerFile, kTrainerStateFile})
    if (name == f || starts_with(name, std::string(f) + kTmpInfix)) return true;
  return false;
}

bool holds_checkpoint_files(const fs::path& dir) {
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (is_checkpoint_file(it->path().filename().string())) return true;
  return false;
}

// Removes the checkpoint files in `dir`, and `dir` when that empties it (a plain file named like one
// of our temporaries is removed as it is). Returns the names of the entries left: not ours.
std::vector<std::string> remove_checkpoint_files(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(fs::symlink_status(dir, ec))) {
    fs::remove(dir, ec);
    return {};
  }
  std::vector<std::string> left;
  std::vector<fs::path> ours;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (is_checkpoint_file(name) && !fs::is_directory(fs::symlink_status(it->path(), ec)))
      ours.push_back(it->path());
    else
      left.push_back(name);
  }
  for (const fs::path& p : ours) fs::remove(p, ec);
  if (left.empty()) fs::remove(dir, ec);
  std::sort(left.begin(), left.end());
  return left;
}

// After remove_checkpoint_files left `foreign` entries in `from` (a renamed copy of the checkpoint
// `home`): they go back to where their owner put them, `home` itself if it is gone, else each entry
// into `home` where its name is free. What cannot move stays in `from`. Either way a warning.
void keep_foreign_entries(const fs::path& from, const fs::path& home, const std::vector<std::string>& foreign) {
  std::error_code ec;
  fs::path where = from;
  if (from != home && !exists_nothrow(home)) {
    fs::rename(from, home, ec);
    if (!ec) where = home;
  } else if (from != home && fs::is_directory(home, ec)) {
    bool all_moved = true;
    for (const std::string& name : foreign) {
      if (exists_nothrow(home / name)) {
        all_moved = false;
        continue;
      }
      fs::rename(from / name, home / name, ec);
      all_moved = all_moved && !ec;
    }
    if (all_moved) {
      fs::remove(from, ec);
      where = home;
    }
  }
  warn(str_cat("'", where.string(), "' holds files linformer did not write (", join_names(foreign),
               "): they are left in place, only the checkpoint's own files were removed"));
}

// Deletes a checkpoint directory without ever leaving it half-deleted under its name (where a reader
// would take what is left for a checkpoint): it is renamed to <name>.del-<pid> first, then its
// checkpoint files are removed. A crash in between leaves a .del-* directory that nothing reads and
// the next sweep removes. Files that are not ours survive (keep_foreign_entries). Best effort.
void discard_dir(const fs::path& p) {
  std::error_code ec;
  const fs::path home = parent_or_dot(p) / base_name(p.filename().string());
  const fs::path trash = parent_or_dot(p) / str_cat(p.filename().string(), kDelInfix, ::getpid());
  if (exists_nothrow(trash)) discard_dir(trash);  // a leftover of a process with our pid
  fs::rename(p, trash, ec);
  const fs::path at = ec ? p : trash;  // cannot rename (gone already?): clear it in place
  if (!ec) crash_point("discarding");
  if (const auto foreign = remove_checkpoint_files(at); !foreign.empty()) keep_foreign_entries(at, home, foreign);
}

// The pid in a "<name>.tmp-<pid>[-<counter>]" entry, or 0.
pid_t tmp_owner(const std::string& entry) {
  const size_t at = entry.find(kTmpInfix);
  if (at == std::string::npos) return 0;
  long long pid = 0;
  for (size_t i = at + std::strlen(kTmpInfix); i < entry.size() && entry[i] >= '0' && entry[i] <= '9'; ++i)
    pid = pid * 10 + (entry[i] - '0');
  return pid > 0 && pid < (1ll << 31) ? pid_t(pid) : 0;
}

bool process_alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

// Tidies a run's checkpoints/ after killed processes: removes .del-* directories and the .tmp-*
// directories and files (interrupted saves, an interrupted write of `latest`) of processes that no
// longer run; renames the newest .old-* copy of a checkpoint that is missing (an overwrite killed
// between its renames) back into place, and drops .old-* copies of checkpoints that are in place.
// Best effort: a leftover only costs space, and readers find an .old-* copy anyway.
void sweep_leftovers(const fs::path& ck) {
  std::vector<fs::path> doomed, discarded;
  std::set<fs::path> missing;
  std::error_code ec;
  for (fs::directory_iterator it(ck, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string entry = it->path().filename().string();
    if (entry.find(kDelInfix) != std::string::npos) {
      doomed.push_back(it->path());
    } else if (const pid_t pid = tmp_owner(entry)) {
      if (pid != ::getpid() && !process_alive(pid)) doomed.push_back(it->path());
    } else if (entry.find(kOldInfix) != std::string::npos) {
      const fs::path base = ck / base_name(entry);
      if (is_complete(base)) {
        discarded.push_back(it->path());
      } else if (!exists_nothrow(base)) {
        missing.insert(base);
      }
    }
  }
  for (const fs::path& p : doomed)
    if (const auto foreign = remove_checkpoint_files(p); !foreign.empty())
      keep_foreign_entries(p, ck / base_name(p.filename().string()), foreign);
  for (const fs::path& p : discarded) discard_dir(p);
  for (const fs::path& base : missing)
    if (const auto old = newest_old_copy(base)) fs::rename(*old, base, ec);
  if (!missing.empty()) {
    try {
      fsync_dir(ck, "tidying checkpoints");
    } catch (const IoError&) {  // the rename may be lost in a power cut: the .old-* copy is read then
    }
  }
}

std::string shape_dtype_str(const std::vector<int64_t>& shape, const std::string& dtype) {
  return str_cat(shape_str(shape), " ", dtype);
}

// The tensors of `file` must be exactly the arena's parameters under `prefixes` (one copy per prefix),
// each F32 with the parameter's shape. Throws one lf::IoError listing every mismatch.
void check_tensors(const SafeTensorsFile& file, const ParamArena<float>& arena,
                   const std::vector<std::string>& prefixes) {
  std::vector<std::string> problems;
  std::map<std::string, bool> expected;
  for (const std::string& prefix : prefixes) {
    for (const ParamInfo& p : arena.params()) {
      const std::string name = prefix + p.name;
      expected[name] = true;
      if (!file.has(name)) {
        problems.push_back(str_cat("tensor '", name, "' (expected ", shape_dtype_str(p.shape, "F32"), ") is missing"));
        continue;
      }
      const StoredTensor t = file.get(name);
      if (t.shape != p.shape || t.dtype != "F32")
        problems.push_back(str_cat("tensor '", name, "': expected ", shape_dtype_str(p.shape, "F32"), ", found ",
                                   shape_dtype_str(t.shape, t.dtype)));
    }
  }
  for (const std::string& name : file.names()) {
    if (expected.count(name)) continue;
    const StoredTensor t = file.get(name);
    problems.push_back(str_cat("unexpected tensor '", name, "' ", shape_dtype_str(t.shape, t.dtype),
                               " (the model has no such parameter)"));
  }
  if (problems.empty()) return;
  constexpr size_t kShown = 10;
  std::string list;
  for (size_t i = 0; i < problems.size() && i < kShown; ++i) list += "\n  " + problems[i];
  if (problems.size() > kShown) list += str_cat("\n  ... and ", problems.size() - kShown, " more");
  throw IoError(str_cat("checkpoint file '", file.source(), "' does not match the model (", problems.size(),
                        " problem", problems.size() == 1 ? "" : "s", "):", list,
                        "\nBuild the model from the checkpoint's own config.json, or load a checkpoint saved for "
                        "this configuration."));
}

// Our format marker (absent is accepted: a file converted from elsewhere may have no metadata).
void check_format_marker(const SafeTensorsFile& f) {
  const auto& meta = f.metadata();
  if (auto it = meta.find("format"); it != meta.end() && it->second != kFormat)
    throw IoError(str_cat("'", f.source(), "' has format '", it->second, "' in its metadata, expected '", kFormat,
                          "': it is not a linformer checkpoint file"));
  if (auto it = meta.find("version"); it != meta.end() && it->second != kVersion)
    throw IoError(str_cat("'", f.source(), "' has checkpoint version '", it->second, "'; this build reads version ",
                          kVersion));
}

// A file of the checkpoint, read and checked for our format marker.
SafeTensorsFile read_tensor_file(const fs::path& path, const char* missing_hint) {
  if (!exists_nothrow(path))
    throw IoError(str_cat("'", path.string(), "' is missing: ", missing_hint));
  SafeTensorsFile f = [&] {
    try {
      return SafeTensorsFile::read(path.string());
    } catch (const IoError& e) {
      throw IoError(str_cat(e.what(), " (the checkpoint is corrupt; load an earlier checkpoint)"));
    }
  }();
  check_format_marker(f);
  return f;
}

void write_tensors(const fs::path& path, const SafeTensorsWriter& w) {
  const std::vector<uint8_t> bytes = w.serialize();
  write_file_atomic(path.string(), std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

void remove_all_or_throw(const fs::path& p, const std::string& context) {
  std::error_code ec;
  fs::remove_all(p, ec);
  if (ec) throw IoError(str_cat(context, ": cannot remove '", p.string(), "': ", ec.message()));
}

// The checkpoint name <run_dir>/checkpoints/latest holds, or "" when missing or malformed.
std::string read_latest_name(const fs::path& ck) {
  const fs::path file = ck / kLatestFile;
  if (!exists_nothrow(file)) return "";
  std::string name;
  try {
    name = read_text_file(file);
  } catch (const IoError&) {
    return "";
  }
  while (!name.empty() && (name.back() == '\n' || name.back() == '\r' || name.back() == ' ')) name.pop_back();
  return parse_step_name(name) ? name : "";
}

}  // namespace

void save_checkpoint(const std::string& dir, const ModelConfig& config, const ParamArena<float>& arena,
                     const OptimizerMoments* moments, const json& trainer_state) {
  LF_REQUIRE(arena.allocated(), "save_checkpoint: the parameter arena is not allocated (call allocate() first)");
  config.validate();
  const size_t n = size_t(arena.numel());
  if (moments)
    LF_REQUIRE(moments->m.size() == n && moments->v.size() == n, "save_checkpoint: optimizer moments have ",
               moments->m.size(), " and ", moments->v.size(), " elements but the arena has ", n,
               " (they must be laid out like the arena's values)");
  LF_REQUIRE(trainer_state.is_null() || trainer_state.is_object(),
             "save_checkpoint: trainer_state must be a JSON object (or null for none), got ", trainer_state.type_name());

  // Everything is serialised before the disk is touched, so a bad input leaves no trace.
  SafeTensorsWriter model;
  for (int i = 0; i < arena.count(); ++i) model.add_f32(arena.info(i).name, arena.info(i).shape, arena.value(i));
  model.set_metadata("format", kFormat);
  model.set_metadata("version", kVersion);
  SafeTensorsWriter optimizer;
  if (moments) {
    for (const ParamInfo& p : arena.params()) {
      optimizer.add_f32("exp_avg." + p.name, p.shape, moments->m.data() + p.offset);
      optimizer.add_f32("exp_avg_sq." + p.name, p.shape, moments->v.data() + p.offset);
    }
    optimizer.set_metadata("format", kFormat);
    optimizer.set_metadata("version", kVersion);
    optimizer.set_metadata("optimizer", "adamw");
  }
  const std::string config_text = config.to_json().dump(2) + "\n";
  const std::string state_text = trainer_state.is_null() ? "" : trainer_state.dump(2) + "\n";

  const fs::path target = normalized(dir);
  const fs::path parent = parent_or_dot(target);
  const std::string name = target.filename().string();
  const std::string context = str_cat("cannot save checkpoint '", target.string(), "'");
  const fs::path tmp = parent / str_cat(name, kTmpInfix, ::getpid());
  const fs::path old = parent / str_cat(name, kOldInfix, ::getpid());

  std::error_code ec;
  const bool parent_existed = fs::is_directory(parent, ec);
  fs::create_directories(parent, ec);
  if (ec) throw IoError(str_cat(context, ": cannot create directory '", parent.string(), "': ", ec.message()));
  if (!parent_existed) fsync_dir(parent_or_dot(parent), context);  // the new directory's own entry
  remove_all_or_throw(tmp, context);  // a leftover of an earlier crash of a process with our pid
  fs::create_directory(tmp, ec);
  if (ec) throw IoError(str_cat(context, ": cannot create directory '", tmp.string(), "': ", ec.message()));

  try {
    write_file_atomic((tmp / kConfigFile).string(), config_text);
    write_tensors(tmp / kModelFile, model);
    if (moments) write_tensors(tmp / kOptimizerFile, optimizer);
    if (!trainer_state.is_null()) write_file_atomic((tmp / kTrainerStateFile).string(), state_text);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }

  // The swap: at every instant a complete checkpoint is at `target` or at `old` (see the header).
  crash_point("tmp-written");
  const bool replacing = exists_nothrow(target);
  if (replacing) {
    if (exists_nothrow(old)) discard_dir(old);  // a leftover of a process with our pid
    fs::rename(target, old, ec);
    if (ec) {
      const std::string msg = ec.message();
      fs::remove_all(tmp, ec);
      throw IoError(str_cat(context, ": cannot move the previous checkpoint aside to '", old.string(), "': ", msg));
    }
    crash_point("moved-aside");
  }
  fs::rename(tmp, target, ec);
  if (ec) {
    const std::string msg = ec.message();
    if (replacing) fs::rename(old, target, ec);
    fs::remove_all(tmp, ec);
    throw IoError(str_cat(context, ": cannot rename '", tmp.string(), "' into place: ", msg));
  }
  fsync_dir(parent, context);
  crash_point("renamed-in");
  // The new checkpoint is in place: the old one and leftovers of interrupted saves (any pid) go.
  std::vector<fs::path> leftovers;
  for (fs::directory_iterator it(parent, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string entry = it->path().filename().string();
    if (starts_with(entry, name + kOldInfix) || starts_with(entry, name + kTmpInfix)) leftovers.push_back(it->path());
  }
  for (const fs::path& p : leftovers) {
    if (starts_with(p.filename().string(), name + kOldInfix)) {
      discard_dir(p);  // a complete copy: never leave a part of it under a readable name
    } else if (const auto foreign = remove_checkpoint_files(p); !foreign.empty()) {  // best effort
      keep_foreign_entries(p, target, foreign);
    }
  }
  fsync_dir(parent, context);
}

std::string resolve_checkpoint_dir(const std::string& dir) {
  const fs::path p = normalized(dir);
  if (exists_nothrow(p)) {
    std::error_code ec;
    if (!fs::is_directory(p, ec))
      throw IoError(str_cat("'", p.string(), "' is not a directory: a checkpoint is a directory holding ", kConfigFile,
                            " and ", kModelFile));
    if (!exists_nothrow(p / kConfigFile))
      throw IoError(str_cat("not a linformer checkpoint directory: '", (p / kConfigFile).string(),
                            "' is missing (pass the directory that holds config.json and model.safetensors)"));
    return p.string();
  }
  if (auto old = newest_old_copy(p)) return old->string();
  throw IoError(str_cat("checkpoint directory '", p.string(), "' does not exist"));
}

ModelConfig read_checkpoint_config(const std::string& dir) {
  const fs::path file = fs::path(resolve_checkpoint_dir(dir)) / kConfigFile;
  return parse_checkpoint_config(read_text_file(file), file.string());
}

ModelConfig parse_checkpoint_config(std::string_view text, const std::string& source) {
  const json j = parse_json_text(text, source);
  try {
    return ModelConfig::from_json(j);
  } catch (const InvalidArgument& e) {
    throw IoError(str_cat("'", source, "' is not a valid model configuration: ", e.what()));
  }
}

void check_model_tensors(const SafeTensorsFile& file, const ParamArena<float>& arena) {
  check_format_marker(file);
  check_tensors(file, arena, {""});
}

json read_trainer_state(const std::string& dir) {
  const fs::path d = resolve_checkpoint_dir(dir);
  const fs::path file = d / kTrainerStateFile;
  if (!exists_nothrow(file))
    throw IoError(str_cat("'", file.string(), "' is missing: '", d.string(),
                          "' is a model-only checkpoint, so training cannot resume from it; start a new run "
                          "initialised from its weights instead"));
  json j = read_json_file(file);
  if (!j.is_object())
    throw IoError(str_cat("'", file.string(), "' must hold a JSON object, got ", j.type_name(),
                          ": the checkpoint is corrupt"));
  return j;
}

LoadedCheckpoint load_checkpoint(const std::string& dir) {
  LoadedCheckpoint c;
  c.dir = resolve_checkpoint_dir(dir);
  c.config = read_checkpoint_config(c.dir);
  c.trainer_state = exists_nothrow(fs::path(c.dir) / kTrainerStateFile) ? read_trainer_state(c.dir) : json::object();
  c.has_optimizer = exists_nothrow(fs::path(c.dir) / kOptimizerFile);
  return c;
}

void load_checkpoint_weights(const std::string& dir, ParamArena<float>& arena, OptimizerMoments* moments) {
  LF_REQUIRE(arena.allocated(), "load_checkpoint_weights: the parameter arena is not allocated (call allocate() first)");
  const fs::path d = resolve_checkpoint_dir(dir);
  // Everything is read and checked before the arena or the moments change.
  const SafeTensorsFile model =
      read_tensor_file(d / kModelFile, "the checkpoint is incomplete; load an earlier checkpoint");
  check_tensors(model, arena, {""});
  std::optional<SafeTensorsFile> optimizer;
  if (moments) {
    optimizer = read_tensor_file(d / kOptimizerFile,
                                 "the checkpoint holds no optimizer state (a model-only checkpoint); load the "
                                 "weights only (moments = null) and start the optimizer afresh");
    check_tensors(*optimizer, arena, {"exp_avg.", "exp_avg_sq."});
  }

  // Views may be unaligned: memcpy.
  for (const ParamInfo& p : arena.params())
    std::memcpy(arena.values() + p.offset, model.get(p.name).data, size_t(p.numel) * sizeof(float));
  if (moments) {
    moments->m.assign(size_t(arena.numel()), 0.0f);
    moments->v.assign(size_t(arena.numel()), 0.0f);
    for (const ParamInfo& p : arena.params()) {
      std::memcpy(moments->m.data() + p.offset, optimizer->get("exp_avg." + p.name).data, size_t(p.numel) * sizeof(float));
      std::memcpy(moments->v.data() + p.offset, optimizer->get("exp_avg_sq." + p.name).data,
                  size_t(p.numel) * sizeof(float));
    }
  }
}

std::string checkpoint_dir_for_step(const std::string& run_dir, int64_t step) {
  LF_REQUIRE(step >= 0, "checkpoint step must be >= 0, got ", step);
  char name[32];
  std::snprintf(name, sizeof name, "%s%08lld", kStepPrefix, static_cast<long long>(step));
  return (fs::path(run_dir) / "checkpoints" / name).string();
}

std::string save_step_checkpoint(const std::string& run_dir, int64_t step, const ModelConfig& config,
                                 const ParamArena<float>& arena, const OptimizerMoments* moments,
                                 const json& trainer_state, int keep) {
  LF_REQUIRE(keep >= 0, "save_step_checkpoint: keep must be >= 0 (0: keep all), got ", keep);
  const std::string dir = checkpoint_dir_for_step(run_dir, step);
  save_checkpoint(dir, config, arena, moments, trainer_state);
  crash_point("saved");
  const fs::path ck = fs::path(run_dir) / "checkpoints";
  write_file_atomic((ck / kLatestFile).string(), fs::path(dir).filename().string() + "\n");
  crash_point("latest-written");
  sweep_leftovers(ck);
  if (keep > 0) prune_checkpoints(run_dir, keep);
  return dir;
}

std::string latest_checkpoint(const std::string& run_dir) {
  const fs::path ck = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(ck, ec)) return "";
  const std::string named = read_latest_name(ck);
  if (!named.empty() && checkpoint_available(ck / named)) return (ck / named).string();
  // Fallback: the highest step whose checkpoint is readable. .tmp-* directories never count: their
  // base name is only used when the checkpoint itself (or its .old-* copy) is complete.
  std::optional<int64_t> best;
  std::string best_name;
  for (fs::directory_iterator it(ck, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string base = base_name(it->path().filename().string());
    const auto step = parse_step_name(base);
    if (!step || (best && *step <= *best) || !checkpoint_available(ck / base)) continue;
    best = step;
    best_name = base;
  }
  return best ? (ck / best_name).string() : "";
}

void prune_checkpoints(const std::string& run_dir, int keep) {
  LF_REQUIRE(keep >= 1, "prune_checkpoints: keep must be >= 1, got ", keep);
  const fs::path ck = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(ck, ec)) return;
  // step -> the checkpoint directory and its .old-* copies; .tmp-* may be a save in progress.
  std::map<int64_t, std::vector<fs::path>, std::greater<>> steps;
  for (fs::directory_iterator it(ck, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string entry = it->path().filename().string();
    if (entry.find(kTmpInfix) != std::string::npos || entry.find(kDelInfix) != std::string::npos) continue;
    // A directory holding none of our files (what a user left in a pruned one) is not a checkpoint.
    if (!holds_checkpoint_files(it->path())) continue;
    if (const auto step = parse_step_name(base_name(entry))) steps[*step].push_back(it->path());
  }
  if (ec) throw IoError(str_cat("cannot list '", ck.string(), "': ", ec.message()));
  const std::string latest = read_latest_name(ck);
  int kept = 0;
  for (const auto& [step, paths] : steps) {
    if (kept < keep) {
      ++kept;
      continue;
    }
    if (!latest.empty() && parse_step_name(latest) == step) continue;  // an older `latest` stays readable
    for (const fs::path& p : paths) {
      discard_dir(p);
      if (holds_checkpoint_files(p)) throw IoError(str_cat("cannot prune old checkpoints: cannot remove the files of '",
                                                           p.string(), "'"));
    }
  }
}

void remove_run_checkpoints(const std::string& run_dir) {
  const fs::path ck = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(ck, ec)) return;
  std::vector<fs::path> entries;
  for (fs::directory_iterator it(ck, ec), end; !ec && it != end; it.increment(ec)) entries.push_back(it->path());
  for (const fs::path& p : entries) {
    const std::string entry = p.filename().string();
    if (entry == kLatestFile || starts_with(entry, std::string(kLatestFile) + kTmpInfix)) {
      fs::remove(p, ec);
    } else if (parse_step_name(base_name(entry))) {
      if (holds_checkpoint_files(p)) discard_dir(p);
    }
  }
  fs::remove(ck, ec);  // only when empty
}

CheckpointWarningHandler set_checkpoint_warning_handler(CheckpointWarningHandler handler) {
  std::swap(warning_handler(), handler);
  return handler;
}

}  // namespace lf
