// Selection speed, and a whole sparse decode step:
//   select_exact/f16/N:n/threads:T  one decode query (H_q=32) against an EXACT index
//                                   of n f16 keys (H_kv=8, D=128): top_k=2048,
//                                   window=64, sinks=4. "GB/s": index keys scored.
//   decode_step/f16/N:n/threads:T   the same selection, then sa_attend over the
//                                   chosen keys of an f16 K/V cache.
//   select_hnsw_k{K}/f16/N:n/...    one decode query against an HNSW index of the same keys
//                                   (one layer; M=12, efC=48, ef_search=256), top_k=K.
//   build_hnsw/f16/N:n/threads:T    sa_index_append of n keys (8 KV heads) into a fresh HNSW
//                                   index; "keys/s" counts keys of every head.
// Each iteration uses the next of several cache-cold layers (bench_common.hpp),
// each with its own index over that layer's keys.
//
//   build/bench/bench_select --benchmark_filter='N:131072'
#include "bench_common.hpp"

namespace {

using namespace bench;

constexpr int kWidth = kSinks + kWindow + kTopK;

// Indexes over the keys of each layer, built with the context of `threads`.
// Only the last set asked for is kept.
struct Indexes {
    int64_t n = -1;
    int threads = -1;
    std::vector<sa_index *> ix;
    ~Indexes() { clear(); }
    void clear() {
        for (sa_index *&p : ix) sa_index_destroy(&p);
        ix.clear();
    }
    sa_status build(const Layers &layers, int t) {
        if (n == layers.n && threads == t) return SA_OK;
        clear();
        n = -1;
        sa_index_options o = sa_index_options_default();
        o.kind = SA_SELECTOR_EXACT;
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
        return SA_OK;
    }
};

Indexes indexes;

void BM_select(benchmark::State &state, int64_t n, int threads, bool attend) {
    sa_context *ctx = context(threads);
    if (!ctx) return state.SkipWithError("sa_context_create failed");
    Layers layers(SA_DTYPE_F16, n);
    if (!ok(state, indexes.build(layers, threads), "building the indexes")) return;
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

sa_index_options hnsw_options(int64_t n) {
    sa_index_options o = sa_index_options_default();
    o.kind = SA_SELECTOR_HNSW;
    o.num_kv_heads = kHkv;
    o.head_dim = kD;
    o.dtype = SA_DTYPE_F16;
    o.capacity = n;
    o.hnsw.m = 12;  // the fast-build setting (bench/hnsw_tuning)
    o.hnsw.ef_construction = 48;
    o.hnsw.ef_search = 256;
    return o;
}

// One HNSW index over layer 0's keys, kept for the thread count and size last asked for.
struct HnswIndex {
    int64_t n = -1;
    int threads = -1;
    sa_index *ix = nullptr;
    ~HnswIndex() { sa_index_destroy(&ix); }
    sa_status build(const Layers &layers, int t) {
        if (n == layers.n && threads == t) return SA_OK;
        sa_index_destroy(&ix);
        n = -1;
        sa_index_options o = hnsw_options(layers.n);
        sa_status st = sa_index_create(context(t), &o, &ix);
        if (st != SA_OK) return st;
        sa_tensor keys = tensor(layers.k(0), SA_DTYPE_F16, {layers.n, kHkv, kD});
        if ((st = sa_index_append(ix, &keys)) != SA_OK) return st;
        n = layers.n;
        threads = t;
        return SA_OK;
    }
};

HnswIndex hnsw_index;

void BM_select_hnsw(benchmark::State &state, int64_t n, int threads, int top_k) {
    if (!context(threads)) return state.SkipWithError("sa_context_create failed");
    Layers layers(SA_DTYPE_F16, n);
    if (!ok(state, hnsw_index.build(layers, threads), "building the HNSW index")) return;
    const int nq = 8, width = kSinks + kWindow + top_k;
    std::vector<float> q = queries(nq);
    std::vector<int32_t> idx(size_t(kHkv) * size_t(width));
    sa_select_options so = sa_select_options_default();
    so.top_k = top_k;
    so.window = kWindow;
    so.sinks = kSinks;
    sa_tensor it = tensor(idx.data(), SA_DTYPE_I32, {1, kHkv, width});
    int64_t i = 0;
    for (auto _ : state) {
        sa_tensor qt = tensor(q.data() + (i % nq) * kHq * kD, SA_DTYPE_F32, {1, kHq, kD});
        if (!ok(state, sa_select(hnsw_index.ix, &qt, &so, &it), "sa_select")) break;
        benchmark::DoNotOptimize(idx.data());
        ++i;
    }
}

void BM_build_hnsw(benchmark::State &state, int64_t n, int threads) {
    sa_context *ctx = context(threads);
    if (!ctx) return state.SkipWithError("sa_context_create failed");
    Layers layers(SA_DTYPE_F16, n);
    sa_index_options o = hnsw_options(n);
    sa_tensor keys = tensor(layers.k(0), SA_DTYPE_F16, {n, kHkv, kD});
    for (auto _ : state) {
        sa_index *ix = nullptr;
        if (!ok(state, sa_index_create(ctx, &o, &ix), "sa_index_create")) break;
        sa_status st = sa_index_append(ix, &keys);
        sa_index_destroy(&ix);
        if (!ok(state, st, "sa_index_append")) break;
    }
    state.counters["keys/s"] = benchmark::Counter(double(n) * kHkv * double(state.iterations()),
                                                  benchmark::Counter::kIsRate);
}

void register_all() {
    for (int64_t n : {4096, 32768, 131072})
        for (int t : {1, 2})  // in this order, each set of indexes is built once
            for (bool attend : {false, true})
                benchmark::RegisterBenchmark(
                    name(attend ? "decode_step" : "select_exact", SA_DTYPE_F16, n, t).c_str(),
                    BM_select, n, t, attend)
                    ->UseRealTime()
                    ->Unit(benchmark::kMicrosecond);
    for (int64_t n : {32768, 131072})
        for (int t : {1, 2})
            for (int k : {128, kTopK})
                benchmark::RegisterBenchmark(
                    name(("select_hnsw_k" + std::to_string(k)).c_str(), SA_DTYPE_F16, n, t).c_str(),
                    BM_select_hnsw, n, t, k)
                    ->UseRealTime()
                    ->Unit(benchmark::kMicrosecond);
    for (int t : {1, 2})  // building takes seconds: one iteration
        benchmark::RegisterBenchmark(name("build_hnsw", SA_DTYPE_F16, 32768, t).c_str(), BM_build_hnsw, 32768, t)
            ->Iterations(1)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char **argv) {
    register_all();
    int rc = bench::run_main(argc, argv);
    indexes.clear();  // before the contexts they use go away with the process
    sa_index_destroy(&hnsw_index.ix);
    return rc;
}
