#include "select/hnsw_graph.hpp"

// hnswlib 0.6.2's SSE paths prefetch the entry one past a full link list (searchBaseLayer),
// a read past the allocation that AddressSanitizer stops on; the value only feeds a prefetch
// address, so release builds keep them and sanitizer builds go without. GCC announces ASan
// with __SANITIZE_ADDRESS__, clang (the libFuzzer build) through __has_feature.
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SA_HNSW_UNDER_ASAN
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define SA_HNSW_UNDER_ASAN
#endif
#if defined(SA_HNSW_UNDER_ASAN) && !defined(NO_MANUAL_VECTORIZATION)
#define NO_MANUAL_VECTORIZATION
#endif
// hnswlib.h defines non-inline functions: include it in this one translation unit only.
#include <hnswlib/hnswlib.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "core/error.hpp"
#include "core/half.hpp"
#include "select/hnsw_distance.hpp"

namespace sa {
namespace {

// f16 vectors of `length` values with the ISA's 1 - a.b kernel.
class HalfDotSpace final : public hnswlib::SpaceInterface<float> {
 public:
  HalfDotSpace(size_t length, sa_isa isa) : length_(length), distance_(half_dot_distance(isa)) {}
  size_t get_data_size() override { return length_ * sizeof(uint16_t); }
  hnswlib::DISTFUNC<float> get_dist_func() override { return distance_; }
  void *get_dist_func_param() override { return &length_; }

 private:
  size_t length_;
  HalfDotDistance distance_;
};

constexpr size_t kInitialCapacity = 1024;
constexpr size_t kMaxLinks = 2 * 512;  // level 0 keeps 2M links, M <= 512 (validate_hnsw_options)

using Hnsw = hnswlib::HierarchicalNSW<float>;

// An empty graph, as hnswlib 0.6.2's constructor makes it, but leak-free when an allocation
// fails: that constructor loses its malloc()ed memory when a later allocation in it throws.
// Here the pointers its destructor frees are null before anything can fail.
std::unique_ptr<Hnsw> make_hnsw(hnswlib::SpaceInterface<float> *space, size_t max_elements, size_t m,
                                size_t ef_construction, size_t seed) {
  auto h = std::make_unique<Hnsw>(space);  // hnswlib's constructor that sets nothing
  h->data_level0_memory_ = nullptr;
  h->linkLists_ = nullptr;
  h->visited_list_pool_ = nullptr;
  h->cur_element_count = 0;
  h->max_elements_ = max_elements;
  h->num_deleted_ = 0;
  h->data_size_ = space->get_data_size();
  h->fstdistfunc_ = space->get_dist_func();
  h->dist_func_param_ = space->get_dist_func_param();
  h->M_ = m;
  h->maxM_ = m;
  h->maxM0_ = 2 * m;
  h->ef_construction_ = std::max(ef_construction, m);
  h->ef_ = 10;
  h->level_generator_.seed(seed);
  h->update_probability_generator_.seed(seed + 1);
  h->size_links_level0_ = h->maxM0_ * sizeof(hnswlib::tableint) + sizeof(hnswlib::linklistsizeint);
  h->size_data_per_element_ = h->size_links_level0_ + h->data_size_ + sizeof(hnswlib::labeltype);
  h->offsetData_ = h->size_links_level0_;
  h->label_offset_ = h->size_links_level0_ + h->data_size_;
  h->offsetLevel0_ = 0;
  h->enterpoint_node_ = hnswlib::tableint(-1);
  h->maxlevel_ = -1;
  h->size_links_per_element_ = h->maxM_ * sizeof(hnswlib::tableint) + sizeof(hnswlib::linklistsizeint);
  h->mult_ = 1 / std::log(1.0 * double(m));
  h->revSize_ = 1.0 / h->mult_;
  std::vector<std::mutex>(max_elements).swap(h->link_list_locks_);
  std::vector<std::mutex>(Hnsw::max_update_element_locks).swap(h->link_list_update_locks_);
  h->element_levels_.resize(max_elements);
  h->data_level0_memory_ = static_cast<char *>(std::malloc(max_elements * h->size_data_per_element_));
  if (!h->data_level0_memory_) throw std::bad_alloc();
  h->linkLists_ = static_cast<char **>(std::malloc(sizeof(void *) * max_elements));
  if (!h->linkLists_) throw std::bad_alloc();
  h->visited_list_pool_ = new hnswlib::VisitedListPool(0, int(max_elements));  // lists made on first use
  return h;
}

}  // namespace

struct HnswGraph::Impl {
  int dim;
  HnswGraphConfig cfg;
  size_t coords;  // dim, plus the sphere coordinate for mips_to_l2
  size_t length;  // stored values per vector (f16: coords rounded up to 16)
  std::unique_ptr<hnswlib::SpaceInterface<float>> space;
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> hnsw;
  std::vector<float> mean;  // empty until the first keys set it
  float bound = 0.f;        // M: |k - mean| <= M for every stored key (mips_to_l2); the scale otherwise
  bool scaled = false;
  std::vector<double> key_sum;  // of every finite key added (replaced keys stay in): the next mean
  int64_t summed = 0;           // keys in key_sum
  int64_t centred_at = 0;       // keys in key_sum when the mean was last set

