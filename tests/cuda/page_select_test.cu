// Page selection on the device when the masses crowd: keys that differ little, so that most
// pages share the leading bits the selection first counts and the threshold is found from
// later digits; the first candidate page (after the sinks) made the largest, so that it is
// chosen and short. The row must be the sinks, the chosen pages' candidate slots ascending,
// the window and padding, and the chosen pages those of the largest double-precision masses
// over the CPU's coded bounds (page_code_reference.hpp; within 1e-5 of the threshold, where
// float rounding may order them differently).
#include <algorithm>
#include <cmath>
#include <random>
#include <tuple>

#include "cuda_helpers.cuh"
#include "page_code_reference.hpp"

namespace {

void check_crowded(Ctx &c, int64_t n, int D, int Hq, int Hkv, int top_k, uint64_t seed) {
  constexpr int page = 16, window = 64, sinks = 4;
  const int G = Hq / Hkv;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> noise(-0.02f, 0.02f);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<uint16_t> keys(size_t(n) * Hkv * D), q(size_t(Hq) * D);
  for (size_t e = 0; e < keys.size(); ++e) keys[e] = to_bf16(0.5f + noise(rng));
  for (int64_t s = 0; s < page; ++s)  // page 0: the largest bounds
    for (int h = 0; h < Hkv; ++h)
      for (int d = 0; d < D; ++d) keys[(size_t(s) * Hkv + h) * D + d] = to_bf16(s % 2 ? 2.f : -2.f);
  for (auto &x : q) x = to_bf16(nd(rng));
  const int width = sinks + window + top_k + 3;
  std::vector<int32_t> got;
  ASSERT_NO_FATAL_FAILURE(select_one_query(c, device_index_options(SA_SELECTOR_PAGE, Hkv, D, page), keys, q, n, Hq,
                                           top_k, window, sinks, width, &got));
  const int64_t pos = n - 1, lo = sinks, hi = pos - window, pages = n / page;
  const size_t n_sel = size_t(top_k / page);
  for (int h = 0; h < Hkv; ++h) {
    std::vector<double> mass(size_t(pages), 0.0);
    for (int g = 0; g < G; ++g) {
      const uint16_t *qq = &q[size_t(h * G + g) * D];
      std::vector<double> sc(static_cast<size_t>(pages));
      std::vector<float> qf(static_cast<size_t>(D));
      for (int d = 0; d < D; ++d) qf[size_t(d)] = from_bf16(qq[d]);
      const CodedQuery cq = code_query(qf.data(), D, default_scale(D));
      for (int64_t p = 0; p < pages; ++p) {
        std::vector<float> mn(size_t(D), INFINITY), mx(size_t(D), -INFINITY);
        for (int d = 0; d < D; ++d)
          for (int64_t sl = p * page; sl < (p + 1) * page; ++sl) {
            const float kv = from_bf16(keys[(size_t(sl) * Hkv + h) * D + d]);
            mn[size_t(d)] = std::min(mn[size_t(d)], kv);
            mx[size_t(d)] = std::max(mx[size_t(d)], kv);
          }
        sc[size_t(p)] = coded_bound(code_page(mn.data(), mx.data(), D), cq);  // a base-2 logit
      }
      const int64_t cand_end = hi / page;  // candidate pages: 0 .. the page of hi
      const double m = *std::max_element(sc.begin(), sc.begin() + cand_end + 1);
      for (int64_t p = 0; p <= cand_end; ++p) mass[size_t(p)] += std::exp2(sc[size_t(p)] - m);
    }
    const int64_t cand_end = hi / page;
    std::vector<double> sorted(mass.begin(), mass.begin() + cand_end + 1);
    std::sort(sorted.rbegin(), sorted.rend());
    const double thr = sorted[n_sel - 1];
    // The pages the row holds, then the row they make.
    const int32_t *row = &got[size_t(h) * width];
    std::vector<int64_t> chosen;
    for (int e = sinks; e < width && row[e] >= 0 && row[e] <= hi; ++e)
      if (chosen.empty() || chosen.back() != row[e] / page) chosen.push_back(row[e] / page);
    ASSERT_EQ(chosen.size(), n_sel) << "KV head " << h;
    EXPECT_EQ(chosen[0], 0) << "the largest page, short by the sinks";
    std::vector<int32_t> want;
    for (int32_t j = 0; j < sinks; ++j) want.push_back(j);
    for (int64_t p : chosen) {
      EXPECT_GE(mass[size_t(p)], thr * (1 - 1e-5)) << "page " << p << " below the threshold";
      for (int64_t j = std::max<int64_t>(p * page, lo); j < (p + 1) * page && j <= hi; ++j) want.push_back(int32_t(j));
    }
    for (int64_t p = 0; p <= cand_end; ++p)
      if (mass[size_t(p)] > thr * (1 + 1e-5))
        EXPECT_TRUE(std::binary_search(chosen.begin(), chosen.end(), p)) << "page " << p << " above the threshold";
    for (int64_t j = hi + 1; j <= pos; ++j) want.push_back(int32_t(j));
    want.resize(size_t(width), -1);
    EXPECT_EQ(std::vector<int32_t>(row, row + width), want) << "KV head " << h;
  }
}

TEST(CudaPageSelect, CrowdedMassesAreRankedByTheirLaterDigits) {
  NEED_GPU(c);
  check_crowded(c, 131072, 128, 8, 2, 2048, 21);  // 8192 pages, 128 chosen
  check_crowded(c, 40000, 64, 6, 1, 512, 22);     // G = 6, D = 64
}

// Two masses only: pages p with p % every == 0 hold larger keys (their bounds are twice the
// others' for a positive query), so all their masses are equal and so are all the others'.
// The row is then known exactly: the larger pages first, lowest first, then the lowest of the
// others, up to top_k / page pages; whichever block of pages the ties fall in.
void check_two_masses(Ctx &c, int64_t n, int every, int top_k) {
  constexpr int D = 64, Hq = 4, Hkv = 2, page = 16, window = 16, sinks = 4;
  std::vector<uint16_t> keys(size_t(n) * Hkv * D), q(size_t(Hq) * D);
  for (int64_t s = 0; s < n; ++s)
    for (size_t e = 0; e < size_t(Hkv) * D; ++e) keys[size_t(s) * Hkv * D + e] = to_bf16(s / page % every ? 0.5f : 1.f);
  std::mt19937_64 rng(uint64_t(n) + uint64_t(top_k));
  std::uniform_real_distribution<float> ud(0.1f, 1.f);
  for (auto &x : q) x = to_bf16(ud(rng));
  const int width = sinks + window + top_k + 5;
  std::vector<int32_t> got;
  ASSERT_NO_FATAL_FAILURE(select_one_query(c, device_index_options(SA_SELECTOR_PAGE, Hkv, D, page), keys, q, n, Hq,
                                           top_k, window, sinks, width, &got));
  const int64_t pos = n - 1, lo = sinks, hi = pos - window;
  std::vector<int64_t> order;  // candidate pages, larger masses first, then lower pages
  for (int64_t p = 0; p * page <= hi; ++p)
    if (p % every == 0) order.push_back(p);
  for (int64_t p = 0; p * page <= hi; ++p)
    if (p % every) order.push_back(p);
  order.resize(std::min(order.size(), size_t(top_k / page)));
  std::sort(order.begin(), order.end());
  std::vector<int32_t> want;
  for (int32_t j = 0; j < sinks; ++j) want.push_back(j);
  for (int64_t p : order)
    for (int64_t j = std::max<int64_t>(p * page, lo); j < (p + 1) * page && j <= hi; ++j) want.push_back(int32_t(j));
  for (int64_t j = hi + 1; j <= pos; ++j) want.push_back(int32_t(j));
  want.resize(size_t(width), -1);
  for (int h = 0; h < Hkv; ++h)
    EXPECT_EQ(std::vector<int32_t>(got.begin() + h * width, got.begin() + (h + 1) * width), want) << "KV head " << h;
}

// Rows of several blocks of pages: the threshold among the larger pages or among the others,
// the last block shorter than a block and holding fewer pages than are chosen.
TEST(CudaPageSelect, EqualMassesAcrossBlocksTakeTheLowestPages) {
  NEED_GPU(c);
  for (const auto &k : {std::make_tuple(int64_t(16) * 5001 + 7, 7, 16 * 1024),  // 715 larger, 1024 chosen
                        std::make_tuple(int64_t(16) * 5001 + 7, 7, 16 * 64),    // 64 of the larger
                        std::make_tuple(int64_t(16) * 8192, 97, 16 * 128),     // 85 larger, 128 chosen
                        std::make_tuple(int64_t(16) * 2100, 1, 16 * 100),      // every page equal
                        std::make_tuple(int64_t(16) * 300, 3, 16 * 512)}) {     // fewer candidates than chosen
    SCOPED_TRACE(testing::Message() << "n " << std::get<0>(k) << ", every " << std::get<1>(k) << ", top_k "
                                    << std::get<2>(k));
    check_two_masses(c, std::get<0>(k), std::get<1>(k), std::get<2>(k));
  }
}

}  // namespace
