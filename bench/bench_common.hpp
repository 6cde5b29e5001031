// Shared set-up of the Google Benchmark suites: the decode shape, contexts,
// cache-cold K/V "layers" carved from one large random buffer, query and index
// generators, and a main() that picks a short default --benchmark_min_time.
//
// Cache-cold by construction: a real decode step walks every layer's cache
// before it comes back to the first, so each iteration here uses the next of
// several layers whose K/V together span about 1 GiB (well past the L3 cache).
#ifndef SPARSEATTN_BENCH_COMMON_HPP
#define SPARSEATTN_BENCH_COMMON_HPP

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <sys/mman.h>

#include <cstdlib>
#include <map>
#include <new>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "sparseattn.h"

namespace bench {

constexpr int kHq = 32, kHkv = 8, kD = 128;
constexpr int64_t kRow = int64_t{kHkv} * kD;  // elements of one token's K (or V)
constexpr int64_t kPoolBytes = int64_t{1} << 30;
constexpr int kTopK = 2048, kWindow = 64, kSinks = 4;

inline const char *dtype_name(sa_dtype t) {
    return t == SA_DTYPE_F16 ? "f16" : t == SA_DTYPE_BF16 ? "bf16" : "f32";
}

inline uint16_t to_f16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, mag = x & 0x7fffffffu;
    if (mag >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // overflow (no NaN generated here)
    if (mag < 0x38800000u) {                                 // subnormal or zero
        float a;
        std::memcpy(&a, &mag, 4);
        return uint16_t(sign | uint32_t(std::lrint(a * 16777216.0f)));
    }
    uint32_t r = mag - 0x38000000u;
    r += 0xfffu + ((r >> 13) & 1u);
    return uint16_t(sign | (r >> 13));
}

inline uint16_t to_bf16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    x += 0x7fffu + ((x >> 16) & 1u);
    return uint16_t(x >> 16);
}

// Roughly standard normal, fast and deterministic.
struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed * 0x9e3779b97f4a7c15ull + 1) {}
    uint64_t next() {
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    float normal() {  // sum of 4 uniforms, rescaled
        uint64_t r = next();
        float u = 0;
        for (int i = 0; i < 4; ++i, r >>= 16) u += float(r & 0xffffu) * (1.0f / 65536.0f);
        return (u - 2.0f) * 1.7320508f;
    }
};

// One contiguous buffer of random 16-bit values (N(0,1) in f16 or bf16), 1 GiB or `bytes`
// when that is more (a single layer of 512K keys holds 2 GiB of K/V). Kept for the whole run,
// one per dtype and size; a larger size frees the previous larger one.
// SA_BENCH_HUGEPAGES=1 backs it with transparent huge pages, as an engine can for its KV
// cache: gathered rows then stop missing the TLB on nearly every access.
inline const uint16_t *pool(sa_dtype dtype, int64_t bytes = kPoolBytes) {
    struct Free { void operator()(uint16_t *p) const { std::free(p); } };
    static std::map<int, std::unique_ptr<uint16_t[], Free>> pools;
    static std::map<int, std::pair<int64_t, std::unique_ptr<uint16_t[], Free>>> large;
    bytes = (std::max(bytes, kPoolBytes) + (int64_t{1} << 21) - 1) >> 21 << 21;
    if (bytes > kPoolBytes && large[dtype].first != bytes) large[dtype] = {bytes, nullptr};
    auto &p = bytes > kPoolBytes ? large[dtype].second : pools[dtype];
    if (!p) {
        const int64_t n = bytes / 2, chunk = int64_t{1} << 20;
        p.reset(static_cast<uint16_t *>(std::aligned_alloc(size_t{1} << 21, size_t(bytes))));
        if (!p) throw std::bad_alloc();
        const char *huge = std::getenv("SA_BENCH_HUGEPAGES");
        if (huge && *huge == '1') madvise(p.get(), size_t(bytes), MADV_HUGEPAGE);
        uint16_t *d = p.get();
#pragma omp parallel for schedule(static)
        for (int64_t c = 0; c < n / chunk; ++c) {
            Rng rng(uint64_t(c) + 1000 * uint64_t(dtype));
            for (int64_t i = c * chunk; i < (c + 1) * chunk; ++i)
                d[i] = dtype == SA_DTYPE_F16 ? to_f16(rng.normal()) : to_bf16(rng.normal());
        }
    }
    return p.get();
}

