// Selection speed, and a whole sparse decode step:
//   select_exact/f16/N:n/threads:T  one decode query (H_q=32) against an EXACT index
//                                   of n f16 keys (H_kv=8, D=128): top_k=2048,
//                                   window=64, sinks=4. "GB/s": index keys scored.
//   select_page/..., select_page_norefine/..., select_lsh/...
//                                   the same query against a PAGE index (page_size 16,
//                                   with and without refine) and an LSH index (defaults).
//                                   "GB/s": the index's keys per second, as for exact, so
//                                   the ratio to exact is the time ratio.
//   select_exact_borrowed/..., select_page_borrowed/...
//                                   the same with indexes created with borrow_keys: they
//                                   keep no copy of the keys and read the layer's K cache
//                                   (token-major [n, H_kv, D], sa_select_options.keys).
//   decode_step/f16/N:n/threads:T   the same selection, then sa_attend over the
//                                   chosen keys of an f16 K/V cache (exact).
//   decode_step_page/..., decode_step_lsh/...
//                                   the same with the page (refine) and LSH indexes: one
//                                   decode step of a sparse model, measured as one.
// Each iteration uses the next of several cache-cold layers (bench_common.hpp),
// each with its own index over that layer's keys, and the caches are flushed before each
// timed call. N:524288: select_page and decode_step_page only (one 2 GiB layer).
//
// Every selector kind next to exact (the kinds of bench/decode_selection.hpp; kinds the
// library does not build are skipped with SA_ERR_UNSUPPORTED), one index over one layer of
// n random f16 keys (past the last-level cache from 32K keys on), built before timing:
//   select/KIND/decode/f16/N:n/threads:T     one decode query, as select_exact above
//   select/KIND/prefill4k/f16/N:n/threads:2  4096 queries at the last 4096 positions
//                                            (causal), one sa_select call. Slow for exact:
//                                            0.5 TFLOP of scoring at 32K (35 s measured
//                                            on a loaded 2-core machine), 2 TFLOP at 128K.
//   select/KIND/prefill4k_k128/f16/N:4096/threads:T
//                                            4096 queries over 4096 keys (a prompt's own
//                                            keys, causal), top_k=128
//   select/KIND/prefill1k_k128/f16/N:16384/threads:T
//                                            a later chunk of a chunked prefill: 1024
//                                            queries at positions 15360..16383, top_k=128
//   select/KIND/decode_k128/...              the decode query with top_k=128 (the graph
//                                            kinds' regime: a few candidates per head)
//   build/KIND/f16/N:n/threads:T             sa_index_create + sa_index_append of n keys
//                                            (8 KV heads); "keys/s" counts keys of every head.
//
//   build/bench/bench_select --benchmark_filter='N:131072'
//   build/bench/bench_select --benchmark_filter='select/.*/decode/.*N:32768'
#include "bench_common.hpp"
#include "decode_selection.hpp"

