// Version, status names and the thread's last error.
#include "core/error.hpp"
#include "sparseattn.h"

#define SA_STR2(x) #x
#define SA_STR(x) SA_STR2(x)

extern "C" {

SA_API uint32_t sa_version(void) { return SA_VERSION; }

SA_API const char *sa_version_string(void) {
  return SA_STR(SA_VERSION_MAJOR) "." SA_STR(SA_VERSION_MINOR) "." SA_STR(SA_VERSION_PATCH);
}

SA_API const char *sa_last_error(void) { return sa::last_error(); }

SA_API const char *sa_status_name(sa_status status) {
  switch (status) {
    case SA_OK: return "SA_OK";
    case SA_ERR_NULL_POINTER: return "SA_ERR_NULL_POINTER";
    case SA_ERR_INVALID_ARGUMENT: return "SA_ERR_INVALID_ARGUMENT";
    case SA_ERR_DTYPE: return "SA_ERR_DTYPE";
    case SA_ERR_SHAPE: return "SA_ERR_SHAPE";
    case SA_ERR_OUT_OF_RANGE: return "SA_ERR_OUT_OF_RANGE";
    case SA_ERR_OVERFLOW: return "SA_ERR_OVERFLOW";
    case SA_ERR_STRUCT_SIZE: return "SA_ERR_STRUCT_SIZE";
    case SA_ERR_OUT_OF_MEMORY: return "SA_ERR_OUT_OF_MEMORY";
    case SA_ERR_UNSUPPORTED: return "SA_ERR_UNSUPPORTED";
    case SA_ERR_BACKEND_UNAVAILABLE: return "SA_ERR_BACKEND_UNAVAILABLE";
    case SA_ERR_FORMAT: return "SA_ERR_FORMAT";
    case SA_ERR_INTERNAL: return "SA_ERR_INTERNAL";
  }
  return "SA_ERR_UNKNOWN";
}

SA_API const char *sa_isa_name(sa_isa isa) {
  switch (isa) {
    case SA_ISA_SCALAR: return "scalar";
    case SA_ISA_NEON: return "neon";
    case SA_ISA_AVX2: return "avx2";
    case SA_ISA_AVX512: return "avx512";
    case SA_ISA_AUTO: return "auto";
  }
  return "unknown";
}

}  // extern "C"
