// Exact conversion of a JSON value to a C++ field, for the loaders of config files. nlohmann's get<>
// converts silently between number kinds (2.7 -> 2, -1 -> 2^64 - 1, and 1e300 -> int64 is undefined
// behaviour); this refuses every conversion that does not keep the value.
#pragma once
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include <nlohmann/json.hpp>

namespace lf {

// Stores v in out and returns true when v has T's kind and fits it exactly: an integer in T's range
// for integer T, any number for floating-point T, a boolean for bool, a string for std::string.
// Otherwise returns false and leaves out unchanged.
template <class T>
bool json_value_to(const nlohmann::json& v, T& out) {
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) return false;
    out = v.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer()) return false;
    if (v.is_number_unsigned()) {
      const uint64_t u = v.get<uint64_t>();
      if (u > uint64_t(std::numeric_limits<T>::max())) return false;
      out = T(u);
    } else {
      const int64_t s = v.get<int64_t>();
      if constexpr (std::is_signed_v<T>) {
        if (s < int64_t(std::numeric_limits<T>::min()) || s > int64_t(std::numeric_limits<T>::max())) return false;
      } else {
        if (s < 0 || uint64_t(s) > uint64_t(std::numeric_limits<T>::max())) return false;
      }
      out = T(s);
    }
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number()) return false;
    out = v.get<T>();
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string()) return false;
    out = v.get<std::string>();
  } else {
    static_assert(sizeof(T) == 0, "json_value_to: unsupported field type");
  }
  return true;
}

}  // namespace lf
