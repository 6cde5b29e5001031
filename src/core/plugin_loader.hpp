// Finds, loads and checks the CUDA plugin: once per requested path, thread-safe. The core
// never links CUDA; everything device-side goes through the table this returns.
#pragma once

#include <string>

#include "sparseattn_plugin.h"

namespace sa {

struct Plugin {
  sa_plugin_api api{};
  std::string path;          // the file that was loaded
  int32_t device_count = 0;  // >= 1
};

// The CUDA plugin for explicit_path, or, when it is empty, for the path in SA_CUDA_PLUGIN, or
// else libsparseattn_cuda.so beside libsparseattn.so. The first call for a path loads it;
// later calls return the same plugin or the same failure: SA_ERR_BACKEND_UNAVAILABLE naming
// the path and the reason (file, symbol, ABI version, CUDA runtime, devices).
const Plugin &cuda_plugin(const std::string &explicit_path);

// Throws the plugin's failure (its status and message, prefixed with `what`) unless s is SA_OK.
void check_plugin(const Plugin &plugin, sa_status s, const char *what);

}  // namespace sa
