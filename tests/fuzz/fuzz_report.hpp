// What one fuzz scenario did, in words, and how it failed. Every step appends a line, so a
// failure prints the whole scenario up to the broken check: enough to read what happened and
// to replay it (the driver prints the seed and iteration that regenerate the input).
#pragma once

#include <gtest/gtest.h>

#include <sstream>
#include <string>

#include "sparseattn.h"

namespace apifuzz {

// Thrown by a failed check; ends the scenario.
struct CheckFailed {
  std::string what;
};

class Report {
 public:
  // Appends one line describing a step.
  template <class... Args>
  void say(const Args &...args) {
    std::ostringstream s;
    (s << ... << args);
    words_ += s.str();
    words_ += '\n';
  }
  const std::string &words() const { return words_; }

  template <class... Args>
  [[noreturn]] void fail(const Args &...args) {
    std::ostringstream s;
    (s << ... << args);
    throw CheckFailed{s.str()};
  }
  template <class... Args>
  void require(bool ok, const Args &...args) {
    if (!ok) fail(args...);
  }
  template <class... Args>
  void require(const ::testing::AssertionResult &r, const Args &...args) {
    if (!r) fail(args..., ": ", r.message());
  }
  // A call that must succeed.
  template <class... Args>
  void require_ok(sa_status s, const Args &...args) {
    if (s != SA_OK) fail(args..., " returned ", sa_status_name(s), ": ", sa_last_error());
  }

 private:
  std::string words_;
};

inline const char *dtype_word(sa_dtype dt) {
  switch (dt) {
    case SA_DTYPE_F32: return "f32";
    case SA_DTYPE_F16: return "f16";
    case SA_DTYPE_BF16: return "bf16";
    case SA_DTYPE_I32: return "i32";
    case SA_DTYPE_I64: return "i64";
  }
  return "?";
}

inline std::string list_words(const int64_t *v, int64_t n) {
  std::ostringstream s;
  s << '{';
  for (int64_t i = 0; i < n; ++i) s << (i ? ", " : "") << v[i];
  s << '}';
  return s.str();
}

}  // namespace apifuzz
