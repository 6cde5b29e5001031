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
  TensorView k = view_tensor(keys, "keys", 3, {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16}, ix.backend->device());
  expect_dim(k, "keys", 1, ix.opt.num_kv_heads, "the index's num_kv_heads");
  expect_dim(k, "keys", 2, ix.opt.head_dim, "the index's head_dim");
  return k;
}

// The n slots of one refill (entries first .. first + n - 1 of `slots`; head: their KV head,
// named in messages, or -1 for all heads): each in [0, size), none twice. Repeats: pairwise for
// the few slots of a decode step (no pass over the whole index), else one mark per slot in
// seen (size bytes once allocated, all 0 between calls).
void check_refill_slots(const int32_t *slots, int64_t first, int64_t n, int64_t size, int64_t head,
                        std::vector<uint8_t> &seen) {
  const std::string in_head = head < 0 ? "" : " (KV head " + std::to_string(head) + ")";
  const int32_t *s = slots + first;
  for (int64_t i = 0; i < n; ++i)
    if (s[i] < 0 || s[i] >= size)
      fail(SA_ERR_OUT_OF_RANGE, "slots[%lld]%s is %d, outside the index's %lld slots", (long long)(first + i),
           in_head.c_str(), int(s[i]), (long long)size);
  if (n <= 16) {
    for (int64_t i = 1; i < n; ++i)
      for (int64_t j = 0; j < i; ++j)
        if (s[j] == s[i])
          fail(SA_ERR_INVALID_ARGUMENT, "slots[%lld] = %d appears twice%s", (long long)(first + i), int(s[i]),
               in_head.c_str());
    return;
  }
  if (seen.empty()) seen.assign(size_t(size), 0);
  for (int64_t i = 0; i < n; ++i)
    if (seen[size_t(s[i])]++) {
      std::fill(seen.begin(), seen.end(), 0);
      fail(SA_ERR_INVALID_ARGUMENT, "slots[%lld] = %d appears twice%s", (long long)(first + i), int(s[i]),
           in_head.c_str());
    }
  for (int64_t i = 0; i < n; ++i) seen[size_t(s[i])] = 0;
}

// The caller's options, defaults filled in, checked once for every backend.
sa_index_options read_index_options(const sa_index_options *opt) {
  const sa_index_options o = read_options(opt, sa_index_options_default(),
                                          offsetof(sa_index_options, learned) + offsetof(sa_learned_options, rescore), "opt");
  check_index_options(o);
  return o;
}

// Runs a change of ix's backend. A failure other than a refused argument may leave part of
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
    const sa_index_options o = read_index_options(opt);
    auto ix = std::make_unique<sa_index>();
    ix->ctx = ctx;
    ix->opt = o;
    ix->backend = ctx->device == SA_DEVICE_CUDA ? make_device_backend(o, *ctx, ctx->device_id) : make_cpu_backend(o, *ctx);
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
    // An empty CPU index whose first keys are on a CUDA device moves there, once.
    const Device dev = first_cuda_device({keys});
    if (dev.type == SA_DEVICE_CUDA && ix->backend->device().type != SA_DEVICE_CUDA && ix->size() == 0) {
      view_tensor(keys, "keys", 3, {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16}, dev);  // validate before moving
      ix->backend = make_device_backend(ix->opt, *ix->ctx, dev.id);
    }
    TensorView k = view_keys(*ix, keys);
    if (ix->max_position() > SA_MAX_POSITION - k.shape[0])
      fail(SA_ERR_OVERFLOW, "appending %lld keys after position %lld passes SA_MAX_POSITION (2^62)", (long long)k.shape[0],
           (long long)ix->max_position());
    if (ix->size() + k.shape[0] > INT32_MAX)
      fail(SA_ERR_OVERFLOW, "appending %lld keys to %lld slots exceeds the int32 slot range", (long long)k.shape[0],
           (long long)ix->size());
    changing(*ix, "sa_index_append", [&] { ix->backend->append(k); });
  });
}

