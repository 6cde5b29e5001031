// The plain loops the memory-bound benchmarks are held against: each reads the bytes a
// library call must read, in the order and pieces the call reads them, and only sums them.
// One owner for every suite (bench_attend's floors, bench_bounds' bound scan), so a ratio
// "call time / loop time" always means the same loop.
#pragma once

#include <omp.h>

#include "bench_common.hpp"

namespace bench {

// sa_attend's split of one decode query's keys (src/attend/attention.cpp: about 64 tasks, at
// least 256 keys each, per unit), so the loops hand the threads the same pieces.
inline int64_t split_parts(int64_t units, int64_t keys) {
    const int64_t splits = units < 64 ? (64 + units - 1) / units : 1;
    return std::max<int64_t>(1, std::min(splits, keys / 256));
}

// The sum of n words, split evenly over the threads: streaming read bandwidth.
inline uint64_t read_words(const uint64_t *p, int64_t n, int threads) {
    if (threads == 1) return sum_words(p, n);
    uint64_t s = 0;
#pragma omp parallel num_threads(threads) reduction(+ : s)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int64_t per = n / nt / 8 * 8;
        s += sum_words(p + t * per, t == nt - 1 ? n - t * per : per);
    }
    return s;
}

// Gathers the K and V rows of one list of `width` slots per KV head (lists[h * width + j]) in
// list order, prefetching 16 rows ahead, the lists split over threads as sa_attend splits a
// sparse decode query. Row r of head h starts at element r * row_step + h * head_step
// (token-major: kRow, kD; head-major [H_kv][n][D]: kD, n * kD).
inline uint64_t gather_rows(const uint16_t *K, const uint16_t *V, const int32_t *lists, int64_t width,
                            int64_t row_step, int64_t head_step, int threads) {
    const int64_t parts = split_parts(kHkv, width);
    constexpr int kAhead = 16;
    uint64_t s = 0;
#pragma omp parallel for num_threads(threads) reduction(+ : s) schedule(dynamic, 1)
    for (int64_t t = 0; t < kHkv * parts; ++t) {
        const int64_t h = t / parts, part = t % parts;
        const int32_t *list = lists + h * width;
        const int64_t b = width * part / parts, e = width * (part + 1) / parts;
        for (int64_t j = b; j < e; ++j) {
            if (j + kAhead < e) {
                const int64_t ahead = list[j + kAhead] * row_step + h * head_step;
                for (int c = 0; c < kD * 2; c += 64) {
                    __builtin_prefetch(reinterpret_cast<const char *>(K + ahead) + c, 0, 1);
                    __builtin_prefetch(reinterpret_cast<const char *>(V + ahead) + c, 0, 1);
                }
            }
            const int64_t row = list[j] * row_step + h * head_step;
            s += sum_words(reinterpret_cast<const uint64_t *>(K + row), kD / 4);
            s += sum_words(reinterpret_cast<const uint64_t *>(V + row), kD / 4);
        }
    }
    return s;
}

// Walks a token-major cache of n tokens as dense decode attention does (all heads of the
// query are one unit, split into token ranges): per task a range of tokens, per block of 64
// tokens every KV head, per head its K rows then its V rows.
inline uint64_t walk_rows(const uint16_t *K, const uint16_t *V, int64_t n, int threads) {
    const int64_t parts = split_parts(1, n);
    constexpr int64_t kBlock = 64;
    uint64_t s = 0;
#pragma omp parallel for num_threads(threads) reduction(+ : s) schedule(dynamic, 1)
    for (int64_t part = 0; part < parts; ++part) {
        const int64_t b = n * part / parts, e = n * (part + 1) / parts;
        for (int64_t t0 = b; t0 < e; t0 += kBlock) {
            const int64_t t1 = std::min(e, t0 + kBlock);
            for (int h = 0; h < kHkv; ++h) {
                for (int64_t t = t0; t < t1; ++t) s += sum_words(reinterpret_cast<const uint64_t *>(K + t * kRow + h * kD), kD / 4);
                for (int64_t t = t0; t < t1; ++t) s += sum_words(reinterpret_cast<const uint64_t *>(V + t * kRow + h * kD), kD / 4);
            }
        }
    }
    return s;
}

}  // namespace bench
