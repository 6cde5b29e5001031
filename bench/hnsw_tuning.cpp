// Measures the HNSW graph choices on real attention and on synthetic keys:
//   quality  per layer of a Q/K/V data set DIR (tinylm-qkv layout; tests/data by default) (decode setting: the query at t selects
//            top_k keys among [0, t - W] and keeps the window W; late queries): attention mass
//            captured and recall@K vs the exact top-K, for the inner-product graph and the
//            MIPS-to-L2 graph, with and without key centring.
//   build    insert throughput (keys/s) at N keys, hnswlib's defaults (f32 inner product,
//            M=16, efC=200) next to our settings, with the recall@K each gets (candidates
//            rescored exactly, as the selector does).
//
//   build/bench/hnsw_tuning quality DIR [all prompt decode]   (build orders, see BuildOrder)
//   build/bench/hnsw_tuning build DIR 32768 131072
//   (HNSW_VARIANTS=0,3 runs only those rows of either table; HNSW_GROUP_ONLY=1 skips the
//   per-query-head searches of the quality table. Quality only: HNSW_CFG=l2,12,48,256 adds
//   variant 13 (metric ip|l2, M, efC, ef; centred, f16); HNSW_SEEDS=64 starts each search also
//   from the 64 newest keys, as the selector does; HNSW_LAYERS=1,5 and HNSW_T=4096 (the first T
//   tokens) pick the data; HNSW_REACH=1 prints how many keys level 0 reaches from the entry.
//   T = 8192 data: tools/tinylm_qkv.py.)
// Uses the graph code directly (src/select/hnsw_graph.cpp), so each variant can be compared.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/half.hpp"
#include "select/hnsw_graph.hpp"

