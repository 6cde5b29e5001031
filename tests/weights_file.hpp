// Test-side safetensors writer: builds files for the learned and indexer selectors, and raw
// headers for crafted bad files. Independent of src/io (written from the format's description).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace wf {

struct Entry {
  std::string name;
  std::string dtype;  // "F32", "F16" or "BF16" (values encoded); others: raw bytes below
  std::vector<int64_t> shape;
  std::vector<double> values;
  std::string raw;  // used when values is empty and raw is not
};

inline std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((v >> (8 * i)) & 0xff);
  return s;
}

inline std::string encode(const Entry &e) {
  if (e.values.empty()) return e.raw;
  std::string out;
  for (double v : e.values) {
    if (e.dtype == "F32") {
      float f = float(v);
      char b[4];
      std::memcpy(b, &f, 4);  // the test hosts are little-endian (x86-64, aarch64)
      out.append(b, 4);
    } else {
      uint16_t h = e.dtype == "F16" ? sat::double_to_f16(v) : sat::double_to_bf16(v);
      out += char(h & 0xff);
      out += char(h >> 8);
    }
  }
  return out;
}

inline std::string shape_json(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

// A whole file: entries laid out in order, header padded with spaces to a multiple of 8.
inline std::string file_bytes(const std::vector<Entry> &entries, const std::string &metadata_json = "") {
  std::string header = "{", data;
  if (!metadata_json.empty()) header += "\"__metadata__\":" + metadata_json;
  for (const Entry &e : entries) {
    std::string bytes = encode(e);
    if (header.size() > 1) header += ",";
    header += "\"" + e.name + "\":{\"dtype\":\"" + e.dtype + "\",\"shape\":" + shape_json(e.shape) +
              ",\"data_offsets\":[" + std::to_string(data.size()) + "," + std::to_string(data.size() + bytes.size()) + "]}";
    data += bytes;
  }
  header += "}";
  while (header.size() % 8) header += ' ';
  return le64(header.size()) + header + data;
}

// A file from a raw header and data section (for crafted bad files).
inline std::string raw_file(const std::string &header, const std::string &data) {
  return le64(header.size()) + header + data;
}

// A fresh path in the test temp directory.
inline std::string temp_path(const std::string &stem) {
  static int counter = 0;
  return ::testing::TempDir() + "sa_" + std::to_string(getpid()) + "_" + std::to_string(counter++) + "_" + stem +
         ".safetensors";
}

inline std::string write_file(const std::string &bytes, const std::string &stem = "weights") {
  std::string path = temp_path(stem);
  FILE *f = std::fopen(path.c_str(), "wb");
  EXPECT_NE(f, nullptr) << path;
  if (f) {
    EXPECT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
    std::fclose(f);
  }
  return path;
}

// Identity matrices [sets, n, n] flattened.
inline std::vector<double> identity(int64_t sets, int64_t n) {
  std::vector<double> v(size_t(sets * n * n), 0.0);
  for (int64_t s = 0; s < sets; ++s)
    for (int64_t i = 0; i < n; ++i) v[size_t((s * n + i) * n + i)] = 1.0;
  return v;
}

inline std::vector<double> random_values(sat::Rng &rng, size_t n, double sigma = 1.0) {
  std::vector<double> v(n);
  for (double &x : v) x = sigma * rng.normal();
  return v;
}

inline sa_index_options learned_options(sa_selector_kind kind, const std::string &path, int layer, int h_kv, int d,
                                        sa_dtype dtype = SA_DTYPE_F32) {
  sa_index_options o = SA_INDEX_OPTIONS_INIT;
  o.kind = kind;
  o.num_kv_heads = h_kv;
  o.head_dim = d;
  o.dtype = dtype;
  o.learned.weights_path = path.c_str();  // the caller keeps `path` alive
  o.learned.layer = layer;
  return o;
}

}  // namespace wf
