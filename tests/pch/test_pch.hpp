// Precompiled for the GoogleTest binaries that have many files (tests/meson.build): the headers
// every test file includes, parsed once per binary instead of once per file.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "sparseattn.h"
