// LSH quality does not depend on the order the keys arrived in (issue 13: the quality gate's
// prompt+decode row, per query head lists, K = 256, was 2.4% short of exact mass while the
// decode-ordered index was 0.9% short). The realistic fixture (tests/data, layer 3: keys
// 0..1023, queries 768..1023) is built in the three orders of the gate: one append of every
// key; a prompt (keys 0..767), then one key per append; one key per append from empty. Each
// query is asked when its key has arrived (window 64, sinks 4, top_k 256, one list per query
// head) and scored in double against brute-force exact top-K: attention mass (softmax at
// 1/sqrt(d) over the keys the query sees) and recall.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "decode_selection.hpp"
#include "qkv_layer.hpp"
#include "reference_attention.hpp"
#include "selection_quality.hpp"
#include "test_util.hpp"

#ifndef SA_TEST_DATA_DIR
#error "SA_TEST_DATA_DIR must name tests/data"
#endif

namespace {

using sat::Tensor;

constexpr int32_t kTopK = 256, kWindow = 64, kSinks = 4;
constexpr int64_t kQueryStep = 4;  // every 4th query position: 64 queries
constexpr int64_t kPrompt = 768;   // the gate's prompt: keys before the first query

enum class Order { all, prompt_decode, decode };
const char *order_name(Order o) {
  return o == Order::all ? "one append" : o == Order::prompt_decode ? "prompt then single keys" : "single keys";
}

struct Scores {
  double mass = 0, exact_mass = 0, recall = 0;
  int64_t lists = 0;
  double shortfall() const { return (exact_mass - mass) / exact_mass; }
};

class LshOrder : public ::testing::Test {
 protected:
  void SetUp() override {
    L_ = quality::load_layer(SA_TEST_DATA_DIR, 3);
    keys_ = Tensor(SA_DTYPE_F32, {L_.tokens, L_.hkv, L_.d});
    k_.resize(size_t(L_.k.numel()));
    for (size_t e = 0; e < k_.size(); ++e) k_[e] = L_.k.at(int64_t(e));
    keys_.set_values(k_);
    q_.resize(size_t(L_.q.numel()));
    for (size_t e = 0; e < q_.size(); ++e) q_[e] = L_.q.at(int64_t(e));
  }

  // Keys [first, last) as one append.
  sa_status append(sa_index *ix, int64_t first, int64_t last) {
    sa_tensor t = *keys_.t();
    t.data = static_cast<float *>(t.data) + first * L_.hkv * L_.d;
    t.shape[0] = last - first;
    return sa_index_append(ix, &t);
  }

  // Query p's list for query head g (slots ascending, -1 padding) against brute force.
  void score(int64_t p, int64_t g, const std::vector<int32_t> &row, Scores &s) const {
    const int64_t d = L_.d, kvh = g / (L_.hq / L_.hkv);
    std::vector<double> logit(size_t(p + 1));
    for (int64_t k = 0; k <= p; ++k) {
      double dot = 0;
      for (int64_t e = 0; e < d; ++e)
        dot += q_[size_t(L_.q_offset(p, g) + e)] * k_[size_t(L_.kv_offset(k, kvh) + e)];
      logit[size_t(k)] = dot / std::sqrt(double(d));
    }
    const double mx = *std::max_element(logit.begin(), logit.end());
    double z = 0;
    for (double &x : logit) z += (x = std::exp(x - mx));
    auto forced = [&](int64_t k) { return k < kSinks || k > p - kWindow; };
    std::vector<int64_t> choosable;
    double forced_mass = 0;
    for (int64_t k = 0; k <= p; ++k) {
      if (forced(k)) forced_mass += logit[size_t(k)];
      else choosable.push_back(k);
    }
    const size_t K = std::min<size_t>(kTopK, choosable.size());
    std::partial_sort(choosable.begin(), choosable.begin() + long(K), choosable.end(),
                      [&](int64_t a, int64_t b) { return logit[size_t(a)] > logit[size_t(b)]; });
    std::vector<char> in_exact(size_t(p + 1), 0);
    double exact = forced_mass;
    for (size_t j = 0; j < K; ++j) {
      in_exact[size_t(choosable[j])] = 1;
      exact += logit[size_t(choosable[j])];
    }
    double got = 0;
    int64_t hits = 0;
    for (int32_t slot : row) {
      if (slot < 0) continue;
      ASSERT_LE(slot, p) << "query at " << p << " was given a later key";
      got += logit[size_t(slot)];
      hits += in_exact[size_t(slot)];
    }
    s.mass += got / z;
    s.exact_mass += exact / z;
    s.recall += double(hits) / double(K);
    ++s.lists;
  }

