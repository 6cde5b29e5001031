// The row sets attend_rows and mass_rows must agree on: every way a RowSet lists its rows
// (a range from 0, a range from begin > 0, a gathered list with -1 entries and repeated
// rows), positions absent or scrambled with empty slots, a causal limit that is absent, cuts
// in the middle or hides everything, and row strides equal to D or larger.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/kernels.hpp"
#include "checkasm.hpp"

namespace checkasm {

enum class Layout { range_from_0, range_from_begin, gathered };
enum class Limit { none, middle, before_all };

struct RowSetShape {
  Layout layout = Layout::range_from_0;
  bool key_pos = false;
  Limit limit = Limit::none;
  bool padded_strides = false;  // k_stride and v_stride larger than D, and different

  static constexpr int64_t kCount = 3 * 2 * 3 * 2;
  // Shape i of kCount (mixed radix), so a running counter visits every one in turn.
  static RowSetShape nth(int64_t i);
  std::string describe() const;
};

// A visible entry: its place in the list or range, and the row it reads.
struct VisibleEntry {
  int64_t entry;
  int64_t row;
};

// One RowSet and the K/V rows behind it. Rows the set never shows, and the padding between
// rows, hold NaN: a kernel that reads one into a result shows it. The buffers end right
// after the last row's D elements so AddressSanitizer sees a read past them.
struct EdgeRowSet {
  sa_dtype dtype = SA_DTYPE_F32;
  int D = 0;
  std::vector<unsigned char> k, v;
  std::vector<int32_t> rows;
  std::vector<int64_t> key_pos;
  sa::RowSet rs;                     // points into the vectors above
  std::vector<VisibleEntry> visible;  // walked here, independently of the library's RowWalk
  std::string where;                 // shape, for failure messages

  EdgeRowSet() = default;
  EdgeRowSet(const EdgeRowSet &) = delete;
  EdgeRowSet &operator=(const EdgeRowSet &) = delete;
};

// `n` entries (list entries or range rows) of D-element rows, values N(0, 1).
void make_edge_row_set(EdgeRowSet &out, Rng &rng, sa_dtype dt, int D, int64_t n, RowSetShape shape);

}  // namespace checkasm