  Impl(int d, const HnswGraphConfig &c) : dim(d), cfg(c) {
    if (cfg.m < 2 || size_t(cfg.m) * 2 > kMaxLinks)
      fail(SA_ERR_INVALID_ARGUMENT, "HNSW graph degree %d, expected 2 .. %d", cfg.m, int(kMaxLinks / 2));
    coords = size_t(dim) + (cfg.metric == HnswMetric::mips_to_l2 ? 1 : 0);
    length = cfg.half ? (coords + 15) / 16 * 16 : coords;
    if (cfg.half)
      space = std::make_unique<HalfDotSpace>(length, cfg.isa);
    else
      space = std::make_unique<hnswlib::InnerProductSpace>(length);
  }

  size_t bytes() const { return length * (cfg.half ? sizeof(uint16_t) : sizeof(float)); }

  float centred_norm(const float *row) const {
    double s = 0;
    for (int d = 0; d < dim; ++d) {
      const double c = row[d] - (mean.empty() ? 0.f : mean[size_t(d)]);
      s += c * c;
    }
    return float(std::sqrt(s));
  }

  // Writes the vector's values (coords of them, the rest zero) in the storage format.
  void store(const float *values, void *dst) const {
    if (cfg.half) {
      uint16_t *h = static_cast<uint16_t *>(dst);
      for (size_t i = 0; i < length; ++i) h[i] = i < coords ? f32_to_f16(values[i]) : 0;
    } else {
      std::memcpy(dst, values, coords * sizeof(float));
    }
  }
  float load(const void *src, size_t i) const {
    return cfg.half ? f16_to_f32(static_cast<const uint16_t *>(src)[i]) : static_cast<const float *>(src)[i];
  }

  void encode_key(const float *row, std::vector<float> &v, void *dst) const {
    const float s = bound > 0.f ? 1.f / bound : 1.f;
    double norm2 = 0;
    for (int d = 0; d < dim; ++d) {
      const float c = (row[d] - (mean.empty() ? 0.f : mean[size_t(d)])) * s;
      v[size_t(d)] = c;
      norm2 += double(c) * c;
    }
    if (cfg.metric == HnswMetric::mips_to_l2) v[size_t(dim)] = float(std::sqrt(std::max(0.0, 1.0 - norm2)));
    store(v.data(), dst);
  }

  // The key a stored vector encodes (f16-rounded): v * scale + mean over the first dim values.
  void decode(const void *src, float *row) const {
    const float s = bound > 0.f ? bound : 1.f;
    for (int d = 0; d < dim; ++d) row[d] = load(src, size_t(d)) * s + (mean.empty() ? 0.f : mean[size_t(d)]);
  }

  void set_mean_from_sum() {
    for (int d = 0; d < dim; ++d) mean[size_t(d)] = summed ? float(key_sum[size_t(d)] / double(summed)) : 0.f;
    centred_at = summed;
  }

