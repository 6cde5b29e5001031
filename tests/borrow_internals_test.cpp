// Borrowed keys through the library's internals (linked from its objects): a borrowing index
// selects from a paged HostKeys (vLLM-style pages, in shuffled order, unused rows holding NaN)
// exactly what an owning index selects, for every kind, through the scenario of the C ABI test;
// and a borrowing index's Selector::memory_bytes() is smaller than an owning one's by at least
// the copy of the keys (by nothing for the indexer, which never keeps one).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "api/index.hpp"
#include "borrow_fixture.hpp"
#include "core/error.hpp"
#include "core/tensor_view.hpp"
#include "select/host_keys.hpp"

namespace {

using bt::Layout;
using sat::Tensor;

// Rows [0, n) of the host's K copied into pages of `page_size` rows, [num_pages, page_size,
// H_kv, D], the pages of the sequence in a shuffled order among spare ones.
struct PagedKeys {
  std::vector<unsigned char> buf;
  std::vector<int32_t> table;
  sa::HostKeys keys;

  PagedKeys(const bt::HostK &host, int64_t n, int64_t page_size, sat::Rng &rng) {
    const sa_dtype dt = host.k.dtype();
    const size_t elem = dt == SA_DTYPE_F32 ? 4 : 2;
    const int64_t used = (n + page_size - 1) / page_size, num_pages = used + 3;
    std::vector<int32_t> perm(static_cast<size_t>(num_pages));
    std::iota(perm.begin(), perm.end(), 0);
    for (int64_t i = num_pages - 1; i > 0; --i) std::swap(perm[size_t(i)], perm[size_t(rng.below(i + 1))]);
    table.assign(perm.begin(), perm.begin() + used);
    const int64_t row = bt::kHkv * bt::kD;
    buf.assign(size_t(num_pages * page_size * row) * elem, 0xff);  // NaN wherever nothing is written
    const unsigned char *src = static_cast<const unsigned char *>(host.k.t()->data);
    for (int64_t s = 0; s < n; ++s)
      for (int64_t h = 0; h < bt::kHkv; ++h) {
        const int64_t dst = (int64_t(table[size_t(s / page_size)]) * page_size + s % page_size) * row + h * bt::kD;
        std::memcpy(buf.data() + size_t(dst) * elem, src + size_t(host.k.offset({s, h, 0})) * elem, size_t(bt::kD) * elem);
      }
    keys.data = buf.data();
    keys.dtype = dt;
    keys.token_stride = row;
    keys.head_stride = bt::kD;
    keys.pages = table.data();
    keys.page_size = page_size;
    keys.page_stride = page_size * row;
  }
};

// sa_select's request, built by hand, run by the borrowing index's selector on paged keys.
Tensor select_paged(bt::Pair &p, bt::Query &x, const sa::HostKeys &keys) {
  Tensor out(SA_DTYPE_I32, {x.q.dim(0), x.rows, x.width});
  sa_index &ix = *p.borrowed;
  sa::SelectRequest req;
  try {
    req.queries = sa::view_tensor(x.q.t(), "queries", 3, {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16});
    req.indices = sa::view_tensor(out.t(), "indices", 3, {SA_DTYPE_I32});
    const int64_t n_q = x.q.dim(0);
    for (int64_t i = 0; i < n_q; ++i)
      req.positions.push_back(x.positions.empty() ? ix.max_position() - n_q + 1 + i : x.positions[size_t(i)]);
    req.top_k = x.so.top_k;
    req.window = x.so.window;
    req.sinks = x.so.sinks;
    req.per_query_head = x.so.per_query_head != 0;
    req.mass_target = x.so.mass_target;
    req.scale = 1.f / std::sqrt(float(bt::kD));
    req.host_keys = &keys;
    ix.cpu_selector()->select(*ix.ctx, req);
  } catch (const sa::Error &e) {
    ADD_FAILURE() << sa_status_name(e.status) << ": " << e.message;
  }
  return out;
}

class PagedBorrowed : public ::testing::TestWithParam<size_t> {};

TEST_P(PagedBorrowed, SelectsLikeAnOwningIndex) {
  const bt::Kind kind = bt::kinds()[GetParam()];
  sat::Rng rng(2000 + GetParam()), page_rng(7);
  for (int64_t page_size : {int64_t(16), int64_t(5)}) {
    bt::Pair p(kind.options(SA_DTYPE_F16), Layout::token_major, 2200, 2);
    ASSERT_TRUE(p.ok());
    bt::run_scenario(p, rng, kind.mass,
                     [&](bt::Pair &pp, bt::Query &x, const std::string &where) {
                       if (!x.positions.empty()) x.so.query_positions = x.positions.data();
                       const PagedKeys paged(pp.host, pp.size, page_size, page_rng);
                       const Tensor want = pp.select_owned(x.q, x.so, x.rows, x.width);
                       const Tensor got = select_paged(pp, x, paged.keys);
                       EXPECT_EQ(got.values(), want.values()) << where << ", page size " << page_size;
                     });
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, PagedBorrowed, ::testing::Range(size_t(0), bt::kinds().size()),
                         [](const ::testing::TestParamInfo<size_t> &i) { return bt::kinds()[i.param].name; });

TEST(BorrowedMemory, DropsTheCopyOfTheKeys) {
  const int64_t n = 2000;
  for (const bt::Kind &kind : bt::kinds()) {
    bt::Pair p(kind.options(SA_DTYPE_F16), Layout::token_major, n, 1);
    ASSERT_TRUE(p.ok());
    sat::Rng rng(3);
    p.append(sat::random_tensor(rng, SA_DTYPE_F16, {n, bt::kHkv, bt::kD}));
    Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {1, bt::kHq, bt::kD});
    p.select_borrowed(q, sat::select_options(16, 8, 2), bt::kHkv, 26);  // deferred work done
    const size_t owned = p.owned->cpu_selector()->memory_bytes(), borrowed = p.borrowed->cpu_selector()->memory_bytes();
    const size_t copy = size_t(n * bt::kHkv * bt::kD * 2);
    // Less the few KiB a borrowing index keeps of its deferred work's lists. (The indexer keeps
    // keys for its second stage, rescore 12 by default, so it borrows them too.)
    EXPECT_GE(owned + 8192, borrowed + copy) << kind.name;
    if (kind.name == "exact") {
      EXPECT_LE(borrowed, size_t(n) * 32) << "positions only";
    }
  }
}

}  // namespace
