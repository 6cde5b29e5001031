// The object behind the opaque sa_index handle, and the one interface through which every
// sa_index_* and sa_select call reaches its storage: a CPU selector (cpu_index.cpp) or an
// index the CUDA plugin keeps on a device (device_index.cpp). Which one is chosen once, at
// sa_index_create (a context with device = SA_DEVICE_CUDA), or at the first append of an
// empty index whose keys are CUDA tensors; the API functions validate what is common and call
// through the interface without asking where the index lives.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/plugin_loader.hpp"
#include "core/tensor_view.hpp"
#include "select/selector.hpp"
#include "sparseattn.h"

namespace sa {

// An sa_select request after the common checks: options read and in range, queries and
// indices viewed on the backend's device and shaped for the index.
struct SelectCall {
  sa_select_options opt;
  TensorView queries, indices;
  // sa_select_batch on device indexes over a paged cache: the sequence's page table row on the
  // device (nullptr: slots as the index numbers them), written through by the plugin.
  const int32_t *page_table = nullptr;
  int64_t page_table_stride = 0, page_size = 1, num_pages = 0;
};

class IndexBackend {
 public:
  virtual ~IndexBackend() = default;
  // Where keys, queries and indices must live (CPU, or the CUDA device).
  virtual Device device() const = 0;
  virtual int64_t size() const = 0;
  virtual int64_t max_position() const = 0;  // -1 when empty
  // keys: [n, H_kv, D] on device(), checked against the index's heads; the new slots take
  // the positions after max_position() (checked by the caller not to pass SA_MAX_POSITION).
  virtual void append(const TensorView &keys) = 0;
  // Refills distinct slots in [0, size()) (checked by the caller) with keys [n, H_kv, D] on
  // device(); positions: n host values checked by the caller, or NULL (the next positions).
  virtual void update(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions) = 0;
  // sa_index_update_heads: head h refills its slots[h * n .. h * n + n - 1] (distinct, in
  // [0, size()), checked by the caller) with keys[:, h] at positions[h * n ..] (host values,
  // checked by the caller). Refused (SA_ERR_UNSUPPORTED) where slots hold one token for all heads.
  virtual void update_heads(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions) = 0;
  // Drops every slot at or past `position` (sa_index_truncate's rules and messages).
  virtual void truncate(int64_t position) = 0;
  virtual std::unique_ptr<IndexBackend> clone() const = 0;
  // Writes call.indices only when the whole selection succeeds.
  virtual void select(const SelectCall &call) const = 0;
  // The CPU selector, or nullptr for a device index (sa_select_batch takes CPU indexes).
  virtual const Selector *cpu_selector() const { return nullptr; }
};

// A CPU selector for opt (validated), reading ctx's kernels and threads.
std::unique_ptr<IndexBackend> make_cpu_backend(const sa_index_options &opt, const sa_context &ctx);

// The plugin's index for opt on CUDA device device_id.
std::unique_ptr<IndexBackend> make_device_backend(const sa_index_options &opt, const sa_context &ctx,
                                                  int32_t device_id);

}  // namespace sa

struct sa_index {
  sa_context *ctx = nullptr;
  sa_index_options opt{};
  std::unique_ptr<sa::IndexBackend> backend;

  // Why the index is unusable: an append or update that failed while changing the backend
  // (out of memory, an internal error) may have left part of the change behind. Empty: usable.
  std::string broken;

  sa_index() = default;
  sa_index(const sa_index &) = delete;
  sa_index &operator=(const sa_index &) = delete;
  int64_t size() const { return backend->size(); }
  int64_t max_position() const { return backend->max_position(); }
  const sa::Selector *cpu_selector() const { return backend->cpu_selector(); }
};

namespace sa {

// Refuses an index that an earlier failed append or update left unusable.
void expect_usable(const sa_index &ix);

}  // namespace sa
