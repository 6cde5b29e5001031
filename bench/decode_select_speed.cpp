// Selection time per decode token, every selector kind against exact, in one run: the shapes
// of a decoding engine (H_q 32, H_kv 8, D 128, f16 keys, top_k 2048 (--top-k), window 64, sinks 4, one
// query token per sa_select call at the newest position) and indexes built in decode order:
// `--chunk` keys per sa_index_append (default 1: one key per append, as an engine grows its
// cache). Each kind's index grows once to the largest size; at each size in --sizes the
// selection of --reps decode tokens is timed (median per token).
//
// Keys and queries come from a tinylm-qkv style data set (bench/qkv_layer.hpp), tiled to N:
// KV head h of the bench is KV head h % H_kv of layer layers[(h / H_kv) % layers] (so the 8
// heads are distinct real heads when the data has 4 layers of 2), and position p reads token
// p % T. Learned and indexer selectors get random weights (timing only), written by the bench
// to a temporary safetensors file.
//
//   build/bench/decode_select_speed --data DIR [--layers 1,3,5,7] [--sizes 8192,32768,131072]
//       [--kinds exact,page,lsh,hnsw,learned,indexer] [--chunk 1] [--reps 9] [--threads 1] [--top-k 2048]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "decode_selection.hpp"
#include "qkv_layer.hpp"
#include "sparseattn.h"

namespace {

using Clock = std::chrono::steady_clock;
using quality::tensor3;

constexpr int64_t kHq = 32, kHkv = 8, kD = 128;
constexpr int32_t kWindow = 64, kSinks = 4;

struct Options {
  std::string data = "tests/data";
  std::vector<int> layers = {1, 3, 5, 7};
  std::vector<int64_t> sizes = {8192, 32768, 131072};
  std::vector<std::string> kinds = {"exact", "page", "lsh", "hnsw", "learned", "indexer"};
  int64_t chunk = 1;
  int reps = 9;
  int threads = 1;
  int32_t top_k = 2048;
};

std::vector<std::string> split(const std::string &s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string p; std::getline(in, p, ',');) out.push_back(p);
  return out;
}

void check(sa_status st, const char *what) {
  if (st != SA_OK) throw std::runtime_error(std::string(what) + ": " + sa_status_name(st) + ": " + sa_last_error());
}

// [N, 8, 128] f16 keys and [reps, 32, 128] f16 queries tiled from the data (see the top).
struct Tiled {
  std::vector<uint16_t> keys, queries;
};

Tiled tile(const Options &o, int64_t n) {
  std::vector<quality::QkvLayer> layers;
  for (int l : o.layers) layers.push_back(quality::load_layer(o.data, l));
  for (const auto &L : layers)
    if (L.d != kD || L.k.dtype != npy::Dtype::F16 || L.hq % L.hkv != 0)
      throw std::runtime_error("layer " + std::to_string(L.layer) + ": expected f16 with D = 128");
  Tiled t;
  t.keys.resize(size_t(n * kHkv * kD));
  for (int64_t h = 0; h < kHkv; ++h) {
    const quality::QkvLayer &L = layers[size_t(h / layers[0].hkv) % layers.size()];
    const int64_t src_h = h % L.hkv;
    for (int64_t p = 0; p < n; ++p)
      std::memcpy(&t.keys[size_t((p * kHkv + h) * kD)], L.k.f16() + L.kv_offset(p % L.tokens, src_h),
                  size_t(kD) * 2);
  }
  t.queries.resize(size_t(o.reps * kHq * kD));
  const int64_t group = kHq / kHkv;
  for (int r = 0; r < o.reps; ++r)
    for (int64_t hq = 0; hq < kHq; ++hq) {
      const int64_t h = hq / group;
      const quality::QkvLayer &L = layers[size_t(h / layers[0].hkv) % layers.size()];
      const int64_t src_h = (h % L.hkv) * (L.hq / L.hkv) + (hq % group) % (L.hq / L.hkv);
      const int64_t pos = L.tokens - 1 - r * 37 % (L.tokens - L.first_query);
      std::memcpy(&t.queries[size_t((r * kHq + hq) * kD)], L.q.f16() + L.q_offset(pos, src_h), size_t(kD) * 2);
    }
  return t;
}

// A safetensors file of F32 tensors.
struct Entry {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
};

