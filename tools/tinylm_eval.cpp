// End-to-end quality of fixed-budget KV caches: runs a tinylm-architecture model (byte-level,
// 8 layers, 4 query heads over 2 KV heads, head_dim 128, RoPE; the forward pass is the one in
// the model directory's README) on held-out text and prints bits per byte for dense attention,
// StreamingLLM, the library's eviction policies (one set of tokens, or per KV head: perhead),
// eviction + page or exact selection, the top-B oracle, and policies given to sa_cache_evict as
// host scores: Expected Attention (ea), KeyDiff (keydiff), the decayed peak of per-step
// attention (peak) and the clairvoyant future bound.
// "future" evicts, each step, the slot whose token gets the least attention mass from all later
// queries of its layer under dense attention (futurehead: per KV head); no causal eviction
// policy knows that, so it tells what eviction can reach at a budget, where the top-B oracle
// (which re-selects from the whole history for every query) tells what a B-slot cache could.
//
//   tinylm_eval --model DIR/model.safetensors --text DIR/dev_text.bin [--seqs 0,1,2]
//               [--tokens 4096] [--budgets 256,512,1024] [--policies LIST] [--threads N]
//
// Layer 0 is dense (engines keep it so); layers 1-7 attend through a cache of B slots that
// frees one slot per new token with sa_cache_evict (sinks 4, window 64). Attention goes through
// the C ABI (sa_attend, sa_select, sa_cache_evict, slot_mass); the rest of the model is here.
// A layer's keys depend only on the layer below, so each layer is computed for all positions
// before the next (f32 GEMMs over all T at once), the cache still being evicted token by token.
// Independent runs (policy x budget x sequence) go to OpenMP threads, one run per thread.
#include <sparseattn.h>

#include <algorithm>
#include <cctype>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <omp.h>

#include "io/safetensors.hpp"
#include "sa_build_config.h"
#if SA_HAVE_ONEDNN
#include <dnnl.h>
#endif

namespace {

constexpr int kVocab = 256, kModel = 512, kLayers = 8, kHq = 4, kHkv = 2, kD = 128, kMlp = 1408;
constexpr double kTheta = 1e5;
constexpr int32_t kSinks = 4, kWindow = 64, kPageTopK = 128;

[[noreturn]] void die(const std::string &msg) {
  std::fprintf(stderr, "tinylm_eval: %s\n", msg.c_str());
  std::exit(2);
}

void check(sa_status st, const char *what) {
  if (st != SA_OK) die(std::string(what) + ": " + sa_status_name(st) + ": " + sa_last_error());
}

struct Layer {
  std::vector<float> n1, wq, wk, wv, wo, n2, w1, w3, w2;
};
struct Model {
  std::vector<float> emb, norm, head;
  Layer layers[kLayers];
};

Model load_model(const std::string &path) {
  sa::Safetensors st = sa::Safetensors::open(path);
  auto get = [&](const std::string &name, std::vector<int64_t> shape) {
    const sa::SafetensorsEntry *e = st.find(name);
    if (!e) die(path + ": no tensor " + name);
    if (e->shape != shape) die(path + ": tensor " + name + " has an unexpected shape");
    return st.read_f32(*e);
  };
  Model m;
  m.emb = get("emb.weight", {kVocab, kModel});
  m.norm = get("norm.weight", {kModel});
  m.head = get("head.weight", {kVocab, kModel});
  for (int l = 0; l < kLayers; ++l) {
    const std::string p = "blocks." + std::to_string(l) + ".";
    Layer &L = m.layers[l];
    L.n1 = get(p + "n1.weight", {kModel});
    L.wq = get(p + "wq.weight", {kHq * kD, kModel});
    L.wk = get(p + "wk.weight", {kHkv * kD, kModel});
    L.wv = get(p + "wv.weight", {kHkv * kD, kModel});
    L.wo = get(p + "wo.weight", {kModel, kHq * kD});
    L.n2 = get(p + "n2.weight", {kModel});
    L.w1 = get(p + "w1.weight", {kMlp, kModel});
    L.w3 = get(p + "w3.weight", {kMlp, kModel});
    L.w2 = get(p + "w2.weight", {kModel, kMlp});
  }
  return m;
}

// y[T, N] = x[T, K] @ w[N, K]^T (+ y when accumulate).
void gemm_xwt(const float *x, const float *w, float *y, int64_t T, int64_t N, int64_t K, bool accumulate) {
#if SA_HAVE_ONEDNN
  if (dnnl_sgemm('N', 'T', T, N, K, 1.f, x, K, w, K, accumulate ? 1.f : 0.f, y, N) == dnnl_success) return;
#endif
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      float s = 0.f;
      for (int64_t k = 0; k < K; ++k) s += x[t * K + k] * w[n * K + k];
      y[t * N + n] = accumulate ? y[t * N + n] + s : s;
    }
}

void rmsnorm(const float *x, const float *w, float *y, int64_t T) {
  for (int64_t t = 0; t < T; ++t) {
    double ss = 0;
    for (int i = 0; i < kModel; ++i) ss += double(x[t * kModel + i]) * x[t * kModel + i];
    const float r = float(1.0 / std::sqrt(ss / kModel + double(FLT_EPSILON)));
    for (int i = 0; i < kModel; ++i) y[t * kModel + i] = x[t * kModel + i] * r * w[i];
  }
}

void rope(float *x, int64_t T, int heads) {
  for (int64_t t = 0; t < T; ++t)
    for (int h = 0; h < heads; ++h) {
      float *v = x + (t * heads + h) * kD;
      for (int j = 0; j < kD / 2; ++j) {
        const double a = double(t) * std::pow(kTheta, -2.0 * j / kD);
        const float c = float(std::cos(a)), s = float(std::sin(a));
        const float x1 = v[j], x2 = v[j + kD / 2];
        v[j] = x1 * c - x2 * s;
        v[j + kD / 2] = x1 * s + x2 * c;
      }
    }
}