// K/V caches of n tokens for as many layers as fit the pool (at least 1, at
// most 64): K of layer l, then V of layer l. One layer past 1 GiB (512K keys) has a pool of
// its own: cache-cold anyway, its K/V being far larger than the last-level cache.
struct Layers {
    sa_dtype dtype;
    int64_t n;
    int count;
    const uint16_t *base;
    Layers(sa_dtype t, int64_t n_tokens) : dtype(t), n(n_tokens), base(pool(t, 2 * n_tokens * kRow * 2)) {
        int64_t per_layer = 2 * n * kRow * 2;
        count = int(std::clamp<int64_t>(kPoolBytes / per_layer, 1, 64));
    }
    const uint16_t *k(int l) const { return base + (2 * int64_t(l)) * n * kRow; }
    const uint16_t *v(int l) const { return base + (2 * int64_t(l) + 1) * n * kRow; }
};

inline sa_tensor tensor(const void *data, sa_dtype dtype, std::initializer_list<int64_t> shape) {
    sa_tensor t{};
    t.data = const_cast<void *>(data);
    t.dtype = dtype;
    t.device = SA_DEVICE_CPU;
    t.rank = int32_t(shape.size());
    int i = 0;
    for (int64_t s : shape) t.shape[i++] = s;
    return t;
}

// One context per thread count, alive for the whole run (indexes keep a pointer).
inline sa_context *context(int threads) {
    static std::map<int, sa_context *> contexts;
    sa_context *&c = contexts[threads];
    if (!c) {
        sa_context_options o = sa_context_options_default();
        o.threads = threads;
        if (sa_context_create(&o, &c) != SA_OK) c = nullptr;
    }
    return c;
}

// Decode queries [1, H_q, D] f32, a few distinct ones to rotate through.
inline std::vector<float> queries(int count) {
    std::vector<float> q(size_t(count) * kHq * kD);
    Rng rng(7);
    for (float &x : q) x = rng.normal();
    return q;
}

// `sets` index lists i32 [1, H_kv, k]: per KV head k distinct slots < n, ascending.
inline std::vector<int32_t> random_indices(int64_t n, int k, int sets) {
    std::vector<int32_t> out(size_t(sets) * kHkv * k);
    std::mt19937_64 rng(42);
    std::vector<int32_t> all(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) all[size_t(i)] = int32_t(i);
    for (int s = 0; s < sets; ++s)
        for (int h = 0; h < kHkv; ++h) {
            for (int j = 0; j < k; ++j)  // partial Fisher-Yates
                std::swap(all[size_t(j)], all[size_t(j + int64_t(rng() % uint64_t(n - j)))]);
            int32_t *dst = out.data() + (size_t(s) * kHkv + h) * k;
            std::copy(all.begin(), all.begin() + k, dst);
            std::sort(dst, dst + k);
        }
    return out;
}

// Like random_indices, but in runs of `run` consecutive slots (whole pages, as a page
// selector without refinement returns them): k/run distinct pages per KV head.
inline std::vector<int32_t> page_indices(int64_t n, int k, int run, int sets) {
    std::vector<int32_t> pages = random_indices(n / run, k / run, sets);
    std::vector<int32_t> out(size_t(sets) * kHkv * k);
    for (size_t l = 0; l < size_t(sets) * kHkv; ++l)
        for (int p = 0; p < k / run; ++p)
            for (int r = 0; r < run; ++r)
                out[l * size_t(k) + size_t(p * run + r)] = pages[l * size_t(k / run) + size_t(p)] * run + r;
    return out;
}

// The plain read loop the memory-bound benchmarks are measured against: the sum of n words.
// Internal linkage: each suite gets its own clones for the instruction sets.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
[[maybe_unused]] static uint64_t sum_words(const uint64_t *p, int64_t n) {
    uint64_t a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t i = 0; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; ++j) a[j] += p[i + j];
    return a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
}

