// The object behind the opaque sa_index handle: a CPU selector, or an index the CUDA plugin
// keeps on a device.
#pragma once

#include <memory>
#include <string>

#include "core/plugin_loader.hpp"
#include "select/selector.hpp"
#include "sparseattn.h"

struct sa_index {
  sa_context *ctx = nullptr;
  sa_index_options opt{};
  std::unique_ptr<sa::Selector> selector;  // null for a device index

  // Device index: slot s holds position s (appends only), so its size is all the core tracks.
  const sa::Plugin *plugin = nullptr;
  sa_plugin_index *device_index = nullptr;
  int32_t device_id = 0;
  int64_t device_size = 0;

  // Why the index is unusable: an append or update that failed while changing the selector
  // (out of memory, an internal error) may have left part of the change behind. Empty: usable.
  std::string broken;

  sa_index() = default;
  sa_index(const sa_index &) = delete;
  sa_index &operator=(const sa_index &) = delete;
  ~sa_index() {
    if (device_index) plugin->api.index_destroy(device_index);
  }
  bool on_device() const { return device_index != nullptr; }
  int64_t size() const { return on_device() ? device_size : selector->size(); }
  int64_t max_position() const { return on_device() ? device_size - 1 : selector->max_position(); }
};

namespace sa {

// Refuses an index that an earlier failed append or update left unusable.
void expect_usable(const sa_index &ix);

// Creates the plugin's index for ix's options on device_id, replacing any CPU selector.
void move_index_to_device(sa_index &ix, int32_t device_id);

}  // namespace sa