sa_tensor tensor(const void *data, sa_dtype dt, std::vector<int64_t> shape, std::vector<int64_t> strides = {}) {
  sa_tensor t{};
  t.data = const_cast<void *>(data);
  t.dtype = dt;
  t.device = SA_DEVICE_CPU;
  t.rank = int32_t(shape.size());
  int64_t s = 1;
  for (int i = t.rank - 1; i >= 0; --i) {
    t.shape[i] = shape[size_t(i)];
    t.strides[i] = strides.empty() ? s : strides[size_t(i)];
    s *= shape[size_t(i)];
  }
  return t;
}

// How a run's layers 1-7 attend.
enum class Mode { dense, oracle, cache };
// What sa_cache_evict ranks slots by, in cache mode.
enum class Score {
  streaming,   // all equal: the oldest unprotected slot goes (sinks + most recent)
  library,     // slot_mass as sa_attend accumulates it, sa_cache_evict with its defaults
  raw,         // slot_mass passed as is (H2O sum with mass_decay), normalize off
  mean,        // slot_mass divided by the (decayed) number of queries that saw the slot
  future,      // clairvoyant bound: the mass all future queries give the token under dense attention
  expected,    // Expected Attention: exp(mu.k/sqrt(d) + k^T Sigma k / 2d), future-averaged query stats
  keydiff,     // KeyDiff: keys least similar (cosine) to the cache's mean key are kept
  peak         // the largest attention one step gave the slot, decayed: max(peak * decay, this step's)
};

struct Policy {
  std::string name;
  Mode mode = Mode::cache;
  Score score = Score::library;
  float decay = 1.f;       // sa_attend_options.mass_decay
  bool page = false;       // selection (top_k 128) over the cache's slots: "+page" or "+exact"
  sa_selector_kind selector = SA_SELECTOR_PAGE;
  bool head_max = false;   // raw/mean: a slot's score is its best KV head's, not the sum
  float recent = -1.f;     // library: sa_evict_options.recent_share (< 0: the default)
  bool per_head = false;   // each KV head keeps its own tokens (sa_evict_options.per_head)
  int32_t pool = -1;       // library: sa_evict_options.score_pool (< 0: the default)
  int64_t budget = 0;
};

struct Run {
  sa_context *ctx;
  const Model *m;
  int64_t T;
};

// Causal softmax rows of dense attention for queries [t0, t0 + n) of query head hq over keys
// [0, t0 + n): P[i][j], zero past the query. qh/kh: [T][kD] per head, contiguous.
void dense_probs(const float *qh, const float *kh, int64_t t0, int64_t n, std::vector<float> &P) {
  const int64_t width = t0 + n;
  P.resize(size_t(n * width));
  gemm_xwt(qh + t0 * kD, kh, P.data(), n, width, kD, false);
  const float scale = 1.f / std::sqrt(float(kD));
  for (int64_t i = 0; i < n; ++i) {
    float *row = &P[size_t(i * width)];
    const int64_t last = t0 + i;
    float mx = -FLT_MAX;
    for (int64_t j = 0; j <= last; ++j) mx = std::max(mx, row[j] * scale);
    double z = 0;
    for (int64_t j = 0; j <= last; ++j) z += (row[j] = std::exp(row[j] * scale - mx));
    const float inv = float(1.0 / z);
    for (int64_t j = 0; j <= last; ++j) row[j] *= inv;
    for (int64_t j = last + 1; j < width; ++j) row[j] = 0.f;
  }
}

// Rows of dense attention probabilities, one query at a time in increasing order, computed a
// chunk of queries at a time.
struct DenseRows {
  static constexpr int64_t kChunk = 64;
  const std::vector<float> *qh, *kh;  // [kHq][T][kD], [kHkv][T][kD]
  int64_t T, chunk0 = -1, width = 0;
  std::vector<std::vector<float>> P = std::vector<std::vector<float>>(kHq);
  // Query t's probabilities for query head h over keys [0, t].
  const float *row(int64_t t, int h) {
    const int64_t c0 = t / kChunk * kChunk;
    if (c0 != chunk0) {
      chunk0 = c0;
      width = c0 + std::min(kChunk, T - c0);
      for (int g = 0; g < kHq; ++g)
        dense_probs(&(*qh)[size_t(g * T * kD)], &(*kh)[size_t((g / 2) * T * kD)], c0, width - c0, P[size_t(g)]);
    }
    return &P[size_t(h)][size_t((t - c0) * width)];
  }
};

// Clairvoyant scores: the attention mass that queries t' in [t, t + horizon) give key j under
// dense attention, per KV head (summed over its query heads), advanced one query at a time.
struct FutureMass {
  int64_t T, horizon;
  std::vector<float> qh, kh;           // [kHq][T][kD], [kHkv][T][kD]
  std::vector<double> left;            // [kHkv][T]: mass from queries in [t, t + horizon)
  DenseRows leaving, arriving;

