// f16_to_f32_n (core/half_rows.hpp), with and without F16C, against the scalar conversion for
// every f16 bit pattern: the same bits (NaN stays NaN).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/half.hpp"
#include "core/half_rows.hpp"
#include "kernels/kernels.hpp"

namespace {

TEST(HalfRows, EveryF16PatternConvertsAsTheScalarPath) {
  std::vector<uint16_t> in(65536 + 5);
  for (size_t i = 0; i < in.size(); ++i) in[i] = uint16_t(i);
  const sa_isa isa = sa::kernel_table(SA_ISA_AUTO).isa;
  for (bool f16c : {false, isa == SA_ISA_AVX2 || isa == SA_ISA_AVX512})
    for (int64_t offset : {0, 3}) {  // whole vectors and a tail
      const int64_t n = int64_t(in.size()) - offset;
      std::vector<float> out(static_cast<size_t>(n));
      sa::f16_to_f32_n(in.data() + offset, n, out.data(), f16c);
      for (int64_t i = 0; i < n; ++i) {
        const float want = sa::f16_to_f32(in[size_t(i + offset)]);
        if (std::isnan(want)) {
          ASSERT_TRUE(std::isnan(out[size_t(i)])) << "pattern " << in[size_t(i + offset)];
          continue;
        }
        ASSERT_EQ(std::memcmp(&want, &out[size_t(i)], sizeof want), 0) << "pattern " << in[size_t(i + offset)] << " f16c " << f16c;
      }
    }
}

}  // namespace
