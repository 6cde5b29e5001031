// Moving an index to a CUDA device: the plugin creates its own index there.
#include "api/index.hpp"
#include "core/context.hpp"
#include "core/error.hpp"

namespace sa {

void move_index_to_device(sa_index &ix, int32_t device_id) {
  const Plugin &plugin = context_plugin(*ix.ctx, device_id);
  sa_plugin_index_args a{};
  a.struct_size = sizeof a;
  a.kind = ix.opt.kind;
  a.num_kv_heads = ix.opt.num_kv_heads;
  a.head_dim = ix.opt.head_dim;
  a.dtype = ix.opt.dtype;
  a.capacity = ix.opt.capacity;
  a.page_size = ix.opt.page.page_size;
  a.refine = ix.opt.page.refine;
  a.device_id = device_id;
  a.stream = ix.ctx->cuda_stream;
  sa_plugin_index *made = nullptr;
  check_plugin(plugin, plugin.api.index_create(&a, &made), "CUDA index");
  if (!made) fail(SA_ERR_INTERNAL, "the CUDA plugin '%s' returned no index", plugin.path.c_str());
  ix.plugin = &plugin;
  ix.device_index = made;
  ix.device_id = device_id;
  ix.device_size = 0;
  ix.selector.reset();
}

}  // namespace sa
