// Q/K/V arrays of a tinylm-qkv-style data set (tests/data holds a cut) as f32 for the tools,
// read by the project's strict .npy reader (bench/npy.hpp); a bad file ends the tool with its message.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "npy.hpp"

struct NpyF16 {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

inline NpyF16 read_npy_f16(const std::string &path) {
  try {
    const npy::Array a = npy::read(path);
    NpyF16 out{a.shape, std::vector<float>(size_t(a.numel()))};
    for (int64_t i = 0; i < a.numel(); ++i) out.values[size_t(i)] = float(a.at(i));
    return out;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::exit(1);
  }
}
