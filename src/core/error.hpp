// Status codes and thread-local messages. Internally, failures are thrown as sa::Error and
// turned into a status at the API boundary (sa::guarded); nothing escapes the C ABI.
#pragma once

#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "sparseattn.h"

namespace sa {

struct Error {
  sa_status status;
  std::string message;
};

// Throws sa::Error with a printf-style message.
[[noreturn]] void fail(sa_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void set_last_error(const char *message);
const char *last_error();

// Runs f, translating every exception into a status and the thread's message.
template <class F>
sa_status guarded(const char *function, F &&f) noexcept {
  try {
    f();
    return SA_OK;
  } catch (const Error &e) {
    set_last_error((std::string(function) + ": " + e.message).c_str());
    return e.status;
  } catch (const std::bad_alloc &) {
    set_last_error((std::string(function) + ": out of memory").c_str());
    return SA_ERR_OUT_OF_MEMORY;
  } catch (const std::exception &e) {
    set_last_error((std::string(function) + ": internal error: " + e.what()).c_str());
    return SA_ERR_INTERNAL;
  } catch (...) {
    set_last_error((std::string(function) + ": internal error").c_str());
    return SA_ERR_INTERNAL;
  }
}

// The raw value of an enum read from caller memory: a C host may pass any int, and loading
// an out-of-range value through the C++ enum type is undefined.
template <class E>
int enum_value(const E &e) {
  static_assert(sizeof(E) == sizeof(int), "C enums are int-sized");
  int v;
  std::memcpy(&v, &e, sizeof v);
  return v;
}

// Option structs: the caller's struct_size tells how much of our struct it has.
template <class T>
T read_options(const T *opt, const T &defaults, size_t min_size, const char *name) {
  T out = defaults;
  if (!opt) return out;
  if (opt->struct_size < min_size)
    fail(SA_ERR_STRUCT_SIZE, "%s->struct_size is %zu, at least %zu expected (initialise it with the *_INIT macro)",
         name, opt->struct_size, min_size);
  size_t n = opt->struct_size < sizeof(T) ? opt->struct_size : sizeof(T);
  std::memcpy(static_cast<void *>(&out), opt, n);
  out.struct_size = sizeof(T);
  return out;
}

}  // namespace sa
