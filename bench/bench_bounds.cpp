// The page selector's bound scan against a plain loop over the same bytes, in one run:
//   bounds_scan/f16/N:n/threads:T   what page selection runs over its compact bounds
//                                   (select/page_bounds.hpp's score_page_bounds: int8 rows
//                                   [centre | radius] of 2 D codes, one scale and one magnitude
//                                   per page, 16 keys a page, the group's 4 query heads at
//                                   once, int16 query codes): every KV head of one decode
//                                   query, in tasks of 512 pages as the selector splits them
//   bounds_read/f16/N:n/threads:T   floor_loops.hpp's read_words over the same bytes (the
//                                   memory system's ceiling for the scan)
//   bounds_{scan,read}_warm/...     the same without the flush, the bounds left in the caches
//                                   by the last iteration (32K: 4.3 MB, L3): the scan's
//                                   arithmetic alone, to tell compute-bound from memory-bound
// f16 is the keys' dtype (bounds are int8 codes whatever it is). "GB/s": the bound bytes,
// H_kv * n / 16 * (2 D + 8) (17.3 MB at 128K). Caches are flushed before each iteration.
// Linked from the library's objects (the kernel table and score_page_bounds).
// Threads 1 and 2, or the list in SA_BENCH_THREADS (bench_common.hpp).
//
//   build/bench/bench_bounds --benchmark_filter='N:131072'
#include "floor_loops.hpp"
#include "kernels/kernels.hpp"
#include "select/page_bounds.hpp"

namespace {

using namespace bench;

constexpr int kPage = 16, kG = kHq / kHkv, kW = 2 * kD;
constexpr int64_t kTaskPages = 512;  // page_selector.cpp's kChunkPages

// One KV head's bounds as the selector keeps them: codes [pages][2 D], scales, magnitudes;
// the heads one after another in one buffer, so the read loop sums exactly these bytes.
struct Bounds {
    int64_t pages;
    std::vector<uint64_t> words;
    explicit Bounds(int64_t n) : pages(n / kPage), words(size_t(head_bytes() * kHkv / 8)) {
        Rng rng(3);
        for (int h = 0; h < kHkv; ++h) {
            int8_t *c = codes(h);
            for (int64_t p = 0; p < pages; ++p)
                for (int d = 0; d < kD; ++d) {
                    c[p * kW + d] = int8_t(int(rng.normal() * 40.f) % 124);  // centre
                    c[p * kW + kD + d] = int8_t(20 + int(rng.next() % 100));  // radius
                }
            for (int64_t p = 0; p < pages; ++p) {
                scale(h)[p] = 0.02f * (1.f + float(rng.next() % 1000) * 1e-3f);
                magnitude(h)[p] = scale(h)[p] * 20000.f;
            }
        }
    }
    int64_t head_bytes() const { return pages * (kW + 8); }
    char *head(int h) { return reinterpret_cast<char *>(words.data()) + h * head_bytes(); }
    int8_t *codes(int h) { return reinterpret_cast<int8_t *>(head(h)); }
    float *scale(int h) { return reinterpret_cast<float *>(head(h) + pages * kW); }
    float *magnitude(int h) { return scale(h) + pages; }
};

void BM_bounds(benchmark::State &state, int64_t n, int threads, bool scan, bool warm) {
    Bounds b(n);
    const sa::KernelTable &k = sa::kernel_table(SA_ISA_AUTO);
    // [q | |q|] per query head of each group as int16 codes, as the selector codes them.
    std::vector<float> q = queries(1), x(static_cast<size_t>(kW));
    std::vector<int16_t> q_codes(size_t(kHq) * kW);
    std::vector<float> q_scale(static_cast<size_t>(kHq));
    for (int h = 0; h < kHq; ++h) {
        for (int d = 0; d < kD; ++d) {
            x[size_t(d)] = q[size_t(h * kD + d)];
            x[size_t(kD + d)] = std::fabs(q[size_t(h * kD + d)]);
        }
        sa::quantize_query(x.data(), kW, &q_codes[size_t(h) * kW], &q_scale[size_t(h)]);
    }
    std::vector<float> out(size_t(kHkv) * kG * size_t(b.pages));
    const int64_t chunks = (b.pages + kTaskPages - 1) / kTaskPages;
    for (auto _ : state) {
        if (!warm) flush_caches(state);
        if (!scan) {
            benchmark::DoNotOptimize(read_words(b.words.data(), int64_t(b.words.size()), threads));
            continue;
        }
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
        for (int64_t task = 0; task < kHkv * chunks; ++task) {
            const int h = int(task / chunks);
            const int64_t p0 = task % chunks * kTaskPages, np = std::min(b.pages, p0 + kTaskPages) - p0;
            sa::score_page_bounds(k, &q_codes[size_t(h * kG) * kW], &q_scale[size_t(h * kG)], kG, kW,
                                  b.codes(h) + p0 * kW, b.scale(h) + p0, b.magnitude(h) + p0, np,
                                  &out[size_t(h) * kG * size_t(b.pages) + size_t(p0)], b.pages);
        }
        benchmark::DoNotOptimize(out.data());
    }
    set_gbps(state, double(b.head_bytes() * kHkv));
    state.SetLabel(std::string("isa=") + sa_isa_name(k.isa));
}

void register_all() {
    for (int64_t n : {32768, 131072, 524288})
        for (int t : thread_counts())
            for (bool scan : {true, false})
                benchmark::RegisterBenchmark(name(scan ? "bounds_scan" : "bounds_read", SA_DTYPE_F16, n, t).c_str(),
                                             BM_bounds, n, t, scan, false)
                    ->UseRealTime()
                    ->Unit(benchmark::kMicrosecond);
    for (int64_t n : {32768, 131072})
        for (int t : thread_counts())
            for (bool scan : {true, false})
                benchmark::RegisterBenchmark(name(scan ? "bounds_scan_warm" : "bounds_read_warm", SA_DTYPE_F16, n, t).c_str(),
                                             BM_bounds, n, t, scan, true)
                    ->UseRealTime()
                    ->Unit(benchmark::kMicrosecond);
}

}  // namespace

int main(int argc, char **argv) {
    register_all();
    return bench::run_main(argc, argv);
}
