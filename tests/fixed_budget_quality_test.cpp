// Attention-output error of a fixed-budget cache on the realistic fixture (tests/data: layer 3
// of tinylm-qkv, keys of positions 0..1023, queries of 768..1023), against dense attention in
// double precision. The cache holds B = 256 slots; at position 768 it holds what StreamingLLM
// keeps (sinks 0..3 and the most recent 252 positions), and from there every query's token
// enters it through sa_cache_evict (sinks 4, window 64), is attended through sa_attend (which
// accumulates slot_mass) and its output compared with the dense one.
// The library's default eviction (SA_EVICT_OPTIONS_INIT, SA_ATTEND_OPTIONS_INIT) must beat
// StreamingLLM (equal scores: the oldest unprotected slot goes) there; the end-to-end version of
// this comparison is tools/tinylm_eval on a whole model.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "qkv_layer.hpp"
#include "test_util.hpp"

#ifndef SA_TEST_DATA_DIR
#error "SA_TEST_DATA_DIR must name tests/data"
#endif

namespace {

constexpr int64_t kBudget = 256;
constexpr int32_t kSinks = 4, kWindow = 64;

struct Fixture {
  int64_t T = 0, first = 0, hq = 0, hkv = 0, d = 0;
  std::vector<float> q, k, v;  // f32 copies of the f16 data
};

const Fixture &fixture() {
  static const Fixture f = [] {
    const quality::QkvLayer L = quality::load_layer(SA_TEST_DATA_DIR, 3);
    Fixture x;
    x.T = L.tokens, x.first = L.first_query, x.hq = L.hq, x.hkv = L.hkv, x.d = L.d;
    auto conv = [](const npy::Array &a) {
      std::vector<float> out(size_t(a.numel()));
      for (size_t i = 0; i < out.size(); ++i) out[i] = float(sat::f16_to_double(a.f16()[i]));
      return out;
    };
    x.q = conv(L.q), x.k = conv(L.k), x.v = conv(L.v);
    return x;
  }();
  return f;
}

// Dense causal attention of the query at position t, head h, in double.
std::vector<double> dense_output(int64_t t, int64_t h) {
  const Fixture &f = fixture();
  const int64_t kvh = h / (f.hq / f.hkv);
  const float *q = &f.q[size_t(((t - f.first) * f.hq + h) * f.d)];
  std::vector<double> s(size_t(t + 1));
  for (int64_t j = 0; j <= t; ++j) {
    const float *k = &f.k[size_t((j * f.hkv + kvh) * f.d)];
    double dot = 0;
    for (int64_t x = 0; x < f.d; ++x) dot += double(q[x]) * k[x];
    s[size_t(j)] = dot / std::sqrt(double(f.d));
  }
  const double top = *std::max_element(s.begin(), s.end());
  double z = 0;
  for (double &e : s) z += (e = std::exp(e - top));
  std::vector<double> out(size_t(f.d), 0.0);
  for (int64_t j = 0; j <= t; ++j)
    for (int64_t x = 0; x < f.d; ++x) out[size_t(x)] += s[size_t(j)] / z * f.v[size_t((j * f.hkv + kvh) * f.d + x)];
  return out;
}

sa_tensor view(const void *data, sa_dtype dt, std::vector<int64_t> shape, std::vector<int64_t> strides) {
  sa_tensor t{};
  t.data = const_cast<void *>(data);
  t.dtype = dt;
  t.device = SA_DEVICE_CPU;
  t.rank = int32_t(shape.size());
  for (int i = 0; i < t.rank; ++i) t.shape[i] = shape[size_t(i)], t.strides[i] = strides[size_t(i)];
  return t;
}

// Mean over queries and heads of |out - dense| / |dense| through a B-slot cache whose
// eviction uses `eo` (budget, sinks, window set here) and whose slot_mass uses `mass_decay`.
// streaming: equal scores (zeros) instead of slot_mass.
double cache_error(sa_context *ctx, sa_evict_options eo, float mass_decay, bool streaming) {
  const Fixture &f = fixture();
  const int64_t B = kBudget, H = f.hkv, D = f.d, row = H * D;
  std::vector<float> kc(size_t(B * row)), vc(size_t(B * row)), mass(size_t(H * B), 0.f), zeros(size_t(B), 0.f);
  std::vector<int64_t> pos(static_cast<size_t>(B));
  // StreamingLLM's cache at position first - 1: sinks and the most recent B - sinks tokens.
  for (int64_t s = 0; s < B; ++s) {
    const int64_t p = s < kSinks ? s : f.first - (B - s);
    pos[size_t(s)] = p;
    std::copy_n(&f.k[size_t(p * row)], row, &kc[size_t(s * row)]);
    std::copy_n(&f.v[size_t(p * row)], row, &vc[size_t(s * row)]);
  }
  eo.budget = B;
  eo.incoming = 1;
  eo.sinks = kSinks;
  eo.window = kWindow;
  sa_attend_options ao = SA_ATTEND_OPTIONS_INIT;
  ao.mass_decay = mass_decay;
  sa_tensor mass_t = view(mass.data(), SA_DTYPE_F32, {H, B}, {B, 1});
  ao.slot_mass = streaming ? nullptr : &mass_t;
  std::vector<int32_t> freed(2);
  std::vector<float> out(size_t(f.hq * D));
  double err = 0;
  for (int64_t t = f.first; t < f.T; ++t) {
    const sa_tensor sc = streaming ? view(zeros.data(), SA_DTYPE_F32, {B}, {1}) : mass_t;
    const sa_tensor pos_t = view(pos.data(), SA_DTYPE_I64, {B}, {1});
    sa_tensor fr_t = view(freed.data(), SA_DTYPE_I32, {2}, {1});
    int64_t n_freed = 0;
    EXPECT_EQ(sa_cache_evict(ctx, &eo, &sc, &pos_t, &fr_t, &n_freed), SA_OK) << sa_last_error();
    if (n_freed != 1) return INFINITY;
    const int32_t slot = freed[0];
    std::copy_n(&f.k[size_t(t * row)], row, &kc[size_t(slot * row)]);
    std::copy_n(&f.v[size_t(t * row)], row, &vc[size_t(slot * row)]);
    pos[size_t(slot)] = t;
    for (int64_t h = 0; h < H; ++h) mass[size_t(h * B + slot)] = 0.f;  // a new token starts at 0
    const sa_tensor q_t = view(&f.q[size_t((t - f.first) * f.hq * D)], SA_DTYPE_F32, {1, f.hq, D}, {f.hq * D, D, 1});
    const sa_tensor k_t = view(kc.data(), SA_DTYPE_F32, {B, H, D}, {row, D, 1});
    const sa_tensor v_t = view(vc.data(), SA_DTYPE_F32, {B, H, D}, {row, D, 1});
    sa_tensor o_t = view(out.data(), SA_DTYPE_F32, {1, f.hq, D}, {f.hq * D, D, 1});
    EXPECT_EQ(sa_attend(ctx, &q_t, &k_t, &v_t, nullptr, &ao, &o_t, nullptr), SA_OK) << sa_last_error();
    for (int64_t h = 0; h < f.hq; ++h) {
      const std::vector<double> want = dense_output(t, h);
      double num = 0, den = 0;
      for (int64_t x = 0; x < D; ++x) {
        num += (out[size_t(h * D + x)] - want[size_t(x)]) * (out[size_t(h * D + x)] - want[size_t(x)]);
        den += want[size_t(x)] * want[size_t(x)];
      }
      err += std::sqrt(num / den);
    }
  }
  return err / double((f.T - f.first) * f.hq);
}

class FixedBudgetQuality : public sat::ContextTest {};

TEST_F(FixedBudgetQuality, DefaultEvictionBeatsStreamingAtBudget256) {
  const sa_attend_options ad = SA_ATTEND_OPTIONS_INIT;
  const double streaming = cache_error(ctx(), SA_EVICT_OPTIONS_INIT, 1.f, true);
  const double by_default = cache_error(ctx(), SA_EVICT_OPTIONS_INIT, ad.mass_decay, false);
  // Sanity: a 256-slot cache of 1024 tokens loses something, and keeping every key would not.
  EXPECT_GT(streaming, 1e-3);
  EXPECT_LT(by_default, streaming) << "default eviction error " << by_default << ", StreamingLLM " << streaming;
  sa_evict_options old = SA_EVICT_OPTIONS_INIT;  // the plain H2O sum, the default before
  old.score_mean = 0;
  old.recent_share = 0.f;
  const double h2o = cache_error(ctx(), old, 1.f, false);
  // The default before (the plain sum, which this data also puts below StreamingLLM) is beaten too.
  EXPECT_LT(by_default, h2o) << "default eviction error " << by_default << ", plain H2O sum " << h2o;
  std::printf("output error at B = %lld: StreamingLLM %.4f, default eviction %.4f, plain H2O sum %.4f\n",
              (long long)kBudget, streaming, by_default, h2o);
}

}  // namespace
