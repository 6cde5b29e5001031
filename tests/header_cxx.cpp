// Build check: the public header compiles as C++ with pedantic warnings as errors, its
// declarations have C linkage, and the *_INIT macros work as C++ initialisers.
#include "sparseattn.h"

#include <type_traits>

static_assert(std::is_standard_layout<sa_tensor>::value, "sa_tensor is a C struct");
static_assert(std::is_trivially_copyable<sa_api>::value, "sa_api is a C struct");
static_assert(SA_OK == 0, "SA_OK is 0");
static_assert(SA_VERSION == ((SA_VERSION_MAJOR << 16) | (SA_VERSION_MINOR << 8) | SA_VERSION_PATCH), "encoding");

int main() {
  sa_context_options c = SA_CONTEXT_OPTIONS_INIT;
  sa_index_options i = SA_INDEX_OPTIONS_INIT;
  sa_select_options s = SA_SELECT_OPTIONS_INIT;
  sa_attend_options a = SA_ATTEND_OPTIONS_INIT;
  sa_evict_options e = SA_EVICT_OPTIONS_INIT;
  sa_paged_kv kv = SA_PAGED_KV_INIT;
  sa_get_api_fn getter = nullptr;
  (void)getter;
  return (c.struct_size && i.struct_size && s.struct_size && a.struct_size && e.struct_size && kv.struct_size && kv.k.rank == 0) ? 0 : 1;
}