namespace {

using namespace bench;

constexpr int kWidth = kSinks + kWindow + kTopK;

struct Kind {
    const char *name;
    sa_selector_kind kind;
    int refine;
    int borrow = 0;
};
constexpr Kind kKinds[] = {{"select_exact", SA_SELECTOR_EXACT, 0}, {"select_page", SA_SELECTOR_PAGE, 1},
                           {"select_page_norefine", SA_SELECTOR_PAGE, 0},
                           {"select_lsh", SA_SELECTOR_LSH, 0},
                           {"select_exact_borrowed", SA_SELECTOR_EXACT, 0, 1},
                           {"select_page_borrowed", SA_SELECTOR_PAGE, 1, 1}};

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
        o.borrow_keys = k.borrow;
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
    if (kind->borrow)  // a borrowing page index computes its bounds in its first selection
        for (int l = 0; l < layers.count; ++l) {
            sa_tensor qt = tensor(q.data(), SA_DTYPE_F32, {1, kHq, kD});
            sa_tensor host_k = tensor(layers.k(l), SA_DTYPE_F16, {n, kHkv, kD});
            so.keys = &host_k;
            if (!ok(state, sa_select(indexes.ix[size_t(l)], &qt, &so, &it), "sa_select")) return;
        }
    int64_t i = 0;
    for (auto _ : state) {
        flush_caches(state);
        int l = int(i % layers.count);
        sa_tensor qt = tensor(q.data() + (i % nq) * kHq * kD, SA_DTYPE_F32, {1, kHq, kD});
        sa_tensor host_k = tensor(layers.k(l), SA_DTYPE_F16, {n, kHkv, kD});
        so.keys = kind->borrow ? &host_k : nullptr;
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

// One index of a selector kind over the first layer's keys, built with the context of
// `threads`. Only the last one asked for is kept (an exact index at 128K holds 256 MiB).
struct KindIndex {
    std::string kind;
    int64_t n = -1;
    int threads = -1;
    sa_index *ix = nullptr;
    ~KindIndex() { sa_index_destroy(&ix); }
    sa_status build(const quality::SelectorKind &k, const Layers &layers, int t) {
        if (ix && kind == k.name && n == layers.n && threads == t) return SA_OK;
        sa_index_destroy(&ix);
        sa_index_options o = k.options;
        o.num_kv_heads = kHkv;
        o.head_dim = kD;
        o.dtype = SA_DTYPE_F16;
        o.capacity = layers.n;
        sa_status st = sa_index_create(context(t), &o, &ix);
        if (st != SA_OK) return st;
        sa_tensor keys = tensor(layers.k(0), SA_DTYPE_F16, {layers.n, kHkv, kD});
        if ((st = sa_index_append(ix, &keys)) != SA_OK) {
            sa_index_destroy(&ix);
            return st;
        }
        kind = k.name;
        n = layers.n;
        threads = t;
        return SA_OK;
    }
};

KindIndex kind_index;

// n_queries: 1 (decode) or a prefill chunk at the last n_queries positions.
void BM_select_kind(benchmark::State &state, const quality::SelectorKind *kind, int64_t n, int threads,
                    int64_t n_queries, int top_k) {
    if (!context(threads)) return state.SkipWithError("sa_context_create failed");
    Layers layers(SA_DTYPE_F16, n);
    if (!ok(state, kind_index.build(*kind, layers, threads), (kind->name + ": building the index").c_str()))
        return;
    const int sets = n_queries == 1 ? 8 : 1;  // decode rotates through a few queries
    std::vector<float> q = queries(int(n_queries * sets));
    const int64_t width = kSinks + kWindow + top_k;
    std::vector<int32_t> idx(size_t(n_queries) * kHkv * size_t(width));
    sa_select_options so = sa_select_options_default();
    so.top_k = top_k;
    so.window = kWindow;
    so.sinks = kSinks;
    sa_tensor it = tensor(idx.data(), SA_DTYPE_I32, {n_queries, kHkv, width});
    int64_t i = 0;
    for (auto _ : state) {
        const float *qi = q.data() + (i % sets) * n_queries * kHq * kD;
        sa_tensor qt = tensor(qi, SA_DTYPE_F32, {n_queries, kHq, kD});
        if (!ok(state, sa_select(kind_index.ix, &qt, &so, &it), "sa_select")) break;
        benchmark::DoNotOptimize(idx.data());
        ++i;
    }
    state.counters["queries/s"] =
        benchmark::Counter(double(n_queries) * double(state.iterations()), benchmark::Counter::kIsRate);
    state.SetLabel(kind->about);
}

void BM_build_kind(benchmark::State &state, const quality::SelectorKind *kind, int64_t n, int threads) {
    sa_context *ctx = context(threads);
    if (!ctx) return state.SkipWithError("sa_context_create failed");
    Layers layers(SA_DTYPE_F16, n);
    sa_index_options o = kind->options;
    o.num_kv_heads = kHkv;
    o.head_dim = kD;
    o.dtype = SA_DTYPE_F16;
    o.capacity = n;
    sa_tensor keys = tensor(layers.k(0), SA_DTYPE_F16, {n, kHkv, kD});
    for (auto _ : state) {
        sa_index *ix = nullptr;
        if (!ok(state, sa_index_create(ctx, &o, &ix), (kind->name + ": sa_index_create").c_str())) break;
        sa_status st = sa_index_append(ix, &keys);
        sa_index_destroy(&ix);
        if (!ok(state, st, (kind->name + ": sa_index_append").c_str())) break;
    }
    state.counters["keys/s"] =
        benchmark::Counter(double(n) * kHkv * double(state.iterations()), benchmark::Counter::kIsRate);
}

void register_kinds() {
    constexpr int64_t kPrefill = 4096;
    // Prefill selection as a model's first chunk asks for it: 4096 queries over the same 4096
    // keys (causal), K = 128, every kind, one sa_select call per iteration.
    for (int t : {1, 2})
        for (const quality::SelectorKind &kind : quality::selector_kinds())
            benchmark::RegisterBenchmark(
                name(("select/" + kind.name + "/prefill4k_k128").c_str(), SA_DTYPE_F16, kPrefill, t).c_str(),
                BM_select_kind, &kind, kPrefill, t, kPrefill, 128)
                ->UseRealTime()
                ->Unit(benchmark::kMillisecond);
    // A later chunk of a chunked prefill: 1024 queries at positions 15360..16383 over 16384
    // keys, K = 128 (each query sees 15-16K keys: past the count up to which a prompt's queries
    // are scored exactly).
    for (int t : {1, 2})
        for (const quality::SelectorKind &kind : quality::selector_kinds())
            benchmark::RegisterBenchmark(
                name(("select/" + kind.name + "/prefill1k_k128").c_str(), SA_DTYPE_F16, 16 * 1024, t).c_str(),
                BM_select_kind, &kind, int64_t{16 * 1024}, t, int64_t{1024}, 128)
                ->UseRealTime()
                ->Unit(benchmark::kMillisecond);
    // The count of visible keys past which a page index with refine is cheaper than exact
    // scoring (page_selector.cpp: kPrefillExactFactor): 256 queries at the last positions of n
    // keys, K = 128 and 2048, one thread, exact and page only.
    for (int k : {128, 2048})
        for (int64_t n : {2048, 4096, 6144, 8192, 12288, 16384, 24576, 32768})
            for (const quality::SelectorKind &kind : quality::selector_kinds())
                if (kind.name == "exact" || kind.name == "page")
                    benchmark::RegisterBenchmark(
                        name(("select/" + kind.name + "/prefill256_k" + std::to_string(k)).c_str(), SA_DTYPE_F16,
                             n, 1)
                            .c_str(),
                        BM_select_kind, &kind, n, 1, int64_t{256}, k)
                        ->UseRealTime()
                        ->Unit(benchmark::kMillisecond);
    for (int64_t n : {32768, 131072})
        for (int t : {1, 2})  // in this order, each index is built once
            for (const quality::SelectorKind &kind : quality::selector_kinds()) {
                const std::string what = "select/" + kind.name;
                for (int k : {kTopK, 128})
                    benchmark::RegisterBenchmark(
                        name((what + (k == kTopK ? "/decode" : "/decode_k128")).c_str(), SA_DTYPE_F16, n, t)
                            .c_str(),
                        BM_select_kind, &kind, n, t, int64_t{1}, k)
                        ->UseRealTime()
                        ->Unit(benchmark::kMicrosecond);
                if (t == 2)
                    benchmark::RegisterBenchmark(
                        name((what + "/prefill4k").c_str(), SA_DTYPE_F16, n, t).c_str(), BM_select_kind, &kind,
                        n, t, kPrefill, kTopK)
                        ->UseRealTime()
                        ->Unit(benchmark::kMillisecond);
            }
    for (int t : {1, 2})  // building an index takes seconds for the graph kinds: one iteration
        for (const quality::SelectorKind &kind : quality::selector_kinds())
            benchmark::RegisterBenchmark(name(("build/" + kind.name).c_str(), SA_DTYPE_F16, 32768, t).c_str(),
                                         BM_build_kind, &kind, int64_t{32768}, t)
                ->Iterations(1)
                ->UseRealTime()
                ->Unit(benchmark::kMillisecond);
}

// The decode step's name for kind k: decode_step (exact), decode_step_page, decode_step_lsh;
// nullptr for the kinds without one.
const char *step_name(const Kind &k) {
    if (k.borrow || (k.kind == SA_SELECTOR_PAGE && !k.refine)) return nullptr;
    return k.kind == SA_SELECTOR_EXACT ? "decode_step" : k.kind == SA_SELECTOR_PAGE ? "decode_step_page" : "decode_step_lsh";
}

void register_all() {
    for (int64_t n : {4096, 32768, 131072, 524288})
        for (int t : {1, 2})  // in this order, each set of indexes is built once
            for (const Kind &k : kKinds)
                for (bool attend : {false, true}) {
                    const char *what = attend ? step_name(k) : k.name;
                    if (!what) continue;
                    // 512K: the page kind alone (one layer's exact index is another 1 GiB).
                    if (n == 524288 && !(k.kind == SA_SELECTOR_PAGE && k.refine && !k.borrow)) continue;
                    benchmark::RegisterBenchmark(name(what, SA_DTYPE_F16, n, t).c_str(), BM_select, n, t, &k, attend)
                        ->UseRealTime()
                        ->Unit(benchmark::kMicrosecond);
                }
}

}  // namespace

int main(int argc, char **argv) {
    register_all();
    register_kinds();
    int rc = bench::run_main(argc, argv);
    indexes.clear();  // before the contexts they use go away with the process
    sa_index_destroy(&kind_index.ix);
    return rc;
}
