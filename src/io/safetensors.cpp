// safetensors reading (validated) and atomic writing. See safetensors.h for the format.
#include "io/safetensors.h"

#include "io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <filesystem>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "linformer/arena.h"  // shape_str

namespace lf {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; this implementation reads and writes it in place");

namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;  // 100 MB, as the reference implementation
constexpr const char* kMetadataKey = "__metadata__";

std::string sys_error(int err) { return std::strerror(err); }

// Every problem with a file is reported through this, so each message starts with the file's name.
[[noreturn]] void fail(const std::string& source, const std::string& problem) {
  throw IoError(str_cat("safetensors file '", source, "': ", problem));
}

// n × itemsize over the shape, or false on overflow. The element count (every prefix product, as
// TensorView::numel() computes it) must also fit in int64, even when a later zero makes it 0.
bool byte_size(const std::vector<int64_t>& shape, size_t itemsize, size_t* out) {
  uint64_t n = itemsize;
  int64_t numel = 1;
  for (int64_t s : shape)
    if (__builtin_mul_overflow(n, uint64_t(s), &n) || __builtin_mul_overflow(numel, s, &numel)) return false;
  *out = size_t(n);
  return true;
}

std::vector<uint8_t> read_whole_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, str_cat("cannot open: ", sys_error(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    fail(path, str_cat("cannot stat: ", sys_error(e)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, "not a regular file");
  }
  std::vector<uint8_t> bytes(size_t(st.st_size));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t r = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int e = errno;
      ::close(fd);
      fail(path, str_cat("read error: ", sys_error(e)));
    }
    if (r == 0) break;  // the file shrank while we read it: the checks below report the short file
    done += size_t(r);
  }
  bytes.resize(done);
  ::close(fd);
  return bytes;
}

// Parses the header, refusing duplicate keys in any object (nlohmann keeps the last silently).
json parse_header(const uint8_t* begin, const uint8_t* end, const std::string& source) {
  std::vector<std::set<std::string>> keys;  // one set per open object
  auto callback = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start: keys.emplace_back(); break;
      case json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case json::parse_event_t::key: {
        const std::string& k = parsed.get_ref<const std::string&>();
        if (!keys.empty() && !keys.back().insert(k).second) {
          if (keys.size() == 1)
            fail(source, str_cat("duplicate tensor name '", k, "' in the header"));
          fail(source, str_cat("duplicate key '", k, "' in the header"));
        }
        break;
      }
      default: break;
    }
    return true;
  };
  try {
    return json::parse(begin, end, callback, /*allow_exceptions=*/true);
  } catch (const json::exception& e) {
    fail(source, str_cat("header is not valid JSON: ", e.what()));
  }
}

}  // namespace

size_t safetensors_dtype_size(const std::string& dtype) {
  static const std::map<std::string, size_t> sizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"U16", 2}, {"I16", 2}, {"F16", 2},
      {"BF16", 2}, {"U32", 4}, {"I32", 4}, {"F32", 4},     {"U64", 8},     {"I64", 8}, {"F64", 8}};
  auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

// --- reading --------------------------------------------------------------------------------------

SafeTensorsFile SafeTensorsFile::read(const std::string& path) { return parse(read_whole_file(path), path); }