  Scores run(Order order) {
    Scores s;
    auto ctx = sat::make_context(2);
    sa_index_options o = SA_INDEX_OPTIONS_INIT;  // default LSH options (bits adapted to N)
    o.kind = SA_SELECTOR_LSH;
    o.num_kv_heads = int32_t(L_.hkv);
    o.head_dim = int32_t(L_.d);
    o.dtype = SA_DTYPE_F32;
    sa_index *raw = nullptr;
    EXPECT_EQ(sa_index_create(ctx.get(), &o, &raw), SA_OK) << sa_last_error();
    sat::IndexPtr ix(raw);
    if (!ix) return s;
    int64_t have = 0;
    if (order == Order::all) have = L_.tokens;
    if (order == Order::prompt_decode) have = kPrompt;
    EXPECT_EQ(append(ix.get(), 0, have), SA_OK) << sa_last_error();
    for (int64_t p = L_.first_query; p < L_.tokens; p += kQueryStep) {
      for (; have <= p; ++have) EXPECT_EQ(append(ix.get(), have, have + 1), SA_OK) << sa_last_error();
      Tensor q(SA_DTYPE_F32, {1, L_.hq, L_.d});
      std::vector<double> qv(size_t(L_.hq * L_.d));
      for (size_t e = 0; e < qv.size(); ++e) qv[e] = q_[size_t(L_.q_offset(p, 0)) + e];
      q.set_values(qv);
      sa_select_options so = sat::select_options(kTopK, kWindow, kSinks);
      so.per_query_head = 1;
      so.query_positions = &p;
      Tensor out(SA_DTYPE_I32, {1, L_.hq, kTopK + kWindow + kSinks});
      EXPECT_EQ(sa_select(ix.get(), q.t(), &so, out.t()), SA_OK) << sa_last_error();
      for (int64_t g = 0; g < L_.hq; ++g) score(p, g, sat::row_of(out, 0, g), s);
    }
    s.mass /= double(s.lists);
    s.exact_mass /= double(s.lists);
    s.recall /= double(s.lists);
    return s;
  }

  quality::QkvLayer L_;
  std::vector<double> k_, q_;  // the fixture's keys and queries, as stored
  Tensor keys_;
};

// Every order within 1.2% of exact mass (the gate's LSH bar is 2%), and the orders' recalls
// within 0.03 of each other (before the fix: 0.80, 0.80 and 0.93).
TEST_F(LshOrder, SameQualityInEveryBuildOrder) {
  ASSERT_EQ(L_.tokens, 1024);
  ASSERT_EQ(L_.first_query, kPrompt);
  double lo = 1, hi = 0;
  for (Order order : {Order::all, Order::prompt_decode, Order::decode}) {
    const Scores s = run(order);
    ASSERT_GT(s.lists, 0);
    EXPECT_LE(s.shortfall(), 0.012) << order_name(order) << ": mass " << s.mass << " vs exact " << s.exact_mass
                                    << ", recall " << s.recall;
    lo = std::min(lo, s.recall);
    hi = std::max(hi, s.recall);
    std::printf("%-24s mass %.4f exact %.4f short %.2f%% recall %.3f\n", order_name(order), s.mass, s.exact_mass,
                100 * s.shortfall(), s.recall);
  }
  EXPECT_LE(hi - lo, 0.03) << "recall differs between build orders: " << lo << " to " << hi;
}

// Layer 5 (tests/data: keys 0..2047, queries 1536..2047), where bucket membership alone left
// LSH short: 64 queries spread over the range, window 64, sinks 4, K = 128 and 256, lists per
// KV head and per query head, the gate's three build orders; every row within LSH's 2% bar of
// exact top-K of the same list mode. Before the sketch ranking (lsh_selector.cpp,
// kSketchWiden): one append, lists per KV head, 1.91% at K = 128 and 2.19% at K = 256; after,
// at most 1.51%.
TEST(LshLayer5, WithinTheBarInEveryOrderAndListMode) {
  const quality::QkvLayer layer = quality::load_layer(SA_TEST_DATA_DIR, 5);
  ASSERT_EQ(layer.tokens, 2048);
  const std::vector<int64_t> positions = quality::spread_positions(layer.first_query, layer.tokens, 64);
  auto ctx = sat::make_context(1);
  quality::DecodeSetting setting;
  setting.window = 64;
  setting.sinks = 4;
  const quality::ReferenceAttention ref(layer, positions, setting.scale_for(layer.d));
  const quality::SelectorKind &exact = *quality::find_selector_kind("exact"), &lsh = *quality::find_selector_kind("lsh");
  for (quality::BuildOrder order : {quality::BuildOrder::all, quality::BuildOrder::decode, quality::BuildOrder::prompt_decode})
    for (bool per_query_head : {false, true})
      for (int32_t k : {128, 256}) {
        setting.order = order;
        setting.per_query_head = per_query_head;
        const quality::DecodeSelection e = quality::select_decode(ctx.get(), exact.index_options("", 5), layer, positions, k, setting);
        const quality::DecodeSelection l = quality::select_decode(ctx.get(), lsh.index_options("", 5), layer, positions, k, setting);
        ASSERT_TRUE(e.ok() && l.ok()) << e.error << l.error;
        EXPECT_EQ(quality::check_selection(l, positions, k, setting), "");
        EXPECT_EQ(quality::short_lists(l, positions, k, setting), 0);
        const double exact_mass = quality::score_selection(ref, e, e, nullptr, setting).mass;
        const quality::SelectionScores got = quality::score_selection(ref, l, e, nullptr, setting);
        const double short_by = quality::relative_shortfall(got.mass, exact_mass);
        std::printf("%-13s %-5s K %3d: mass %.4f exact %.4f short %.2f%% recall %.3f\n", quality::order_name(order),
                    per_query_head ? "q" : "kv", k, got.mass, exact_mass, 100 * short_by, got.recall);
        EXPECT_LE(short_by, quality::mass_bar("lsh")) << quality::order_name(order) << (per_query_head ? ", per query head" : ", per KV head")
                                                      << ", K " << k << ": recall " << got.recall;
      }
}

}  // namespace
