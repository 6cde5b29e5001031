// The object behind the opaque sa_index handle: a CPU selector, or an index the CUDA plugin
// keeps on a device.
#pragma once

#include <memory>

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

// Creates the plugin's index for ix's options on device_id, replacing any CPU selector.
void move_index_to_device(sa_index &ix, int32_t device_id);

}  // namespace sa