SA_API sa_status sa_index_update(sa_index *ix, const int32_t *slots, int64_t n, const sa_tensor *keys,
                                 const int64_t *positions) {
  return guarded("sa_index_update", [&] {
    if (!ix) fail(SA_ERR_NULL_POINTER, "ix is NULL");
    expect_usable(*ix);
    if (n < 0) fail(SA_ERR_INVALID_ARGUMENT, "n is %lld, expected >= 0", (long long)n);
    if (n > 0 && !slots) fail(SA_ERR_NULL_POINTER, "slots is NULL");
    TensorView k = view_keys(*ix, keys);
    expect_dim(k, "keys", 0, n, "n, the number of slots");
    std::vector<uint8_t> seen;
    check_refill_slots(slots, 0, n, ix->size(), -1, seen);
    if (positions) check_positions(positions, n, 1, "positions", PositionsOf::tokens);
    else if (ix->max_position() > SA_MAX_POSITION - n)  // the next positions, as an append would give
      fail(SA_ERR_OVERFLOW, "giving %lld slots the positions after %lld passes SA_MAX_POSITION (2^62)", (long long)n,
           (long long)ix->max_position());
    changing(*ix, "sa_index_update", [&] { ix->backend->update(slots, n, k, positions); });
  });
}

SA_API sa_status sa_index_update_heads(sa_index *ix, const int32_t *slots, int64_t n, const sa_tensor *keys,
                                       const int64_t *positions) {
  return guarded("sa_index_update_heads", [&] {
    if (!ix) fail(SA_ERR_NULL_POINTER, "ix is NULL");
    expect_usable(*ix);
    if (n < 0) fail(SA_ERR_INVALID_ARGUMENT, "n is %lld, expected >= 0", (long long)n);
    TensorView k = view_keys(*ix, keys);
    expect_dim(k, "keys", 0, n, "n, the number of slots per KV head");
    const int64_t H = k.shape[1], size = ix->size();
    const int64_t total = checked_mul(H, n, "H_kv * n slots");
    if (total > 0 && !slots) fail(SA_ERR_NULL_POINTER, "slots is NULL");
    if (total > 0 && !positions) fail(SA_ERR_NULL_POINTER, "positions is NULL (per-KV-head slots need positions)");
    std::vector<uint8_t> seen;
    for (int64_t h = 0; h < H; ++h) check_refill_slots(slots, h * n, n, size, h, seen);
    if (total > 0) check_positions(positions, total, 1, "positions", PositionsOf::tokens);
    changing(*ix, "sa_index_update_heads", [&] { ix->backend->update_heads(slots, n, k, positions); });
  });
}

SA_API sa_status sa_index_truncate(sa_index *ix, int64_t position) {
  return guarded("sa_index_truncate", [&] {
    if (!ix) fail(SA_ERR_NULL_POINTER, "ix is NULL");
    expect_usable(*ix);
    // What the index cannot do at all comes before what is wrong with this call's arguments.
    if (ix->opt.borrow_keys)
      fail(SA_ERR_UNSUPPORTED, "ix borrows its keys (borrow_keys); sa_index_truncate takes indexes that keep their "
                               "own copy for now");
    if (position < 0) fail(SA_ERR_INVALID_ARGUMENT, "position is %lld, expected >= 0", (long long)position);
    changing(*ix, "sa_index_truncate", [&] { ix->backend->truncate(position); });
  });
}

SA_API sa_status sa_index_clone(const sa_index *ix, sa_index **out) {
  return guarded("sa_index_clone", [&] {
    if (!ix) fail(SA_ERR_NULL_POINTER, "ix is NULL");
    if (!out) fail(SA_ERR_NULL_POINTER, "out is NULL");
    expect_usable(*ix);
    auto copy = std::make_unique<sa_index>();
    copy->ctx = ix->ctx;
    copy->opt = ix->opt;
    copy->backend = ix->backend->clone();
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
