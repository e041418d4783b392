// The generic registry (linformer/registry.h) the attention kinds, heads and training objectives are
// registered in: entries in the order added, a name taken twice refused, an unknown name reported with
// the known ones, and the process's one instance filled on first use only.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "linformer/error.h"
#include "linformer/registry.h"

namespace lf {
namespace {

struct Entry {
  std::string name;
  int value = 0;
};

const std::string& name_of(const Entry& e) { return e.name; }

// The message of the lf::InvalidArgument that f throws (fails the test when it throws none).
template <class F>
std::string invalid_argument_of(F f) {
  try {
    f();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  ADD_FAILURE() << "no lf::InvalidArgument";
  return {};
}

TEST(Registry, KeepsEntriesInTheOrderAdded) {
  Registry<Entry> r("widget", name_of);
  EXPECT_TRUE(r.names().empty());
  r.add({"zeta", 1});
  r.add({"alpha", 2});
  r.add({"mu", 3});
  EXPECT_EQ(r.names(), (std::vector<std::string>{"zeta", "alpha", "mu"}));
  ASSERT_EQ(r.entries().size(), 3u);
  EXPECT_EQ(r.entries()[1].value, 2);
  EXPECT_EQ(r.get("mu").value, 3);
  EXPECT_TRUE(r.has("alpha"));
  EXPECT_FALSE(r.has("beta"));
  ASSERT_NE(r.find("zeta"), nullptr);
  EXPECT_EQ(r.find("zeta")->value, 1);
  EXPECT_EQ(r.find("Zeta"), nullptr);  // names are exact
}

TEST(Registry, RefusesANameTakenTwice) {
  Registry<Entry> r("widget", name_of);
  r.add({"alpha", 1});
  EXPECT_EQ(invalid_argument_of([&] { r.add({"alpha", 2}); }), "widget 'alpha' registered twice");
  ASSERT_EQ(r.entries().size(), 1u);  // the first one stays
  EXPECT_EQ(r.get("alpha").value, 1);
}

TEST(Registry, AnUnknownNameListsTheKnownOnes) {
  Registry<Entry> r("widget", name_of);
  EXPECT_EQ(invalid_argument_of([&] { r.get("alpha"); }), "unknown widget 'alpha' (known: none registered)");
  r.add({"alpha", 1});
  r.add({"beta", 2});
  EXPECT_EQ(invalid_argument_of([&] { r.get("gamma"); }), "unknown widget 'gamma' (known: alpha, beta)");
}

TEST(Registry, AnUnknownNameOfAnOptionNamesTheOption) {
  Registry<Entry> r("widget", name_of, "kind");
  r.add({"alpha", 1});
  r.add({"beta", 2});
  EXPECT_EQ(invalid_argument_of([&] { r.get("gamma"); }),
            "`kind` must be one of alpha, beta (each a widget), got 'gamma'");
}

struct Widgets : Registry<Entry> {
  Widgets() : Registry("widget", name_of) {}
};

Widgets& widgets(int* fills) {
  return first_use_instance<Widgets>([fills](Widgets& r) {
    ++*fills;
    r.add({"alpha", 1});
  });
}

TEST(Registry, TheInstanceIsFilledOnce) {
  int fills = 0;
  Widgets& first = widgets(&fills);
  Widgets& again = widgets(&fills);
  EXPECT_EQ(&first, &again);
  EXPECT_EQ(fills, 1);
  EXPECT_EQ(again.names(), std::vector<std::string>{"alpha"});
}

}  // namespace
}  // namespace lf
