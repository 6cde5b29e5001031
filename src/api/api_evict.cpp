// sa_cache_evict: validate, choose, write the freed slots. With scores, positions and freed all
// on a CUDA device the plugin runs the policy there (the same per-slot rules,
// cache/evict_rule.hpp, and the same order); otherwise tensors on a device are copied to the
// host through the plugin, and the CPU policy runs there (one policy, one owner:
// cache/evict.cpp); the freed slots go back to the device the same way.
#include <algorithm>
#include <cstddef>
#include <string>
#include <vector>

#include "cache/evict.hpp"
#include "core/context.hpp"
#include "core/plugin_loader.hpp"
#include "core/error.hpp"
#include "core/positions.hpp"
#include "core/tensor_view.hpp"

namespace {

using namespace sa;

// The device a tensor of this call lives on: its own CUDA device (dev, the call's) or the CPU.
Device device_of(const sa_tensor *t, Device dev) {
  return t && enum_value(t->device) == SA_DEVICE_CUDA ? dev : Device{};
}

[[noreturn]] void fail_freed_short(int64_t cap, int64_t needed) {
  fail(SA_ERR_SHAPE, "freed holds %lld slots, %lld are needed", (long long)cap, (long long)needed);
}

// A tensor's elements in host memory: a CPU view as it is; a CUDA one copied (the span its
// strides cover, after the work queued on stream) into buf and viewed there.
TensorView on_host(const TensorView &v, const Plugin *plugin, void *stream, std::vector<char> &buf) {
  if (v.device != SA_DEVICE_CUDA || v.numel == 0) return v;
  int64_t span = 1;
  for (int d = 0; d < v.rank; ++d) span += (v.shape[d] - 1) * v.stride[d];
  buf.resize(size_t(span) * dtype_size(v.dtype));
  check_plugin(*plugin, plugin->api.copy(buf.data(), v.data, buf.size(), stream), "copying a CUDA tensor to the host");
  TensorView h = v;
  h.data = buf.data();
  h.device = SA_DEVICE_CPU;
  return h;
}

// The chosen slots into a row of freed (element stride `stride`): host memory directly, device
// memory through the plugin (one copy when contiguous).
void write_freed(const std::vector<int32_t> &chosen, int32_t *row, int64_t stride, sa_device_type where,
                 const Plugin *plugin, void *stream) {
  if (where != SA_DEVICE_CUDA) {
    for (size_t i = 0; i < chosen.size(); ++i) row[int64_t(i) * stride] = chosen[i];
    return;
  }
  if (stride == 1 && !chosen.empty()) {
    check_plugin(*plugin, plugin->api.copy(row, chosen.data(), chosen.size() * sizeof(int32_t), stream),
                 "copying the freed slots to the device");
    return;
  }
  for (size_t i = 0; i < chosen.size(); ++i)
    check_plugin(*plugin, plugin->api.copy(row + int64_t(i) * stride, &chosen[i], sizeof(int32_t), stream),
                 "copying the freed slots to the device");
}

// Runs f; a failure it throws is re-thrown naming KV head h (the per-head calls' messages).
template <class F>
void as_head(int64_t h, F &&f) {
  try {
    f();
  } catch (const Error &e) {
    fail(e.status, "KV head %lld: %s", (long long)h, e.message.c_str());
  }
}

// opt->per_head: scores and positions [H, n_slots], freed [H, cap], n_freed[H]; each head is
// the single-set request on its own rows. Every head is chosen (and may fail) before any write.
// Views on the host (CUDA tensors already copied); a CUDA freed gets its rows through plugin.
void evict_per_head(EvictRequest req, const TensorView &sc, const TensorView &pos, const TensorView &fr,
                    int64_t *n_freed, const Plugin *plugin, void *stream) {
  const int64_t heads = pos.shape[0];
  req.col_stride = sc.stride[1];
  req.pos_stride = pos.stride[1];
  std::vector<std::vector<int32_t>> chosen(static_cast<size_t>(heads));
  for (int64_t h = 0; h < heads; ++h) {
    req.scores = sc.ptr<const float>() + h * sc.stride[0];
    req.positions = pos.ptr<const int64_t>() + h * pos.stride[0];
    const std::string what = "positions[" + std::to_string(h) + "]";
    check_positions(req.positions, req.n, req.pos_stride, what.c_str(), PositionsOf::keys);
    as_head(h, [&] { chosen[size_t(h)] = choose_evictions(req); });
    if (int64_t(chosen[size_t(h)].size()) > fr.shape[1])
      fail(SA_ERR_SHAPE, "freed holds %lld slots per KV head, %lld are needed for head %lld", (long long)fr.shape[1],
           (long long)chosen[size_t(h)].size(), (long long)h);
  }
  for (int64_t h = 0; h < heads; ++h) {
    const std::vector<int32_t> &c = chosen[size_t(h)];
    write_freed(c, fr.ptr<int32_t>() + h * fr.stride[0], fr.stride[1], fr.device, plugin, stream);
    n_freed[h] = int64_t(c.size());
  }
}

// The plugin's request for req (the policy and where it runs); the caller adds the tensors.
sa_plugin_evict_args device_request(const EvictRequest &req, Device dev, const sa_context &ctx) {
  sa_plugin_evict_args a{};
  a.struct_size = sizeof a;
  a.n = req.n;
  a.budget = req.budget;
  a.incoming = req.incoming;
  a.sinks = req.sinks;
  a.window = req.window;
  a.mean = req.mean;
  a.row_max = req.row_max;
  a.decay = req.decay;
  a.device_id = dev.id;
  a.stream = call_stream(ctx, nullptr);
  a.owner = &ctx;
  return a;
}

// Fails with the CPU policy's message for a device refusal (per_head: for KV head
// a.refused_head, worded as evict_per_head words it); returns when nothing was refused.
void check_device_refusal(const sa_plugin_evict_args &a, const EvictRequest &req, bool per_head) {
  if (a.refused == SA_PLUGIN_EVICT_OK) return;
  const int64_t h = a.refused_head;
  if (a.refused == SA_PLUGIN_EVICT_POSITION)
    fail_position(per_head ? ("positions[" + std::to_string(h) + "]").c_str() : "positions", a.refused_slot,
                  a.refused_value, PositionsOf::keys);
  if (a.refused == SA_PLUGIN_EVICT_FREED_SHORT) {
    if (!per_head) fail_freed_short(a.freed_cap, a.refused_value);
    fail(SA_ERR_SHAPE, "freed holds %lld slots per KV head, %lld are needed for head %lld", (long long)a.freed_cap,
         (long long)a.refused_value, (long long)h);
  }
  auto policy = [&] {
    if (a.refused == SA_PLUGIN_EVICT_NAN || a.refused == SA_PLUGIN_EVICT_NAN_SUMMED)
      fail_nan_score(a.refused_slot, a.refused == SA_PLUGIN_EVICT_NAN_SUMMED);
    if (a.refused == SA_PLUGIN_EVICT_BUDGET) fail_budget(req, a.refused_value);
    fail(SA_ERR_INTERNAL, "the CUDA plugin refused an eviction for an unknown reason (%d)", int(a.refused));
  };
  if (per_head) as_head(h, policy);
  policy();
}

// All three per-head tensors on the device and a plugin that chooses per head there: the CPU
// policy's choices and messages, without copying the scores.
void evict_per_head_on_device(const EvictRequest &req, const Plugin &plugin, Device dev, const sa_context &ctx,
                              const TensorView &sc, const TensorView &pos, const TensorView &fr, int64_t *n_freed) {
  sa_plugin_evict_args a = device_request(req, dev, ctx);
  a.scores = sc.ptr<const float>();
  a.rows = 1;
  a.col_stride = sc.stride[1];
  a.positions = pos.ptr<const int64_t>();
  a.pos_stride = pos.stride[1];
  a.freed = fr.ptr<int32_t>();
  a.freed_stride = fr.stride[1];
  a.freed_cap = fr.shape[1];
  a.heads = pos.shape[0];
  a.head_score_stride = sc.stride[0];
  a.head_pos_stride = pos.stride[0];
  a.head_freed_stride = fr.stride[0];
  std::vector<int64_t> counts(static_cast<size_t>(a.heads));
  a.n_freed_heads = counts.data();
  check_plugin(plugin, plugin.api.evict_heads(&a), "CUDA per-head eviction");
  check_device_refusal(a, req, true);
  std::copy(counts.begin(), counts.end(), n_freed);
}

// The single-set request over scores [rows, n] or [n] and positions [n] (on either device):
// the slot count checked, the score rows and strides read from the tensors.
void bind_single_set(EvictRequest &req, const TensorView &sc, const TensorView &pos) {
  req.n = pos.shape[0];
  if (req.n > INT32_MAX) fail(SA_ERR_OVERFLOW, "positions has %lld slots; slots are int32", (long long)req.n);
  expect_dim(sc, "scores", sc.rank - 1, req.n, "positions.shape[0], the number of slots");
  req.scores = sc.ptr<const float>();
  req.rows = sc.rank == 2 ? sc.shape[0] : 1;
  req.row_stride = sc.rank == 2 ? sc.stride[0] : 0;
  req.col_stride = sc.stride[sc.rank - 1];
  req.positions = pos.ptr<const int64_t>();
  req.pos_stride = pos.stride[0];
}

// All three tensors on the device and a plugin that runs the policy there: the same choice
// without copying the scores; its refusals get the CPU policy's messages.
void evict_on_device(const EvictRequest &req, const Plugin &plugin, Device dev, const sa_context &ctx,
                     const TensorView &fr, int64_t *n_freed) {
  sa_plugin_evict_args a = device_request(req, dev, ctx);
  a.scores = req.scores;
  a.rows = req.rows;
  a.row_stride = req.row_stride;
  a.col_stride = req.col_stride;
  a.positions = req.positions;
  a.pos_stride = req.pos_stride;
  a.freed = fr.ptr<int32_t>();
  a.freed_stride = fr.stride[0];
  a.freed_cap = fr.shape[0];
  check_plugin(plugin, plugin.api.evict(&a), "CUDA eviction");
  check_device_refusal(a, req, false);
  *n_freed = a.n_freed;
}

}  // namespace