  FutureMass(const std::vector<float> &q, const std::vector<float> &k, int64_t T_, int64_t horizon_)
      : T(T_), horizon(std::min(horizon_, T_)) {
    qh.resize(size_t(kHq * T * kD));
    kh.resize(size_t(kHkv * T * kD));
    for (int64_t t = 0; t < T; ++t) {
      for (int h = 0; h < kHq; ++h)
        std::memcpy(&qh[size_t((h * T + t) * kD)], &q[size_t((t * kHq + h) * kD)], sizeof(float) * kD);
      for (int h = 0; h < kHkv; ++h)
        std::memcpy(&kh[size_t((h * T + t) * kD)], &k[size_t((t * kHkv + h) * kD)], sizeof(float) * kD);
    }
    left.assign(size_t(kHkv * T), 0.0);
    leaving = DenseRows{&qh, &kh, T};
    arriving = DenseRows{&qh, &kh, T};
    for (int64_t t = 0; t < horizon; ++t) add(arriving, t, 1.0);
  }
  void add(DenseRows &rows, int64_t t, double sign) {
    for (int h = 0; h < kHq; ++h) {
      const float *r = rows.row(t, h);
      double *acc = &left[size_t((h / 2) * T)];
      for (int64_t j = 0; j <= t; ++j) acc[j] += sign * r[j];
    }
  }
  // Query t leaves the horizon, query t + horizon enters it (call after step t, in order).
  void consume(int64_t t) {
    add(leaving, t, -1.0);
    if (t + horizon < T) add(arriving, t + horizon, 1.0);
    // Each query row sums to 1 per query head: a KV head's mass left is 2 per query in the horizon.
    const double want = 2.0 * double(std::min(T, t + 1 + horizon) - (t + 1));
    for (int h = 0; h < kHkv; ++h) {
      double got = 0;
      for (int64_t j = 0; j < T; ++j) got += left[size_t(h * T + j)];
      if (std::fabs(got - want) > 1e-3 * std::max(1.0, want))
        die("future mass bookkeeping: KV head " + std::to_string(h) + " holds " + std::to_string(got) +
            " after query " + std::to_string(t) + ", expected " + std::to_string(want));
    }
  }
};

// Expected Attention (KVPress): the queries of the next kFuture positions are modelled as the
// pre-RoPE mean and diagonal variance of the last kObs queries, rotated to each future position;
// a key's score is E[exp(q.k/sqrt(d))] under that Gaussian, averaged over the future positions
// inside the exponent, normalised over the cache per query head, times |v|.
struct ExpectedAttention {
  static constexpr int64_t kObs = 128, kFuture = 512;
  const std::vector<float> &qpre;      // [T][kHq][kD], before RoPE
  std::vector<double> sum, sumsq;      // [kHq][kD] over the observation window
  std::vector<double> g1re, g1im, g2re, g2im, inv;  // per pair: mean of e^{i theta_j m}, m = 1..kFuture, and of 2 theta_j
  explicit ExpectedAttention(const std::vector<float> &q) : qpre(q) {
    sum.assign(size_t(kHq * kD), 0.0);
    sumsq.assign(size_t(kHq * kD), 0.0);
    for (auto *v : {&g1re, &g1im, &g2re, &g2im, &inv}) v->assign(kD / 2, 0.0);
    for (int j = 0; j < kD / 2; ++j) {
      inv[size_t(j)] = std::pow(kTheta, -2.0 * j / kD);
      for (int64_t m = 1; m <= kFuture; ++m) {
        g1re[size_t(j)] += std::cos(inv[size_t(j)] * double(m)) / kFuture;
        g1im[size_t(j)] += std::sin(inv[size_t(j)] * double(m)) / kFuture;
        g2re[size_t(j)] += std::cos(2 * inv[size_t(j)] * double(m)) / kFuture;
        g2im[size_t(j)] += std::sin(2 * inv[size_t(j)] * double(m)) / kFuture;
      }
    }
  }
  void observe(int64_t t) {  // query t joins the window, query t - kObs leaves it
    for (int64_t i = 0; i < kHq * kD; ++i) {
      const double x = qpre[size_t(t * kHq * kD + i)];
      sum[size_t(i)] += x, sumsq[size_t(i)] += x * x;
      if (t >= kObs) {
        const double y = qpre[size_t((t - kObs) * kHq * kD + i)];
        sum[size_t(i)] -= y, sumsq[size_t(i)] -= y * y;
      }
    }
  }
  // scores[h][s] for the cache's slots at step t (queries < t observed), per KV head.
  void score(int64_t t, const std::vector<float> &kc, const std::vector<float> &vc, const std::vector<int64_t> &pos,
             bool per_head, int64_t B, int64_t filled, std::vector<float> &out) const {
    const int64_t n = std::min<int64_t>(t, kObs);
    out.assign(size_t(kHkv * B), 0.f);
    if (n == 0) return;
    std::vector<double> mu(kD), a(kD / 2), b(kD / 2), c(kD / 2), logit(static_cast<size_t>(filled));
    for (int hq = 0; hq < kHq; ++hq) {
      const int hk = hq / 2;
      // Future-averaged rotation of the mean, and E[cos 2phi], E[sin 2phi] for the variance.
      for (int j = 0; j < kD / 2; ++j) {
        const double m1 = sum[size_t(hq * kD + j)] / double(n), m2 = sum[size_t(hq * kD + j + kD / 2)] / double(n);
        const double v1 = std::max(0.0, sumsq[size_t(hq * kD + j)] / double(n) - m1 * m1);
        const double v2 = std::max(0.0, sumsq[size_t(hq * kD + j + kD / 2)] / double(n) - m2 * m2);
        const double ph = inv[size_t(j)] * double(t - 1);
        const double are = std::cos(ph) * g1re[size_t(j)] - std::sin(ph) * g1im[size_t(j)];
        const double aim = std::sin(ph) * g1re[size_t(j)] + std::cos(ph) * g1im[size_t(j)];
        mu[size_t(j)] = m1 * are - m2 * aim;
        mu[size_t(j + kD / 2)] = m1 * aim + m2 * are;
        const double c2 = std::cos(2 * ph) * g2re[size_t(j)] - std::sin(2 * ph) * g2im[size_t(j)];
        const double s2 = std::sin(2 * ph) * g2re[size_t(j)] + std::cos(2 * ph) * g2im[size_t(j)];
        // k^T R diag(v1, v2) R^T k averaged: coefficients of ka^2, kb^2, ka kb.
        a[size_t(j)] = v1 * (1 + c2) / 2 + v2 * (1 - c2) / 2;
        b[size_t(j)] = v1 * (1 - c2) / 2 + v2 * (1 + c2) / 2;
        c[size_t(j)] = (v1 - v2) * s2;
      }
      const int64_t prow = per_head ? hk : 0;
      double mx = -1e300;
      for (int64_t s = 0; s < filled; ++s) {
        const float *kk = &kc[size_t((s * kHkv + hk) * kD)];
        double dot = 0, quad = 0;
        for (int j = 0; j < kD / 2; ++j) {
          const double ka = kk[j], kb = kk[j + kD / 2];
          dot += mu[size_t(j)] * ka + mu[size_t(j + kD / 2)] * kb;
          quad += a[size_t(j)] * ka * ka + b[size_t(j)] * kb * kb + c[size_t(j)] * ka * kb;
        }
        logit[size_t(s)] = pos[size_t(prow * B + s)] < 0 ? -1e300 : dot / std::sqrt(double(kD)) + 0.5 * quad / kD;
        mx = std::max(mx, logit[size_t(s)]);
      }
      double z = 0;
      for (int64_t s = 0; s < filled; ++s) z += std::exp(logit[size_t(s)] - mx);
      for (int64_t s = 0; s < filled; ++s) {
        const float *vv = &vc[size_t((s * kHkv + hk) * kD)];
        double vn = 0;
        for (int j = 0; j < kD; ++j) vn += double(vv[j]) * vv[j];
        out[size_t(hk * B + s)] += float(std::exp(logit[size_t(s)] - mx) / z * std::sqrt(vn));
      }
    }
  }
};

