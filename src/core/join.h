// Lists of names in messages: "`task` must be one of mlm, clm, classify".
#pragma once
#include <string>
#include <vector>

namespace lf {

inline std::string join(const std::vector<std::string>& names, const std::string& sep = ", ") {
  std::string out;
  for (const std::string& name : names) out += (out.empty() ? "" : sep) + name;
  return out;
}

}  // namespace lf
