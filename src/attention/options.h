// Reading a kind's typed options from JSON: each option read with its default and type checked,
// unknown keys refused (a typo must not silently fall back to a default), and the resolved options
// (every default filled in) returned for config.json and `linformer info`.
#pragma once
#include <initializer_list>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/json_value.h"
#include "linformer/error.h"

namespace lf {

class OptionReader {
 public:
  OptionReader(std::string kind, const nlohmann::json& options) : kind_(std::move(kind)), in_(options) {
    LF_REQUIRE(in_.is_object(), "options of attention kind '", kind_, "' must be a JSON object");
  }

  bool get_bool(const std::string& key, bool fallback) {
    const nlohmann::json* v = take(key);
    if (!v) return put(key, fallback);
    LF_REQUIRE(v->is_boolean(), where(key), " must be true or false, got ", v->dump());
    return put(key, v->get<bool>());
  }

  int64_t get_int(const std::string& key, int64_t fallback) {
    const nlohmann::json* v = take(key);
    if (!v) return put(key, fallback);
    int64_t value = 0;
    LF_REQUIRE(json_value_to(*v, value), where(key), " must be an integer in the int64 range, got ", v->dump());
    return put(key, value);
  }

  double get_double(const std::string& key, double fallback) {
    const nlohmann::json* v = take(key);
    if (!v) return put(key, fallback);
    LF_REQUIRE(v->is_number(), where(key), " must be a number, got ", v->dump());
    return put(key, v->get<double>());
  }

  // A JSON array of integers (e.g. positions); an absent key gives the fallback.
  std::vector<int64_t> get_int_list(const std::string& key, const std::vector<int64_t>& fallback) {
    const nlohmann::json* v = take(key);
    if (!v) return put(key, fallback);
    LF_REQUIRE(v->is_array(), where(key), " must be an array of integers, got ", v->dump());
    std::vector<int64_t> out;
    for (const nlohmann::json& e : *v) {
      int64_t value = 0;
      LF_REQUIRE(json_value_to(e, value), where(key), " must be an array of integers, got ", v->dump());
      out.push_back(value);
    }
    return put(key, out);
  }

  std::string get_choice(const std::string& key, const std::string& fallback,
                         std::initializer_list<const char*> allowed) {
    const nlohmann::json* v = take(key);
    std::string value = fallback;
    if (v) {
      LF_REQUIRE(v->is_string(), where(key), " must be a string, got ", v->dump());
      value = v->get<std::string>();
    }
    std::string list;
    for (const char* a : allowed) {
      if (value == a) return put(key, value);
      list += (list.empty() ? "" : " | ") + std::string(a);
    }
    throw InvalidArgument(str_cat(where(key), " must be one of ", list, ", got '", value, "'"));
  }

  // Throws on any key that no getter asked for; returns the resolved options.
  nlohmann::json finish() const {
    for (const auto& [key, value] : in_.items())
      LF_REQUIRE(seen_.count(key), "unknown option '", key, "' for attention kind '", kind_, "'");
    return out_;
  }

  // The same, the resolved options written to *resolved when it is not null (a parser's last step).
  void finish(nlohmann::json* resolved) const {
    nlohmann::json out = finish();
    if (resolved) *resolved = std::move(out);
  }

  std::string where(const std::string& key) const { return str_cat("option '", key, "' of attention kind '", kind_, "'"); }

 private:
  const nlohmann::json* take(const std::string& key) {
    seen_.insert(key);
    auto it = in_.find(key);
    return it == in_.end() || it->is_null() ? nullptr : &*it;
  }
  template <class V>
  V put(const std::string& key, V value) {
    out_[key] = value;
    return value;
  }

  std::string kind_;
  const nlohmann::json& in_;
  nlohmann::json out_ = nlohmann::json::object();
  std::set<std::string> seen_;
};

}  // namespace lf