// Attention of one layer for all T queries through a B-slot cache, token by token.
void attend_cache(const Run &r, const Policy &p, const std::vector<float> &q, const std::vector<float> &k,
                  const std::vector<float> &v, const std::vector<float> &qpre, std::vector<float> &a) {
  const int64_t B = p.budget, T = r.T, row = kHkv * kD;
  std::vector<float> kc(size_t(B * row)), vc(size_t(B * row)), mass(size_t(kHkv * B), 0.f), score(static_cast<size_t>(B));
  // Positions per KV head ([kHkv][B]) when each head keeps its own tokens, else one row.
  const int64_t pos_rows = p.per_head ? kHkv : 1;
  std::vector<int64_t> pos(size_t(pos_rows * B), -1), head_pos;
  std::vector<int32_t> freed(size_t(pos_rows * 2)), idx(size_t(kHkv * (kSinks + kWindow + kPageTopK)));
  std::vector<int64_t> n_freed(static_cast<size_t>(pos_rows));
  sa_index *ix = nullptr;
  if (p.page) {
    sa_index_options io = SA_INDEX_OPTIONS_INIT;
    io.kind = p.selector;
    io.num_kv_heads = kHkv;
    io.head_dim = kD;
    io.dtype = SA_DTYPE_F32;
    io.capacity = B;
    check(sa_index_create(r.ctx, &io, &ix), "sa_index_create");
  }
  sa_evict_options eo = SA_EVICT_OPTIONS_INIT;
  eo.budget = B;
  eo.sinks = kSinks;
  eo.window = kWindow;
  if (p.score == Score::library) eo.mass_decay = p.decay;  // the library's ranking, defaults otherwise
  else eo.score_mean = 0;                                 // the scores below, as given
  if (p.recent >= 0.f) eo.recent_share = p.recent;
  if (p.pool >= 0) eo.score_pool = p.pool;
  eo.per_head = p.per_head;
  std::unique_ptr<FutureMass> fm;
  std::unique_ptr<ExpectedAttention> ea;
  if (p.score == Score::future) fm = std::make_unique<FutureMass>(q, k, T, p.decay > 1.f ? int64_t(p.decay) : T);
  if (p.score == Score::expected) ea = std::make_unique<ExpectedAttention>(qpre);
  std::vector<float> hs;  // host scores per KV head, [kHkv][B]
  std::vector<float> peak(size_t(kHkv * B), 0.f);  // Score::peak: decayed maximum per KV head and slot
  sa_attend_options ao = SA_ATTEND_OPTIONS_INIT;
  ao.mass_decay = p.score == Score::peak ? 0.f : p.decay;  // peak: slot_mass holds this step's attention
  sa_select_options so = SA_SELECT_OPTIONS_INIT;
  so.top_k = kPageTopK;
  so.window = kWindow;
  so.sinks = kSinks;
  int64_t filled = 0;
  for (int64_t t = 0; t < T; ++t) {
    // Scores for the eviction (slots 0 .. filled-1 hold tokens; the rest are empty).
    const sa_tensor pos_t = p.per_head ? tensor(pos.data(), SA_DTYPE_I64, {kHkv, B}) : tensor(pos.data(), SA_DTYPE_I64, {B});
    sa_tensor sc_t, fr_t = p.per_head ? tensor(freed.data(), SA_DTYPE_I32, {kHkv, 2}) : tensor(freed.data(), SA_DTYPE_I32, {2});
    if (p.score == Score::library) {
      sc_t = tensor(mass.data(), SA_DTYPE_F32, {kHkv, B});
    } else if (p.score == Score::future || p.score == Score::expected || p.score == Score::keydiff ||
               p.score == Score::peak) {
      const int64_t prows = p.per_head ? kHkv : 1;
      hs.assign(size_t(kHkv * B), 0.f);
      if (p.score == Score::peak) {
        hs = peak;
      } else if (fm) {
        for (int h = 0; h < kHkv; ++h)
          for (int64_t s = 0; s < filled; ++s) {
            const int64_t ps = pos[size_t((p.per_head ? h : 0) * B + s)];
            if (ps >= 0) hs[size_t(h * B + s)] = float(fm->left[size_t(h * T + ps)]);
          }
      } else if (ea) {
        ea->score(t, kc, vc, pos, p.per_head, B, filled, hs);
      } else {  // keydiff: -cos(k, mean of the cached keys) per KV head
        for (int h = 0; h < kHkv; ++h) {
          std::vector<double> mean(kD, 0.0);
          std::vector<double> norm(size_t(filled), 0.0);
          for (int64_t s = 0; s < filled; ++s) {
            if (pos[size_t((p.per_head ? h : 0) * B + s)] < 0) continue;
            const float *kk = &kc[size_t((s * kHkv + h) * kD)];
            for (int j = 0; j < kD; ++j) norm[size_t(s)] += double(kk[j]) * kk[j];
            norm[size_t(s)] = std::sqrt(norm[size_t(s)]) + 1e-12;
            for (int j = 0; j < kD; ++j) mean[size_t(j)] += kk[j] / norm[size_t(s)];
          }
          for (int64_t s = 0; s < filled; ++s) {
            if (pos[size_t((p.per_head ? h : 0) * B + s)] < 0) continue;
            const float *kk = &kc[size_t((s * kHkv + h) * kD)];
            double dot = 0, mn = 0;
            for (int j = 0; j < kD; ++j) dot += kk[j] * mean[size_t(j)], mn += mean[size_t(j)] * mean[size_t(j)];
            hs[size_t(h * B + s)] = float(-dot / (norm[size_t(s)] * std::sqrt(mn) + 1e-12));
          }
        }
      }
      if (p.per_head) {
        sc_t = tensor(hs.data(), SA_DTYPE_F32, {kHkv, B});
      } else {
        for (int64_t s = 0; s < B; ++s)
          score[size_t(s)] = p.head_max ? std::max(hs[size_t(s)], hs[size_t(B + s)]) : hs[size_t(s)] + hs[size_t(B + s)];
        sc_t = tensor(score.data(), SA_DTYPE_F32, {B});
      }
      (void)prows;
    } else {
      for (int64_t s = 0; s < B; ++s) {
        const double m = p.head_max ? std::max(mass[size_t(s)], mass[size_t(B + s)])
                                    : double(mass[size_t(s)]) + mass[size_t(B + s)];
        if (p.score == Score::streaming || pos[size_t(s)] < 0) {
          score[size_t(s)] = 0.f;
        } else if (p.score == Score::raw) {
          score[size_t(s)] = float(m);
        } else {  // queries t' in [pos, t-1] saw the slot, weighted by decay^(t-1-t')
          const double n = double(t - pos[size_t(s)]);
          const double norm = p.decay >= 1.f ? n : (1.0 - std::pow(double(p.decay), n)) / (1.0 - p.decay);
          score[size_t(s)] = float(m / norm);
        }
      }
      sc_t = tensor(score.data(), SA_DTYPE_F32, {B});
    }
    check(sa_cache_evict(r.ctx, &eo, &sc_t, &pos_t, &fr_t, n_freed.data()), "sa_cache_evict");
    for (int64_t f : n_freed)
      if (f < 1) die("sa_cache_evict freed no slot");
    const int32_t slot = freed[0];
    if (p.per_head) {  // head h's row of freed[h][0] takes the token's head h
      for (int h = 0; h < kHkv; ++h) {
        const int32_t sh = freed[size_t(h * 2)];
        std::memcpy(&kc[size_t(sh * row + h * kD)], &k[size_t(t * row + h * kD)], sizeof(float) * size_t(kD));
        std::memcpy(&vc[size_t(sh * row + h * kD)], &v[size_t(t * row + h * kD)], sizeof(float) * size_t(kD));
        mass[size_t(h * B + sh)] = 0.f;
        peak[size_t(h * B + sh)] = 0.f;
        pos[size_t(h * B + sh)] = t;
        if (sh >= filled) filled = sh + 1;
      }
      head_pos.resize(size_t(kHkv * filled));  // [kHkv][filled], contiguous
      for (int h = 0; h < kHkv; ++h) std::copy_n(&pos[size_t(h * B)], filled, &head_pos[size_t(h * filled)]);
      ao.head_key_positions = head_pos.data();
    } else {
      std::memcpy(&kc[size_t(slot * row)], &k[size_t(t * row)], sizeof(float) * size_t(row));
      std::memcpy(&vc[size_t(slot * row)], &v[size_t(t * row)], sizeof(float) * size_t(row));
      for (int h = 0; h < kHkv; ++h) mass[size_t(h * B + slot)] = peak[size_t(h * B + slot)] = 0.f;
      pos[size_t(slot)] = t;
      if (slot >= filled) filled = slot + 1;
    }
    const sa_tensor q_t = tensor(&q[size_t(t * kHq * kD)], SA_DTYPE_F32, {1, kHq, kD});
    sa_tensor o_t = tensor(&a[size_t(t * kHq * kD)], SA_DTYPE_F32, {1, kHq, kD});
    const sa_tensor k_t = tensor(kc.data(), SA_DTYPE_F32, {filled, kHkv, kD});
    const sa_tensor v_t = tensor(vc.data(), SA_DTYPE_F32, {filled, kHkv, kD});
    sa_tensor m_t = tensor(mass.data(), SA_DTYPE_F32, {kHkv, filled}, {B, 1});
    ao.slot_mass = p.score == Score::streaming || p.score == Score::future || p.score == Score::expected ||
                           p.score == Score::keydiff ? nullptr : &m_t;
    if (ix) {
      const sa_tensor nk = tensor(&k[size_t(t * row)], SA_DTYPE_F32, {1, kHkv, kD});
      int64_t size = 0;
      check(sa_index_size(ix, &size), "sa_index_size");
      if (slot == size) check(sa_index_append(ix, &nk), "sa_index_append");
      else check(sa_index_update(ix, &slot, 1, &nk, &t), "sa_index_update");
      sa_tensor i_t = tensor(idx.data(), SA_DTYPE_I32, {1, kHkv, int64_t(idx.size()) / kHkv});
      check(sa_select(ix, &q_t, &so, &i_t), "sa_select");
      check(sa_attend(r.ctx, &q_t, &k_t, &v_t, &i_t, &ao, &o_t, nullptr), "sa_attend");
    } else {
      check(sa_attend(r.ctx, &q_t, &k_t, &v_t, nullptr, &ao, &o_t, nullptr), "sa_attend");
    }
    if (fm) fm->consume(t);
    if (ea) ea->observe(t);
    if (p.score == Score::peak)
      for (int h = 0; h < kHkv; ++h)
        for (int64_t s = 0; s < filled; ++s)
          peak[size_t(h * B + s)] = std::max(peak[size_t(h * B + s)] * p.decay, mass[size_t(h * B + s)]);
  }
  sa_index_destroy(&ix);
}

