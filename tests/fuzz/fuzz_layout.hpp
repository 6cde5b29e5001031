// Random memory layouts for the tensors a scenario passes: the all-zero "contiguous" shorthand,
// explicit row-major strides, padded rows, any order of the dimensions (head-major caches, a
// strided head dimension) and arbitrary strides on dimensions of extent 1. Every layout keeps
// the elements distinct, so it is valid for outputs too; the tensors sit between canaries.
#pragma once

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "fuzz_input.hpp"
#include "fuzz_report.hpp"
#include "test_util.hpp"

namespace apifuzz {

// Empty: the shorthand. Otherwise one stride per dimension.
inline std::vector<int64_t> random_strides(ByteSource &in, const std::vector<int64_t> &shape) {
  const int kind = int(in.range(0, 5));
  if (kind <= 1) return {};
  const size_t rank = shape.size();
  std::vector<size_t> order(rank);  // outermost first
  for (size_t i = 0; i < rank; ++i) order[i] = i;
  if (kind >= 4)
    for (size_t i = rank; i > 1; --i) std::swap(order[i - 1], order[size_t(in.range(0, int64_t(i) - 1))]);
  const bool padded = kind == 3 || kind == 5;
  std::vector<int64_t> strides(rank, 0);
  int64_t running = padded && in.chance(30) ? 2 : 1;
  for (size_t n = rank; n-- > 0;) {
    const size_t d = order[n];
    if (shape[d] <= 1) {
      strides[d] = in.chance(50) ? in.range(0, 5000) : running;  // never stepped over
      continue;
    }
    strides[d] = running;
    running = running * shape[d] + (padded ? in.range(0, 3) : 0);
  }
  return strides;
}

inline std::string strides_words(const std::vector<int64_t> &strides) {
  if (strides.empty()) return "contiguous";
  std::ostringstream s;
  s << "strides {";
  for (size_t i = 0; i < strides.size(); ++i) s << (i ? ", " : "") << strides[i];
  s << '}';
  return s.str();
}

// A tensor of `shape` in a random layout, filled with normal(0, sigma) values rounded to dtype.
inline sat::Tensor random_tensor(ByteSource &in, sat::Rng &rng, sa_dtype dtype, const std::vector<int64_t> &shape,
                                 double sigma, std::string *words) {
  std::vector<int64_t> strides = random_strides(in, shape);
  if (words) *words = std::string(dtype_word(dtype)) + " " + strides_words(strides);
  sat::Tensor t(dtype, shape, strides);
  t.randomize(rng, sigma);
  return t;
}

// An output tensor in a random layout, every byte poisoned (canaries for the checks).
inline sat::Tensor poisoned_output(ByteSource &in, sa_dtype dtype, const std::vector<int64_t> &shape,
                                   std::string *words) {
  std::vector<int64_t> strides = random_strides(in, shape);
  if (words) *words = std::string(dtype_word(dtype)) + " " + strides_words(strides);
  sat::Tensor t(dtype, shape, strides);
  t.poison();
  return t;
}

}  // namespace apifuzz
