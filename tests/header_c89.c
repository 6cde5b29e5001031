/* Build check: the public header compiles as strict C99 (-pedantic -Werror
 * -Wdeclaration-after-statement) and its *_INIT macros are valid initialisers. */
#include "sparseattn.h"

static const sa_context_options context_opt = SA_CONTEXT_OPTIONS_INIT;
static const sa_index_options index_opt = SA_INDEX_OPTIONS_INIT;
static const sa_select_options select_opt = SA_SELECT_OPTIONS_INIT;
static const sa_attend_options attend_opt = SA_ATTEND_OPTIONS_INIT;
static const sa_evict_options evict_opt = SA_EVICT_OPTIONS_INIT;
static const sa_paged_kv paged_kv = SA_PAGED_KV_INIT;

int main(void) {
  sa_get_api_fn getter = 0;
  size_t total = context_opt.struct_size + index_opt.struct_size + select_opt.struct_size +
                 attend_opt.struct_size + evict_opt.struct_size + paged_kv.struct_size;
  (void)getter;
  return total > 0 ? 0 : 1;
}