// Exact top-B keys per KV head over the whole history, per query (the best a B-slot cache
// could hold for that query).
void attend_oracle(const Run &r, const Policy &p, const std::vector<float> &q, const std::vector<float> &k,
                   const std::vector<float> &v, std::vector<float> &a) {
  const int64_t T = r.T, width = p.budget;
  sa_index_options io = SA_INDEX_OPTIONS_INIT;
  io.kind = SA_SELECTOR_EXACT;
  io.num_kv_heads = kHkv;
  io.head_dim = kD;
  io.dtype = SA_DTYPE_F32;
  io.capacity = T;
  sa_index *ix = nullptr;
  check(sa_index_create(r.ctx, &io, &ix), "sa_index_create");
  const sa_tensor k_t = tensor(k.data(), SA_DTYPE_F32, {T, kHkv, kD});
  const sa_tensor v_t = tensor(v.data(), SA_DTYPE_F32, {T, kHkv, kD});
  check(sa_index_append(ix, &k_t), "sa_index_append");
  std::vector<int64_t> qpos(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) qpos[size_t(t)] = t;
  sa_select_options so = SA_SELECT_OPTIONS_INIT;
  so.top_k = int32_t(width - kSinks - kWindow);
  so.window = kWindow;
  so.sinks = kSinks;
  sa_attend_options ao = SA_ATTEND_OPTIONS_INIT;
  ao.causal = 1;
  ao.query_positions = qpos.data();
  const int64_t chunk = 256;  // bounds the index lists' memory
  std::vector<int32_t> idx(size_t(chunk * kHkv * width));
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    const int64_t n = std::min(chunk, T - t0);
    so.query_positions = &qpos[size_t(t0)];
    ao.query_positions = &qpos[size_t(t0)];
    const sa_tensor q_t = tensor(&q[size_t(t0 * kHq * kD)], SA_DTYPE_F32, {n, kHq, kD});
    sa_tensor o_t = tensor(&a[size_t(t0 * kHq * kD)], SA_DTYPE_F32, {n, kHq, kD});
    sa_tensor i_t = tensor(idx.data(), SA_DTYPE_I32, {n, kHkv, width});
    check(sa_select(ix, &q_t, &so, &i_t), "sa_select");
    check(sa_attend(r.ctx, &q_t, &k_t, &v_t, &i_t, &ao, &o_t, nullptr), "sa_attend");
  }
  sa_index_destroy(&ix);
}

