// Decode attention speed against memory read bandwidth, in one run:
//   membw/threads:T                  sum of a 1 GiB buffer (the machine's read bandwidth)
//   attend_dense/DT/N:n/threads:T    one decode query (H_q=32) over all n keys
//   attend_sparse/DT/N:n/threads:T   the same over K=2048 gathered keys per KV head, at
//                                    random slots (the worst case for memory)
//   attend_pages/DT/N:n/threads:T    K=2048 keys as 128 whole pages of 16 slots (the shape a
//                                    page selector returns, and closer to real selections)
//   attend_pages_headmajor/...      the same pages in a head-major cache: 4 KB runs per page
//   gatherbw/DT/N:n/threads:T        only reads the rows attend_sparse gathers: the memory
//                                    system's ceiling for that access pattern (the loops are
//                                    floor_loops.hpp's, shared with floor_* and bench_bounds)
//   gatherbw_pages[_headmajor]/...   the same for the rows of attend_pages[_headmajor]
//   walkbw/DT/N:n/threads:T          only reads what attend_dense reads, in its order: per
//                                    token range (the tasks attend_dense splits a decode query
//                                    into), per block of 64 tokens every KV head's K rows then
//                                    V rows: dense attention's ceiling
//   attend_{dense,sparse}_mass/...   the same with slot_mass on ([H_kv, n] f32, decay 0.99)
//   attend_paged[_shuffled]/...      attend_dense's keys as a paged cache (sa_attend_paged), 16-row
//                                    pages in order or in a shuffled page table
//   floor_{sparse,dense}/...         sa_attend against the loop reading the same rows in the same
//                                    order, alternated in one run, cache flushed before each:
//                                    counters ratio (loop time / attend time), loop_GB/s
// H_kv=8, D=128, K/V in DT (f16, bf16), queries and output f32. "GB/s" counts the
// K/V bytes the call must read: dense 2*n*H_kv*D*bytes, sparse 2*K*H_kv*D*bytes.
// Each iteration uses the next of several cache-cold layers (bench_common.hpp), and the
// caches are flushed before each timed call (flush_caches). N:524288 (f16 only: dense,
// sparse, gatherbw, walkbw) reads a single 2 GiB layer.
// Threads 1 and 2, or the list in SA_BENCH_THREADS (bench_common.hpp): SA_BENCH_THREADS=1,16
// on a machine with 16 cores.
//
//   build/bench/bench_attend --benchmark_filter='membw|attend_.*/bf16/N:131072'
//   build/bench/bench_attend --benchmark_filter='floor_.*/N:131072' --benchmark_min_time=2
#include "floor_loops.hpp"

#include <chrono>

