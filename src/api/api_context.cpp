// sa_context_*: create, destroy, query.
#include <new>

#include "core/context.hpp"
#include "core/error.hpp"

extern "C" {

SA_API sa_context_options sa_context_options_default(void) {
  sa_context_options o = SA_CONTEXT_OPTIONS_INIT;
  return o;
}

SA_API sa_status sa_context_create(const sa_context_options *opt, sa_context **out) {
  return sa::guarded("sa_context_create", [&] {
    if (!out) sa::fail(SA_ERR_NULL_POINTER, "out is NULL");
    sa_context_options o = sa::read_options(opt, sa_context_options_default(),
                                            offsetof(sa_context_options, isa) + sizeof(sa_isa), "opt");
    auto ctx = new sa_context();
    try {
      sa::init_context(*ctx, o);
    } catch (...) {
      delete ctx;
      throw;
    }
    *out = ctx;
  });
}

SA_API void sa_context_destroy(sa_context **ctx) {
  if (!ctx || !*ctx) return;
  sa::release_plugin_buffers(**ctx);
  delete *ctx;
  *ctx = nullptr;
}

SA_API sa_isa sa_context_isa(const sa_context *ctx) { return ctx ? ctx->isa : SA_ISA_SCALAR; }

SA_API int32_t sa_context_threads(const sa_context *ctx) { return ctx ? ctx->threads : 0; }

}  // extern "C"
