// What this build of the library has (sa_build_config.h, written by Meson): a test may skip a
// selector kind only when the build left it out, and then checks that the library refuses it
// with SA_ERR_UNSUPPORTED. A kind the build has never skips, so "unsupported" cannot pass
// silently.
#pragma once

#include <gtest/gtest.h>

#include "sa_build_config.h"
#include "sparseattn.h"

#include <initializer_list>
#include <vector>

namespace sat {

inline bool selector_built(sa_selector_kind kind) { return kind != SA_SELECTOR_HNSW || SA_HAVE_HNSWLIB; }

}  // namespace sat

// Skips the test when `status` (of sa_index_create for `kind`) is SA_ERR_UNSUPPORTED and the
// build left the kind out; otherwise falls through, so the caller's status check decides.
#define SA_SKIP_IF_NOT_BUILT(status, kind)                                                                  \
  do {                                                                                                      \
    if ((status) == SA_ERR_UNSUPPORTED && !sat::selector_built(kind))                                       \
      GTEST_SKIP() << "selector kind " << int(kind) << " is not in this build: " << sa_last_error();       \
  } while (0)

namespace sat {

// The entries of `items` whose selector kind (kind_of(item)) this build has, in order: for loops
// and parameter lists over kinds.
template <typename T, typename KindOf>
std::vector<T> built_only(std::initializer_list<T> items, KindOf kind_of) {
  std::vector<T> out;
  for (const T &item : items)
    if (selector_built(kind_of(item))) out.push_back(item);
  return out;
}

inline std::vector<sa_selector_kind> built_kinds(std::initializer_list<sa_selector_kind> kinds) {
  return built_only(kinds, [](sa_selector_kind k) { return k; });
}

}  // namespace sat