void write_safetensors(const std::string &path, const std::vector<Entry> &entries) {
  std::string header = "{";
  size_t offset = 0;
  for (const Entry &e : entries) {
    std::string shape;
    for (int64_t s : e.shape) shape += (shape.empty() ? "" : ",") + std::to_string(s);
    const size_t bytes = e.values.size() * 4;
    header += (header.size() > 1 ? "," : "") + std::string("\"") + e.name + "\":{\"dtype\":\"F32\",\"shape\":[" + shape +
              "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + bytes) + "]}";
    offset += bytes;
  }
  header += "}";
  while (header.size() % 8) header += ' ';
  std::ofstream f(path, std::ios::binary);
  const uint64_t len = header.size();
  f.write(reinterpret_cast<const char *>(&len), 8);
  f.write(header.data(), std::streamsize(header.size()));
  for (const Entry &e : entries) f.write(reinterpret_cast<const char *>(e.values.data()), std::streamsize(e.values.size() * 4));
  if (!f) throw std::runtime_error("cannot write " + path);
}

Entry random_entry(std::mt19937_64 &gen, const std::string &name, std::vector<int64_t> shape, float sigma) {
  Entry e{name, shape, {}};
  size_t n = 1;
  for (int64_t s : shape) n *= size_t(s);
  std::normal_distribution<float> normal(0.f, sigma);
  e.values.resize(n);
  for (float &x : e.values) x = normal(gen);
  return e;
}

// Random weights for layer 0: learned (per-KV-head projections to d_search 32) and a
// lightning indexer (16 heads of 64 dims).
std::string write_weights() {
  const std::string path = (std::filesystem::temp_directory_path() / "decode_select_speed.safetensors").string();
  std::mt19937_64 gen(7);
  const int64_t ds = 32, heads = 16, di = 64;
  write_safetensors(path, {
      random_entry(gen, "layers.0.q_proj", {kHkv, ds, kD}, 1.f / std::sqrt(float(kD))),
      random_entry(gen, "layers.0.k_proj", {kHkv, ds, kD}, 1.f / std::sqrt(float(kD))),
      random_entry(gen, "layers.0.indexer.q_proj", {heads, di, kHq * kD}, 1.f / std::sqrt(float(kHq * kD))),
      random_entry(gen, "layers.0.indexer.head_weights", {heads, kHq * kD}, 1.f / std::sqrt(float(kHq * kD))),
      random_entry(gen, "layers.0.indexer.k_proj", {di, kHkv * kD}, 1.f / std::sqrt(float(kHkv * kD))),
  });
  return path;
}

sa_index_options kind_options(const std::string &kind, const std::string &weights, int64_t capacity) {
  sa_index_options o = sa_index_options_default();
  if (kind == "exact") o.kind = SA_SELECTOR_EXACT;
  else if (kind == "page") o.kind = SA_SELECTOR_PAGE;
  else if (kind == "lsh") o.kind = SA_SELECTOR_LSH;
  else if (kind == "hnsw") o.kind = SA_SELECTOR_HNSW;
  else if (kind == "learned" || kind == "indexer") {
    o.kind = kind == "learned" ? SA_SELECTOR_LEARNED : SA_SELECTOR_INDEXER;
    o.learned.weights_path = weights.c_str();
    o.learned.layer = 0;
  } else {
    throw std::runtime_error("unknown kind " + kind);
  }
  o.num_kv_heads = int32_t(kHkv);
  o.head_dim = int32_t(kD);
  o.dtype = SA_DTYPE_F16;
  o.capacity = capacity;
  return o;
}

struct Timing {
  std::vector<double> select_ms;  // per size: median per decode token
  double build_s = 0;             // appends up to the largest size
};