namespace {

using sa::HnswGraph;
using sa::HnswGraphConfig;
using sa::HnswMetric;

struct Array {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// .npy, little-endian f16, C order.
Array read_npy(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  char magic[10];
  f.read(magic, 10);
  const uint16_t hlen = uint16_t(uint8_t(magic[8]) | (uint8_t(magic[9]) << 8));
  std::string header(hlen, ' ');
  f.read(&header[0], hlen);
  if (header.find("'<f2'") == std::string::npos) throw std::runtime_error(path + ": not <f2");
  Array a;
  const size_t open = header.find('(', header.find("shape")), close = header.find(')', open);
  std::string dims = header.substr(open + 1, close - open - 1);
  for (size_t p = 0; p < dims.size();) {
    size_t q = dims.find(',', p);
    std::string tok = dims.substr(p, q == std::string::npos ? std::string::npos : q - p);
    if (tok.find_first_of("0123456789") != std::string::npos) a.shape.push_back(std::stoll(tok));
    if (q == std::string::npos) break;
    p = q + 1;
  }
  int64_t n = 1;
  for (int64_t s : a.shape) n *= s;
  std::vector<uint16_t> raw(static_cast<size_t>(n));
  f.read(reinterpret_cast<char *>(raw.data()), std::streamsize(n * 2));
  a.data.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) a.data[size_t(i)] = sa::f16_to_f32(raw[size_t(i)]);
  return a;
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

sa_isa best_isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return SA_ISA_AVX512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c")) return SA_ISA_AVX2;
  return SA_ISA_SCALAR;
}

struct Variant {
  const char *name;
  HnswGraphConfig cfg;
};

HnswGraphConfig config(HnswMetric metric, bool center, bool half, int m, int efc, int ef) {
  HnswGraphConfig c;
  c.metric = metric;
  c.center = center;
  c.half = half;
  c.m = m;
  c.ef_construction = efc;
  c.ef_search = ef;
  c.isa = best_isa();
  return c;
}

HnswGraphConfig recentred(HnswGraphConfig c, float growth, bool rebuild) {
  c.recentre_growth = growth;
  c.recentre_rebuild = rebuild;
  return c;
}

// Indices of the k largest values (ties by index).
std::vector<int32_t> top_indices(const std::vector<double> &v, const std::vector<int32_t> &among, size_t k) {
  std::vector<int32_t> ids = among;
  k = std::min(k, ids.size());
  std::partial_sort(ids.begin(), ids.begin() + long(k), ids.end(), [&](int32_t a, int32_t b) {
    return v[size_t(a)] > v[size_t(b)] || (v[size_t(a)] == v[size_t(b)] && a < b);
  });
  ids.resize(k);
  return ids;
}

// ---------------------------------------------------------------- quality on tinylm

struct Quality {
  double mass = 0, exact_mass = 0, recall = 0, search_s = 0;
  int count = 0;
};

// Decode: the graph holds keys [0, t]; query t (its group's heads) selects top_k among
// [0, t - window] and keeps the window.
// How the graph receives the keys: every key in one add before the first query (searches
// pass over later keys), the keys before the first query in one add and then one per query
// (a prompt, then decode), or one key per add from key 0 (decode from an empty cache).
enum class BuildOrder { all, prompt, decode };
const char *order_name(BuildOrder o) { return o == BuildOrder::all ? "all" : o == BuildOrder::prompt ? "prompt" : "decode"; }

struct UpTo {
  int32_t last;
  static bool accept(const void *c, int32_t slot) { return slot <= static_cast<const UpTo *>(c)->last; }
};

Quality decode_quality(const Array &q, const Array &k, int head, const HnswGraphConfig &cfg, BuildOrder order,
                       int first_query, int top_k, int window, bool mean_query, size_t search_k) {
  const int64_t T = k.shape[0], Hkv = k.shape[1], D = k.shape[2], Hq = q.shape[1], G = Hq / Hkv;
  std::vector<float> rows(static_cast<size_t>(T * D));
  for (int64_t t = 0; t < T; ++t)
    std::memcpy(&rows[size_t(t * D)], &k.data[size_t((t * Hkv + head) * D)], size_t(D) * sizeof(float));
  HnswGraph graph(int(D), cfg);
  if (order == BuildOrder::all) graph.add(rows.data(), D, T, 0);
  if (order == BuildOrder::prompt) graph.add(rows.data(), D, first_query, 0);
  if (order == BuildOrder::decode)
    for (int64_t t = 0; t < first_query; ++t) graph.add(&rows[size_t(t * D)], D, 1, int32_t(t));
  sa::HnswSearchScratch scratch;
  Quality res;
  const double scale = 1.0 / std::sqrt(double(D));
  std::vector<double> prob(static_cast<size_t>(T));
  std::vector<int32_t> found;
  if (std::getenv("HNSW_REACH"))
    std::printf("  head %d: %lld of %lld keys reachable at level 0 before the first query\n", head,
                (long long)graph.reachable(), (long long)graph.size());
  for (int64_t t = first_query; t < T; ++t) {
    if (order != BuildOrder::all) graph.add(&rows[size_t(t * D)], D, 1, int32_t(t));
    const UpTo up_to{int32_t(t - window)};
    const sa::HnswFilter filter{&UpTo::accept, &up_to};
    // Group-summed attention probability over [0, t], in double.
    std::fill(prob.begin(), prob.end(), 0.0);
    for (int64_t g = 0; g < G; ++g) {
      const float *qv = &q.data[size_t((t * Hq + head * G + g) * D)];
      std::vector<double> s(static_cast<size_t>(t + 1));
      double m = -1e300;
      for (int64_t j = 0; j <= t; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += double(qv[d]) * rows[size_t(j * D + d)];
        s[size_t(j)] = dot * scale;
        m = std::max(m, s[size_t(j)]);
      }
      double z = 0;
      for (int64_t j = 0; j <= t; ++j) z += std::exp(s[size_t(j)] - m);
      for (int64_t j = 0; j <= t; ++j) prob[size_t(j)] += std::exp(s[size_t(j)] - m) / z / double(G);
    }
    double window_mass = 0;
    std::vector<int32_t> outside;
    for (int64_t j = 0; j <= t; ++j) {
      if (j > t - window) window_mass += prob[size_t(j)];
      else outside.push_back(int32_t(j));
    }
    std::vector<int32_t> exact = top_indices(prob, outside, size_t(top_k));
    found.clear();
    // HNSW_SEEDS=n: the level-0 search also starts from the n newest keys (the selector's way).
    std::vector<int32_t> seed_slots;
    const int64_t n_seeds = std::getenv("HNSW_SEEDS") ? std::atoll(std::getenv("HNSW_SEEDS")) : 0;
    for (int64_t j = std::max<int64_t>(0, t - n_seeds + 1); j <= t && n_seeds > 0; ++j) seed_slots.push_back(int32_t(j));
    const sa::HnswSeeds seeds{seed_slots.data(), seed_slots.size()};
    const double t0 = now();
    if (mean_query) {
      // The group's heads at unit length each, summed (the selector's one search per group).
      std::vector<float> mq(size_t(D), 0.f);
      for (int64_t g = 0; g < G; ++g) {
        const float *qg = &q.data[size_t((t * Hq + head * G + g) * D)];
        double n2 = 0;
        for (int64_t d = 0; d < D; ++d) n2 += double(qg[d]) * qg[d];
        const float w = n2 > 0 ? float(1.0 / std::sqrt(n2)) : 0.f;
        for (int64_t d = 0; d < D; ++d) mq[size_t(d)] += w * qg[d];
      }
      graph.search(mq.data(), search_k, search_k, filter, scratch, found, seeds);
    } else {
      for (int64_t g = 0; g < G; ++g)
        graph.search(&q.data[size_t((t * Hq + head * G + g) * D)], search_k, search_k, filter, scratch, found);
    }
    res.search_s += now() - t0;
    std::sort(found.begin(), found.end());
    found.erase(std::unique(found.begin(), found.end()), found.end());
    std::vector<int32_t> cands;
    for (int32_t s : found)
      if (s <= t - window) cands.push_back(s);
    std::vector<int32_t> chosen = top_indices(prob, cands, size_t(top_k));  // exact rescoring
    double mass = window_mass, exact_mass = window_mass;
    for (int32_t s : chosen) mass += prob[size_t(s)];
    for (int32_t s : exact) exact_mass += prob[size_t(s)];
    std::vector<int32_t> a = chosen, b = exact, both;
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(both));
    res.mass += mass;
    res.exact_mass += exact_mass;
    res.recall += b.empty() ? 1.0 : double(both.size()) / double(b.size());
    ++res.count;
  }
  return res;
}

