// Shared by the PyTorch parity tests (tests/attention/test_golden_parity.cpp,
// tests/model/test_linformer_lm_parity.cpp): the provenance every golden must carry.
#pragma once
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"

namespace lf::test {

// A golden's __metadata__ must say what produced it (docs/goldens.md): "reference", "torch_version",
// "python_version", and for every package named in the JSON list "packages" its "<package>_version".
// A golden without them cannot be reproduced, so it fails.
inline void expect_golden_versions(const SafeTensorsFile& f) {
  const auto& meta = f.metadata();
  auto nonempty = [&](const std::string& key) {
    const auto it = meta.find(key);
    return it != meta.end() && !it->second.empty();
  };
  std::set<std::string> required = {"reference", "torch_version", "python_version", "packages"};
  if (nonempty("packages")) {
    const nlohmann::json packages = nlohmann::json::parse(meta.at("packages"), nullptr, /*allow_exceptions=*/false);
    EXPECT_TRUE(packages.is_array() && !packages.empty())
        << f.source() << ": \"packages\" must be a non-empty JSON list, got " << meta.at("packages");
    if (packages.is_array())
      for (const auto& p : packages) {
        EXPECT_TRUE(p.is_string()) << f.source() << ": \"packages\" holds a non-string";
        if (p.is_string()) required.insert(p.get<std::string>() + "_version");
      }
  }
  for (const std::string& key : required)
    EXPECT_TRUE(nonempty(key)) << f.source() << ": __metadata__ lacks \"" << key << "\"";
}

}  // namespace lf::test