// Bytes a flush reads: three times the last-level cache a core sees (sysfs' cache index3 of
// cpu0: 32 MB on the EPYC these benches were written on, 300 MiB on the 16-core Xeon, where a
// fixed 96 MB left a step's bounds and rows in the L3 between calls), at least 96 MB. Not
// sysconf(_SC_LEVEL3_CACHE_SIZE): on the EPYC it reports the socket's 384 MB, not a core's CCD.
inline int64_t flush_bytes() {
    int64_t l3 = 0;
    if (FILE *f = std::fopen("/sys/devices/system/cpu/cpu0/cache/index3/size", "r")) {
        long long v = 0;
        char unit = 0;
        if (std::fscanf(f, "%lld%c", &v, &unit) >= 1 && v > 0)
            l3 = unit == 'K' ? v << 10 : unit == 'M' ? v << 20 : unit == 'G' ? v << 30 : v;
        std::fclose(f);
    }
    return std::max<int64_t>(int64_t{96} << 20, 3 * l3);
}

// Evicts whatever the last call left in the caches, as a decode step finds them after the other
// layers' work: reads a buffer of flush_bytes() on `threads` threads (OpenMP where the bench
// links it; reading it on one thread of a 16-core host would take longer than the calls timed).
inline void flush_last_level_cache(int threads) {
    static std::vector<uint64_t> junk(size_t(flush_bytes() / 8), 1);
    const int64_t per = int64_t(junk.size()) / 64;
    uint64_t s = 0;
#pragma omp parallel for num_threads(threads) reduction(+ : s) schedule(static)
    for (int64_t c = 0; c < 64; ++c) s += sum_words(junk.data() + c * per, per);
    benchmark::DoNotOptimize(s);
}

// flush_last_level_cache with the timer paused, on two threads (the benches' default).
inline void flush_caches(benchmark::State &state) {
    state.PauseTiming();
    flush_last_level_cache(2);
    state.ResumeTiming();
}

// Fails the benchmark with the library's message; true when st is SA_OK.
inline bool ok(benchmark::State &state, sa_status st, const char *what) {
    if (st == SA_OK) return true;
    std::string msg = std::string(what) + ": " + sa_status_name(st) + ": " + sa_last_error();
    state.SkipWithError(msg.c_str());
    return false;
}

inline void set_gbps(benchmark::State &state, double bytes_per_iteration) {
    state.counters["GB/s"] = benchmark::Counter(
        bytes_per_iteration * double(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

inline std::string name(const char *what, sa_dtype dtype, int64_t n, int threads) {
    return std::string(what) + "/" + dtype_name(dtype) + "/N:" + std::to_string(n) +
           "/threads:" + std::to_string(threads);
}

// The thread counts to measure: SA_BENCH_THREADS (comma-separated, each 1 .. 1024), else 1 and 2
// (a machine with more cores: SA_BENCH_THREADS=1,16).
inline std::vector<int> thread_counts() {
    std::vector<int> counts;
    if (const char *list = std::getenv("SA_BENCH_THREADS"))
        for (const char *p = list; *p;) {
            char *end = nullptr;
            const long t = std::strtol(p, &end, 10);
            if (end == p || t < 1 || t > 1024) {
                std::fprintf(stderr, "SA_BENCH_THREADS: expected a list like 1,2,4, got '%s'\n", list);
                std::exit(2);
            }
            counts.push_back(int(t));
            p = *end == ',' ? end + 1 : end;
        }
    if (counts.empty()) counts = {1, 2};
    return counts;
}

// Runs the registered benchmarks with a short default minimum time per
// benchmark (0.1 s), which --benchmark_min_time on the command line overrides.
inline int run_main(int argc, char **argv) {
    std::vector<char *> args(argv, argv + argc);
    static char min_time[] = "--benchmark_min_time=0.1";
    bool has_min_time = false;
    for (int i = 1; i < argc; ++i)
        has_min_time |= std::strncmp(argv[i], "--benchmark_min_time", 20) == 0;
    if (!has_min_time) args.insert(args.begin() + 1, min_time);
    int n = int(args.size());
    benchmark::Initialize(&n, args.data());
    if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
    benchmark::AddCustomContext("sparseattn", sa_version_string());
    sa_context *c = context(0);
    if (c) {
        benchmark::AddCustomContext("sparseattn_isa", sa_isa_name(sa_context_isa(c)));
        benchmark::AddCustomContext("sparseattn_threads_default",
                                    std::to_string(sa_context_threads(c)));
    }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}

}  // namespace bench

#endif
