// What a device page index should hold and select, kept on the host independently of the
// library's kernels: per KV head each slot's position, each page's exact key bounds and its
// coded bound (the CPU page selector's, page_code_reference.hpp). Appends code a touched page
// from its keys' exact min and max; a refill widens its page's bound to the new keys: the
// partial last page's exact min and max, any other page's decoded bound s (c -+ r), coded again
// once per page and refill (the device keeps no keys, so it never tightens a bound). check_row
// judges a device selection row of one KV head against the rule of sa_select on a device page
// index: the head's sinks and window slots, plus the candidate slots (sinks <= position <=
// p - window) of the top_k / page_size pages of largest mass (sum over the group of
// 2^(bound - the head's best bound)) among the pages whose position range overlaps
// [sinks, p - window], in ascending slot order, then -1.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>
#include <vector>

#include "page_code_reference.hpp"
#include "sparseattn.h"

class HeadPages {
 public:
  HeadPages(int heads, int dim, int page) : H_(heads), D_(dim), P_(page), pos_(size_t(heads)), lo_(size_t(heads)),
                                             hi_(size_t(heads)), coded_(size_t(heads)) {}

  int64_t max_position() const { return max_; }

  // Appends key rows [0, n) of values [*, H, D] as the next slots, at the next positions.
  void append(const std::vector<float> &values, int64_t n) {
    for (int64_t r = 0; r < n; ++r) {
      const int64_t slot = size_;
      for (int h = 0; h < H_; ++h) {
        pos_[size_t(h)].push_back(max_ + 1 + r);
        if (slot % P_ == 0) {
          lo_[size_t(h)].resize(lo_[size_t(h)].size() + size_t(D_), INFINITY);
          hi_[size_t(h)].resize(hi_[size_t(h)].size() + size_t(D_), -INFINITY);
        }
        widen(h, slot, &values[(size_t(r) * H_ + h) * D_]);
      }
      ++size_;
    }
    max_ += n;
    for (int h = 0; h < H_; ++h) {
      coded_[size_t(h)].resize(size_t((size_ + P_ - 1) / P_));
      for (int64_t p = (size_ - n) / P_; p < (size_ + P_ - 1) / P_; ++p)
        coded_[size_t(h)][size_t(p)] = code_page(&lo_[size_t(h)][size_t(p) * D_], &hi_[size_t(h)][size_t(p) * D_], D_);
    }
  }

  // Head h's slot slots[h * n + i] takes key row i at positions[h * n + i].
  void refill_heads(const std::vector<float> &values, const std::vector<int32_t> &slots,
                    const std::vector<int64_t> &positions, int64_t n) {
    for (int h = 0; h < H_; ++h) {
      std::vector<int64_t> pages;  // refilled, in order of first appearance
      for (int64_t i = 0; i < n; ++i) {
        const int32_t s = slots[size_t(h * n + i)];
        pos_[size_t(h)][size_t(s)] = positions[size_t(h * n + i)];
        if (std::find(pages.begin(), pages.end(), s / P_) == pages.end()) pages.push_back(s / P_);
      }
      for (int64_t p : pages) {
        const bool open = size_ % P_ != 0 && p == size_ / P_;
        std::vector<double> lo(static_cast<size_t>(D_)), hi(static_cast<size_t>(D_));
        if (!open) decode_page(coded_[size_t(h)][size_t(p)], D_, lo.data(), hi.data());
        for (int64_t i = 0; i < n; ++i) {
          const int32_t s = slots[size_t(h * n + i)];
          if (s / P_ != p) continue;
          const float *key = &values[(size_t(i) * H_ + h) * D_];
          if (open) widen(h, s, key);
          for (int d = 0; d < D_; ++d) {
            lo[size_t(d)] = std::min(lo[size_t(d)], double(key[d]));
            hi[size_t(d)] = std::max(hi[size_t(d)], double(key[d]));
          }
        }
        coded_[size_t(h)][size_t(p)] = open ? code_page(&lo_[size_t(h)][size_t(p) * D_], &hi_[size_t(h)][size_t(p) * D_], D_)
                                            : code_page(lo.data(), hi.data(), D_);
      }
    }
    max_ = -1;
    for (const auto &row : pos_) max_ = std::max(max_, *std::max_element(row.begin(), row.end()));
  }

