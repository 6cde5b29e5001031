// One sparse decode step with the page selector against dense attention, in one run, cache
// flushed (flush_last_level_cache: a read of three times the L3) before every timed call as a
// decode step finds it:
//   dense/N:n/threads:T         sa_attend over all n keys (H_q 32, H_kv 8, D 128, f16 K/V)
//   page_step/N:n/threads:T     sa_select (page, refine, top_k 2048, window 64, sinks 4) then
//                               sa_attend over the chosen keys
//   page_select/N:n/threads:T   the selection alone
//   page_norefine/N:n/threads:T the selection without refine: the bound scan and the page
//                               ranking, nearly all of it the scan (the scan against its
//                               read loop: bench_bounds)
// "cpu_us": process CPU time inside the timed calls (all threads), which a loaded machine
// disturbs less than wall time. Keys and values are random N(0, 1) f16, one cache per n (2 GB of K/V at 512K), the indexes
// built before timing. Read the ratios: dense / page_step, and threads:2 vs threads:1.
// SA_BENCH_THREADS=1,2,4,8,16 sets the thread counts (default 1,2), for a machine with more cores.
//   build/bench/page_step --benchmark_filter='N:131072'
#include "bench_common.hpp"

#include <omp.h>

#include <chrono>
#include <ctime>
#include <vector>

namespace {

using namespace bench;

constexpr int kPageSize = 16;

double cpu_seconds() {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}


// K, V and a page index over them, per n (the last two kept).
struct Cache {
    int64_t n = 0;
    std::vector<uint16_t> k, v;
    std::map<std::pair<int, int>, sa_index *> ix;  // (threads, refine)
    explicit Cache(int64_t tokens) : n(tokens), k(size_t(tokens * kRow)), v(size_t(tokens * kRow)) {
        const int64_t chunk = int64_t{1} << 20, total = tokens * kRow;
#pragma omp parallel for schedule(static)
        for (int64_t c = 0; c < (total + chunk - 1) / chunk; ++c) {
            Rng rng(uint64_t(c) + 17);
            for (int64_t i = c * chunk; i < std::min(total, (c + 1) * chunk); ++i) {
                k[size_t(i)] = to_f16(rng.normal());
                v[size_t(i)] = to_f16(rng.normal());
            }
        }
    }
    ~Cache() {
        for (auto &e : ix) sa_index_destroy(&e.second);
    }
    sa_index *index(int threads, int refine) {
        sa_index *&p = ix[{threads, refine}];
        if (p) return p;
        sa_index_options o = sa_index_options_default();
        o.kind = SA_SELECTOR_PAGE;
        o.page.page_size = kPageSize;
        o.page.refine = refine;
        o.num_kv_heads = kHkv;
        o.head_dim = kD;
        o.dtype = SA_DTYPE_F16;
        o.capacity = n;
        sa_tensor keys = tensor(k.data(), SA_DTYPE_F16, {n, kHkv, kD});
        if (sa_index_create(context(threads), &o, &p) != SA_OK || sa_index_append(p, &keys) != SA_OK)
            sa_index_destroy(&p);
        return p;
    }
};

Cache &cache(int64_t n) {
    static std::unique_ptr<Cache> c;
    if (!c || c->n != n) {
        c.reset();
        c.reset(new Cache(n));
    }
    return *c;
}

enum class What { dense, step, select, norefine };

void BM_step(benchmark::State &state, int64_t n, int threads, What what) {
    sa_context *ctx = context(threads);
    if (!ctx) return state.SkipWithError("sa_context_create failed");
    Cache &c = cache(n);
    const int width = kSinks + kWindow + kTopK;
    std::vector<float> q = queries(8), out(size_t(kHq) * kD);
    std::vector<int32_t> idx(size_t(kHkv) * width);
    sa_select_options so = sa_select_options_default();
    so.top_k = kTopK;
    so.window = kWindow;
    so.sinks = kSinks;
    sa_attend_options ao = sa_attend_options_default();
    sa_tensor it = tensor(idx.data(), SA_DTYPE_I32, {1, kHkv, width});
    sa_tensor ot = tensor(out.data(), SA_DTYPE_F32, {1, kHq, kD});
    sa_tensor kt = tensor(c.k.data(), SA_DTYPE_F16, {n, kHkv, kD});
    sa_tensor vt = tensor(c.v.data(), SA_DTYPE_F16, {n, kHkv, kD});
    sa_index *ix = what == What::dense ? nullptr : c.index(threads, what != What::norefine);
    if (what != What::dense && !ix) return state.SkipWithError("building the index");
    int64_t i = 0;
    double cpu = 0.0;  // process CPU seconds inside the timed calls: the work, less the waits of a loaded machine
    for (auto _ : state) {
        flush_last_level_cache(threads);
        const double c0 = cpu_seconds();
        sa_tensor qt = tensor(q.data() + (i % 8) * kHq * kD, SA_DTYPE_F32, {1, kHq, kD});
        const auto t0 = std::chrono::steady_clock::now();
        switch (what) {
            case What::dense:
                if (!ok(state, sa_attend(ctx, &qt, &kt, &vt, nullptr, &ao, &ot, nullptr), "sa_attend")) return;
                break;
            case What::step:
                if (!ok(state, sa_select(ix, &qt, &so, &it), "sa_select")) return;
                if (!ok(state, sa_attend(ctx, &qt, &kt, &vt, &it, &ao, &ot, nullptr), "sa_attend")) return;
                break;
            case What::select:
            case What::norefine:
                if (!ok(state, sa_select(ix, &qt, &so, &it), "sa_select")) return;
                break;
        }
        state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        cpu += cpu_seconds() - c0;
        benchmark::DoNotOptimize(out.data());
        benchmark::DoNotOptimize(idx.data());
        ++i;
    }
    state.counters["cpu_us"] = 1e6 * cpu / double(std::max<int64_t>(1, i));
}

void register_all() {
    const std::pair<const char *, What> whats[] = {{"dense", What::dense},
                                                   {"page_step", What::step},
                                                   {"page_select", What::select},
                                                   {"page_norefine", What::norefine}};
    for (int64_t n : {int64_t{131072}, int64_t{524288}})
        for (int t : thread_counts())
            for (const auto &w : whats)
                benchmark::RegisterBenchmark(
                    (std::string(w.first) + "/N:" + std::to_string(n) + "/threads:" + std::to_string(t)).c_str(),
                    BM_step, n, t, w.second)
                    ->UseManualTime()
                    ->Iterations(w.second == What::dense ? 3 : 15)
                    ->Unit(benchmark::kMicrosecond);
}

}  // namespace

int main(int argc, char **argv) {
    register_all();
    return bench::run_main(argc, argv);
}