Timing run_kind(sa_context *ctx, const Options &o, const std::string &kind, const std::string &weights,
                const Tiled &t) {
  const int64_t n_max = o.sizes.back();
  const sa_index_options io = kind_options(kind, weights, n_max);
  sa_index *ix = nullptr;
  check(sa_index_create(ctx, &io, &ix), "sa_index_create");
  Timing res;
  std::vector<int32_t> out(size_t(kHkv) * size_t(kSinks + kWindow + o.top_k));
  sa_select_options so = sa_select_options_default();
  so.top_k = o.top_k;
  so.window = kWindow;
  so.sinks = kSinks;
  int64_t n = 0;
  for (int64_t size : o.sizes) {
    const auto b0 = Clock::now();
    while (n < size) {
      const int64_t m = std::min(o.chunk, size - n);
      const sa_tensor k = tensor3(&t.keys[size_t(n * kHkv * kD)], SA_DTYPE_F16, m, kHkv, kD);
      check(sa_index_append(ix, &k), "sa_index_append");
      n += m;
    }
    res.build_s += std::chrono::duration<double>(Clock::now() - b0).count();
    std::vector<double> ms;
    const int64_t pos = n - 1;
    so.query_positions = &pos;
    for (int r = 0; r < o.reps; ++r) {
      const sa_tensor q = tensor3(&t.queries[size_t(r * kHq * kD)], SA_DTYPE_F16, 1, kHq, kD);
      sa_tensor ot = tensor3(out.data(), SA_DTYPE_I32, 1, kHkv, kSinks + kWindow + o.top_k);
      const auto s0 = Clock::now();
      check(sa_select(ix, &q, &so, &ot), "sa_select");
      ms.push_back(1e3 * std::chrono::duration<double>(Clock::now() - s0).count());
    }
    std::sort(ms.begin(), ms.end());
    res.select_ms.push_back(ms[ms.size() / 2]);
  }
  sa_index_destroy(&ix);
  return res;
}

Options parse(int argc, char **argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) throw std::runtime_error("usage: see the comment at the top of bench/decode_select_speed.cpp");
    const std::string v = argv[++i];
    if (a == "--data") o.data = v;
    else if (a == "--layers") { o.layers.clear(); for (auto &s : split(v)) o.layers.push_back(std::stoi(s)); }
    else if (a == "--sizes") { o.sizes.clear(); for (auto &s : split(v)) o.sizes.push_back(std::stoll(s)); }
    else if (a == "--kinds") o.kinds = split(v);
    else if (a == "--chunk") o.chunk = std::max<int64_t>(1, std::stoll(v));
    else if (a == "--reps") o.reps = std::max(1, std::stoi(v));
    else if (a == "--threads") o.threads = std::stoi(v);
    else if (a == "--top-k") o.top_k = std::max(1, std::stoi(v));
    else throw std::runtime_error("unknown option " + a);
  }
  if (o.layers.empty() || o.sizes.empty() || o.kinds.empty()) throw std::runtime_error("empty list");
  std::sort(o.sizes.begin(), o.sizes.end());
  return o;
}

}  // namespace

int main(int argc, char **argv) {
  try {
    const Options o = parse(argc, argv);
    const Tiled t = tile(o, o.sizes.back());
    const std::string weights = write_weights();
    sa_context_options co = sa_context_options_default();
    co.threads = o.threads;
    sa_context *ctx = nullptr;
    check(sa_context_create(&co, &ctx), "sa_context_create");
    std::printf("decode selection per token: H_q %lld, H_kv %lld, D %lld, f16, top_k %d, window %d, sinks %d, "
                "%d thread(s), median of %d tokens; indexes built with %lld key(s) per append\n",
                (long long)kHq, (long long)kHkv, (long long)kD, o.top_k, kWindow, kSinks, o.threads, o.reps,
                (long long)o.chunk);
    std::printf("%-8s", "kind");
    for (int64_t n : o.sizes) std::printf(" %10lldK ms %8s", (long long)(n / 1024), "vs exact");
    std::printf(" %10s\n", "build s");
    std::vector<double> exact;
    std::vector<std::string> kinds = {"exact"};
    for (const std::string &k : o.kinds)
      if (k != "exact") kinds.push_back(k);
    for (const std::string &k : kinds) {
      const Timing r = run_kind(ctx, o, k, weights, t);
      if (k == "exact") exact = r.select_ms;
      std::printf("%-8s", k.c_str());
      for (size_t i = 0; i < r.select_ms.size(); ++i) std::printf(" %13.3f %7.2fx", r.select_ms[i], r.select_ms[i] / exact[i]);
      std::printf(" %10.1f\n", r.build_s);
      std::fflush(stdout);
    }
    sa_context_destroy(&ctx);
    std::filesystem::remove(weights);
    return 0;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "decode_select_speed: %s\n", e.what());
    return 1;
  }
}
