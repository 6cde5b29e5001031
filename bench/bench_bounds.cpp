// The page selector's bound scan against a plain loop over the same bytes, in one run:
//   bounds_scan/f16/N:n/threads:T   the score kernel page selection scans its bounds with
//                                   (RowKernels::score_rows over rows [centre | radius] of
//                                   2 D f16 values, one row per page of 16 keys, the group's
//                                   4 query heads at once), every KV head: one decode query
//   bounds_read/f16/N:n/threads:T   the sum of the same rows (the memory system's ceiling)
// "GB/s": the bound bytes, H_kv * n / 16 * 2 D * 2 (33.5 MB at 128K). Heads are split over
// the threads. Each iteration reads the next of several bound sets carved from the 1 GiB pool,
// with the caches flushed before it. Linked from the library's objects for the kernel table
// (the kernels page_selector.cpp calls through score_rows_grouped).
//
//   build/bench/bench_bounds --benchmark_filter='N:131072'
#include <omp.h>

#include "kernels/kernels.hpp"
#include "bench_common.hpp"
#include "select/candidate_rescore.hpp"

namespace {

using namespace bench;

constexpr int kPage = 16, kG = kHq / kHkv;

// Bound sets of n / kPage rows of 2 D per KV head, as many as fit the pool.
struct Bounds {
    int64_t pages;
    int count;
    const uint16_t *base;
    explicit Bounds(int64_t n) : pages(n / kPage), base(pool(SA_DTYPE_F16)) {
        count = int(std::clamp<int64_t>(kPoolBytes / bytes(), 1, 64));
    }
    int64_t bytes() const { return int64_t{kHkv} * pages * 2 * kD * 2; }
    const uint16_t *head(int set, int h) const { return base + (int64_t(set) * kHkv + h) * pages * 2 * kD; }
};

void BM_bounds(benchmark::State &state, int64_t n, int threads, bool scan) {
    const Bounds b(n);
    const sa::KernelTable &k = sa::kernel_table(SA_ISA_AUTO);
    std::vector<float> q = queries(1);  // [q | |q|] per query head of a group
    std::vector<float> q_joint(size_t(kG) * 2 * kD);
    for (int g = 0; g < kG; ++g)
        for (int d = 0; d < kD; ++d) {
            q_joint[size_t(g * 2 * kD + d)] = q[size_t(g * kD + d)];
            q_joint[size_t(g * 2 * kD + kD + d)] = std::fabs(q[size_t(g * kD + d)]);
        }
    std::vector<float> scores(size_t(kHkv) * kG * size_t(b.pages));
    int64_t it = 0;
    for (auto _ : state) {
        flush_caches(state);
        const int set = int(it % b.count);
        uint64_t s = 0;
#pragma omp parallel for num_threads(threads) reduction(+ : s) schedule(static)
        for (int h = 0; h < kHkv; ++h) {
            if (scan) {
                sa::score_rows_grouped(k.of(SA_DTYPE_F16), q_joint.data(), kG, 2 * kD, b.head(set, h), b.pages,
                                       &scores[size_t(h) * kG * size_t(b.pages)], b.pages);
            } else {
                s += sum_words(reinterpret_cast<const uint64_t *>(b.head(set, h)), b.pages * 2 * kD / 4);
            }
        }
        benchmark::DoNotOptimize(s);
        benchmark::DoNotOptimize(scores.data());
        ++it;
    }
    set_gbps(state, double(b.bytes()));
    state.SetLabel(std::string("isa=") + sa_isa_name(k.isa));
}

void register_all() {
    for (int64_t n : {32768, 131072, 524288})
        for (int t : {1, 2})
            for (bool scan : {true, false})
                benchmark::RegisterBenchmark(name(scan ? "bounds_scan" : "bounds_read", SA_DTYPE_F16, n, t).c_str(),
                                             BM_bounds, n, t, scan)
                    ->UseRealTime()
                    ->Unit(benchmark::kMicrosecond);
}

}  // namespace

int main(int argc, char **argv) {
    register_all();
    return bench::run_main(argc, argv);
}
