// libFuzzer targets for the loaders, one per input format, and for the server's request parser. Each
// feeds the bytes to the loader the way the tool reads that file and returns 1 when the loader accepts them, 0 when it refuses them with
// lf::Error (the clean refusal). Anything else is a bug the fuzzer reports: another exception type
// escapes, a check in the target aborts, or a sanitizer fires. The fuzzer mains (fuzz/fuzz_*.cpp) and
// the normal test binary (test_fuzz_inputs.cpp, over the seed corpus and the regression inputs) both
// call these.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lf::fuzz {

int fuzz_safetensors(const uint8_t* data, size_t size);  // SafeTensorsFile::parse, every view read
int fuzz_checkpoint(const uint8_t* data, size_t size);   // model.safetensors against a tiny model
int fuzz_config(const uint8_t* data, size_t size);       // config.json; {"model":…, "train":…} files
int fuzz_corpus(const uint8_t* data, size_t size);       // corpus bytes (plain or gzip), tokenizer
int fuzz_tsv(const uint8_t* data, size_t size);          // classification TSV (plain or gzip)
int fuzz_serve_request(const uint8_t* data, size_t size); // a `linformer serve` request body (first byte: endpoint)

struct Target {
  const char* name;
  int (*run)(const uint8_t*, size_t);
};
const std::vector<Target>& targets();

// The seed corpus, generated: file name -> contents, per target. A name starting with "ok-" must be
// accepted, "bad-" refused; test_fuzz_inputs.cpp checks both and that the committed files match.
// Seeds derived from the attention registry (one config per kind) are not committed: the suite runs
// them in memory and the config fuzzer writes them into its working corpus (write_registry_seeds), so
// a new kind needs no seed file.
struct Seed {
  std::string name;
  std::vector<uint8_t> bytes;
  bool from_registry = false;
};
std::vector<Seed> seed_corpus(const std::string& target);

// Writes the target's from_registry seeds into `dir` (for the libFuzzer mains).
void write_registry_seeds(const std::string& target, const std::string& dir);

}  // namespace lf::fuzz