  // A new mean (of every key so far) and scale for the stored vectors, which are re-encoded in
  // place (the links stay) or, with recentre_rebuild, inserted again into a new graph.
  void recentre() {
    const size_t count = hnsw ? hnsw->cur_element_count : 0;
    std::vector<float> keys(count * size_t(dim));
    for (size_t id = 0; id < count; ++id)
      decode(hnsw->getDataByInternalId(hnswlib::tableint(id)), &keys[id * size_t(dim)]);
    set_mean_from_sum();
    float largest = 0.f;
    for (size_t id = 0; id < count; ++id) largest = std::max(largest, centred_norm(&keys[id * size_t(dim)]));
    if (largest > 0.f) {  // else the old scale stays
      bound = cfg.norm_margin * largest;
      scaled = true;
    }
    if (count == 0) return;
    std::vector<float> v(coords);
    if (!cfg.recentre_rebuild) {
      for (size_t id = 0; id < count; ++id)
        encode_key(&keys[id * size_t(dim)], v, hnsw->getDataByInternalId(hnswlib::tableint(id)));
      return;
    }
    std::unique_ptr<Hnsw> fresh =
        make_hnsw(space.get(), hnsw->max_elements_, size_t(cfg.m), size_t(cfg.ef_construction), cfg.seed);
    fresh->setEf(size_t(cfg.ef_search));
    std::vector<char> buf(bytes());
    for (size_t id = 0; id < count; ++id) {
      encode_key(&keys[id * size_t(dim)], v, buf.data());
      fresh->addPoint(buf.data(), hnsw->getExternalLabel(hnswlib::tableint(id)));
    }
    hnsw.swap(fresh);
  }

  // Sets the mean from the first keys and again whenever the keys have grown by
  // recentre_growth since (recentre); grows M (rescaling stored vectors) when a key of these
  // rows lies beyond it.
  void prepare(const float *rows, int64_t stride, int64_t n) {
    if (n <= 0) return;
    if (cfg.center) {
      if (key_sum.empty()) key_sum.assign(size_t(dim), 0.0);
      for (int64_t i = 0; i < n; ++i) {
        const float *r = rows + i * stride;
        bool finite = true;  // a NaN or infinite key would spoil every later mean
        for (int d = 0; d < dim; ++d) finite = finite && std::isfinite(r[d]);
        if (!finite) continue;
        for (int d = 0; d < dim; ++d) key_sum[size_t(d)] += r[d];
        ++summed;
      }
    }
    if (mean.empty()) {
      mean.assign(size_t(dim), 0.f);
      if (cfg.center) set_mean_from_sum();
    } else if (cfg.center && cfg.recentre_growth > 0.f && summed > centred_at &&
               double(summed) >= double(cfg.recentre_growth) * double(centred_at)) {
      recentre();
    }
    float largest = 0.f;
    for (int64_t i = 0; i < n; ++i) largest = std::max(largest, centred_norm(rows + i * stride));
    if (!(largest > bound)) return;  // also catches NaN norms: such keys are stored as they come
    // inner_product: the scale keeps stored values in the f16 range. Scaling every vector by
    // one factor keeps the order of the distances 1 - a.b, so the graph stays valid; a scale
    // fixed by the first keys (two nearly equal keys) overflowed later keys to infinity.
    const float old_bound = bound;
    bound = cfg.norm_margin * largest;
    scaled = true;
    if (!hnsw || hnsw->cur_element_count == 0) return;
    // Rescale in place: the first dim coordinates shrink by old/new, the sphere coordinate
    // takes up the rest. The edges stay: the graph is still a good one for the new geometry.
    const float ratio = old_bound > 0.f ? old_bound / bound : 1.f / bound;  // unscaled: scale 1
    std::vector<float> v(coords);
    for (size_t id = 0; id < hnsw->cur_element_count; ++id) {
      char *data = hnsw->getDataByInternalId(hnswlib::tableint(id));
      double norm2 = 0;
      for (int d = 0; d < dim; ++d) {
        v[size_t(d)] = load(data, size_t(d)) * ratio;
        norm2 += double(v[size_t(d)]) * v[size_t(d)];
      }
      if (cfg.metric == HnswMetric::mips_to_l2) v[size_t(dim)] = float(std::sqrt(std::max(0.0, 1.0 - norm2)));
      store(v.data(), data);
    }
  }

