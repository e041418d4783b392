// A table of entries looked up by name: what the attention kinds (AttentionRegistry), the model heads
// (HeadRegistry) and the training objectives are registered in. Entries keep the order they were added
// in, a name is added once, and looking up an unknown name throws lf::InvalidArgument listing the
// names there are, so every registry reports a typo the same way.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "linformer/error.h"

namespace lf {

template <class Entry>
class Registry {
 public:
  // Reads an entry's name (its `info.name`, say).
  using NameOf = const std::string& (*)(const Entry&);

  // `what` names an entry in messages ("attention kind"). With `option` (say "task"), an unknown name
  // is reported as a bad value of that option: "`task` must be one of mlm, clm (each a model head),
  // got 'x'"; without it, "unknown attention kind 'x' (known: full, flash)".
  Registry(std::string what, NameOf name_of, std::string option = {})
      : what_(std::move(what)), option_(std::move(option)), name_of_(name_of) {}

  // Throws lf::InvalidArgument when the name is taken.
  void add(Entry entry) {
    const std::string& name = name_of_(entry);
    LF_REQUIRE(!has(name), what_, " '", name, "' registered twice");
    entries_.push_back(std::move(entry));
  }

  // Null when the name is unknown.
  const Entry* find(const std::string& name) const {
    for (const Entry& e : entries_)
      if (name_of_(e) == name) return &e;
    return nullptr;
  }
  bool has(const std::string& name) const { return find(name) != nullptr; }

  // Throws lf::InvalidArgument listing the known names when the name is unknown.
  const Entry& get(const std::string& name) const {
    if (const Entry* e = find(name)) return *e;
    std::string known;
    for (const Entry& e : entries_) known += (known.empty() ? "" : ", ") + name_of_(e);
    if (known.empty()) known = "none registered";
    if (option_.empty()) throw InvalidArgument(str_cat("unknown ", what_, " '", name, "' (known: ", known, ")"));
    throw InvalidArgument(str_cat("`", option_, "` must be one of ", known, " (each a ", what_, "), got '", name, "'"));
  }

  // In the order they were added.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const Entry& e : entries_) out.push_back(name_of_(e));
    return out;
  }
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  std::string what_, option_;
  NameOf name_of_;
  std::vector<Entry> entries_;
};

// The one R (a registry) of the process, made by R() and filled by `fill(R&)` on first use; never
// destroyed, so a look-up from another static's destructor at exit still finds it.
template <class R, class Fill>
R& first_use_instance(Fill fill) {
  static R* const instance = [&] {
    auto* r = new R();
    fill(*r);
    return r;
  }();
  return *instance;
}

}  // namespace lf