  // Judges row (width entries) of KV head h for a query at qpos whose G heads are q [G][D].
  // Returns the number of chosen pages found in the row.
  int check_row(const float *q, int G, int h, const sa_select_options &so, int64_t qpos, const int32_t *row, int width,
                const char *when) const {
    const std::vector<int64_t> &pos = pos_[size_t(h)];
    const int64_t use_lo = so.sinks, use_hi = qpos - so.window;
    auto visible = [&](int64_t s) { return pos[size_t(s)] >= 0 && pos[size_t(s)] <= qpos; };
    auto forced = [&](int64_t s) {
      return visible(s) && (pos[size_t(s)] < so.sinks || pos[size_t(s)] > qpos - so.window);
    };
    auto candidate = [&](int64_t s) { return visible(s) && !forced(s); };
    const int64_t pages = (size_ + P_ - 1) / P_;
    std::vector<int64_t> usable;
    for (int64_t p = 0; p < pages; ++p) {
      int64_t mn = INT64_MAX, mx = INT64_MIN;
      for (int64_t s = p * P_; s < std::min(size_, (p + 1) * P_); ++s) {
        mn = std::min(mn, pos[size_t(s)]);
        mx = std::max(mx, pos[size_t(s)]);
      }
      if (use_lo <= use_hi && mn <= use_hi && mx >= use_lo) usable.push_back(p);
    }
    // Masses of the usable pages: per query head, 2^(bound - its best page's bound).
    std::vector<double> mass(usable.size(), 0.0);
    for (int g = 0; g < G; ++g) {
      const CodedQuery cq = code_query(q + size_t(g) * D_, D_, so.scale > 0.f ? so.scale : default_scale(D_));
      std::vector<double> b(usable.size());
      double best = -INFINITY;
      for (size_t u = 0; u < usable.size(); ++u) {
        b[u] = coded_bound(coded_[size_t(h)][size_t(usable[u])], cq);
        best = std::max(best, b[u]);
      }
      for (size_t u = 0; u < usable.size(); ++u) mass[u] += std::exp2(b[u] - best);
    }
    const size_t n_sel = size_t(std::max(1, so.top_k / P_));
    double thr = -1;
    if (usable.size() > n_sel) {
      std::vector<double> sorted = mass;
      std::sort(sorted.rbegin(), sorted.rend());
      thr = sorted[n_sel - 1];
    }
    // The pages the row chose: those of its scored slots.
    std::set<int64_t> chosen;
    for (int e = 0; e < width && row[e] >= 0; ++e)
      if (row[e] < size_ && candidate(row[e])) chosen.insert(row[e] / P_);
    EXPECT_LE(chosen.size(), n_sel) << when << ", KV head " << h;
    for (size_t u = 0; u < usable.size(); ++u) {
      const int64_t p = usable[u];
      bool has_candidate = false;
      for (int64_t s = p * P_; s < std::min(size_, (p + 1) * P_); ++s) has_candidate |= candidate(s);
      if (chosen.count(p)) EXPECT_GE(mass[u], thr * (1 - 1e-5)) << when << ": page " << p << " below the threshold";
      else if (has_candidate && mass[u] > thr * (1 + 1e-5)) ADD_FAILURE() << when << ": page " << p << " left out, head " << h;
    }
    for (int64_t p : chosen)
      EXPECT_TRUE(std::binary_search(usable.begin(), usable.end(), p)) << when << ": page " << p << " not usable";
    std::vector<int32_t> want;
    for (int64_t s = 0; s < size_; ++s)
      if (forced(s) || (candidate(s) && chosen.count(s / P_))) want.push_back(int32_t(s));
    want.resize(size_t(width), -1);
    EXPECT_EQ(std::vector<int32_t>(row, row + width), want) << when << ", KV head " << h;
    return int(chosen.size());
  }

 private:
  void widen(int h, int64_t slot, const float *key) {
    float *lo = &lo_[size_t(h)][size_t(slot / P_) * D_], *hi = &hi_[size_t(h)][size_t(slot / P_) * D_];
    for (int d = 0; d < D_; ++d) {
      lo[d] = std::min(lo[d], key[d]);
      hi[d] = std::max(hi[d], key[d]);
    }
  }

  int H_, D_, P_;
  int64_t size_ = 0, max_ = -1;
  std::vector<std::vector<int64_t>> pos_;          // [head][slot]
  std::vector<std::vector<float>> lo_, hi_;        // [head][page * D + d]: exact (the partial page's)
  std::vector<std::vector<CodedPage>> coded_;      // [head][page]
};
