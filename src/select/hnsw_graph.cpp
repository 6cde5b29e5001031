#include "select/hnsw_graph.hpp"

// hnswlib.h defines non-inline functions: include it in this one translation unit only.
#include <hnswlib/hnswlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>

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

}  // namespace

struct HnswGraph::Impl {
  int dim;
  HnswGraphConfig cfg;
  size_t coords;  // dim, plus the sphere coordinate for mips_to_l2
  size_t length;  // stored values per vector (f16: coords rounded up to 16)
  std::unique_ptr<hnswlib::SpaceInterface<float>> space;
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> hnsw;
  std::vector<float> mean;  // empty until the first keys fix it
  float bound = 0.f;        // M: |k - mean| <= M for every stored key (mips_to_l2); the scale otherwise
  bool scaled = false;

  Impl(int d, const HnswGraphConfig &c) : dim(d), cfg(c) {
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

  // Fixes the mean and the scale from the first keys; grows M (rescaling stored vectors) when
  // a key of these rows lies beyond it.
  void prepare(const float *rows, int64_t stride, int64_t n) {
    if (n <= 0) return;
    if (!scaled && mean.empty()) {
      mean.assign(size_t(dim), 0.f);
      if (cfg.center) {
        std::vector<double> sum(size_t(dim), 0.0);
        for (int64_t i = 0; i < n; ++i)
          for (int d = 0; d < dim; ++d) sum[size_t(d)] += rows[i * stride + d];
        for (int d = 0; d < dim; ++d) mean[size_t(d)] = float(sum[size_t(d)] / double(n));
      }
    }
    float largest = 0.f;
    for (int64_t i = 0; i < n; ++i) largest = std::max(largest, centred_norm(rows + i * stride));
    if (!(largest > bound)) return;  // also catches NaN norms: such keys are stored as they come
    if (cfg.metric == HnswMetric::inner_product) {
      // Only a scale into the f16 range: fixed once.
      if (!scaled) bound = cfg.norm_margin * largest;
      scaled = true;
      return;
    }
    const float old_bound = bound;
    bound = cfg.norm_margin * largest;
    scaled = true;
    if (!hnsw || hnsw->cur_element_count == 0) return;
    // Rescale in place: the first dim coordinates shrink by old/new, the sphere coordinate
    // takes up the rest. The edges stay: the graph is still a good one for the new geometry.
    const float ratio = old_bound / bound;
    std::vector<float> v(coords);
    for (size_t id = 0; id < hnsw->cur_element_count; ++id) {
      char *data = hnsw->getDataByInternalId(hnswlib::tableint(id));
      double norm2 = 0;
      for (int d = 0; d < dim; ++d) {
        v[size_t(d)] = load(data, size_t(d)) * ratio;
        norm2 += double(v[size_t(d)]) * v[size_t(d)];
      }
      v[size_t(dim)] = float(std::sqrt(std::max(0.0, 1.0 - norm2)));
      store(v.data(), data);
    }
  }

  void reserve(size_t needed) {
    if (!hnsw) {
      hnsw = std::make_unique<hnswlib::HierarchicalNSW<float>>(space.get(), std::max(needed, kInitialCapacity),
                                                               size_t(cfg.m), size_t(cfg.ef_construction), cfg.seed);
      hnsw->setEf(size_t(cfg.ef_search));
      return;
    }
    if (needed > hnsw->max_elements_) hnsw->resizeIndex(std::max(needed, hnsw->max_elements_ * 2));
  }
};

HnswGraph::HnswGraph(int dim, const HnswGraphConfig &config) : impl_(std::make_unique<Impl>(dim, config)) {}
HnswGraph::~HnswGraph() = default;

int64_t HnswGraph::size() const { return impl_->hnsw ? int64_t(impl_->hnsw->cur_element_count) : 0; }

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
  const Impl &g = *impl_;
  if (!g.hnsw || g.hnsw->cur_element_count == 0 || k == 0) return;
  double norm2 = 0;
  for (int d = 0; d < g.dim; ++d) norm2 += double(query[d]) * query[d];
  const float s = norm2 > 0 ? float(1.0 / std::sqrt(norm2)) : 0.f;  // the query's scale does not change the order
  std::vector<float> v(g.coords, 0.f);
  for (int d = 0; d < g.dim; ++d) v[size_t(d)] = query[d] * s;
  std::vector<char> buf(g.bytes());
  g.store(v.data(), buf.data());
  auto found = g.hnsw->searchKnn(buf.data(), k);
  const size_t first = out.size();
  out.resize(first + found.size());
  for (size_t i = out.size(); i-- > first; found.pop()) out[i] = int32_t(found.top().second);
}

}  // namespace sa
