// The function table for dlopen hosts: one symbol resolves the whole API.
#include "sparseattn.h"

extern "C" {

SA_API const sa_api *sa_get_api(uint32_t abi_version) {
  static const sa_api table = {
      sizeof(sa_api),
      SA_ABI_VERSION,
      sa_version,
      sa_version_string,
      sa_last_error,
      sa_status_name,
      sa_isa_name,
      sa_context_options_default,
      sa_context_create,
      sa_context_destroy,
      sa_context_isa,
      sa_context_threads,
      sa_index_options_default,
      sa_index_create,
      sa_index_destroy,
      sa_index_append,
      sa_index_update,
      sa_index_size,
      sa_select_options_default,
      sa_select,
      sa_attend_options_default,
      sa_attend,
      sa_evict_options_default,
      sa_cache_evict,
      sa_index_truncate,
      sa_index_clone,
      sa_attend_paged,
      sa_select_batch,
      sa_index_update_heads,
  };
  return abi_version <= SA_ABI_VERSION ? &table : nullptr;
}

}  // extern "C"
