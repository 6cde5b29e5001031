// sa_index_*: create, append, update, truncate, clone, size, destroy.
#include <algorithm>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "api/index.hpp"
#include "core/context.hpp"
#include "core/error.hpp"
#include "core/positions.hpp"
#include "core/tensor_view.hpp"
#include "select/selector_factory.hpp"

namespace {

using namespace sa;

TensorView view_keys(const sa_index &ix, const sa_tensor *keys) {
  const Device dev = ix.on_device() ? Device{SA_DEVICE_CUDA, ix.device_id} : Device{};
  TensorView k = view_tensor(keys, "keys", 3, {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16}, dev);
  expect_dim(k, "keys", 1, ix.opt.num_kv_heads, "the index's num_kv_heads");
  expect_dim(k, "keys", 2, ix.opt.head_dim, "the index's head_dim");
  return k;
}

const char *selector_kind_name(sa_selector_kind kind) {
  switch (enum_value(kind)) {
    case SA_SELECTOR_EXACT: return "exact";
    case SA_SELECTOR_PAGE: return "page";
    case SA_SELECTOR_LSH: return "LSH";
    case SA_SELECTOR_HNSW: return "HNSW";
    case SA_SELECTOR_LEARNED: return "learned";
    case SA_SELECTOR_INDEXER: return "indexer";
    default: return "unknown";
  }
}

// The n slots of one refill (entries first .. first + n - 1 of `slots`, `head` naming their KV
// head in messages, "" for all heads): each in [0, size), none twice. seen: scratch of size bytes.
void check_refill_slots(const int32_t *slots, int64_t first, int64_t n, int64_t size, const std::string &head,
                        std::vector<uint8_t> &seen) {
  std::fill(seen.begin(), seen.end(), 0);
  for (int64_t i = first; i < first + n; ++i) {
    if (slots[i] < 0 || slots[i] >= size)
      fail(SA_ERR_OUT_OF_RANGE, "slots[%lld]%s is %d, outside the index's %lld slots", (long long)i, head.c_str(),
           int(slots[i]), (long long)size);
    if (seen[size_t(slots[i])]++)
      fail(SA_ERR_INVALID_ARGUMENT, "slots[%lld] = %d appears twice%s", (long long)i, int(slots[i]), head.c_str());
  }
}

// Runs a change of ix's selector. A failure other than a refused argument may leave part of
// the change behind, so it marks the index unusable before it is reported.
template <class F>
void changing(sa_index &ix, const char *function, F &&change) {
  try {
    change();
  } catch (const Error &e) {
    if (e.status == SA_ERR_OUT_OF_MEMORY || e.status == SA_ERR_INTERNAL) ix.broken = std::string(function) + ": " + e.message;
    throw;
  } catch (const std::bad_alloc &) {
    ix.broken = std::string(function) + " ran out of memory";
    throw;
  } catch (const std::exception &e) {
    ix.broken = std::string(function) + ": " + e.what();
    throw;
  } catch (...) {
    ix.broken = std::string(function) + " failed";
    throw;
  }
}

}  // namespace

namespace sa {

void expect_usable(const sa_index &ix) {
  if (!ix.broken.empty())
    fail(SA_ERR_INVALID_ARGUMENT, "ix is unusable since an earlier call failed while changing it (%s); destroy it and "
                                  "build the index again", ix.broken.c_str());
}

}  // namespace sa

