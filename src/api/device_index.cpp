// The device backend of sa_index: an index the CUDA plugin keeps on a device. The core keeps
// a host copy of each slot's position (8 bytes a slot; per KV head once sa_index_update_heads
// is used): the default query positions, the largest position after an update and appends'
// positions come from it without reading the device.
#include <algorithm>
#include <cmath>
#include <vector>

#include "api/index.hpp"
#include "core/context.hpp"
#include "core/error.hpp"

namespace sa {
namespace {

class DeviceIndex final : public IndexBackend {
 public:
  DeviceIndex(const sa_index_options &opt, const sa_context &ctx, const Plugin &plugin, sa_plugin_index *made,
              int32_t device_id)
      : opt_(opt), ctx_(ctx), plugin_(plugin), index_(made), device_id_(device_id) {}
  ~DeviceIndex() override { plugin_.api.index_destroy(index_); }
  DeviceIndex(const DeviceIndex &) = delete;
  DeviceIndex &operator=(const DeviceIndex &) = delete;

  Device device() const override { return Device{SA_DEVICE_CUDA, device_id_}; }
  int64_t size() const override { return int64_t(rows_[0].size()); }
  int64_t max_position() const override { return max_position_; }

  void append(const TensorView &keys) override {
    const int64_t n = keys.shape[0];
    if (n == 0) return;
    const size_t need = rows_[0].size() + size_t(n);  // reserved before the plugin: nothing to undo after it
    for (std::vector<int64_t> &row : rows_)
      if (row.capacity() < need) row.reserve(std::max(need, 2 * row.capacity()));
    const sa_tensor t = describe(keys);
    check_plugin(plugin_, plugin_.api.index_append(index_, &t), "CUDA index append");
    for (std::vector<int64_t> &row : rows_)
      for (int64_t s = 0; s < n; ++s) row.push_back(max_position_ + 1 + s);
    max_position_ += n;
  }

  void update(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions) override {
    if (!has_entry(plugin_.api, &sa_plugin_api::index_update))
      fail(SA_ERR_UNSUPPORTED, "the CUDA plugin '%s' predates sa_index_update on device indexes", plugin_.path.c_str());
    if (n == 0) return;
    std::vector<int64_t> given;  // NULL positions: the next ones, as appends would give
    if (!positions) {
      given.resize(size_t(n));
      for (int64_t i = 0; i < n; ++i) given[size_t(i)] = max_position_ + 1 + i;
      positions = given.data();
    }
    refill(slots, n, 0, keys, positions, 0, plugin_.api.index_update, "CUDA index update");
  }

  void update_heads(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions) override {
    if (!has_entry(plugin_.api, &sa_plugin_api::index_update_heads))
      fail(SA_ERR_UNSUPPORTED, "the CUDA plugin '%s' predates sa_index_update_heads on device indexes",
           plugin_.path.c_str());
    if (n == 0) return;
    if (rows_.size() == 1) rows_.resize(size_t(opt_.num_kv_heads), rows_[0]);  // each head from the shared positions
    refill(slots, n, n, keys, positions, n, plugin_.api.index_update_heads, "CUDA per-head index update");
  }
  void truncate(int64_t) override {
    fail(SA_ERR_UNSUPPORTED, "ix lives on CUDA device %d, where indexes cannot be truncated yet", int(device_id_));
  }

  std::unique_ptr<IndexBackend> clone() const override {
    fail(SA_ERR_UNSUPPORTED, "ix lives on CUDA device %d, where indexes cannot be cloned yet", int(device_id_));
  }