// only: variant indices to run (HNSW_VARIANTS), empty: all; orders: build orders to compare.
int quality(const std::string &dir, const std::vector<int> &only, const std::vector<BuildOrder> &orders) {
  const int top_k = 128, window = 64, late = 256;
  std::vector<Variant> variants = {
      {"ip", config(HnswMetric::inner_product, false, true, 16, 100, 256)},
      {"ip+centre", config(HnswMetric::inner_product, true, true, 16, 100, 256)},
      {"l2", config(HnswMetric::mips_to_l2, false, true, 16, 100, 256)},
      {"l2+centre", config(HnswMetric::mips_to_l2, true, true, 16, 100, 256)},
      {"l2+centre m8 efc32", config(HnswMetric::mips_to_l2, true, true, 8, 32, 256)},
      {"l2+centre m12 efc48", config(HnswMetric::mips_to_l2, true, true, 12, 48, 256)},
      {"ip+centre m12 efc48", config(HnswMetric::inner_product, true, true, 12, 48, 256)},
      {"ip+centre m8 efc32 ef192", config(HnswMetric::inner_product, true, true, 8, 32, 192)},
      {"  mean of first add", recentred(config(HnswMetric::inner_product, true, true, 8, 32, 192), 0.f, false)},
      {"  recentre x2 rebuild", recentred(config(HnswMetric::inner_product, true, true, 8, 32, 192), 2.f, true)},
      {"  recentre x1.25", recentred(config(HnswMetric::inner_product, true, true, 8, 32, 192), 1.25f, false)},
      {"ip+centre m8 efc32 ef320", config(HnswMetric::inner_product, true, true, 8, 32, 320)},
      {"ip+centre m12 efc64 ef192", config(HnswMetric::inner_product, true, true, 12, 64, 192)},
  };
  // HNSW_CFG=ip|l2,M,efC,ef: one more variant (index 13), centred, f16.
  if (const char *c = std::getenv("HNSW_CFG")) {
    int m = 8, efc = 32, ef = 192;
    char metric[8] = "ip";
    std::sscanf(c, "%7[^,],%d,%d,%d", metric, &m, &efc, &ef);
    variants.push_back({c, config(std::string(metric) == "l2" ? HnswMetric::mips_to_l2 : HnswMetric::inner_product,
                                  true, true, m, efc, ef)});
  }
  std::vector<int> layer_list = {1, 3, 5, 7};
  if (const char *l = std::getenv("HNSW_LAYERS")) {  // HNSW_LAYERS=1,5
    layer_list.clear();
    for (const char *p = l; *p;) {
      layer_list.push_back(std::atoi(p));
      while (*p && *p != ',') ++p;
      if (*p == ',') ++p;
    }
  }
  std::printf("decode, late queries t in [T - %d, T), top_k=%d, window=%d; mass = window + chosen\n", late, top_k,
              window);
  std::printf("%-26s %-6s %-6s %5s %8s %8s %8s %8s %10s\n", "variant", "order", "query", "layer", "mass", "exact",
              "ratio", "recall", "us/search");
  for (size_t vi = 0; vi < variants.size(); ++vi) {
    const Variant &v = variants[vi];
    if (!only.empty() && std::find(only.begin(), only.end(), int(vi)) == only.end()) continue;
    for (BuildOrder order : orders)
      for (bool mean_query : {false, true}) {
        if (!mean_query && std::getenv("HNSW_GROUP_ONLY")) continue;  // the selector's one search per group
        double sum_ratio = 0;
        int layers = 0;
        for (int layer : layer_list) {
          const std::string qf = dir + "/q" + std::to_string(layer) + ".npy";
          if (!std::ifstream(qf)) continue;
          Array q = read_npy(qf);
          Array k = read_npy(dir + "/k" + std::to_string(layer) + ".npy");
          if (const char *tt = std::getenv("HNSW_T"))  // HNSW_T=4096: the first T tokens only
            q.shape[0] = k.shape[0] = std::min<int64_t>(k.shape[0], std::atoll(tt));
          Quality total;
          for (int h = 0; h < int(k.shape[1]); ++h) {
            Quality r = decode_quality(q, k, h, v.cfg, order, int(k.shape[0]) - late, top_k, window, mean_query,
                                       size_t(v.cfg.ef_search));
            total.mass += r.mass;
            total.exact_mass += r.exact_mass;
            total.recall += r.recall;
            total.search_s += r.search_s;
            total.count += r.count;
          }
          const int searches = total.count * (mean_query ? 1 : int(q.shape[1] / k.shape[1]));
          std::printf("%-26s %-6s %-6s %5d %8.4f %8.4f %8.4f %8.4f %10.1f\n", v.name, order_name(order),
                      mean_query ? "group" : "heads", layer, total.mass / total.count, total.exact_mass / total.count,
                      total.mass / total.exact_mass, total.recall / total.count, 1e6 * total.search_s / searches);
          sum_ratio += total.mass / total.exact_mass;
          ++layers;
        }
        std::printf("%-26s %-6s %-6s  mean mass ratio %.4f\n", v.name, order_name(order),
                    mean_query ? "group" : "heads", sum_ratio / layers);
        std::fflush(stdout);
      }
  }
  return 0;
}

