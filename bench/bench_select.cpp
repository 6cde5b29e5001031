// Selection speed, and a whole sparse decode step:
//   select_exact/f16/N:n/threads:T  one decode query (H_q=32) against an EXACT index
//                                   of n f16 keys (H_kv=8, D=128): top_k=2048,
//                                   window=64, sinks=4. "GB/s": index keys scored.
//   select_page/..., select_page_norefine/..., select_lsh/...
//                                   the same query against a PAGE index (page_size 16,
//                                   with and without refine) and an LSH index (defaults).
//                                   "GB/s": the index's keys per second, as for exact, so
//                                   the ratio to exact is the time ratio.
//   decode_step/f16/N:n/threads:T   the same selection, then sa_attend over the
//                                   chosen keys of an f16 K/V cache.
// Each iteration uses the next of several cache-cold layers (bench_common.hpp),
// each with its own index over that layer's keys.
//
//   build/bench/bench_select --benchmark_filter='N:131072'
#include "bench_common.hpp"

namespace {

using namespace bench;

constexpr int kWidth = kSinks + kWindow + kTopK;

struct Kind {
    const char *name;
    sa_selector_kind kind;
    int refine;
};
constexpr Kind kKinds[] = {{"select_exact", SA_SELECTOR_EXACT, 0}, {"select_page", SA_SELECTOR_PAGE, 1},
                           {"select_page_norefine", SA_SELECTOR_PAGE, 0},
                           {"select_lsh", SA_SELECTOR_LSH, 0}};

// Indexes over the keys of each layer, built with the context of `threads`.
// Only the last set asked for is kept.
struct Indexes {
    int64_t n = -1;
    int threads = -1;
    const Kind *kind = nullptr;
    std::vector<sa_index *> ix;
    ~Indexes() { clear(); }
    void clear() {
        for (sa_index *&p : ix) sa_index_destroy(&p);
        ix.clear();
    }
    sa_status build(const Layers &layers, int t, const Kind &k) {
        if (n == layers.n && threads == t && kind == &k) return SA_OK;
        clear();
        n = -1;
        sa_index_options o = sa_index_options_default();
        o.kind = k.kind;
        o.page.refine = k.refine;
        o.num_kv_heads = kHkv;
        o.head_dim = kD;
        o.dtype = SA_DTYPE_F16;
        o.capacity = layers.n;
        for (int l = 0; l < layers.count; ++l) {
            sa_index *p = nullptr;
            sa_status st = sa_index_create(context(t), &o, &p);
            if (st != SA_OK) return st;
            ix.push_back(p);
            sa_tensor keys = tensor(layers.k(l), SA_DTYPE_F16, {layers.n, kHkv, kD});
            if ((st = sa_index_append(p, &keys)) != SA_OK) return st;
        }
        n = layers.n;
        threads = t;
        kind = &k;
        return SA_OK;
    }
};

Indexes indexes;

void BM_select(benchmark::State &state, int64_t n, int threads, const Kind *kind, bool attend) {
    sa_context *ctx = context(threads);
    if (!ctx) return state.SkipWithError("sa_context_create failed");
    Layers layers(SA_DTYPE_F16, n);
    if (!ok(state, indexes.build(layers, threads, *kind), "building the indexes")) return;
    const int nq = 8;
    std::vector<float> q = queries(nq), out(size_t(kHq) * kD);
    std::vector<int32_t> idx(size_t(kHkv) * kWidth);
    sa_select_options so = sa_select_options_default();
    so.top_k = kTopK;
    so.window = kWindow;
    so.sinks = kSinks;
    sa_attend_options ao = sa_attend_options_default();
    sa_tensor it = tensor(idx.data(), SA_DTYPE_I32, {1, kHkv, kWidth});
    sa_tensor ot = tensor(out.data(), SA_DTYPE_F32, {1, kHq, kD});
    int64_t i = 0;
    for (auto _ : state) {
        int l = int(i % layers.count);
        sa_tensor qt = tensor(q.data() + (i % nq) * kHq * kD, SA_DTYPE_F32, {1, kHq, kD});
        if (!ok(state, sa_select(indexes.ix[size_t(l)], &qt, &so, &it), "sa_select")) break;
        if (attend) {
            sa_tensor kt = tensor(layers.k(l), SA_DTYPE_F16, {n, kHkv, kD});
            sa_tensor vt = tensor(layers.v(l), SA_DTYPE_F16, {n, kHkv, kD});
            if (!ok(state, sa_attend(ctx, &qt, &kt, &vt, &it, &ao, &ot, nullptr), "sa_attend"))
                break;
        }
        benchmark::DoNotOptimize(idx.data());
        benchmark::DoNotOptimize(out.data());
        ++i;
    }
    if (!attend) set_gbps(state, double(n) * kRow * 2);
    state.SetLabel("layers=" + std::to_string(layers.count));
}

void register_all() {
    for (int64_t n : {4096, 32768, 131072})
        for (int t : {1, 2})  // in this order, each set of indexes is built once
            for (const Kind &k : kKinds)
                for (bool attend : {false, true}) {
                    if (attend && &k != &kKinds[0]) continue;  // decode_step: exact only
                    benchmark::RegisterBenchmark(
                        name(attend ? "decode_step" : k.name, SA_DTYPE_F16, n, t).c_str(),
                        BM_select, n, t, &k, attend)
                        ->UseRealTime()
                        ->Unit(benchmark::kMicrosecond);
                }
}

}  // namespace

int main(int argc, char **argv) {
    register_all();
    int rc = bench::run_main(argc, argv);
    indexes.clear();  // before the contexts they use go away with the process
    return rc;
}