 private:
  // Row r of the host positions gets positions[r * pos_stride + i] at slot slots[r * slot_stride
  // + i] (strides 0: the same for every row), the plugin (entry) refills the device with the
  // same arrays; the host rows are put back when it fails. The largest position afterwards: a
  // scan of every row only when a slot that held the largest is refilled.
  template <class Entry>
  void refill(const int32_t *slots, int64_t n, int64_t slot_stride, const TensorView &keys, const int64_t *positions,
              int64_t pos_stride, Entry entry, const char *what) {
    std::vector<int64_t> old(rows_.size() * size_t(n));
    bool rescan = false;
    int64_t max_after = max_position_;
    for (size_t r = 0; r < rows_.size(); ++r)
      for (int64_t i = 0; i < n; ++i) {
        int64_t &p = rows_[r][size_t(slots[int64_t(r) * slot_stride + i])];
        old[r * size_t(n) + size_t(i)] = p;
        rescan |= p == max_position_;
        p = positions[int64_t(r) * pos_stride + i];
        max_after = std::max(max_after, p);
      }
    if (rescan) {
      max_after = -1;
      for (const std::vector<int64_t> &row : rows_)
        max_after = std::max(max_after, *std::max_element(row.begin(), row.end()));
    }
    const sa_tensor t = describe(keys);
    sa_plugin_update_args a{};
    a.struct_size = sizeof a;
    a.slots = slots;
    a.n = n;
    a.keys = &t;
    a.positions = positions;
    a.next_position = max_after + 1;
    const sa_status st = entry(index_, &a);
    if (st != SA_OK)  // back as it was, in reverse (a slot named twice in a row is not: slots are distinct)
      for (size_t r = rows_.size(); r-- > 0;)
        for (int64_t i = n; i-- > 0;)
          rows_[r][size_t(slots[int64_t(r) * slot_stride + i])] = old[r * size_t(n) + size_t(i)];
    check_plugin(plugin_, st, what);
    max_position_ = max_after;
  }

  void check_device_options(const sa_select_options &o) const {
    if (o.mass_target > 0.f || o.query_positions || o.query_segments)
      fail(SA_ERR_UNSUPPORTED, "ix lives on CUDA device %d, which selects without opt->mass_target, "
           "opt->query_positions and segments (leave them 0/NULL)", int(device_id_));
    if (o.per_query_head && (opt_.kind != SA_SELECTOR_EXACT || !has_entry(plugin_.api, &sa_plugin_api::select_keys)))
      fail(SA_ERR_UNSUPPORTED, "opt->per_query_head: on CUDA device %d only exact indexes select per query head%s",
           int(device_id_), opt_.kind == SA_SELECTOR_EXACT ? " (this plugin predates it)" : "");
  }
  // The host's keys of a borrowing index, checked as the CPU checks them (and for the device's
  // memory); opt->keys is required for every borrowing kind, read by the exact selector only.
  TensorView borrowed_keys(const sa_select_options &o) const {
    if (!o.keys)
      fail(SA_ERR_NULL_POINTER, "opt->keys is NULL; ix was created with borrow_keys, so sa_select reads the host's "
                                "keys [n_slots, H_kv, D] from it");
    const TensorView k = view_tensor(o.keys, "opt->keys", 3, {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16}, device());
    expect_dim(k, "opt->keys", 1, opt_.num_kv_heads, "the index's num_kv_heads");
    expect_dim(k, "opt->keys", 2, opt_.head_dim, "the index's head_dim");
    if (k.shape[0] < size())
      fail(SA_ERR_SHAPE, "opt->keys.shape[0] is %lld, but the index holds %lld slots: the host's keys must cover every "
           "slot", (long long)k.shape[0], (long long)size());
    return k;
  }
  float scale(const sa_select_options &o) const {
    return o.scale > 0.f ? o.scale : 1.f / std::sqrt(float(opt_.head_dim));
  }

 public:

  void select(const SelectCall &call) const override {
    const sa_select_options &o = call.opt;
    check_device_options(o);
    sa_tensor tk{};
    if (opt_.borrow_keys) tk = describe(borrowed_keys(o));
    const int64_t n_q = call.queries.shape[0];
    if (n_q == 0) return;
    sa_tensor tq = describe(call.queries), tidx = describe(call.indices);
    sa_plugin_select_args a{};
    a.struct_size = sizeof a;
    a.queries = &tq;
    a.indices = &tidx;
    a.top_k = o.top_k;
    a.window = o.window;
    a.sinks = o.sinks;
    a.scale = scale(o);
    a.first_query_position = max_position_ - n_q + 1;
    a.stream = call_stream(ctx_, o.cuda_stream);
    a.owner = &ctx_;  // its buffers go with the index's context (sa_context_destroy)
    if (call.page_table && !has_entry(plugin_.api, &sa_plugin_api::attend_paged))
      fail(SA_ERR_UNSUPPORTED, "the CUDA plugin '%s' predates sa_select_batch over a paged cache on the device",
           plugin_.path.c_str());
    a.page_table = call.page_table;
    a.page_table_stride = call.page_table_stride;
    a.page_size = call.page_size;
    a.num_pages = call.num_pages;
    if (!has_entry(plugin_.api, &sa_plugin_api::select_keys)) {  // a plugin before borrowed keys: it keeps a copy
      check_plugin(plugin_, plugin_.api.select(index_, &a), "CUDA selection");
      return;
    }
    a.keys = opt_.borrow_keys && opt_.kind == SA_SELECTOR_EXACT ? &tk : nullptr;
    a.per_query_head = o.per_query_head != 0;
    check_plugin(plugin_, plugin_.api.select_keys(index_, &a), "CUDA selection");
  }