// ---------------------------------------------------------------- build throughput

// The rows of D of tinylm's layers 1, 3, 5 and 7 ([T][H][D] each), for prefix "k" or "q".
std::vector<float> tinylm_rows(const std::string &dir, const char *prefix) {
  std::vector<float> pool;
  for (int layer : {1, 3, 5, 7}) {
    Array a = read_npy(dir + "/" + prefix + std::to_string(layer) + ".npy");
    pool.insert(pool.end(), a.data.begin(), a.data.end());
  }
  return pool;
}

// N keys per head for `heads` heads: random N(0,1), or tinylm keys of every layer and head,
// tiled with a little noise ("real").
std::vector<float> make_keys(const std::string &dir, bool real, int64_t n, int64_t D, uint64_t seed) {
  std::vector<float> out(static_cast<size_t>(n * D));
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  if (!real) {
    for (float &x : out) x = normal(gen);
    return out;
  }
  const std::vector<float> pool = tinylm_rows(dir, "k");
  const int64_t rows = int64_t(pool.size()) / D;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = i % rows;
    for (int64_t d = 0; d < D; ++d) out[size_t(i * D + d)] = pool[size_t(r * D + d)] * (1.f + 0.05f * normal(gen));
  }
  return out;
}

std::vector<float> make_queries(const std::string &dir, bool real, int64_t count, int64_t D, uint64_t seed) {
  std::vector<float> out(static_cast<size_t>(count * D));
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  if (!real) {
    for (float &x : out) x = normal(gen);
    return out;
  }
  const std::vector<float> pool = tinylm_rows(dir, "q");
  const int64_t rows = int64_t(pool.size()) / D;
  std::uniform_int_distribution<int64_t> pick(0, rows - 1);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t r = pick(gen);
    std::memcpy(&out[size_t(i * D)], &pool[size_t(r * D)], size_t(D) * sizeof(float));
  }
  return out;
}