extern "C" {

SA_API sa_index_options sa_index_options_default(void) {
  sa_index_options o = SA_INDEX_OPTIONS_INIT;
  return o;
}

SA_API sa_status sa_index_create(sa_context *ctx, const sa_index_options *opt, sa_index **out) {
  return guarded("sa_index_create", [&] {
    if (!ctx) fail(SA_ERR_NULL_POINTER, "ctx is NULL");
    if (!opt) fail(SA_ERR_NULL_POINTER, "opt is NULL (initialise one with SA_INDEX_OPTIONS_INIT)");
    if (!out) fail(SA_ERR_NULL_POINTER, "out is NULL");
    sa_index_options o = read_options(opt, sa_index_options_default(),
                                      offsetof(sa_index_options, learned) + offsetof(sa_learned_options, rescore), "opt");
    if (o.num_kv_heads < 1) fail(SA_ERR_INVALID_ARGUMENT, "opt->num_kv_heads is %d, expected >= 1", int(o.num_kv_heads));
    if (o.head_dim < 1) fail(SA_ERR_INVALID_ARGUMENT, "opt->head_dim is %d, expected >= 1", int(o.head_dim));
    const int dtype = enum_value(o.dtype);
    if (dtype != SA_DTYPE_F32 && dtype != SA_DTYPE_F16 && dtype != SA_DTYPE_BF16)
      fail(SA_ERR_DTYPE, "opt->dtype is %d; the index stores keys as f32 (%d), f16 (%d) or bf16 (%d)", dtype,
           int(SA_DTYPE_F32), int(SA_DTYPE_F16), int(SA_DTYPE_BF16));
    if (o.capacity < 0) fail(SA_ERR_INVALID_ARGUMENT, "opt->capacity is %lld, expected >= 0", (long long)o.capacity);
    if (o.capacity > INT32_MAX) fail(SA_ERR_OVERFLOW, "opt->capacity %lld exceeds the int32 slot range", (long long)o.capacity);
    if (enum_value(o.kind) == SA_SELECTOR_PAGE && o.page.page_size < 1)
      fail(SA_ERR_INVALID_ARGUMENT, "opt->page.page_size is %d, expected >= 1", int(o.page.page_size));
    auto ix = std::make_unique<sa_index>();
    ix->ctx = ctx;
    ix->opt = o;
    if (ctx->device == SA_DEVICE_CUDA)
      move_index_to_device(*ix, ctx->device_id);
    else
      ix->selector = make_selector(o, *ctx);
    *out = ix.release();
  });
}

SA_API void sa_index_destroy(sa_index **ix) {
  if (!ix || !*ix) return;
  delete *ix;
  *ix = nullptr;
}

SA_API sa_status sa_index_append(sa_index *ix, const sa_tensor *keys) {
  return guarded("sa_index_append", [&] {
    if (!ix) fail(SA_ERR_NULL_POINTER, "ix is NULL");
    expect_usable(*ix);
    // An empty CPU index whose first keys are on a CUDA device moves there.
    const Device dev = first_cuda_device({keys});
    if (dev.type == SA_DEVICE_CUDA && !ix->on_device() && ix->size() == 0) {
      view_tensor(keys, "keys", 3, {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16}, dev);  // validate before moving
      move_index_to_device(*ix, dev.id);
    }
    TensorView k = view_keys(*ix, keys);
    if (ix->max_position() > SA_MAX_POSITION - k.shape[0])
      fail(SA_ERR_OVERFLOW, "appending %lld keys after position %lld passes SA_MAX_POSITION (2^62)", (long long)k.shape[0],
           (long long)ix->max_position());
    if (!ix->on_device()) {
      changing(*ix, "sa_index_append", [&] { ix->selector->append(k); });
      return;
    }
    if (ix->device_size + k.shape[0] > INT32_MAX)
      fail(SA_ERR_OVERFLOW, "appending %lld keys to %lld slots exceeds the int32 slot range", (long long)k.shape[0],
           (long long)ix->device_size);
    if (k.shape[0] == 0) return;
    const sa_tensor t = describe(k);
    check_plugin(*ix->plugin, ix->plugin->api.index_append(ix->device_index, &t), "CUDA index append");
    ix->device_size += k.shape[0];
  });
}

SA_API sa_status sa_index_update(sa_index *ix, const int32_t *slots, int64_t n, const sa_tensor *keys,
                                 const int64_t *positions) {
  return guarded("sa_index_update", [&] {
    if (!ix) fail(SA_ERR_NULL_POINTER, "ix is NULL");
    expect_usable(*ix);
    if (ix->on_device())
      fail(SA_ERR_UNSUPPORTED, "ix lives on CUDA device %d, where slots are only appended", int(ix->device_id));
    if (n < 0) fail(SA_ERR_INVALID_ARGUMENT, "n is %lld, expected >= 0", (long long)n);
    if (n > 0 && !slots) fail(SA_ERR_NULL_POINTER, "slots is NULL");
    TensorView k = view_keys(*ix, keys);
    expect_dim(k, "keys", 0, n, "n, the number of slots");
    const int64_t size = ix->selector->size();
    std::vector<uint8_t> seen(size_t(size), 0);
    check_refill_slots(slots, 0, n, size, "", seen);
    if (positions) check_positions(positions, n, 1, "positions", PositionsOf::tokens);
    else if (ix->max_position() > SA_MAX_POSITION - n)  // the next positions, as an append would give
      fail(SA_ERR_OVERFLOW, "giving %lld slots the positions after %lld passes SA_MAX_POSITION (2^62)", (long long)n,
           (long long)ix->max_position());
    changing(*ix, "sa_index_update", [&] { ix->selector->update(slots, n, k, positions); });
  });
}

SA_API sa_status sa_index_update_heads(sa_index *ix, const int32_t *slots, int64_t n, const sa_tensor *keys,
                                       const int64_t *positions) {
  return guarded("sa_index_update_heads", [&] {
    if (!ix) fail(SA_ERR_NULL_POINTER, "ix is NULL");
    expect_usable(*ix);
    if (ix->on_device())
      fail(SA_ERR_UNSUPPORTED, "ix lives on CUDA device %d, where slots are only appended", int(ix->device_id));
    if (!ix->selector->supports_per_head())
      fail(SA_ERR_UNSUPPORTED, "ix is a %s index, which keeps one token per slot for every KV head; per-KV-head "
                               "slots need an exact or page index", selector_kind_name(ix->opt.kind));
    if (n < 0) fail(SA_ERR_INVALID_ARGUMENT, "n is %lld, expected >= 0", (long long)n);
    TensorView k = view_keys(*ix, keys);
    expect_dim(k, "keys", 0, n, "n, the number of slots per KV head");
    const int64_t H = k.shape[1], size = ix->selector->size();
    const int64_t total = checked_mul(H, n, "H_kv * n slots");
    if (total > 0 && !slots) fail(SA_ERR_NULL_POINTER, "slots is NULL");
    if (total > 0 && !positions) fail(SA_ERR_NULL_POINTER, "positions is NULL (per-KV-head slots need positions)");
    std::vector<uint8_t> seen(size_t(size), 0);
    for (int64_t h = 0; h < H; ++h)
      check_refill_slots(slots, h * n, n, size, " (KV head " + std::to_string(h) + ")", seen);
    if (total > 0) check_positions(positions, total, 1, "positions", PositionsOf::tokens);
    changing(*ix, "sa_index_update_heads", [&] { ix->selector->update_heads(slots, n, k, positions); });
  });
}

SA_API sa_status sa_index_truncate(sa_index *ix, int64_t position) {
  return guarded("sa_index_truncate", [&] {
    if (!ix) fail(SA_ERR_NULL_POINTER, "ix is NULL");
    expect_usable(*ix);
    if (ix->opt.borrow_keys)
      fail(SA_ERR_UNSUPPORTED, "ix borrows its keys (borrow_keys); sa_index_truncate takes indexes that keep their "
                               "own copy for now");
    if (position < 0) fail(SA_ERR_INVALID_ARGUMENT, "position is %lld, expected >= 0", (long long)position);
    if (ix->on_device())
      fail(SA_ERR_UNSUPPORTED, "ix lives on CUDA device %d, where indexes cannot be truncated yet", int(ix->device_id));
    const KeyStore &slots = ix->selector->slots();
    const int64_t keep = slots.trailing_slots_from(position);
    if (keep < 0 && slots.per_head())
      fail(SA_ERR_INVALID_ARGUMENT, "position %lld: in some KV head a slot holding a position >= position is followed "
           "by one that would stay, or the heads would keep different numbers of slots; only the index's last slots "
           "(appended drafts) can be dropped", (long long)position);
    if (keep < 0) {  // name a dropped slot that a kept one follows
      const int64_t *pos = slots.positions();
      int64_t first = 0, last = slots.size() - 1;
      while (pos[first] < position) ++first;
      while (pos[last] >= position) --last;
      fail(SA_ERR_INVALID_ARGUMENT, "position %lld: slot %lld holds position %lld >= position, but slot %lld after "
           "it holds %lld and would stay; only the index's last slots (appended drafts) can be dropped",
           (long long)position, (long long)first, (long long)pos[first], (long long)last, (long long)pos[last]);
    }
    if (keep == slots.size()) return;  // nothing at or past position
    changing(*ix, "sa_index_truncate", [&] { ix->selector->truncate(keep); });
  });
}

SA_API sa_status sa_index_clone(const sa_index *ix, sa_index **out) {
  return guarded("sa_index_clone", [&] {
    if (!ix) fail(SA_ERR_NULL_POINTER, "ix is NULL");
    if (!out) fail(SA_ERR_NULL_POINTER, "out is NULL");
    expect_usable(*ix);
    if (ix->opt.borrow_keys)
      fail(SA_ERR_UNSUPPORTED, "ix borrows its keys (borrow_keys); sa_index_clone takes indexes that keep their "
                               "own copy for now");
    if (ix->on_device())
      fail(SA_ERR_UNSUPPORTED, "ix lives on CUDA device %d, where indexes cannot be cloned yet", int(ix->device_id));
    auto copy = std::make_unique<sa_index>();
    copy->ctx = ix->ctx;
    copy->opt = ix->opt;
    copy->selector = ix->selector->clone();
    *out = copy.release();
  });
}

SA_API sa_status sa_index_size(const sa_index *ix, int64_t *n_slots) {
  return guarded("sa_index_size", [&] {
    if (!ix) fail(SA_ERR_NULL_POINTER, "ix is NULL");
    if (!n_slots) fail(SA_ERR_NULL_POINTER, "n_slots is NULL");
    *n_slots = ix->size();
  });
}

}  // extern "C"
