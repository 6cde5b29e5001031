// Tests of the tests: the 16-bit encoders, the canary checks and the two oracles on inputs
// small enough to work out by hand. If these drift, every comparison built on them is moot.
#include <gtest/gtest.h>

#include "reference_attention.hpp"
#include "reference_select.hpp"
#include "test_util.hpp"

namespace {

using sat::Tensor;

TEST(Oracle, F16Encoding) {
  EXPECT_EQ(sat::double_to_f16(1.0), 0x3C00);
  EXPECT_EQ(sat::double_to_f16(-2.0), 0xC000);
  EXPECT_EQ(sat::double_to_f16(65504.0), 0x7BFF);
  EXPECT_EQ(sat::double_to_f16(65520.0), 0x7C00);       // rounds past the largest: inf
  EXPECT_EQ(sat::double_to_f16(std::ldexp(1.0, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(sat::double_to_f16(std::ldexp(1.0, -25)), 0x0000);  // tie to even: 0
  EXPECT_EQ(sat::double_to_f16(std::ldexp(3.0, -25)), 0x0002);  // tie to even: 2
  EXPECT_EQ(sat::double_to_f16(std::ldexp(1023.5, -24)), 0x0400);  // rolls into the smallest normal
  EXPECT_EQ(sat::double_to_f16(0.1), 0x2E66);
  EXPECT_EQ(sat::double_to_f16(1.0 + std::ldexp(1.0, -11)), 0x3C00);      // tie to even
  EXPECT_EQ(sat::double_to_f16(1.0 + 3 * std::ldexp(1.0, -11)), 0x3C02);  // tie to even (up)
  EXPECT_EQ(sat::f16_to_double(0x3555), 0.333251953125);
  EXPECT_EQ(sat::f16_to_double(0x8001), -std::ldexp(1.0, -24));
  EXPECT_TRUE(std::isnan(sat::f16_to_double(sat::double_to_f16(NAN))));
  for (uint32_t h = 0; h < 0x7C00; ++h) ASSERT_EQ(sat::double_to_f16(sat::f16_to_double(uint16_t(h))), h);
}

TEST(Oracle, Bf16Encoding) {
  EXPECT_EQ(sat::double_to_bf16(1.0), 0x3F80);
  EXPECT_EQ(sat::double_to_bf16(1.0 + std::ldexp(1.0, -8)), 0x3F80);      // tie to even
  EXPECT_EQ(sat::double_to_bf16(1.0 + 3 * std::ldexp(1.0, -8)), 0x3F82);  // tie to even (up)
  EXPECT_EQ(sat::double_to_bf16(-3.0), 0xC040);
  EXPECT_EQ(sat::double_to_bf16(3.0e38), 0x7F62);
  EXPECT_EQ(sat::double_to_bf16(3.4e38), 0x7F80);  // past the largest finite after rounding: inf
  EXPECT_EQ(sat::bf16_to_double(0x0001), std::ldexp(1.0, -133));
  for (uint32_t h = 0; h < 0x7F80; h += 7) ASSERT_EQ(sat::double_to_bf16(sat::bf16_to_double(uint16_t(h))), h);
}

TEST(Oracle, CanariesCatchStrayWrites) {
  Tensor t(SA_DTYPE_F32, {2, 3}, {4, 1});  // a gap of one element after each row
  t.poison();
  EXPECT_TRUE(t.untouched());
  t.set({1, 2}, 5.0);
  EXPECT_FALSE(t.untouched());
  EXPECT_TRUE(t.only_elements_written());
  static_cast<float *>(t.data())[3] = 1.0f;  // the gap
  EXPECT_FALSE(t.only_elements_written());
  Tensor u(SA_DTYPE_I32, {4});
  u.poison();
  static_cast<int32_t *>(u.data())[4] = 0;  // one past the end
  EXPECT_FALSE(u.only_elements_written());
  Tensor w(SA_DTYPE_I32, {4});
  w.poison();
  static_cast<int32_t *>(w.data())[-1] = 0;  // one before the start
  EXPECT_FALSE(w.only_elements_written());
}

TEST(Oracle, CloseRelRejectsDifferences) {
  EXPECT_TRUE(sat::close_rel({1.0, 2.0}, {1.0, 2.0 + 1e-6}, 1e-5));
  EXPECT_FALSE(sat::close_rel({1.0, 2.0}, {1.0, 2.001}, 1e-5));
  EXPECT_FALSE(sat::close_rel({NAN, 2.0}, {1.0, 2.0}, 1e-5));
}

// Two keys, one query: softmax by hand.
TEST(Oracle, AttentionByHand) {
  Tensor q = sat::tensor_of(SA_DTYPE_F32, {1, 1, 2}, {1, 0});
  Tensor k = sat::tensor_of(SA_DTYPE_F32, {2, 1, 2}, {2, 0, 0, 0});
  Tensor v = sat::tensor_of(SA_DTYPE_F32, {2, 1, 2}, {1, 0, 0, 1});
  ref::AttendArgs a;
  a.q = q.t();
  a.k = k.t();
  a.v = v.t();
  a.scale = 1.0;
  ref::AttendResult r = ref::attend(a);
  double p0 = std::exp(2.0) / (std::exp(2.0) + 1);
  EXPECT_NEAR(r.out[0], p0, 1e-15);
  EXPECT_NEAR(r.out[1], 1 - p0, 1e-15);
  EXPECT_NEAR(r.lse[0], std::log(std::exp(2.0) + 1), 1e-15);
  a.causal = true;  // the query is at position 1 by default and sees both
  EXPECT_NEAR(ref::attend(a).out[0], p0, 1e-15);
  std::vector<int64_t> qp = {0};
  a.query_positions = qp.data();  // now only key 0
  EXPECT_NEAR(ref::attend(a).out[0], 1.0, 1e-15);
  std::vector<int64_t> kp = {5, 6};
  a.key_positions = kp.data();  // both keys after the query
  ref::AttendResult none = ref::attend(a);
  EXPECT_EQ(none.out[0], 0.0);
  EXPECT_EQ(none.lse[0], -INFINITY);
}

// Four slots, two query heads sharing one KV head, worked out by hand.
TEST(Oracle, SelectionByHand) {
  ref::KeyCache c(1, 2, SA_DTYPE_F32);
  Tensor keys = sat::tensor_of(SA_DTYPE_F32, {4, 1, 2}, {0, 0, 3, 0, 0, 3, 1, 1});
  c.append(keys);
  EXPECT_EQ(c.max_pos(), 3);
  // Head 0 likes slot 1 (x axis), head 1 slot 2 (y axis), head 1 more strongly.
  Tensor q = sat::tensor_of(SA_DTYPE_F32, {1, 2, 2}, {1, 0, 0, 2});
  ref::SelectArgs a;
  a.top_k = 1;
  a.window = 1;  // slot 3 forced
  a.sinks = 0;
  a.scale = 1;
  ref::RowExpectation e = ref::expect_row(c, q, a, 0, 0);
  EXPECT_EQ(e.position, 3);
  EXPECT_TRUE(e.forced[3]);
  ASSERT_EQ(e.ranked.size(), 3u);
  EXPECT_EQ(e.ranked[0], 2);  // group sum favours head 1's choice
  EXPECT_EQ(e.n_scored, 1);
  EXPECT_TRUE(ref::check_row(e, {2, 3, -1}));
  EXPECT_FALSE(ref::check_row(e, {1, 3, -1}));   // worse key
  EXPECT_FALSE(ref::check_row(e, {2, -1, -1}));  // window missing
  EXPECT_FALSE(ref::check_row(e, {3, 2, -1}));   // not ascending
  EXPECT_FALSE(ref::check_row(e, {2, 3, 1}));    // too many
  EXPECT_FALSE(ref::check_row(e, {2, -1, 3}));   // entry after padding
  a.per_query_head = true;
  ref::RowExpectation h0 = ref::expect_row(c, q, a, 0, 0);
  EXPECT_EQ(h0.ranked[0], 1);
  a.query_positions = nullptr;
  std::vector<int64_t> p = {1};
  a.query_positions = p.data();
  ref::RowExpectation early = ref::expect_row(c, q, a, 0, 0);
  EXPECT_FALSE(early.visible[2]);
  EXPECT_TRUE(ref::check_row(early, {0, 1, -1}));
  EXPECT_FALSE(ref::check_row(early, {1, 2, -1}));  // slot 2 is in the future
}

}  // namespace
