// One KV head's HNSW graph (hnswlib) over its keys, for maximum inner product search.
//
// Attention ranks keys by q.k, which is not a metric: a graph built with inner-product
// distances between keys links every key to the few of largest norm. The graph is built
// instead on keys mapped to the unit sphere (MIPS-to-L2): k' = [k - mu, sqrt(M^2 - |k - mu|^2)] / M
// with mu a mean of the keys (ranking by q.(k - mu) equals ranking by q.k for one query) and M a
// bound on |k - mu|. mu follows the keys (HnswGraphConfig::recentre_growth): a mean fixed by the
// first append is key 0 alone in a cache grown one key per append (tinylm layers 1,3,5,7, K=128:
// mass 0.966 of exact's against 0.985 with mu following; bench/hnsw_tuning quality DIR decode).
// Between keys, 1 - k1'.k2' is half their squared L2 distance on the sphere; a query q' = [q / |q|, 0] ranks keys by q.k. When a new key exceeds M, M grows and
// the stored vectors are rescaled in place (the edges are kept). Vectors are stored in f16.
//
// Labels are cache slots. Not thread-safe for add/replace; search is safe concurrently (each
// thread with its own HnswSearchScratch).
//
// Search is our own loop over hnswlib's storage rather than searchKnn: no visited-list pool
// (a lock per search) and no per-search allocations, the neighbours' vectors prefetched, and
// a filter: keys the query may not use (causally invisible, or kept anyway as window or
// sinks) are walked through but not returned, so the beam is spent on keys that can be chosen.
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

// Per-thread buffers of HnswGraph::search, reused between searches.
struct HnswSearchScratch {
  std::vector<uint32_t> visited;  // visited[id] == epoch: seen by the current search
  uint32_t epoch = 0;
  std::vector<std::pair<float, uint32_t>> frontier, best;  // heaps: (distance, internal id)
  std::vector<char> query;                                 // the encoded query
  std::vector<float> values;
};

// Which slots a search may return; every slot when absent.
struct HnswFilter {
  bool (*accept)(const void *context, int32_t slot) = nullptr;
  const void *context = nullptr;
};

// Slots the level-0 search starts from besides the entry point the upper levels lead to (slots
// the graph does not hold are skipped). Seeds are walked through like any key, and returned
// only when the filter accepts them.
struct HnswSeeds {
  const int32_t *slots = nullptr;
  size_t count = 0;
};

struct HnswGraphConfig {
  int m = 12;                // hnswlib's M (level 0 keeps 2M links), 2 .. 512
  int ef_construction = 48;
  int ef_search = 256;       // the search beam; a search asking for more keys widens it
  HnswMetric metric = HnswMetric::mips_to_l2;
  bool center = true;        // subtract a mean of the keys (see recentre_growth)
  // The mean follows the keys: it is recomputed over every key added so far whenever the key
  // count has grown by this factor since it was last set (the first add sets it), and the
  // stored vectors are re-encoded (recentre_rebuild: the graph is built again from them).
  // Amortised O(D) per key (O(build) per key with rebuild). 0: the first add's mean stays.
  float recentre_growth = 2.f;
  bool recentre_rebuild = false;
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
  // A deep copy: the same vectors, links, encoding and level generators, so it also grows
  // like this graph. Reads this graph only (safe beside searches).
  std::unique_ptr<HnswGraph> clone() const;

  // Adds n keys (f32 rows of dim values, row_stride apart) as slots first_slot .. + n - 1.
  void add(const float *rows, int64_t row_stride, int64_t n, int32_t first_slot);
  // Gives an existing slot a new key (hnswlib's updatePoint: the old key is gone).
  void replace(int32_t slot, const float *row);
  // Appends to out up to k slots with the largest q.k (approximate), best first, searching
  // with a beam of max(ef, k).
  void search(const float *query, size_t k, std::vector<int32_t> &out) const;
  // The same with the caller's beam, buffers, and a filter on the slots returned.
  void search(const float *query, size_t ef, size_t k, const HnswFilter &filter, HnswSearchScratch &scratch,
              std::vector<int32_t> &out, const HnswSeeds &seeds = {}) const;
  // Keys reachable at level 0 from the entry point by following links (a diagnostic: keys
  // outside it can only be found as seeds).
  int64_t reachable() const;
  int64_t size() const;
  // Bytes the graph holds: hnswlib's vectors, links, locks and lookup tables (an estimate of the
  // allocator's view, from their sizes) and the mean.
  size_t memory_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sa