  // sa_select_batch with this index first: the whole batch in one plugin call when every index
  // is this plugin's, in this context, and the plugin batches the request; false (nothing
  // queued) otherwise. call holds every sequence's query and output row; its page table is row
  // 0, row b at b * table_row_stride.
  bool select_batch(sa_index *const *indexes, int64_t n_seqs, const SelectCall &call, int64_t table_row_stride) const {
    if (!has_entry(plugin_.api, &sa_plugin_api::select_batch)) return false;
    check_device_options(call.opt);
    if (call.opt.per_query_head) return false;  // the batch kernels make one list per KV head
    std::vector<sa_plugin_index *> made(static_cast<size_t>(n_seqs));
    std::vector<int64_t> positions(static_cast<size_t>(n_seqs));
    for (int64_t b = 0; b < n_seqs; ++b) {
      const auto *ix = dynamic_cast<const DeviceIndex *>(indexes[b]->backend.get());
      if (!ix || &ix->ctx_ != &ctx_ || &ix->plugin_ != &plugin_) return false;
      made[size_t(b)] = ix->index_;
      positions[size_t(b)] = ix->max_position_;  // one query per sequence, at the index's last position
    }
    sa_tensor tq = describe(call.queries), tidx = describe(call.indices);
    sa_plugin_select_batch_args a{};
    a.struct_size = sizeof a;
    a.indexes = made.data();
    a.n_seqs = n_seqs;
    a.query_positions = positions.data();
    a.queries = &tq;
    a.indices = &tidx;
    a.top_k = call.opt.top_k;
    a.window = call.opt.window;
    a.sinks = call.opt.sinks;
    a.scale = scale(call.opt);
    a.stream = call_stream(ctx_, call.opt.cuda_stream);
    a.owner = &ctx_;
    a.page_table = call.page_table;
    a.page_table_row_stride = table_row_stride;
    a.page_table_stride = call.page_table_stride;
    a.page_size = call.page_size;
    a.num_pages = call.num_pages;
    check_plugin(plugin_, plugin_.api.select_batch(&a), "CUDA batch selection");
    return a.served != 0;
  }

 private:
  const sa_index_options opt_;
  const sa_context &ctx_;
  const Plugin &plugin_;
  sa_plugin_index *index_;
  const int32_t device_id_;
  // The position of each slot, as the plugin holds them: one row for every KV head, or one
  // per KV head after sa_index_update_heads.
  std::vector<std::vector<int64_t>> rows_ = std::vector<std::vector<int64_t>>(1);
  int64_t max_position_ = -1;
};

}  // namespace

bool select_batch_on_plugin(sa_index *const *indexes, int64_t n_seqs, const SelectCall &call,
                            int64_t table_row_stride) {
  const auto *first = n_seqs > 0 ? dynamic_cast<const DeviceIndex *>(indexes[0]->backend.get()) : nullptr;
  return first && first->select_batch(indexes, n_seqs, call, table_row_stride);
}

std::unique_ptr<IndexBackend> make_device_backend(const sa_index_options &opt, const sa_context &ctx,
                                                  int32_t device_id) {
  const Plugin &plugin = context_plugin(ctx, device_id);
  sa_plugin_index_args a{};
  a.struct_size = sizeof a;
  a.kind = opt.kind;
  a.num_kv_heads = opt.num_kv_heads;
  a.head_dim = opt.head_dim;
  a.dtype = opt.dtype;
  a.capacity = opt.capacity;
  a.page_size = opt.page.page_size;
  a.refine = opt.page.refine;
  a.device_id = device_id;
  a.stream = ctx.cuda_stream;
  a.owner = &ctx;  // its storage comes from the context's allocator
  // A plugin that cannot read the host's keys keeps its own copy (the same selections).
  a.borrow_keys = opt.borrow_keys && has_entry(plugin.api, &sa_plugin_api::select_keys);
  sa_plugin_index *made = nullptr;
  check_plugin(plugin, plugin.api.index_create(&a, &made), "CUDA index");
  if (!made) fail(SA_ERR_INTERNAL, "the CUDA plugin '%s' returned no index", plugin.path.c_str());
  try {
    return std::make_unique<DeviceIndex>(opt, ctx, plugin, made, device_id);
  } catch (...) {
    plugin.api.index_destroy(made);
    throw;
  }
}

}  // namespace sa
