// Memory an index adds per key, per selector kind, owning its keys and borrowing the host's
// (sa_index_options.borrow_keys), next to the bytes of the host's K. Not a Google Benchmark
// suite: a report program, linked from the library's objects to read Selector::memory_bytes()
// (the capacities of the selector's containers, hnswlib's allocations estimated from its sizes).
//
// Per kind and mode: an index with capacity N gets N random keys in one append and one
// selection (which finishes a borrowing index's deferred page bounds or LSH tables); per key =
// (its memory_bytes - that of an empty index of capacity 0, i.e. the weights of learned kinds)
// / N. "heap/key" cross-checks with the allocator's bytes in use (mallinfo2, one arena) over
// the same steps, which also counts the selection's thread-local scratch.
//
//   build/bench/index_memory                     H_kv 8, D 128, f16, N = 32768, every kind
//   build/bench/index_memory --n 131072 --kinds exact,page
#include <malloc.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "api/index.hpp"
#include "core/half.hpp"
#include "sparseattn.h"

namespace {

constexpr int kHkv = 8, kD = 128, kHq = 32;

void check(sa_status s, const char *what) {
  if (s != SA_OK) {
    std::fprintf(stderr, "%s: %s: %s\n", what, sa_status_name(s), sa_last_error());
    std::exit(1);
  }
}

size_t heap_in_use() {
  const struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

// A safetensors file of F32 tensors.
struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
};

std::string write_weights(const std::vector<Tensor> &tensors, const char *stem) {
  std::string header = "{", data;
  for (const Tensor &t : tensors) {
    std::string shape;
    for (size_t i = 0; i < t.shape.size(); ++i) shape += (i ? "," : "") + std::to_string(t.shape[i]);
    if (header.size() > 1) header += ",";
    const size_t begin = data.size();
    data.append(reinterpret_cast<const char *>(t.values.data()), t.values.size() * sizeof(float));
    header += "\"" + t.name + "\":{\"dtype\":\"F32\",\"shape\":[" + shape + "],\"data_offsets\":[" +
              std::to_string(begin) + "," + std::to_string(data.size()) + "]}";
  }
  header += "}";
  while (header.size() % 8) header += ' ';
  const std::string path = "/tmp/sa_index_memory_" + std::to_string(getpid()) + "_" + stem + ".safetensors";
  FILE *f = std::fopen(path.c_str(), "wb");
  if (!f) {
    std::perror(path.c_str());
    std::exit(1);
  }
  const uint64_t n = header.size();
  std::fwrite(&n, 8, 1, f);
  std::fwrite(header.data(), 1, header.size(), f);
  std::fwrite(data.data(), 1, data.size(), f);
  std::fclose(f);
  return path;
}

std::vector<float> random_floats(std::mt19937_64 &rng, size_t n, float sigma) {
  std::normal_distribution<float> dist(0.f, sigma);
  std::vector<float> v(n);
  for (float &x : v) x = dist(rng);
  return v;
}

struct Kind {
  std::string name;
  sa_index_options opt;
};

std::vector<Kind> all_kinds(const std::string &learned_path, const std::string &indexer_path) {
  auto base = [](sa_selector_kind k) {
    sa_index_options o = SA_INDEX_OPTIONS_INIT;
    o.kind = k;
    o.num_kv_heads = kHkv;
    o.head_dim = kD;
    o.dtype = SA_DTYPE_F16;
    return o;
  };
  std::vector<Kind> k;
  k.push_back({"exact", base(SA_SELECTOR_EXACT)});
  k.push_back({"page", base(SA_SELECTOR_PAGE)});  // page_size 16
  k.push_back({"lsh", base(SA_SELECTOR_LSH)});
  k.push_back({"hnsw", base(SA_SELECTOR_HNSW)});
  Kind learned{"learned", base(SA_SELECTOR_LEARNED)};
  learned.opt.learned.weights_path = learned_path.c_str();  // rescore 12: two stages
  k.push_back(learned);
  Kind indexer{"indexer", base(SA_SELECTOR_INDEXER)};
  indexer.opt.learned.weights_path = indexer_path.c_str();
  k.push_back(indexer);
  return k;
}

sa_tensor tensor3(void *data, sa_dtype dt, int64_t a, int64_t b, int64_t c) {
  sa_tensor t;
  std::memset(&t, 0, sizeof t);
  t.data = data;
  t.dtype = dt;
  t.device = SA_DEVICE_CPU;
  t.rank = 3;
  t.shape[0] = a, t.shape[1] = b, t.shape[2] = c;
  return t;
}

struct Measure {
  double per_key = 0, heap_per_key = 0;
};

Measure measure(sa_context *ctx, sa_index_options o, bool borrow, int64_t n, sa_tensor &keys, sa_tensor &q) {
  o.borrow_keys = borrow;
  sa_index *empty = nullptr, *ix = nullptr;
  o.capacity = 0;
  check(sa_index_create(ctx, &o, &empty), "sa_index_create");
  const size_t base = empty->cpu_selector()->memory_bytes();
  sa_index_destroy(&empty);
  std::vector<int32_t> idx(size_t(kHkv) * (64 + 64 + 4));
  sa_tensor out = tensor3(idx.data(), SA_DTYPE_I32, 1, kHkv, 64 + 64 + 4);
  sa_select_options so = SA_SELECT_OPTIONS_INIT;  // top_k 64, window 64, sinks 4
  so.keys = &keys;
  const size_t heap0 = heap_in_use();
  o.capacity = n;
  check(sa_index_create(ctx, &o, &ix), "sa_index_create");
  check(sa_index_append(ix, &keys), "sa_index_append");
  check(sa_select(ix, &q, &so, &out), "sa_select");
  const size_t bytes = ix->cpu_selector()->memory_bytes();
  Measure m;
  m.heap_per_key = (double(heap_in_use()) - double(heap0) - double(base)) / double(n);
  m.per_key = (double(bytes) - double(base)) / double(n);
  sa_index_destroy(&ix);
  return m;
}

}  // namespace

