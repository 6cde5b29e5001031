// How every approximate selector (page, lsh, hnsw) finishes a selection. The selector proposes
// candidate slots for one query and one output list; this module adds the sinks and the window
// (found by position), drops what the query may not see (causal position, segment), scores the
// candidates exactly with the context's kernels and writes the best ones (top_k, or the fewest
// reaching the mass target) ascending with -1 padding. The exact selector shares the pieces.
//
// Typical use inside a selector's select():
//   const int64_t lists = selection_list_count(req, keys.heads());
//   const int slots = loop_slots(ctx.threads, n_q * lists);
//   std::vector<RescoreScratch> scratch(static_cast<size_t>(slots));  // the call's own (core/threading.hpp)
//   parallel_for_slots(slots, n_q * lists, [&](int64_t t, int slot) {
//     RescoreScratch &s = scratch[size_t(slot)];
//     const SelectionList l = selection_list(req, keys.heads(), t % lists);
//     s.candidates.clear();
//     ... propose candidate slots for query t / lists into s.candidates ...
//     rescore_candidates(ctx, keys, req, t / lists, l, s);
//   });
// Output is independent of the thread count as long as the candidates of a (query, list)
// depend only on the index and the request.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "core/visibility.hpp"
#include "kernels/kernels.hpp"
#include "select/key_store.hpp"
#include "select/native_rows.hpp"
#include "select/selection_merge.hpp"
#include "select/selector.hpp"