namespace {

using namespace bench;

void BM_membw(benchmark::State &state, int threads) {
    const auto *p = reinterpret_cast<const uint64_t *>(pool(SA_DTYPE_F16));
    for (auto _ : state) benchmark::DoNotOptimize(read_words(p, kPoolBytes / 8, threads));
    set_gbps(state, double(kPoolBytes));
}

// pages_hm: the same pages in a head-major cache ([H_kv][n][D] strides, as paged engines
// lay out blocks), where each page of one head is 4 KB of contiguous rows.
enum class Pattern { dense, random, pages, pages_hm };
constexpr int kSets = 64;  // distinct index sets rotated through

std::vector<int32_t> indices(Pattern p, int64_t n) {
    if (p == Pattern::random) return random_indices(n, kTopK, kSets);
    if (p == Pattern::pages || p == Pattern::pages_hm) return page_indices(n, kTopK, 16, kSets);
    return {};
}

// Sums every gathered K and V row (floor_loops.hpp's gather_rows, split as sa_attend splits
// the lists): what any kernel reading these rows could reach at best.
void BM_gatherbw(benchmark::State &state, sa_dtype dtype, int64_t n, int threads, Pattern pattern) {
    Layers layers(dtype, n);
    std::vector<int32_t> idx = indices(pattern, n);
    // Element offset of row r of KV head h in the cache layout.
    const int64_t row_step = pattern == Pattern::pages_hm ? kD : kRow;
    const int64_t head_step = pattern == Pattern::pages_hm ? n * kD : kD;
    int64_t it = 0;
    for (auto _ : state) {
        flush_caches(state);
        const int l = int(it % layers.count);
        const int32_t *set = idx.data() + (it % kSets) * kHkv * kTopK;
        benchmark::DoNotOptimize(gather_rows(layers.k(l), layers.v(l), set, kTopK, row_step, head_step, threads));
        ++it;
    }
    set_gbps(state, 2.0 * double(kTopK) * kRow * 2);
}

// Reads the rows attend_dense reads in the order it reads them (floor_loops.hpp's walk_rows).
void BM_walkbw(benchmark::State &state, sa_dtype dtype, int64_t n, int threads) {
    Layers layers(dtype, n);
    int64_t it = 0;
    for (auto _ : state) {
        flush_caches(state);
        const int l = int(it % layers.count);
        benchmark::DoNotOptimize(walk_rows(layers.k(l), layers.v(l), n, threads));
        ++it;
    }
    set_gbps(state, 2.0 * double(n) * kRow * 2);
    state.SetLabel("layers=" + std::to_string(layers.count));
}

void BM_attend(benchmark::State &state, sa_dtype dtype, int64_t n, int threads, Pattern pattern, bool mass) {
    sa_context *ctx = context(threads);
    if (!ctx) return state.SkipWithError("sa_context_create failed");
    Layers layers(dtype, n);
    const int sets = kSets, nq = 8;
    const bool sparse = pattern != Pattern::dense;
    std::vector<int32_t> idx = indices(pattern, n);
    std::vector<float> q = queries(nq), out(size_t(kHq) * kD);
    sa_attend_options opt = sa_attend_options_default();
    std::vector<float> slot_mass(mass ? size_t(kHkv * n) : 0);
    sa_tensor mt = tensor(slot_mass.data(), SA_DTYPE_F32, {kHkv, n});
    if (mass) {
        opt.slot_mass = &mt;
        opt.mass_decay = 0.99f;
    }
    sa_tensor ot = tensor(out.data(), SA_DTYPE_F32, {1, kHq, kD});
    int64_t it = 0;
    for (auto _ : state) {
        flush_caches(state);
        int l = int(it % layers.count);
        sa_tensor qt = tensor(q.data() + (it % nq) * kHq * kD, SA_DTYPE_F32, {1, kHq, kD});
        sa_tensor kt = tensor(layers.k(l), dtype, {n, kHkv, kD});
        sa_tensor vt = tensor(layers.v(l), dtype, {n, kHkv, kD});
        if (pattern == Pattern::pages_hm)
            for (sa_tensor *t : {&kt, &vt}) {
                t->strides[0] = kD;
                t->strides[1] = n * kD;
                t->strides[2] = 1;
            }
        sa_tensor itn = tensor(sparse ? idx.data() + (it % sets) * kHkv * kTopK : nullptr,
                               SA_DTYPE_I32, {1, kHkv, kTopK});
        if (!ok(state, sa_attend(ctx, &qt, &kt, &vt, sparse ? &itn : nullptr, &opt, &ot, nullptr),
                "sa_attend"))
            break;
        benchmark::DoNotOptimize(out.data());
        ++it;
    }
    const int64_t keys = sparse ? kTopK : n;
    set_gbps(state, 2.0 * double(keys) * kRow * 2);
    state.SetLabel("layers=" + std::to_string(layers.count));
}

// Dense attention of one decode query over the same n keys seen as a paged cache of 16-row
// pages (sa_attend_paged): pages in order, or shuffled (a page table in random order, as an
// engine's allocator hands pages out). Against attend_dense of the same run: the cost of
// reading a cache through its page table.
void BM_attend_paged(benchmark::State &state, sa_dtype dtype, int64_t n, int threads, bool shuffled) {
    sa_context *ctx = context(threads);
    if (!ctx) return state.SkipWithError("sa_context_create failed");
    Layers layers(dtype, n);
    constexpr int64_t kPage = 16;
    const int64_t pages = n / kPage;
    std::vector<int32_t> table(static_cast<size_t>(pages));
    for (int64_t p = 0; p < pages; ++p) table[size_t(p)] = int32_t(p);
    if (shuffled)
        for (int64_t p = pages - 1; p > 0; --p) std::swap(table[size_t(p)], table[size_t((p * 7919) % (p + 1))]);
    int64_t len = n;
    std::vector<float> q = queries(8), out(size_t(kHq) * kD);
    sa_tensor ot = tensor(out.data(), SA_DTYPE_F32, {1, kHq, kD});
    int64_t it = 0;
    for (auto _ : state) {
        const int l = int(it % layers.count);
        sa_paged_kv kv = SA_PAGED_KV_INIT;
        kv.k = tensor(layers.k(l), dtype, {pages, kPage, kHkv, kD});
        kv.v = tensor(layers.v(l), dtype, {pages, kPage, kHkv, kD});
        kv.page_table = tensor(table.data(), SA_DTYPE_I32, {1, pages});
        kv.seq_lens = tensor(&len, SA_DTYPE_I64, {1});
        sa_tensor qt = tensor(q.data() + (it % 8) * kHq * kD, SA_DTYPE_F32, {1, kHq, kD});
        if (!ok(state, sa_attend_paged(ctx, &qt, nullptr, &kv, nullptr, nullptr, &ot, nullptr), "sa_attend_paged")) break;
        benchmark::DoNotOptimize(out.data());
        ++it;
    }
    set_gbps(state, 2.0 * double(n) * kRow * 2);
    state.SetLabel("layers=" + std::to_string(layers.count));
}

// ---------------------------------------------------------------- floors, side by side
// One decode step's attention and the plain loop that reads the same bytes in the same order,
// alternated iteration by iteration, each after a cache flush (a decode step finds the cache
// cold: every other layer ran in between). The ratio loop time / attend time is the share
// of its memory floor that the attention reaches (1 = as fast as the loop; the goal is 0.8).
// Alternating keeps both under the same neighbours on a shared machine.
//   floor_sparse: the lists a decode step attends (sinks 4 + window 64 + top_k 2048 random
//                 slots, ascending, per KV head) against a gather loop reading those K and V
//                 rows in list order, split over threads as sa_attend splits them.
//   floor_dense:  every key against a walk of the token-major cache in the kernel's order:
//                 token blocks of 64, all KV heads of a block, the K then V rows of each head.

// The lists of a decode step: per KV head the sinks, the window and top_k distinct random
// slots in between, ascending ([sets][H_kv][kStepWidth]).
constexpr int kStepWidth = kTopK + kWindow + kSinks;
std::vector<int32_t> step_indices(int64_t n, int sets) {
    std::vector<int32_t> mid = random_indices(n - kWindow - kSinks, kTopK, sets);
    std::vector<int32_t> out(size_t(sets) * kHkv * kStepWidth);
    for (size_t l = 0; l < size_t(sets) * kHkv; ++l) {
        int32_t *dst = out.data() + l * kStepWidth;
        for (int j = 0; j < kSinks; ++j) *dst++ = j;
        for (int j = 0; j < kTopK; ++j) *dst++ = mid[l * kTopK + size_t(j)] + kSinks;
        for (int j = 0; j < kWindow; ++j) *dst++ = int32_t(n - kWindow + j);
    }
    return out;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void BM_floor(benchmark::State &state, sa_dtype dtype, int64_t n, int threads, bool sparse) {
    sa_context *ctx = context(threads);
    if (!ctx) return state.SkipWithError("sa_context_create failed");
    Layers layers(dtype, n);
    constexpr int sets = 16, nq = 8;
    std::vector<int32_t> idx = sparse ? step_indices(n, sets) : std::vector<int32_t>();
    std::vector<float> q = queries(nq), out(size_t(kHq) * kD);
    sa_tensor ot = tensor(out.data(), SA_DTYPE_F32, {1, kHq, kD});
    double attend_s = 0, loop_s = 0;
    int64_t it = 0;
    for (auto _ : state) {
        const int l = int(it % layers.count);
        const int32_t *set = sparse ? idx.data() + (it % sets) * kHkv * kStepWidth : nullptr;
        sa_tensor qt = tensor(q.data() + (it % nq) * kHq * kD, SA_DTYPE_F32, {1, kHq, kD});
        sa_tensor kt = tensor(layers.k(l), dtype, {n, kHkv, kD});
        sa_tensor vt = tensor(layers.v(l), dtype, {n, kHkv, kD});
        sa_tensor itn = tensor(set, SA_DTYPE_I32, {1, kHkv, kStepWidth});
        flush_last_level_cache(threads);
        auto t0 = std::chrono::steady_clock::now();
        if (!ok(state, sa_attend(ctx, &qt, &kt, &vt, sparse ? &itn : nullptr, nullptr, &ot, nullptr), "sa_attend"))
            break;
        const double a = seconds_since(t0);
        benchmark::DoNotOptimize(out.data());
        flush_last_level_cache(threads);
        t0 = std::chrono::steady_clock::now();
        uint64_t s = sparse ? gather_rows(layers.k(l), layers.v(l), set, kStepWidth, kRow, kD, threads)
                            : walk_rows(layers.k(l), layers.v(l), n, threads);
        const double w = seconds_since(t0);
        benchmark::DoNotOptimize(s);
        state.SetIterationTime(a);
        attend_s += a;
        loop_s += w;
        ++it;
    }
    const double bytes = 2.0 * double(sparse ? kStepWidth : n) * kRow * 2;
    state.counters["GB/s"] = benchmark::Counter(bytes * double(it) / 1e9 / attend_s);
    state.counters["loop_GB/s"] = benchmark::Counter(bytes * double(it) / 1e9 / loop_s);
    state.counters["loop_ms"] = benchmark::Counter(1e3 * loop_s / double(it));
    state.counters["ratio"] = benchmark::Counter(loop_s / attend_s);
}

void register_all() {
    for (int64_t n : {32768, 131072})
        for (int t : thread_counts())
            for (bool sparse : {true, false})
                benchmark::RegisterBenchmark(name(sparse ? "floor_sparse" : "floor_dense", SA_DTYPE_F16, n, t).c_str(),
                                             BM_floor, SA_DTYPE_F16, n, t, sparse)
                    ->UseManualTime()
                    ->Unit(benchmark::kMicrosecond);
    for (int t : thread_counts())
        benchmark::RegisterBenchmark(("membw/threads:" + std::to_string(t)).c_str(), BM_membw, t)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
    for (sa_dtype dtype : {SA_DTYPE_F16, SA_DTYPE_BF16})
        for (int64_t n : {4096, 32768, 131072})
            for (int t : thread_counts()) {
                for (Pattern p : {Pattern::dense, Pattern::random, Pattern::pages, Pattern::pages_hm})
                    for (bool mass : {false, true}) {
                        if (mass && (p == Pattern::pages || p == Pattern::pages_hm)) continue;
                        std::string what = p == Pattern::dense    ? "attend_dense"
                                           : p == Pattern::random ? "attend_sparse"
                                           : p == Pattern::pages  ? "attend_pages"
                                                                  : "attend_pages_headmajor";
                        benchmark::RegisterBenchmark(name((what + (mass ? "_mass" : "")).c_str(), dtype, n, t).c_str(),
                                                     BM_attend, dtype, n, t, p, mass)
                            ->UseRealTime()
                            ->Unit(benchmark::kMicrosecond);
                    }
                for (bool shuffled : {false, true})
                    benchmark::RegisterBenchmark(name(shuffled ? "attend_paged_shuffled" : "attend_paged", dtype, n, t).c_str(),
                                                 BM_attend_paged, dtype, n, t, shuffled)
                        ->UseRealTime()
                        ->Unit(benchmark::kMicrosecond);
                for (Pattern p : {Pattern::random, Pattern::pages, Pattern::pages_hm})
                    benchmark::RegisterBenchmark(name(p == Pattern::random  ? "gatherbw"
                                                      : p == Pattern::pages ? "gatherbw_pages"
                                                                            : "gatherbw_pages_headmajor",
                                                      dtype, n, t).c_str(),
                                                 BM_gatherbw, dtype, n, t, p)
                        ->UseRealTime()
                        ->Unit(benchmark::kMicrosecond);
                benchmark::RegisterBenchmark(name("walkbw", dtype, n, t).c_str(), BM_walkbw, dtype, n, t)
                    ->UseRealTime()
                    ->Unit(benchmark::kMicrosecond);
            }
    constexpr int64_t kLarge = 524288;  // one 2 GiB layer: the patterns the decode table needs
    for (int t : thread_counts()) {
        for (Pattern p : {Pattern::dense, Pattern::random})
            benchmark::RegisterBenchmark(name(p == Pattern::dense ? "attend_dense" : "attend_sparse", SA_DTYPE_F16,
                                              kLarge, t).c_str(),
                                         BM_attend, SA_DTYPE_F16, kLarge, t, p, false)
                ->UseRealTime()
                ->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark(name("gatherbw", SA_DTYPE_F16, kLarge, t).c_str(), BM_gatherbw, SA_DTYPE_F16,
                                     kLarge, t, Pattern::random)
            ->UseRealTime()
            ->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark(name("walkbw", SA_DTYPE_F16, kLarge, t).c_str(), BM_walkbw, SA_DTYPE_F16, kLarge, t)
            ->UseRealTime()
            ->Unit(benchmark::kMicrosecond);
    }
}

}  // namespace

int main(int argc, char **argv) {
    register_all();
    return bench::run_main(argc, argv);
}