SafeTensorsFile SafeTensorsFile::parse(std::vector<uint8_t> bytes, const std::string& source) {
  SafeTensorsFile f;
  f.source_ = source;
  if (bytes.size() < 8)
    fail(source, str_cat("file is ", bytes.size(), " bytes, shorter than the 8-byte header length"));
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  if (n > kMaxHeaderBytes)
    fail(source, str_cat("header length ", n, " exceeds the limit of ", kMaxHeaderBytes, " bytes"));
  if (n > bytes.size() - 8)
    fail(source, str_cat("header length ", n, " is larger than the file (", bytes.size() - 8,
                         " bytes after the length): truncated or not a safetensors file"));
  const json header = parse_header(bytes.data() + 8, bytes.data() + 8 + n, source);
  if (!header.is_object()) fail(source, str_cat("header is not a JSON object but ", header.type_name()));

  const size_t data_size = bytes.size() - 8 - size_t(n);
  for (const auto& [name, value] : header.items()) {
    if (name == kMetadataKey) {
      if (!value.is_object()) fail(source, str_cat("__metadata__ must be an object, got ", value.type_name()));
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string())
          fail(source, str_cat("__metadata__ value of '", k, "' must be a string, got ", v.dump()));
        f.metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string where = str_cat("tensor '", name, "': ");
    if (!value.is_object()) fail(source, str_cat(where, "entry must be an object, got ", value.type_name()));
    for (const char* key : {"dtype", "shape", "data_offsets"})
      if (!value.contains(key)) fail(source, str_cat(where, "missing \"", key, "\""));
    const json& jd = value["dtype"];
    const json& js = value["shape"];
    const json& jo = value["data_offsets"];
    if (!jd.is_string()) fail(source, str_cat(where, "dtype must be a string, got ", jd.dump()));
    if (!js.is_array()) fail(source, str_cat(where, "shape must be an array of integers, got ", js.dump()));
    if (!jo.is_array() || jo.size() != 2)
      fail(source, str_cat(where, "data_offsets must be an array [begin, end], got ", jo.dump()));

    Entry e;
    e.dtype = jd.get<std::string>();
    const size_t itemsize = safetensors_dtype_size(e.dtype);
    if (itemsize == 0) fail(source, str_cat(where, "unknown dtype '", e.dtype, "'"));
    for (const json& s : js) {
      if (!s.is_number_integer())
        fail(source, str_cat(where, "shape must be an array of integers, got ", js.dump()));
      if (s.is_number_unsigned() && s.get<uint64_t>() > uint64_t(INT64_MAX))
        fail(source, str_cat(where, "dimension ", s.dump(), " is too large"));
      const int64_t dim = s.get<int64_t>();
      if (dim < 0) fail(source, str_cat(where, "negative dimension ", dim, " in shape ", js.dump()));
      e.shape.push_back(dim);
    }
    for (const json& o : jo)
      if (!o.is_number_unsigned())
        fail(source, str_cat(where, "data_offsets must be two non-negative integers, got ", jo.dump()));
    const uint64_t begin = jo[0].get<uint64_t>(), end = jo[1].get<uint64_t>();
    if (begin > end) fail(source, str_cat(where, "data_offsets ", jo.dump(), " has begin after end"));
    if (end > data_size)
      fail(source, str_cat(where, "data_offsets ", jo.dump(), " lie outside the data buffer of ", data_size, " bytes"));
    size_t expected = 0;
    if (!byte_size(e.shape, itemsize, &expected))
      fail(source, str_cat(where, "shape ", js.dump(), " is too large"));
    if (expected != end - begin)
      fail(source, str_cat(where, "shape ", js.dump(), " × ", itemsize, " bytes (", e.dtype, ") = ", expected,
                           " bytes but data_offsets ", jo.dump(), " hold ", end - begin, " bytes"));
    e.begin = size_t(begin);
    e.end = size_t(end);
    f.entries_.emplace(name, std::move(e));
  }

  // No two tensors may share bytes (empty tensors own no bytes and cannot overlap).
  std::vector<std::pair<const std::string*, const Entry*>> order;
  for (const auto& [name, e] : f.entries_)
    if (e.end > e.begin) order.emplace_back(&name, &e);
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return a.second->begin != b.second->begin ? a.second->begin < b.second->begin : a.second->end < b.second->end;
  });
  for (size_t i = 1; i < order.size(); ++i)
    if (order[i].second->begin < order[i - 1].second->end)
      fail(source, str_cat("tensors '", *order[i - 1].first, "' [", order[i - 1].second->begin, ", ",
                           order[i - 1].second->end, ") and '", *order[i].first, "' [", order[i].second->begin, ", ",
                           order[i].second->end, ") overlap in the data buffer"));

  f.data_start_ = 8 + size_t(n);
  f.bytes_ = std::move(bytes);
  return f;
}