namespace sa {

constexpr float kLog2e = 1.4426950408889634f;

// One output list of a request: a KV head (its group of query heads scored together) or,
// with per_query_head, a single query head.
struct SelectionList {
  int64_t list = 0;     // index along indices.shape[1]
  int64_t kv_head = 0;  // whose keys the list reads
  int64_t q_head0 = 0;  // first query head scored
  int64_t q_heads = 1;  // number of query heads scored (the group size, or 1)
};
int64_t selection_list_count(const SelectRequest &req, int64_t kv_heads);
SelectionList selection_list(const SelectRequest &req, int64_t kv_heads, int64_t list);

// Whether query i may see a slot (core/visibility.hpp): causal by position, and its own
// segment when segments are on.
struct QueryVisibility {
  int64_t query_pos = 0;
  const int32_t *key_segments = nullptr;  // nullptr: no segments
  int32_t segment = 0;
  bool operator()(int32_t slot, int64_t slot_pos) const { return sees(query_pos, slot_pos, key_segments, slot, segment); }
};
QueryVisibility query_visibility(const SelectRequest &req, int64_t i);
KeepRule keep_rule(const SelectRequest &req, int64_t i);

// The visible sink and window slots of query i in KV head kv_head's slots, ascending by slot, into `forced` (cleared
// first). Binary search over positions: O(log N + sinks + window).
void collect_forced(const KeyStore &keys, const SelectRequest &req, int64_t i, int64_t kv_head,
                    std::vector<int32_t> &forced);

// Query heads [l.q_head0, l.q_head0 + l.q_heads) of query i as f32, multiplied by
// scale * log2(e) so dot products are base-2 logits: out[g * D + d]. f16c: the CPU has F16C
// (kernels_have_f16c), which converts contiguous f16 heads 8 values at a time (the same bits).
void load_list_queries(const SelectRequest &req, int64_t i, const SelectionList &l, float *out, bool f16c = false);

// Asks the caches for what load_list_queries(req, i, l, ...) reads (heads whose values are
// contiguous; a hint, nothing else).
void prefetch_list_queries(const SelectRequest &req, int64_t i, const SelectionList &l);

// The context's kernels are AVX2 or AVX-512 ones: the CPU has F16C.
inline bool kernels_have_f16c(const KernelTable &k) {
#if defined(__x86_64__)
  return k.isa == SA_ISA_AVX2 || k.isa == SA_ISA_AVX512;
#else
  (void)k;
  return false;
#endif
}

// scores[g * ld + j] = q_g . row_j for g < q_heads (any number: split into kernel-sized groups).
void score_rows_grouped(const RowKernels &k, const float *q, int64_t q_heads, int64_t D,
                        const void *rows, int64_t n, float *scores, int64_t ld);

// 1 / sum_j 2^(row[j] - max) over the whole row (base-2 logits, -inf for excluded entries),
// with the row overwritten by 2^(row[j] - max), so that row[j] * it is entry j's softmax
// probability; 0 (the row untouched) when every entry is -inf.
float softmax_inv_sum(const KernelTable &k, float *row, int64_t n);
// The same with the row's largest entry known (max: what k.max_of(row, n) returns, but for the
// sign of a zero: 2^(x - 0) and 2^(x + 0) are the same bits).
float softmax_inv_sum(const KernelTable &k, float *row, int64_t n, float max);

// mass[j] += 2^(row[j] - lse(row)) for j < n: one head's softmax probabilities over the row
// (base-2 logits, -inf for excluded entries). Does nothing when every entry is -inf. The row is
// overwritten (with 2^(row[j] - max), so that each entry takes one exp2, not two).
void add_softmax_mass(const KernelTable &k, float *row, int64_t n, float *mass);

// Where list l of query i is written.
int32_t *selection_row(const SelectRequest &req, int64_t i, const SelectionList &l);

// Buffers of one task scoring a range of a list's columns (rescore steps below).
struct RescoreTaskScratch {
  std::vector<int32_t> singles;         // slots of short runs, gathered
  std::vector<int64_t> single_columns;  // their columns
  std::vector<float> scores;            // their scores [G][singles]
  std::vector<char> gathered, block;    // block: a run of the host's rows copied for the kernels
  std::vector<std::pair<size_t, size_t>> runs;
};

// Buffers of rescore_candidates for one list, reused from list to list by the task that owns
// them (its slot of the call's scratch, never a thread's). `candidates` is the input.
struct RescoreScratch {
  std::vector<int32_t> candidates;  // the selector's proposals: any order, duplicates allowed
  std::vector<int32_t> forced;
  std::vector<int32_t> columns;     // forced slots, then the kept candidates, each ascending
  std::vector<float> queries, scores, mass;  // scores [G][columns]
  std::vector<Candidate> ranked;
  RescoreTaskScratch task;          // for rescore_candidates, which scores every column itself
  int64_t column_count() const { return int64_t(columns.size()); }
  WriteScratch write;               // write_selection's
};

// Finishes list l of query i from s.candidates (sorted on return):
// forced slots (sinks, window) always kept; invisible and forced candidates dropped; the rest
// ranked by exact attention probability, summed over the list's query heads, with the softmax
// normalised over candidates + forced keys (the keys the selector knows of); mass targets
// measure that estimate. Deterministic: the result depends only on the candidate set.
// keys gives the positions, and the rows when it keeps them (else the request's host keys).
void rescore_candidates(const sa_context &ctx, const KeyStore &keys, const SelectRequest &req, int64_t i,
                        const SelectionList &l, RescoreScratch &s);
// The same with the positions of `keys` and the native rows of `rows`.
void rescore_candidates(const sa_context &ctx, const KeyStore &keys, const NativeRows &rows, const SelectRequest &req,
                        int64_t i, const SelectionList &l, RescoreScratch &s);

// rescore_candidates in three steps, so that one list's scoring can be spread over tasks:
// plan_rescore fixes the list's columns (s.columns, s.column_count()) and queries;
// score_rescore_columns scores columns [begin, end) (tasks on disjoint ranges of one list may
// run at once, each with its own RescoreTaskScratch); finish_rescore ranks and writes the list
// once every column is scored. The result does not depend on how the columns were split.
// filtered: s.candidates are already ascending, distinct, visible and neither sink nor window
// slots (the page selector finds them so in parallel pieces), and are taken as they are.
void plan_rescore(const KeyStore &keys, const SelectRequest &req, int64_t i, const SelectionList &l, RescoreScratch &s,
                  bool filtered = false);
void score_rescore_columns(const sa_context &ctx, const NativeRows &rows, const SelectionList &l,
                           RescoreScratch &s, int64_t begin, int64_t end, RescoreTaskScratch &t);
void finish_rescore(const sa_context &ctx, const KeyStore &keys, const SelectRequest &req, int64_t i,
                    const SelectionList &l, RescoreScratch &s);
// Like rescore_candidates, but with the selector's own scores (higher is better, ties by
// lower slot) instead of exact scores, in s.ranked; s.candidates is unused. Without exact
// masses there is no mass target: the caller must use rescore_candidates when one is set.
void write_ranked_candidates(const KeyStore &keys, const SelectRequest &req, int64_t i, const SelectionList &l,
                             RescoreScratch &s);

}  // namespace sa
