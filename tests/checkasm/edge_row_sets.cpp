// Builds the row sets of edge_row_sets.hpp and walks their visible entries.
#include "edge_row_sets.hpp"

#include <algorithm>
#include <limits>

#include "kv_values.hpp"

namespace checkasm {

RowSetShape RowSetShape::nth(int64_t i) {
  RowSetShape s;
  s.layout = Layout(i % 3);
  s.key_pos = (i / 3) % 2 != 0;
  s.limit = Limit((i / 6) % 3);
  s.padded_strides = (i / 18) % 2 != 0;
  return s;
}

std::string RowSetShape::describe() const {
  static const char *layouts[] = {"range from 0", "range from begin > 0", "gathered list"};
  static const char *limits[] = {"no causal limit", "limit in the middle", "limit before all"};
  return std::string(layouts[int(layout)]) + (key_pos ? ", key_pos" : "") + ", " + limits[int(limit)] +
         (padded_strides ? ", strides > D" : ", strides = D");
}

void make_edge_row_set(EdgeRowSet &out, Rng &rng, sa_dtype dt, int D, int64_t n, RowSetShape shape) {
  out.dtype = dt;
  out.D = D;
  const bool gathered = shape.layout == Layout::gathered;
  const int64_t begin = shape.layout == Layout::range_from_begin ? 1 + rng.below(20) : 0;
  // A list draws from more rows than it has entries, so some rows are never referenced.
  const int64_t n_rows = gathered ? n + 1 + rng.below(n + 1) : begin + n;

  out.rows.clear();
  if (gathered) {
    for (int64_t e = 0; e < n; ++e) {
      const double u = rng.uniform();
      if (u < 0.125) out.rows.push_back(-1);
      else if (u < 0.375 && e > 0) out.rows.push_back(out.rows[size_t(rng.below(e))]);
      else out.rows.push_back(int32_t(rng.below(n_rows)));
    }
    if (n >= 3) {  // at least one -1 and one repeated row, whatever the draws
      if (out.rows[0] < 0) out.rows[0] = int32_t(rng.below(n_rows));
      out.rows[size_t(n / 2)] = -1;
      out.rows[size_t(n - 1)] = out.rows[0];
    }
  }
  auto raw_row = [&](int64_t e) -> int64_t { return gathered ? out.rows[size_t(e)] : begin + e; };

  out.key_pos.clear();
  if (shape.key_pos) {  // a scrambled permutation of the rows, a tenth of them empty slots (-1)
    out.key_pos.resize(size_t(n_rows));
    for (int64_t r = 0; r < n_rows; ++r) out.key_pos[size_t(r)] = r;
    for (int64_t r = n_rows - 1; r > 0; --r) std::swap(out.key_pos[size_t(r)], out.key_pos[size_t(rng.below(r + 1))]);
    for (auto &p : out.key_pos)
      if (rng.uniform() < 0.1) p = -1;
  }
  auto position = [&](int64_t r) { return shape.key_pos ? out.key_pos[size_t(r)] : r; };

  std::vector<int64_t> positions;  // of the referenced rows that are not empty slots
  for (int64_t e = 0; e < n; ++e)
    if (raw_row(e) >= 0 && position(raw_row(e)) >= 0) positions.push_back(position(raw_row(e)));
  std::sort(positions.begin(), positions.end());
  int64_t limit = std::numeric_limits<int64_t>::max();
  if (shape.limit == Limit::middle) limit = positions.empty() ? 0 : positions[positions.size() / 2];
  if (shape.limit == Limit::before_all) limit = positions.empty() ? -1 : positions.front() - 1;

  out.visible.clear();
  std::vector<char> shown(size_t(n_rows), 0);
  for (int64_t e = 0; e < n; ++e) {
    const int64_t r = raw_row(e);
    if (r < 0) continue;
    const int64_t p = position(r);
    if (p < 0 || p > limit) continue;
    out.visible.push_back({e, r});
    shown[size_t(r)] = 1;
  }

  const int64_t k_stride = D + (shape.padded_strides ? 1 + rng.below(9) : 0);
  const int64_t v_stride = shape.padded_strides ? k_stride + 1 + rng.below(4) : D;
  const int64_t es = dt == SA_DTYPE_F32 ? 4 : 2;
  auto fill = [&](std::vector<unsigned char> &buf, int64_t stride) {
    const int64_t elements = n_rows > 0 ? (n_rows - 1) * stride + D : 0;
    buf.assign(size_t(elements * es), 0);
    for (int64_t i = 0; i < elements; ++i) {
      const int64_t r = i / stride, d = i % stride;
      if (d < D && shown[size_t(r)]) store_element(buf.data(), i, dt, float(rng.normal()));
      else store_poison(buf.data(), i, dt);
    }
  };
  fill(out.k, k_stride);
  fill(out.v, v_stride);

  out.rs = sa::RowSet();
  out.rs.k = out.k.data();
  out.rs.v = out.v.data();
  out.rs.k_stride = k_stride;
  out.rs.v_stride = v_stride;
  out.rs.rows = gathered ? out.rows.data() : nullptr;
  out.rs.begin = begin;
  out.rs.n = n;
  out.rs.key_pos = shape.key_pos ? out.key_pos.data() : nullptr;
  out.rs.pos_limit = limit;
  out.where = std::string(dtype_name(dt)) + " D=" + std::to_string(D) + " n=" + std::to_string(n) + ", " +
              shape.describe() + (begin ? " (begin " + std::to_string(begin) + ")" : "") + ", " +
              std::to_string(out.visible.size()) + " visible";
}

}  // namespace checkasm