// only: the variants to run (indices into the list below); empty: all.
int build(const std::string &dir, const std::vector<int64_t> &sizes, const std::vector<int> &only) {
  const int64_t D = 128;
  const int top_k = 128, nq = 200, heads = 2;
  std::vector<Variant> variants = {
      {"hnswlib default (f32 ip, M16 efC200)", config(HnswMetric::inner_product, false, false, 16, 200, 256)},
      {"f16 ip+centre M16 efC200", config(HnswMetric::inner_product, true, true, 16, 200, 256)},
      {"f16 l2+centre M16 efC200", config(HnswMetric::mips_to_l2, true, true, 16, 200, 256)},
      {"f16 ip+centre M12 efC48", config(HnswMetric::inner_product, true, true, 12, 48, 256)},
      {"f16 l2+centre M12 efC48", config(HnswMetric::mips_to_l2, true, true, 12, 48, 256)},
      {"f16 ip+centre M8 efC24", config(HnswMetric::inner_product, true, true, 8, 24, 256)},
      {"f16 ip+centre M16 efC32", config(HnswMetric::inner_product, true, true, 16, 32, 256)},
      {"f16 ip+centre M8 efC32 ef192", config(HnswMetric::inner_product, true, true, 8, 32, 192)},
      {"f16 l2+centre M12 efC48 ef256 (default)", config(HnswMetric::mips_to_l2, true, true, 12, 48, 256)},
  };
  std::printf("%-38s %-5s %7s %12s %12s %8s %10s %10s\n", "variant", "keys", "N", "keys/s(1t)", "keys/s(2h,2t)",
              "recall", "us/search", "us/exact");
  for (bool real : {false, true})
    for (int64_t n : sizes) {
      std::vector<std::vector<float>> keys;
      for (int h = 0; h < heads; ++h) keys.push_back(make_keys(dir, real, n, D, 7 + uint64_t(h)));
      std::vector<float> qs = make_queries(dir, real, nq, D, 99);
      // Exact top-K of each query against head 0, and the time of exact scoring (f32 dot, 1 thread).
      std::vector<std::vector<int32_t>> exact(nq);
      std::vector<int32_t> all(static_cast<size_t>(n));
      std::iota(all.begin(), all.end(), 0);
      double exact_s = 0;
      std::vector<double> score(static_cast<size_t>(n));
      for (int i = 0; i < nq; ++i) {
        const double t0 = now();
        for (int64_t j = 0; j < n; ++j) {
          float dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += qs[size_t(i * D + d)] * keys[0][size_t(j * D + d)];
          score[size_t(j)] = dot;
        }
        exact[size_t(i)] = top_indices(score, all, top_k);
        exact_s += now() - t0;
      }
      for (size_t vi = 0; vi < variants.size(); ++vi) {
        const Variant &v = variants[vi];
        if (!only.empty() && std::find(only.begin(), only.end(), int(vi)) == only.end()) continue;
        // One head alone, then both heads on two threads (a graph per head, built serially).
        const double t0 = now();
        HnswGraph g0(int(D), v.cfg);
        g0.add(keys[0].data(), D, n, 0);
        const double one = now() - t0;
        const double t1 = now();
        {
          std::vector<std::unique_ptr<HnswGraph>> gs;
          for (int h = 0; h < heads; ++h) gs.push_back(std::make_unique<HnswGraph>(int(D), v.cfg));
          std::vector<std::thread> th;
          for (int h = 0; h < heads; ++h)
            th.emplace_back([&, h] { gs[size_t(h)]->add(keys[size_t(h)].data(), D, n, 0); });
          for (auto &t : th) t.join();
        }
        const double two = now() - t1;
        double recall = 0, search_s = 0;
        std::vector<int32_t> found;
        for (int i = 0; i < nq; ++i) {
          found.clear();
          const double s0 = now();
          g0.search(&qs[size_t(i * D)], size_t(v.cfg.ef_search), found);
          search_s += now() - s0;
          for (size_t c = 0; c < found.size(); ++c) {  // exact rescoring of the candidates
            float dot = 0;
            for (int64_t d = 0; d < D; ++d) dot += qs[size_t(i * D + d)] * keys[0][size_t(found[c] * D + d)];
            score[size_t(found[c])] = dot;
          }
          std::vector<int32_t> chosen = top_indices(score, found, top_k), a = exact[size_t(i)], both;
          std::sort(chosen.begin(), chosen.end());
          std::sort(a.begin(), a.end());
          std::set_intersection(a.begin(), a.end(), chosen.begin(), chosen.end(), std::back_inserter(both));
          recall += double(both.size()) / double(a.size());
        }
        std::printf("%-38s %-5s %7lld %12.0f %12.0f %8.4f %10.1f %10.1f\n", v.name, real ? "real" : "rand",
                    (long long)n, double(n) / one, double(n * heads) / two, recall / nq, 1e6 * search_s / nq,
                    1e6 * exact_s / nq);
        std::fflush(stdout);
      }
    }
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    const std::string dir = argc > 2 ? argv[2] : "tests/data";
    std::vector<int> only;  // HNSW_VARIANTS=0,3: run only those
    if (const char *env = std::getenv("HNSW_VARIANTS"))
      for (const char *p = env; *p;) {
        only.push_back(std::atoi(p));
        while (*p && *p != ',') ++p;
        if (*p == ',') ++p;
      }
    if (mode == "quality") {
      std::vector<BuildOrder> orders;
      for (int i = 3; i < argc; ++i) {
        const std::string o = argv[i];
        if (o == "all") orders.push_back(BuildOrder::all);
        else if (o == "prompt") orders.push_back(BuildOrder::prompt);
        else if (o == "decode") orders.push_back(BuildOrder::decode);
        else throw std::runtime_error("unknown build order '" + o + "' (all, prompt, decode)");
      }
      if (orders.empty()) orders = {BuildOrder::all, BuildOrder::prompt, BuildOrder::decode};
      return quality(dir, only, orders);
    }
    if (mode == "build") {
      std::vector<int64_t> sizes;
      for (int i = 3; i < argc; ++i) sizes.push_back(std::atoll(argv[i]));
      if (sizes.empty()) sizes = {32768, 131072};
      return build(dir, sizes, only);
    }
    std::fprintf(stderr, "usage: %s quality DATA_DIR [all|prompt|decode ...] | build DATA_DIR [N ...]\n", argv[0]);
    return 2;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "hnsw_tuning: %s\n", e.what());
    return 1;
  }
}