extern "C" {

SA_API sa_evict_options sa_evict_options_default(void) {
  sa_evict_options o = SA_EVICT_OPTIONS_INIT;
  return o;
}

SA_API sa_status sa_cache_evict(sa_context *ctx, const sa_evict_options *opt, const sa_tensor *scores,
                                const sa_tensor *positions, sa_tensor *freed, int64_t *n_freed) {
  using namespace sa;
  return guarded("sa_cache_evict", [&] {
    if (!ctx) fail(SA_ERR_NULL_POINTER, "ctx is NULL");
    if (!opt) fail(SA_ERR_NULL_POINTER, "opt is NULL (initialise one with SA_EVICT_OPTIONS_INIT)");
    if (!n_freed) fail(SA_ERR_NULL_POINTER, "n_freed is NULL");
    sa_evict_options o = read_options(opt, sa_evict_options_default(),
                                      offsetof(sa_evict_options, window) + sizeof(int32_t), "opt");
    if (o.budget < 1) fail(SA_ERR_INVALID_ARGUMENT, "opt->budget is %lld, expected >= 1", (long long)o.budget);
    if (o.incoming < 0 || o.incoming > o.budget)
      fail(SA_ERR_INVALID_ARGUMENT, "opt->incoming is %lld, expected in [0, budget = %lld]", (long long)o.incoming,
           (long long)o.budget);
    if (!(o.mass_decay >= 0.f && o.mass_decay <= 1.f))
      fail(SA_ERR_INVALID_ARGUMENT, "opt->mass_decay is %g, expected in [0, 1]", double(o.mass_decay));
    if (!(o.recent_share >= 0.f && o.recent_share <= 1.f))
      fail(SA_ERR_INVALID_ARGUMENT, "opt->recent_share is %g, expected in [0, 1]", double(o.recent_share));
    if (o.score_pool < 0)
      fail(SA_ERR_INVALID_ARGUMENT, "opt->score_pool is %lld, expected >= 0", (long long)o.score_pool);
    if (o.sinks < 0 || o.window < 0)
      fail(SA_ERR_INVALID_ARGUMENT, "opt->sinks (%d) and opt->window (%d) must be >= 0", int(o.sinks), int(o.window));
    // With distinct positions up to sinks + window slots are protected; a smaller budget would
    // leave a full cache nothing to free for the incoming tokens.
    // budget - incoming >= 0 (checked above): no sum that could overflow.
    const int64_t floor = int64_t(o.sinks) + int64_t(o.window);
    if (o.budget - o.incoming < floor)
      fail(SA_ERR_INVALID_ARGUMENT,
           "opt->budget is %lld, below sinks (%d) + window (%d) + incoming (%lld) = %lld: the protected slots and "
           "the incoming tokens must fit",
           (long long)o.budget, int(o.sinks), int(o.window), (long long)o.incoming, (long long)floor);

    EvictRequest req;
    req.budget = o.budget;
    req.incoming = o.incoming;
    req.sinks = o.sinks;
    // The recent share widens the protected window; budget - incoming - sinks >= window
    // (checked above), so a full cache still has a slot to free.
    req.window = int32_t(std::max<int64_t>(
        o.window, int64_t(double(o.recent_share) * double(o.budget - o.incoming - o.sinks))));
    req.mean = o.score_mean != 0;
    req.decay = o.mass_decay;
    req.row_max = o.head_max != 0;
    req.pool = o.score_pool;

    const Device dev = first_cuda_device({scores, positions, freed});
    const Plugin *plugin = dev.type == SA_DEVICE_CUDA ? &context_plugin(*ctx, dev.id) : nullptr;
    if (plugin && !has_entry(plugin->api, &sa_plugin_api::copy))
      fail(SA_ERR_UNSUPPORTED, "the CUDA plugin '%s' predates sa_cache_evict on CUDA tensors", plugin->path.c_str());
    void *stream = call_stream(*ctx, nullptr);
    std::vector<char> pos_buf, score_buf;
    if (o.per_head) {
      // scores and positions [H, n_slots], freed [H, cap]: on the device when all three are and
      // the plugin chooses per head; otherwise on the host (CUDA ones copied there).
      TensorView pos = view_tensor(positions, "positions", 2, {SA_DTYPE_I64}, device_of(positions, dev));
      if (!scores) fail(SA_ERR_NULL_POINTER, "scores is NULL");
      TensorView sc = view_tensor(scores, "scores", 2, {SA_DTYPE_F32}, device_of(scores, dev));
      TensorView fr = view_tensor(freed, "freed", 2, {SA_DTYPE_I32}, device_of(freed, dev));
      const int64_t heads = pos.shape[0];
      req.n = pos.shape[1];
      if (req.n > INT32_MAX) fail(SA_ERR_OVERFLOW, "positions has %lld slots; slots are int32", (long long)req.n);
      expect_dim(sc, "scores", 0, heads, "positions.shape[0], the KV heads (opt->per_head)");
      expect_dim(sc, "scores", 1, req.n, "positions.shape[1], the number of slots");
      expect_dim(fr, "freed", 0, heads, "positions.shape[0], the KV heads (opt->per_head)");
      expect_distinct_elements(fr, "freed");
      req.rows = 1;
      req.row_max = false;
      const bool on_device = pos.device == SA_DEVICE_CUDA && sc.device == SA_DEVICE_CUDA && fr.device == SA_DEVICE_CUDA;
      if (on_device && req.pool == 0 && has_entry(plugin->api, &sa_plugin_api::evict_heads))
        return evict_per_head_on_device(req, *plugin, dev, *ctx, sc, pos, fr, n_freed);
      pos = on_host(pos, plugin, stream, pos_buf);
      sc = on_host(sc, plugin, stream, score_buf);
      return evict_per_head(req, sc, pos, fr, n_freed, plugin, stream);
    }
    TensorView pos = view_tensor(positions, "positions", 1, {SA_DTYPE_I64}, device_of(positions, dev));
    if (!scores) fail(SA_ERR_NULL_POINTER, "scores is NULL");
    TensorView sc = view_tensor(scores, "scores", scores->rank == 2 ? 2 : 1, {SA_DTYPE_F32}, device_of(scores, dev));
    TensorView fr = view_tensor(freed, "freed", 1, {SA_DTYPE_I32}, device_of(freed, dev));
    const bool on_device = pos.device == SA_DEVICE_CUDA && sc.device == SA_DEVICE_CUDA && fr.device == SA_DEVICE_CUDA;
    // The device kernels do not pool scores: a pooled request runs on the host.
    if (on_device && req.pool == 0 && has_entry(plugin->api, &sa_plugin_api::evict)) {
      bind_single_set(req, sc, pos);
      return evict_on_device(req, *plugin, dev, *ctx, fr, n_freed);
    }
    pos = on_host(pos, plugin, stream, pos_buf);
    sc = on_host(sc, plugin, stream, score_buf);
    bind_single_set(req, sc, pos);
    check_positions(req.positions, req.n, req.pos_stride, "positions", PositionsOf::keys);

    std::vector<int32_t> chosen = choose_evictions(req);
    if (int64_t(chosen.size()) > fr.shape[0]) fail_freed_short(fr.shape[0], int64_t(chosen.size()));
    write_freed(chosen, fr.ptr<int32_t>(), fr.stride[0], fr.device, plugin, stream);
    *n_freed = int64_t(chosen.size());
  });
}

}  // extern "C"