// Runs layers [first, last) on x ([T, 512], updated in place).
void layers(const Run &r, const Policy &p, int first, int last, std::vector<float> &x) {
  const int64_t T = r.T;
  std::vector<float> h(size_t(T * kModel)), q(size_t(T * kHq * kD)), k(size_t(T * kHkv * kD)),
      v(size_t(T * kHkv * kD)), a(size_t(T * kHq * kD)), g(size_t(T * kMlp)), u(size_t(T * kMlp)), qpre;
  for (int l = first; l < last; ++l) {
    const Layer &L = r.m->layers[l];
    rmsnorm(x.data(), L.n1.data(), h.data(), T);
    gemm_xwt(h.data(), L.wq.data(), q.data(), T, kHq * kD, kModel, false);
    gemm_xwt(h.data(), L.wk.data(), k.data(), T, kHkv * kD, kModel, false);
    gemm_xwt(h.data(), L.wv.data(), v.data(), T, kHkv * kD, kModel, false);
    if (p.score == Score::expected) qpre = q;
    rope(q.data(), T, kHq);
    rope(k.data(), T, kHkv);
    const Mode mode = l == 0 ? Mode::dense : p.mode;
    if (mode == Mode::dense) {
      const sa_tensor q_t = tensor(q.data(), SA_DTYPE_F32, {T, kHq, kD});
      const sa_tensor k_t = tensor(k.data(), SA_DTYPE_F32, {T, kHkv, kD});
      const sa_tensor v_t = tensor(v.data(), SA_DTYPE_F32, {T, kHkv, kD});
      sa_tensor o_t = tensor(a.data(), SA_DTYPE_F32, {T, kHq, kD});
      sa_attend_options ao = SA_ATTEND_OPTIONS_INIT;
      ao.causal = 1;
      check(sa_attend(r.ctx, &q_t, &k_t, &v_t, nullptr, &ao, &o_t, nullptr), "sa_attend");
    } else if (mode == Mode::oracle) {
      attend_oracle(r, p, q, k, v, a);
    } else {
      attend_cache(r, p, q, k, v, qpre, a);
    }
    gemm_xwt(a.data(), L.wo.data(), x.data(), T, kModel, kHq * kD, true);
    rmsnorm(x.data(), L.n2.data(), h.data(), T);
    gemm_xwt(h.data(), L.w1.data(), g.data(), T, kMlp, kModel, false);
    gemm_xwt(h.data(), L.w3.data(), u.data(), T, kMlp, kModel, false);
    for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
    gemm_xwt(g.data(), L.w2.data(), x.data(), T, kModel, kMlp, true);
  }
}

