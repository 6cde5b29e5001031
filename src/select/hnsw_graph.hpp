// One KV head's HNSW graph (hnswlib) over its keys, for maximum inner product search.
//
// Attention ranks keys by q.k, which is not a metric: a graph built with inner-product
// distances between keys links every key to the few of largest norm. The graph is built
// instead on keys mapped to the unit sphere (MIPS-to-L2): k' = [k - mu, sqrt(M^2 - |k - mu|^2)] / M
// with mu a fixed key mean (ranking by q.(k - mu) equals ranking by q.k for one query) and M a
// bound on |k - mu|. Between keys, 1 - k1'.k2' is half their squared L2 distance on the
// sphere; a query q' = [q / |q|, 0] ranks keys by q.k. When a new key exceeds M, M grows and
// the stored vectors are rescaled in place (the edges are kept). Vectors are stored in f16.
//
// Labels are cache slots. Not thread-safe for add/replace; search is safe concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "sparseattn.h"

namespace sa {

enum class HnswMetric {
  inner_product,  // keys (centred or not) as they are; distance 1 - q.k
  mips_to_l2,     // keys augmented onto the unit sphere (see above)
};

struct HnswGraphConfig {
  int m = 16;                // hnswlib's M (level 0 keeps 2M links)
  int ef_construction = 100;
  int ef_search = 256;       // the search beam; a search asking for more keys widens it
  HnswMetric metric = HnswMetric::mips_to_l2;
  bool center = true;        // subtract the mean of the first keys added
  bool half = true;          // f16 vectors and the ISA's kernel; false: f32 and hnswlib's space
  float norm_margin = 1.25f; // M = margin * the largest |k - mu| seen when it is (re)set
  sa_isa isa = SA_ISA_SCALAR;
  uint64_t seed = 100;       // hnswlib's level generator: same inserts, same graph
};

class HnswGraph {
 public:
  HnswGraph(int dim, const HnswGraphConfig &config);
  ~HnswGraph();
  HnswGraph(const HnswGraph &) = delete;
  HnswGraph &operator=(const HnswGraph &) = delete;

  // Adds n keys (f32 rows of dim values, row_stride apart) as slots first_slot .. + n - 1.
  void add(const float *rows, int64_t row_stride, int64_t n, int32_t first_slot);
  // Gives an existing slot a new key (hnswlib's updatePoint: the old key is gone).
  void replace(int32_t slot, const float *row);
  // Appends to out up to k slots with the largest q.k (approximate), best first.
  void search(const float *query, size_t k, std::vector<int32_t> &out) const;
  int64_t size() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sa
