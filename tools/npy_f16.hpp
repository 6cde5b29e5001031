// Reads the little-endian float16 .npy arrays of ../shared/data/tinylm-qkv as f32 (the tools'
// own reader: a 10-byte prefix with the header length, a Python-dict header, the raw data).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/half.hpp"

struct NpyF16 {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

inline NpyF16 read_npy_f16(const std::string &path) {
  FILE *f = std::fopen(path.c_str(), "rb");
  if (!f) { std::fprintf(stderr, "cannot open %s\n", path.c_str()); std::exit(1); }
  unsigned char pre[10];
  if (std::fread(pre, 1, 10, f) != 10 || std::memcmp(pre, "\x93NUMPY", 6) != 0 || pre[6] != 1) {
    std::fprintf(stderr, "%s: not a version 1 .npy file\n", path.c_str());
    std::exit(1);
  }
  std::string header(size_t(pre[8] | pre[9] << 8), '\0');
  if (std::fread(&header[0], 1, header.size(), f) != header.size() || header.find("'<f2'") == std::string::npos ||
      header.find("'fortran_order': False") == std::string::npos) {
    std::fprintf(stderr, "%s: expected a C-order <f2 array\n", path.c_str());
    std::exit(1);
  }
  NpyF16 a;
  const char *p = std::strchr(header.c_str() + header.find("'shape'"), '(') + 1;
  int64_t n = 1;
  while (*p && *p != ')') {
    char *end;
    const long long d = std::strtoll(p, &end, 10);
    if (end == p) break;
    a.shape.push_back(d), n *= d;
    p = end;
    while (*p == ',' || *p == ' ') ++p;
  }
  std::vector<uint16_t> raw(static_cast<size_t>(n));
  if (std::fread(raw.data(), 2, raw.size(), f) != raw.size()) { std::fprintf(stderr, "%s: short\n", path.c_str()); std::exit(1); }
  std::fclose(f);
  a.values.resize(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) a.values[i] = sa::f16_to_f32(raw[i]);
  return a;
}