int main(int argc, char **argv) {
  mallopt(M_ARENA_MAX, 1);  // every thread's allocations in the one arena mallinfo2 reports
  int64_t n = 32768;
  int threads = 2;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--n") && i + 1 < argc) n = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--kinds") && i + 1 < argc) only = "," + std::string(argv[++i]) + ",";
    else {
      std::fprintf(stderr, "usage: %s [--n N] [--threads T] [--kinds exact,page,lsh,hnsw,learned,indexer]\n", argv[0]);
      return 2;
    }
  }
  std::mt19937_64 rng(42);
  const int64_t S = 16, NI = 8, DI = 64;
  const std::string learned_path =
      write_weights({{"layers.0.q_proj", {S, kD}, random_floats(rng, S * kD, 0.1f)},
                     {"layers.0.k_proj", {S, kD}, random_floats(rng, S * kD, 0.1f)}}, "learned");
  const std::string indexer_path =
      write_weights({{"layers.0.indexer.q_proj", {NI, DI, kHq * kD}, random_floats(rng, NI * DI * kHq * kD, 0.02f)},
                     {"layers.0.indexer.head_weights", {NI, kHq * kD}, random_floats(rng, NI * kHq * kD, 0.02f)},
                     {"layers.0.indexer.k_proj", {DI, kHkv * kD}, random_floats(rng, DI * kHkv * kD, 0.02f)}}, "indexer");

  // The host's K (f16, token-major) and one decode query.
  std::vector<uint16_t> k(size_t(n) * kHkv * kD);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (uint16_t &x : k) x = sa::f32_to_f16(dist(rng));
  std::vector<float> qv = random_floats(rng, size_t(kHq) * kD, 1.f);
  sa_tensor keys = tensor3(k.data(), SA_DTYPE_F16, n, kHkv, kD), q = tensor3(qv.data(), SA_DTYPE_F32, 1, kHq, kD);

  sa_context_options co = SA_CONTEXT_OPTIONS_INIT;
  co.threads = threads;
  sa_context *ctx = nullptr;
  check(sa_context_create(&co, &ctx), "sa_context_create");
  const double k_bytes = double(kHkv) * kD * 2;
  std::printf("index memory per key: H_kv %d, D %d, f16, N = %lld; the host's K is %.0f bytes per key\n", kHkv, kD,
              (long long)n, k_bytes);
  std::printf("%-8s | %12s %8s %12s | %12s %8s %12s\n", "kind", "owned B/key", "% of K", "heap B/key", "borrowed B/key",
              "% of K", "heap B/key");
  for (const Kind &kind : all_kinds(learned_path, indexer_path)) {
    if (!only.empty() && only.find("," + kind.name + ",") == std::string::npos) continue;
    const Measure owned = measure(ctx, kind.opt, false, n, keys, q);
    const Measure borrowed = measure(ctx, kind.opt, true, n, keys, q);
    std::printf("%-8s | %12.1f %7.1f%% %12.1f | %14.1f %7.1f%% %12.1f\n", kind.name.c_str(), owned.per_key,
                100.0 * owned.per_key / k_bytes, owned.heap_per_key, borrowed.per_key,
                100.0 * borrowed.per_key / k_bytes, borrowed.heap_per_key);
    std::fflush(stdout);
  }
  sa_context_destroy(&ctx);
  std::remove(learned_path.c_str());
  std::remove(indexer_path.c_str());
  return 0;
}
