// Selection quality on the realistic fixture (tests/data: layer 3 of tinylm-qkv, 1024 tokens,
// queries of the last 256 positions), in the decode setting of bench/quality_report: a query
// at position t keeps the window (t - 64, t] and chooses K keys among [0, t - 64].
// - The exact selector's mass equals an independent double-precision top-K written here.
// - With every key selected, the sparse output equals the dense reference.
// The selectors' quality bars on this fixture, in every build order: tests/quality_gate_test.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
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

using quality::DecodeSelection;
using quality::DecodeSetting;

constexpr int kLayer = 3;
constexpr int32_t kWindow = 64;
constexpr int64_t kQueries = 24;

const quality::QkvLayer &fixture() {
  static const quality::QkvLayer layer = quality::load_layer(SA_TEST_DATA_DIR, kLayer);
  return layer;
}

std::vector<int64_t> late_positions() {
  const quality::QkvLayer &L = fixture();
  return quality::spread_positions(L.first_query, L.tokens, kQueries);
}

DecodeSetting decode_setting() {
  DecodeSetting s;
  s.window = kWindow;
  s.sinks = 0;
  return s;
}

// Softmax probabilities in double, written independently of bench/reference_attention:
// probs[i][h][j] for query i (at positions[i] = t), query head h, key j in 0..t.
using Probs = std::vector<std::vector<std::vector<double>>>;

Probs independent_probs(const std::vector<int64_t> &positions) {
  const quality::QkvLayer &L = fixture();
  const int64_t group = L.hq / L.hkv;
  const double scale = 1.0 / std::sqrt(double(L.d));
  std::vector<double> k(size_t(L.k.numel()));
  for (size_t e = 0; e < k.size(); ++e) k[e] = sat::f16_to_double(L.k.f16()[e]);
  Probs probs;
  for (int64_t t : positions) {
    probs.emplace_back(size_t(L.hq), std::vector<double>(size_t(t + 1)));
    for (int64_t h = 0; h < L.hq; ++h) {
      std::vector<double> q(size_t(L.d));
      for (int64_t x = 0; x < L.d; ++x) q[size_t(x)] = sat::f16_to_double(L.q.f16()[((t - L.first_query) * L.hq + h) * L.d + x]);
      std::vector<double> &p = probs.back()[size_t(h)];
      for (int64_t j = 0; j <= t; ++j)
        p[size_t(j)] = scale * std::inner_product(q.begin(), q.end(), k.begin() + (j * L.hkv + h / group) * L.d, 0.0);
      const double top = *std::max_element(p.begin(), p.end());
      double sum = 0;
      for (double &v : p) sum += (v = std::exp(v - top));
      for (double &v : p) v /= sum;
    }
  }
  return probs;
}

// The exact top-K in the decode setting from those probabilities: per query and KV head,
// the keys in [0, t - W] ranked by the group's summed probability. Returns the mean over
// queries and query heads of the probability held by those K keys plus the window.
double reference_topk_mass(const std::vector<int64_t> &positions, const Probs &probs, int32_t top_k) {
  const quality::QkvLayer &L = fixture();
  const int64_t group = L.hq / L.hkv;
  double total = 0;
  for (size_t i = 0; i < positions.size(); ++i) {
    const int64_t t = positions[i], last_scored = t - kWindow;  // keys (t - W, t] are the window
    for (int64_t kvh = 0; kvh < L.hkv; ++kvh) {
      std::vector<std::pair<double, int64_t>> ranked;  // (group probability, key)
      for (int64_t j = 0; j <= last_scored; ++j) {
        double s = 0;
        for (int64_t g = 0; g < group; ++g) s += probs[i][size_t(kvh * group + g)][size_t(j)];
        ranked.push_back({s, j});
      }
      std::sort(ranked.begin(), ranked.end(), [](const auto &a, const auto &b) { return a.first > b.first; });
      ranked.resize(std::min(ranked.size(), size_t(top_k)));
      for (int64_t g = 0; g < group; ++g) {
        const std::vector<double> &p = probs[i][size_t(kvh * group + g)];
        double m = 0;
        for (int64_t j = std::max<int64_t>(0, last_scored + 1); j <= t; ++j) m += p[size_t(j)];
        for (const auto &r : ranked) m += p[size_t(r.second)];
        total += m;
      }
    }
  }
  return total / double(positions.size() * size_t(L.hq));
}