TensorView SafeTensorsFile::get(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) fail(source_, str_cat("no tensor named '", name, "'"));
  const Entry& e = it->second;
  TensorView v;
  v.dtype = e.dtype;
  v.shape = e.shape;
  v.data = bytes_.data() + data_start_ + e.begin;
  v.nbytes = e.end - e.begin;
  return v;
}

std::vector<std::string> SafeTensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [name, e] : entries_) out.push_back(name);
  return out;
}

// --- writing --------------------------------------------------------------------------------------

void SafeTensorsWriter::add(const std::string& name, const std::string& dtype, const std::vector<int64_t>& shape,
                            const void* data, size_t nbytes) {
  LF_REQUIRE(!name.empty(), "safetensors: a tensor name must not be empty");
  LF_REQUIRE(name != kMetadataKey, "safetensors: '", kMetadataKey, "' is reserved and cannot name a tensor");
  LF_REQUIRE(!tensors_.count(name), "safetensors: tensor '", name, "' added twice");
  const size_t itemsize = safetensors_dtype_size(dtype);
  LF_REQUIRE(itemsize != 0, "safetensors: tensor '", name, "' has unknown dtype '", dtype, "'");
  for (int64_t s : shape) LF_REQUIRE(s >= 0, "safetensors: tensor '", name, "' has a negative dimension ", s);
  size_t expected = 0;
  LF_REQUIRE(byte_size(shape, itemsize, &expected), "safetensors: tensor '", name, "' is too large");
  LF_REQUIRE(expected == nbytes, "safetensors: tensor '", name, "' of shape ", shape_str(shape), " and dtype ", dtype,
             " needs ", expected, " bytes, got ", nbytes);
  LF_REQUIRE(data != nullptr || nbytes == 0, "safetensors: tensor '", name, "' has no data");
  Tensor t;
  t.dtype = dtype;
  t.shape = shape;
  const auto* p = static_cast<const uint8_t*>(data);
  if (nbytes) t.bytes.assign(p, p + nbytes);
  tensors_.emplace(name, std::move(t));
}

void SafeTensorsWriter::add_f32(const std::string& name, const std::vector<int64_t>& shape, const float* data) {
  for (int64_t s : shape) LF_REQUIRE(s >= 0, "safetensors: tensor '", name, "' has a negative dimension ", s);
  const int64_t n = shape_numel(shape);
  add(name, "F32", shape, data, size_t(n) * sizeof(float));
}

void SafeTensorsWriter::add_f64(const std::string& name, const std::vector<int64_t>& shape, const double* data) {
  for (int64_t s : shape) LF_REQUIRE(s >= 0, "safetensors: tensor '", name, "' has a negative dimension ", s);
  const int64_t n = shape_numel(shape);
  add(name, "F64", shape, data, size_t(n) * sizeof(double));
}

void SafeTensorsWriter::add_f32(const std::string& name, const std::vector<int64_t>& shape,
                                const std::vector<float>& data) {
  add(name, "F32", shape, data.data(), data.size() * sizeof(float));
}

void SafeTensorsWriter::add_f64(const std::string& name, const std::vector<int64_t>& shape,
                                const std::vector<double>& data) {
  add(name, "F64", shape, data.data(), data.size() * sizeof(double));
}

void SafeTensorsWriter::set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

std::vector<uint8_t> SafeTensorsWriter::serialize() const {
  json header = json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors_) {  // name order
    header[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  if (!metadata_.empty()) header[kMetadataKey] = metadata_;
  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {  // e.g. a name that is not valid UTF-8
    throw InvalidArgument(str_cat("safetensors: cannot encode the header: ", e.what()));
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  std::vector<uint8_t> out(8 + text.size() + offset);
  const uint64_t n = text.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, text.data(), text.size());
  uint8_t* dst = out.data() + 8 + text.size();
  for (const auto& [name, t] : tensors_) {
    if (!t.bytes.empty()) std::memcpy(dst, t.bytes.data(), t.bytes.size());
    dst += t.bytes.size();
  }
  return out;
}

void SafeTensorsWriter::write(const std::string& path) const {
  const std::vector<uint8_t> bytes = serialize();
  write_file_atomic(path, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

}  // namespace lf
