#include "core/error.hpp"

#include <cstdarg>
#include <cstdio>

namespace sa {

namespace {
thread_local std::string t_last_error;
}

void fail(sa_status status, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  throw Error{status, buf};
}

void set_last_error(const char *message) { t_last_error = message; }
const char *last_error() { return t_last_error.c_str(); }

}  // namespace sa