double bits_per_byte(const Run &r, const std::vector<float> &x, const std::vector<uint8_t> &tokens) {
  const int64_t T = r.T;
  std::vector<float> h(size_t(T * kModel)), logits(size_t(T * kVocab));
  rmsnorm(x.data(), r.m->norm.data(), h.data(), T);
  gemm_xwt(h.data(), r.m->head.data(), logits.data(), T, kVocab, kModel, false);
  double bits = 0;
  for (int64_t t = 0; t < T; ++t) {
    const float *lg = &logits[size_t(t * kVocab)];
    const float mx = *std::max_element(lg, lg + kVocab);
    double z = 0;
    for (int i = 0; i < kVocab; ++i) z += std::exp(double(lg[i] - mx));
    bits += (std::log(z) - double(lg[tokens[size_t(t + 1)]] - mx)) / std::log(2.0);
  }
  return bits / double(T);
}

std::vector<int64_t> int_list(const std::string &s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoll(item));
  return out;
}

// Policies by name; "NAME@DECAY" sets slot_mass's decay (h2o@0.99, mean@0.99, tova = h2o@0),
// for future* the horizon in queries (future@256: the mass of the next 256 queries; default all),
// "NAME/SHARE" sa_evict_options.recent_share (library/0.5@0.99; host-score policies too: future/0),
// "NAME+page" / "NAME+exact" page or exact selection (top_k 128) over the cache after any policy,
// "NAME~R" sa_evict_options.score_pool R (library~16: a slot ranks by the best score within 16
// positions; library~0: no pooling). peak@D (peakhead@D per KV head) ranks a slot by the most
// attention one step gave it, decayed: max(peak * D, this step's mass), given as host scores.
Policy parse_named(Policy p, const std::string &spec, const std::string &full_name);
Policy parse_policy(const std::string &spec) {
  Policy p;
  std::string spec_in = spec, spec_all = spec;
  const size_t tilde = spec_in.find('~');  // "NAME~R": sa_evict_options.score_pool R
  if (tilde != std::string::npos) {
    size_t end = tilde + 1;
    while (end < spec_in.size() && std::isdigit(static_cast<unsigned char>(spec_in[end]))) ++end;
    p.pool = std::stoi(spec_in.substr(tilde + 1, end - tilde - 1));
    spec_in.erase(tilde, end - tilde);
  }
  return parse_named(p, spec_in, spec_all);
}

Policy parse_named(Policy p, const std::string &spec, const std::string &full_name) {
  std::string name = spec;
  const size_t slash = spec.find('/');
  if (slash != std::string::npos) p.recent = std::stof(spec.substr(slash + 1));
  const size_t at = spec.find('@');
  if (at != std::string::npos) {
    name = spec.substr(0, std::min(at, slash));
    p.decay = std::stof(spec.substr(at + 1));
  }
  else if (slash != std::string::npos) name = spec.substr(0, slash);
  p.name = full_name;
  for (const char *suffix : {"+page", "+exact"}) {  // selection over the cache, after any policy
    const size_t at_suffix = name.find(suffix);
    if (at_suffix != std::string::npos && name != "library+page" && name != "h2o+page" && name != "mean+page") {
      p.page = true;
      p.selector = std::string(suffix) == "+page" ? SA_SELECTOR_PAGE : SA_SELECTOR_EXACT;
      name = name.substr(0, at_suffix);
    }
  }
  if (name == "dense") p.mode = Mode::dense;
  else if (name == "oracle") p.mode = Mode::oracle;
  else if (name == "streaming") p.score = Score::streaming;
  else if (name == "library" || name == "library+page") {
    p.score = Score::library;  // both defaults: sa_attend's mass_decay unless given
    p.page = p.page || name == "library+page";
    if (at == std::string::npos) p.decay = sa_attend_options_default().mass_decay;
  }
  else if (name == "perhead") {
    p.score = Score::library, p.per_head = true;
    if (at == std::string::npos) p.decay = sa_attend_options_default().mass_decay;
  }
  else if (name == "h2o") p.score = Score::raw;
  else if (name == "h2o+page") p.score = Score::raw, p.page = true;
  else if (name == "tova") p.score = Score::raw, p.decay = 0.f;
  else if (name == "mean") p.score = Score::mean;
  else if (name == "mean+page") p.score = Score::mean, p.page = true;
  else if (name == "h2omax") p.score = Score::raw, p.head_max = true;
  else if (name == "tovamax") p.score = Score::raw, p.decay = 0.f, p.head_max = true;
  else if (name == "meanmax") p.score = Score::mean, p.head_max = true;
  else if (name == "future") p.score = Score::future;
  else if (name == "futurehead") p.score = Score::future, p.per_head = true;
  else if (name == "futuremax") p.score = Score::future, p.head_max = true;
  else if (name == "ea") p.score = Score::expected;
  else if (name == "eahead") p.score = Score::expected, p.per_head = true;
  else if (name == "keydiff") p.score = Score::keydiff;
  else if (name == "peak") p.score = Score::peak;
  else if (name == "peakhead") p.score = Score::peak, p.per_head = true;
  else die("unknown policy " + spec);
  if (p.page && p.per_head) die(spec + ": selection over per-KV-head caches is not in this tool");
  return p;
}

}  // namespace