  void reserve(size_t needed) {
    if (!hnsw) {
      hnsw = make_hnsw(space.get(), std::max(needed, kInitialCapacity), size_t(cfg.m), size_t(cfg.ef_construction),
                       cfg.seed);
      hnsw->setEf(size_t(cfg.ef_search));
      return;
    }
    if (needed > hnsw->max_elements_) hnsw->resizeIndex(std::max(needed, hnsw->max_elements_ * 2));
  }
};

HnswGraph::HnswGraph(int dim, const HnswGraphConfig &config) : impl_(std::make_unique<Impl>(dim, config)) {}
HnswGraph::~HnswGraph() = default;

namespace {

// hnswlib has no copy: a graph of the same shape with the source's memory copied into it. The
// copy's allocations are counted in as they succeed, so its destructor frees exactly those.
std::unique_ptr<Hnsw> copy_hnsw(const Hnsw &s, hnswlib::SpaceInterface<float> *space) {
  std::unique_ptr<Hnsw> d = make_hnsw(space, s.max_elements_, s.M_, s.ef_construction_, 0);
  std::memcpy(d->data_level0_memory_, s.data_level0_memory_, s.cur_element_count * s.size_data_per_element_);
  for (size_t i = 0; i < s.cur_element_count; ++i) {
    const int level = s.element_levels_[i];
    if (level > 0) {
      const size_t bytes = s.size_links_per_element_ * size_t(level) + 1;  // as addPoint allocates
      char *links = static_cast<char *>(std::malloc(bytes));
      if (!links) throw std::bad_alloc();
      std::memcpy(links, s.linkLists_[i], bytes);
      d->linkLists_[i] = links;
    }
    d->element_levels_[i] = level;
    d->cur_element_count = i + 1;
  }
  d->label_lookup_ = s.label_lookup_;
  d->enterpoint_node_ = s.enterpoint_node_;
  d->maxlevel_ = s.maxlevel_;
  d->num_deleted_ = s.num_deleted_;
  d->ef_ = s.ef_;
  d->level_generator_ = s.level_generator_;
  d->update_probability_generator_ = s.update_probability_generator_;
  return d;
}

}  // namespace

std::unique_ptr<HnswGraph> HnswGraph::clone() const {
  const Impl &s = *impl_;
  auto out = std::make_unique<HnswGraph>(s.dim, s.cfg);
  Impl &d = *out->impl_;
  d.mean = s.mean;
  d.bound = s.bound;
  d.scaled = s.scaled;
  d.key_sum = s.key_sum;
  d.summed = s.summed;
  d.centred_at = s.centred_at;
  if (s.hnsw) d.hnsw = copy_hnsw(*s.hnsw, d.space.get());
  return out;
}

int64_t HnswGraph::size() const { return impl_->hnsw ? int64_t(impl_->hnsw->cur_element_count) : 0; }

size_t HnswGraph::memory_bytes() const {
  const Impl &g = *impl_;
  size_t bytes = g.mean.capacity() * sizeof(float) + g.key_sum.capacity() * sizeof(double);
  if (!g.hnsw) return bytes;
  const hnswlib::HierarchicalNSW<float> &h = *g.hnsw;
  const size_t cap = h.max_elements_;
  // Per reserved element: level-0 vector and links, the upper-links pointer, the level, its lock,
  // and the visited list's mark.
  bytes += cap * (h.size_data_per_element_ + sizeof(void *) + sizeof(int) + sizeof(std::mutex) + sizeof(unsigned short));
  bytes += h.link_list_update_locks_.size() * sizeof(std::mutex);
  for (size_t i = 0; i < h.cur_element_count; ++i)
    if (h.element_levels_[i] > 0) bytes += h.size_links_per_element_ * size_t(h.element_levels_[i]) + 1;
  // label -> internal id map: buckets, and a node (next pointer, pair, cached hash) per entry.
  bytes += h.label_lookup_.bucket_count() * sizeof(void *) +
           h.label_lookup_.size() * (2 * sizeof(void *) + sizeof(std::pair<const hnswlib::labeltype, hnswlib::tableint>));
  return bytes;
}

void HnswGraph::add(const float *rows, int64_t row_stride, int64_t n, int32_t first_slot) {
  if (n <= 0) return;
  Impl &g = *impl_;
  g.prepare(rows, row_stride, n);
  g.reserve(size_t(size() + n));
  std::vector<float> v(g.coords);
  std::vector<char> buf(g.bytes());
  for (int64_t i = 0; i < n; ++i) {
    g.encode_key(rows + i * row_stride, v, buf.data());
    g.hnsw->addPoint(buf.data(), hnswlib::labeltype(first_slot + i));
  }
}

void HnswGraph::replace(int32_t slot, const float *row) {
  Impl &g = *impl_;
  g.prepare(row, 0, 1);
  g.reserve(size_t(size() + 1));
  std::vector<float> v(g.coords);
  std::vector<char> buf(g.bytes());
  g.encode_key(row, v, buf.data());
  g.hnsw->addPoint(buf.data(), hnswlib::labeltype(slot));  // an existing label: updatePoint
}

void HnswGraph::search(const float *query, size_t k, std::vector<int32_t> &out) const {
  HnswSearchScratch scratch;
  search(query, size_t(impl_->cfg.ef_search), k, HnswFilter{}, scratch, out);
}

int64_t HnswGraph::reachable() const {
  const Impl &g = *impl_;
  if (!g.hnsw || g.hnsw->cur_element_count == 0) return 0;
  const Hnsw &h = *g.hnsw;
  std::vector<char> seen(h.cur_element_count, 0);
  std::vector<uint32_t> stack{uint32_t(h.enterpoint_node_)};
  seen[h.enterpoint_node_] = 1;
  int64_t count = 1;
  while (!stack.empty()) {
    const uint32_t id = stack.back();
    stack.pop_back();
    const uint32_t *l = reinterpret_cast<const uint32_t *>(h.data_level0_memory_ + size_t(id) * h.size_data_per_element_);
    for (uint32_t j = 1; j <= l[0]; ++j)
      if (!seen[l[j]]) {
        seen[l[j]] = 1;
        ++count;
        stack.push_back(l[j]);
      }
  }
  return count;
}

void HnswGraph::search(const float *query, size_t ef, size_t k, const HnswFilter &filter, HnswSearchScratch &s,
                       std::vector<int32_t> &out, const HnswSeeds &seeds) const {
  const Impl &g = *impl_;
  if (!g.hnsw || g.hnsw->cur_element_count == 0 || k == 0) return;
  const hnswlib::HierarchicalNSW<float> &h = *g.hnsw;
  ef = std::max(ef, k);

  // The query on the unit sphere's equator: its scale does not change the order.
  double norm2 = 0;
  for (int d = 0; d < g.dim; ++d) norm2 += double(query[d]) * query[d];
  const float scale = norm2 > 0 ? float(1.0 / std::sqrt(norm2)) : 0.f;
  s.values.assign(g.coords, 0.f);
  for (int d = 0; d < g.dim; ++d) s.values[size_t(d)] = query[d] * scale;
  s.query.resize(g.bytes());
  g.store(s.values.data(), s.query.data());
  const void *q = s.query.data();
  const hnswlib::DISTFUNC<float> dist = h.fstdistfunc_;
  const void *param = h.dist_func_param_;
  const char *level0 = h.data_level0_memory_;
  const size_t stride = h.size_data_per_element_, data_at = h.offsetData_;
  auto vector_of = [&](uint32_t id) { return level0 + size_t(id) * stride + data_at; };
  auto links0 = [&](uint32_t id) { return reinterpret_cast<const uint32_t *>(level0 + size_t(id) * stride); };
  auto slot_of = [&](uint32_t id) { return int32_t(h.getExternalLabel(id)); };
  auto accepted = [&](uint32_t id) { return !filter.accept || filter.accept(filter.context, slot_of(id)); };

  // Greedy descent through the upper levels to an entry point of level 0.
  uint32_t cur = h.enterpoint_node_;
  float cur_d = dist(q, vector_of(cur), param);
  for (int level = h.maxlevel_; level > 0; --level)
    for (bool moved = true; moved;) {
      moved = false;
      const uint32_t *l = reinterpret_cast<const uint32_t *>(h.linkLists_[cur] + size_t(level - 1) * h.size_links_per_element_);
      for (uint32_t j = 1; j <= l[0]; ++j) {
        const float d = dist(q, vector_of(l[j]), param);
        if (d < cur_d) {
          cur_d = d;
          cur = l[j];
          moved = true;
        }
      }
    }

  // Level 0: best-first beam. `best` (a max-heap by distance) holds up to ef accepted keys;
  // rejected keys are walked through but never enter it.
  const size_t n = h.cur_element_count;
  if (s.visited.size() < n) s.visited.resize(n, 0);
  if (++s.epoch == 0) {  // wrapped: clear the old marks
    std::fill(s.visited.begin(), s.visited.end(), 0u);
    s.epoch = 1;
  }
  const uint32_t epoch = s.epoch;
  auto nearer_first = [](const std::pair<float, uint32_t> &a, const std::pair<float, uint32_t> &b) {
    return a.first > b.first || (a.first == b.first && a.second > b.second);
  };
  auto farther_first = [](const std::pair<float, uint32_t> &a, const std::pair<float, uint32_t> &b) {
    return a.first < b.first || (a.first == b.first && a.second < b.second);
  };
  s.frontier.clear();
  s.best.clear();
  // bound: the ef-th best accepted distance once the beam is full (nothing is farther).
  float bound = std::numeric_limits<float>::infinity();
  auto offer = [&](float d, uint32_t id) {
    s.frontier.push_back({d, id});
    std::push_heap(s.frontier.begin(), s.frontier.end(), nearer_first);
    if (!accepted(id)) return;
    s.best.push_back({d, id});
    std::push_heap(s.best.begin(), s.best.end(), farther_first);
    if (s.best.size() > ef) {
      std::pop_heap(s.best.begin(), s.best.end(), farther_first);
      s.best.pop_back();
    }
    bound = s.best.size() >= ef ? s.best.front().first : std::numeric_limits<float>::infinity();
  };
  s.visited[cur] = epoch;
  offer(cur_d, cur);
  for (size_t i = 0; i < seeds.count; ++i) {
    const auto found = h.label_lookup_.find(hnswlib::labeltype(seeds.slots[i]));
    if (found == h.label_lookup_.end() || s.visited[found->second] == epoch) continue;
    s.visited[found->second] = epoch;
    offer(dist(q, vector_of(found->second), param), found->second);
  }
  while (!s.frontier.empty()) {
    const std::pair<float, uint32_t> c = s.frontier.front();
    if (c.first > bound && s.best.size() >= ef) break;
    std::pop_heap(s.frontier.begin(), s.frontier.end(), nearer_first);
    s.frontier.pop_back();
    // The unvisited neighbours first, their vectors prefetched, then their distances.
    const uint32_t *l = links0(c.second);
    uint32_t fresh[kMaxLinks];
    uint32_t count = 0;
    for (uint32_t j = 1; j <= l[0]; ++j) {
      const uint32_t id = l[j];
      if (s.visited[id] == epoch) continue;
      s.visited[id] = epoch;
      fresh[count++] = id;
      __builtin_prefetch(vector_of(id));
      __builtin_prefetch(vector_of(id) + 64);
    }
    for (uint32_t j = 0; j < count; ++j) {
      const uint32_t id = fresh[j];
      const float d = dist(q, vector_of(id), param);
      if (s.best.size() < ef || d < bound) offer(d, id);
    }
  }
  std::sort_heap(s.best.begin(), s.best.end(), farther_first);  // nearest first
  const size_t take = std::min(k, s.best.size());
  for (size_t i = 0; i < take; ++i) out.push_back(slot_of(s.best[i].second));
}

}  // namespace sa
