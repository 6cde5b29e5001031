// Attention mass captured by a selector against the exact top-K oracle on tinylm-qkv, in the
// decode setting: a query at position t selects K keys among [0, t - window] and always keeps
// the window of the last 64 positions; no sinks. Mass = the summed exact softmax probability
// (averaged over the query group) of the chosen keys, window included. --rescore R sets the
// learned selector's two-stage factor (R * K candidates rescored exactly; 0: one stage;
// default: the library's); the fraction of scored keys that were rescored is printed. For the
// indexer (one list per token for every head) the mass of the best possible single list (exact
// top K by probability summed over all query heads) is printed beside it, as its ceiling, with
// the indexer's recall of that list (recall_1l) and its mass loss relative to it (vs_1l).
//
//   build/tools/learned_quality DATA_DIR WEIGHTS.safetensors [learned|indexer] [--rescore R] [layers...]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>
#include <utility>
#include <string>
#include <vector>

#include "npy_f16.hpp"
#include "sparseattn.h"

namespace {

constexpr int kWindow = 64, kQueries = 256;

void check(sa_status s, const char *what) {
  if (s != SA_OK) {
    std::fprintf(stderr, "%s: %s: %s\n", what, sa_status_name(s), sa_last_error());
    std::exit(1);
  }
}

sa_tensor view(float *data, int64_t a, int64_t b, int64_t c) {
  sa_tensor t;
  std::memset(&t, 0, sizeof t);
  t.data = data, t.dtype = SA_DTYPE_F32, t.device = SA_DEVICE_CPU, t.rank = 3;
  t.shape[0] = a, t.shape[1] = b, t.shape[2] = c;
  return t;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s DATA_DIR WEIGHTS.safetensors [learned|indexer] [--rescore R] [layers...]\n",
                 argv[0]);
    return 2;
  }
  const std::string dir = argv[1], weights = argv[2];
  sa_selector_kind kind = SA_SELECTOR_LEARNED;
  std::vector<int> layers;
  int64_t rescore = sa_index_options_default().learned.rescore;
  for (int a = 3; a < argc; ++a) {
    if (!std::strcmp(argv[a], "indexer")) kind = SA_SELECTOR_INDEXER;
    else if (!std::strcmp(argv[a], "--rescore") && a + 1 < argc) rescore = std::atoll(argv[++a]);
    else if (std::strcmp(argv[a], "learned")) layers.push_back(std::atoi(argv[a]));
  }
  if (layers.empty()) layers = {1, 3, 5, 7};
  sa_context *ctx = nullptr;
  check(sa_context_create(nullptr, &ctx), "sa_context_create");

  if (kind == SA_SELECTOR_LEARNED) std::printf("rescore %lld\n", (long long)rescore);
  std::printf("layer   K  mass_exact  mass_sel  diff_pts  rel_loss  recall  rescored%s\n",
              kind == SA_SELECTOR_INDEXER ? "  one_list_ceiling  its_loss  recall_1l  vs_1l" : "");
  double sum_rel[2] = {0, 0};
  for (int L : layers) {
    NpyF16 q = read_npy_f16(dir + "/q" + std::to_string(L) + ".npy");
    NpyF16 k = read_npy_f16(dir + "/k" + std::to_string(L) + ".npy");
    const int64_t T = k.shape[0], Hq = q.shape[1], Hkv = k.shape[1], D = k.shape[2], G = Hq / Hkv;
    const int64_t t0 = T - kQueries;  // late queries

    sa_index_options o = SA_INDEX_OPTIONS_INIT;
    o.num_kv_heads = int32_t(Hkv), o.head_dim = int32_t(D), o.dtype = SA_DTYPE_F16;
    sa_index *exact = nullptr, *sel = nullptr;
    check(sa_index_create(ctx, &o, &exact), "exact index");
    o.kind = kind, o.learned.weights_path = weights.c_str(), o.learned.layer = L, o.learned.rescore = rescore;
    check(sa_index_create(ctx, &o, &sel), "learned index");
    sa_tensor kt = view(k.values.data(), T, Hkv, D);
    check(sa_index_append(exact, &kt), "append");
    check(sa_index_append(sel, &kt), "append");

    // Exact probabilities of every late query head over its visible keys.
    std::vector<double> prob(size_t(kQueries * Hq * T), 0.0);
    for (int64_t i = 0; i < kQueries; ++i)
      for (int64_t g = 0; g < Hq; ++g) {
        const float *qv = &q.values[size_t(((t0 + i) * Hq + g) * D)];
        double *p = &prob[size_t((i * Hq + g) * T)], m = -INFINITY, z = 0;
        for (int64_t s = 0; s <= t0 + i; ++s) {
          const float *kv = &k.values[size_t((s * Hkv + g / G) * D)];
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += double(qv[d]) * kv[d];
          p[s] = dot / std::sqrt(double(D));
          m = std::max(m, p[s]);
        }
        for (int64_t s = 0; s <= t0 + i; ++s) z += (p[s] = std::exp(p[s] - m));
        for (int64_t s = 0; s <= t0 + i; ++s) p[s] /= z;
      }

    std::vector<int64_t> qpos(kQueries);
    for (int64_t i = 0; i < kQueries; ++i) qpos[size_t(i)] = t0 + i;
    sa_tensor qt = view(&q.values[size_t(t0 * Hq * D)], kQueries, Hq, D);
    for (int ki = 0; ki < 2; ++ki) {
      const int K = ki == 0 ? 128 : 256, width = kWindow + K;
      sa_select_options so = SA_SELECT_OPTIONS_INIT;
      so.top_k = K, so.window = kWindow, so.sinks = 0, so.query_positions = qpos.data();
      std::vector<int32_t> want(size_t(kQueries * Hkv * width)), got(want.size());
      sa_tensor wt = view(reinterpret_cast<float *>(want.data()), kQueries, Hkv, width);
      sa_tensor gt = wt;
      wt.dtype = gt.dtype = SA_DTYPE_I32;
      gt.data = got.data();
      check(sa_select(exact, &qt, &so, &wt), "exact select");
      check(sa_select(sel, &qt, &so, &gt), "select");
      double mass_exact = 0, mass_sel = 0, hits = 0, scored = 0, rescored = 0;
      for (int64_t i = 0; i < kQueries; ++i) {  // of the keys outside the window, those rescored
        const double outside = double(qpos[size_t(i)] - kWindow + 1);
        rescored += kind == SA_SELECTOR_LEARNED ? std::min(outside, double(rescore) * K) / outside : 0.0;
      }
      rescored /= kQueries;
      for (int64_t i = 0; i < kQueries; ++i)
        for (int64_t h = 0; h < Hkv; ++h) {
          const int32_t *a = &want[size_t((i * Hkv + h) * width)], *b = &got[size_t((i * Hkv + h) * width)];
          std::set<int32_t> exact_scored;
          for (int c = 0; c < width; ++c)
            if (a[c] >= 0 && a[c] <= qpos[size_t(i)] - kWindow) exact_scored.insert(a[c]);
          for (int c = 0; c < width; ++c)
            if (b[c] >= 0 && b[c] <= qpos[size_t(i)] - kWindow) hits += exact_scored.count(b[c]);
          scored += double(exact_scored.size());
          for (int64_t g = h * G; g < (h + 1) * G; ++g) {
            const double *p = &prob[size_t((i * Hq + g) * T)];
            for (int c = 0; c < width; ++c) {
              if (a[c] >= 0) mass_exact += p[a[c]] / double(G);
              if (b[c] >= 0) mass_sel += p[b[c]] / double(G);
            }
          }
        }
      // The ceiling of any one-list-per-token selector (the indexer): the exact top K by the
      // probability summed over every query head, window apart.
      double mass_shared = 0, hits_shared = 0, scored_shared = 0;
      for (int64_t i = 0; i < kQueries && kind == SA_SELECTOR_INDEXER; ++i) {
        const int64_t last = qpos[size_t(i)] - kWindow;  // scored keys: [0, last]
        std::vector<std::pair<double, int64_t>> total;
        for (int64_t s = 0; s <= last; ++s) {
          double x = 0;
          for (int64_t g = 0; g < Hq; ++g) x += prob[size_t((i * Hq + g) * T + s)];
          total.push_back({-x, s});
        }
        const size_t take = std::min(total.size(), size_t(K));
        std::partial_sort(total.begin(), total.begin() + long(take), total.end());
        double m = 0;
        for (int64_t g = 0; g < Hq; ++g) {
          const double *p = &prob[size_t((i * Hq + g) * T)];
          for (int64_t s = last + 1; s <= qpos[size_t(i)]; ++s) m += p[s];
          for (size_t c = 0; c < take; ++c) m += p[total[c].second];
        }
        mass_shared += m / double(Hq);
        std::set<int64_t> shared;  // the indexer writes one list: row 0 of query i
        for (size_t c = 0; c < take; ++c) shared.insert(total[c].second);
        const int32_t *b = &got[size_t(i * Hkv * width)];
        for (int c = 0; c < width; ++c)
          if (b[c] >= 0 && b[c] <= last) hits_shared += double(shared.count(b[c]));
        scored_shared += double(take);
      }
      const double n = double(kQueries * Hkv);
      mass_exact /= n, mass_sel /= n;
      mass_shared /= double(kQueries);
      const double rel = (mass_exact - mass_sel) / mass_exact;
      sum_rel[ki] += rel;
      std::printf("%5d %4d  %10.4f  %8.4f  %8.2f  %7.2f%%  %6.3f  %7.1f%%", L, K, mass_exact, mass_sel,
                  100 * (mass_exact - mass_sel), 100 * rel, hits / scored, 100 * rescored);
      if (kind == SA_SELECTOR_INDEXER)
        std::printf("  %10.4f  %7.2f%%  %9.3f  %5.2f%%", mass_shared, 100 * (mass_exact - mass_shared) / mass_exact,
                    hits_shared / std::max(scored_shared, 1.0), 100 * (mass_shared - mass_sel) / mass_shared);
      std::printf("\n");
    }
    sa_index_destroy(&exact);
    sa_index_destroy(&sel);
  }
  std::printf("mean relative mass loss: K=128 %.2f%%, K=256 %.2f%%\n", 100 * sum_rel[0] / double(layers.size()),
              100 * sum_rel[1] / double(layers.size()));
  sa_context_destroy(&ctx);
  return 0;
}