int main(int argc, char **argv) {
  std::string model_path, text_path;
  std::string seqs = "0,1,2", budgets = "256,512,1024";
  std::string policies = "streaming,h2o,h2o@0.99,library,perhead,library+page,oracle";
  int64_t T = 4096;
  int threads = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value after " + a);
      return argv[++i];
    };
    if (a == "--model") model_path = next();
    else if (a == "--text") text_path = next();
    else if (a == "--seqs") seqs = next();
    else if (a == "--tokens") T = std::stoll(next());
    else if (a == "--budgets") budgets = next();
    else if (a == "--policies") policies = next();
    else if (a == "--threads") threads = std::stoi(next());
    else die("usage: tinylm_eval --model model.safetensors --text dev_text.bin [--seqs 0,1,2] [--tokens 4096] "
             "[--budgets 256,512,1024] [--policies streaming,h2o,h2o@0.99,mean,tova,library,library~16,perhead,library+page,"
             "library+exact,ea,eahead,keydiff,peak@0.99,peakhead,future/0,futurehead/0,future@256/0,oracle] "
             "[--threads N]");
  }
  if (model_path.empty() || text_path.empty()) die("--model and --text are required");
  if (T < 2 || T > 8192) die("--tokens must be in [2, 8192]");
  if (threads > 0) omp_set_num_threads(threads);
  const auto t_start = std::chrono::steady_clock::now();

  Model model;
  try {
    model = load_model(model_path);
  } catch (const std::exception &e) {
    die(e.what());
  }
  std::ifstream f(text_path, std::ios::binary);
  if (!f) die("cannot open " + text_path);
  std::vector<uint8_t> text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const int64_t seq_len = 8193;

  std::vector<Policy> runs;
  for (const std::string &spec : [&] {
         std::vector<std::string> v;
         std::stringstream ss(policies);
         std::string s;
         while (std::getline(ss, s, ',')) v.push_back(s);
         return v;
       }()) {
    Policy p = parse_policy(spec);
    if (p.mode == Mode::dense) continue;  // always run once below
    for (int64_t b : int_list(budgets)) {
      if (b < kSinks + kWindow + 1) die("budgets must exceed sinks + window");
      p.budget = b;
      runs.push_back(p);
    }
  }
  runs.insert(runs.begin(), parse_policy("dense"));
  const std::vector<int64_t> seq_ids = int_list(seqs);
  for (int64_t s : seq_ids)
    if (s < 0 || (s + 1) * seq_len > int64_t(text.size())) die("sequence " + std::to_string(s) + " not in the text");

  sa_context_options co = SA_CONTEXT_OPTIONS_INIT;
  co.threads = 1;  // one run per OpenMP thread
  sa_context *ctx = nullptr;
  check(sa_context_create(&co, &ctx), "sa_context_create");
  const Run base{ctx, &model, T};

  // Layer 0 (dense for every run) once per sequence.
  std::vector<std::vector<float>> x0(seq_ids.size());
  std::vector<std::vector<uint8_t>> toks(seq_ids.size());
#pragma omp parallel for schedule(dynamic)
  for (size_t si = 0; si < seq_ids.size(); ++si) {
    toks[si].assign(text.begin() + seq_ids[si] * seq_len, text.begin() + seq_ids[si] * seq_len + T + 1);
    x0[si].resize(size_t(T * kModel));
    for (int64_t t = 0; t < T; ++t)
      std::memcpy(&x0[si][size_t(t * kModel)], &model.emb[size_t(toks[si][size_t(t)]) * kModel], sizeof(float) * kModel);
    layers(base, parse_policy("dense"), 0, 1, x0[si]);
  }

  std::vector<double> bpb(runs.size() * seq_ids.size(), 0.0);
  const int64_t jobs = int64_t(bpb.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t j = 0; j < jobs; ++j) {
    const Policy &p = runs[size_t(j) / seq_ids.size()];
    const size_t si = size_t(j) % seq_ids.size();
    std::vector<float> x = x0[si];
    layers(base, p, 1, kLayers, x);
    bpb[size_t(j)] = bits_per_byte(base, x, toks[si]);
    std::fprintf(stderr, "  %s B=%lld seq %lld: %.4f\n", p.name.c_str(), (long long)p.budget,
                 (long long)seq_ids[si], bpb[size_t(j)]);
  }
  sa_context_destroy(&ctx);

  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  std::printf("tinylm_eval: T = %lld, sequences %s, sinks %d, window %d, layer 0 dense; %.1f s on %d threads\n",
              (long long)T, seqs.c_str(), kSinks, kWindow, seconds, omp_get_max_threads());
  std::printf("%-16s %6s", "policy", "B");
  for (int64_t s : seq_ids) std::printf("  seq%-4lld", (long long)s);
  std::printf("  %8s  %8s\n", "mean", "gap");
  double dense_mean = 0;
  for (size_t si = 0; si < seq_ids.size(); ++si) dense_mean += bpb[si];
  dense_mean /= double(seq_ids.size());
  for (size_t ri = 0; ri < runs.size(); ++ri) {
    double mean = 0;
    std::printf("%-16s %6lld", runs[ri].name.c_str(), (long long)runs[ri].budget);
    for (size_t si = 0; si < seq_ids.size(); ++si) {
      std::printf("  %7.4f", bpb[ri * seq_ids.size() + si]);
      mean += bpb[ri * seq_ids.size() + si];
    }
    mean /= double(seq_ids.size());
    std::printf("  %8.4f  %+7.2f%%\n", mean, 100.0 * (mean / dense_mean - 1.0));
  }
  return 0;
}