TEST(QualityFixture, HasTheDocumentedShape) {
  const quality::QkvLayer &L = fixture();
  EXPECT_EQ(L.tokens, 1024);
  EXPECT_EQ(L.first_query, 768);
  EXPECT_EQ(L.hq, 4);
  EXPECT_EQ(L.hkv, 2);
  EXPECT_EQ(L.d, 128);
  EXPECT_EQ(L.k.dtype, npy::Dtype::F16);
}

TEST(QualityFixture, ExactMassMatchesIndependentTopK) {
  const std::vector<int64_t> positions = late_positions();
  const DecodeSetting setting = decode_setting();
  sat::ContextPtr ctx = sat::make_context(1);
  ASSERT_TRUE(ctx);
  const quality::ReferenceAttention ref(fixture(), positions, setting.scale_for(fixture().d));
  const quality::SelectorKind &exact_kind = *quality::find_selector_kind("exact");
  const Probs probs = independent_probs(positions);
  double previous = 0;
  for (int32_t k : {64, 128, 256}) {
    const DecodeSelection exact = quality::select_decode(ctx.get(), exact_kind.options, fixture(), positions, k, setting);
    ASSERT_TRUE(exact.ok()) << exact.error;
    EXPECT_EQ(quality::check_selection(exact, positions, k, setting), "");
    const quality::SelectionScores s = quality::score_selection(ref, exact, exact, nullptr, setting);
    const double want = reference_topk_mass(positions, probs, k);
    EXPECT_NEAR(s.mass, want, 1e-6) << "K = " << k;
    EXPECT_EQ(s.recall, 1.0);
    // Concentrated attention (the data's README): most of the mass in the window + top-K.
    EXPECT_GT(s.mass, previous);
    EXPECT_GT(s.mass, 0.8) << "K = " << k;
    previous = s.mass;
  }
}

TEST(QualityFixture, EveryKeySelectedGivesTheDenseOutput) {
  const std::vector<int64_t> positions = late_positions();
  const DecodeSetting setting = decode_setting();
  sat::ContextPtr ctx = sat::make_context(1);
  ASSERT_TRUE(ctx);
  const quality::ReferenceAttention ref(fixture(), positions, setting.scale_for(fixture().d));
  const int32_t all = int32_t(fixture().tokens);  // more than any query can choose
  const DecodeSelection sel = quality::select_decode(ctx.get(), quality::find_selector_kind("exact")->options,
                                                     fixture(), positions, all, setting);
  ASSERT_TRUE(sel.ok()) << sel.error;
  std::vector<float> out;
  std::string err;
  ASSERT_EQ(quality::attend_selection(ctx.get(), fixture(), positions, sel, setting, &out, &err), SA_OK) << err;
  const quality::SelectionScores s = quality::score_selection(ref, sel, sel, &out, setting);
  EXPECT_NEAR(s.mass, 1.0, 1e-12);
  EXPECT_LT(s.rel_err, 1e-5);  // f32 accumulation of f16 values against double

  // And a real cut (K = 64) leaves a visible error that shrinks as K grows.
  double previous = 1;
  for (int32_t k : {64, 256}) {
    const DecodeSelection part = quality::select_decode(ctx.get(), quality::find_selector_kind("exact")->options,
                                                        fixture(), positions, k, setting);
    ASSERT_TRUE(part.ok()) << part.error;
    ASSERT_EQ(quality::attend_selection(ctx.get(), fixture(), positions, part, setting, &out, &err), SA_OK) << err;
    const double e = quality::score_selection(ref, part, part, &out, setting).rel_err;
    EXPECT_GT(e, 1e-3) << "K = " << k;
    EXPECT_LT(e, previous) << "K = " << k;
    previous = e;
  }
}

}  // namespace
