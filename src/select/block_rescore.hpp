// Candidate rescoring for many queries at once (prefill). An approximate selector's lists
// propose candidates per query; when a call holds many queries over few keys (a prompt over its
// own keys), the candidates of a list are a large share of the keys it sees, and scoring them
// one list at a time is the exact selector's work done without its GEMM. Here the lists of a
// block of queries of one KV head are planned together (plan_rescore), and when their
// candidates are dense in the keys the block sees, every score comes from one GEMM of the
// block's queries against that prefix of the head's keys (score_matmul.hpp); else each list is
// scored as rescore_candidates scores it. Either way each list is then ranked and written by
// finish_rescore: what a list selects is what rescore_candidates selects from the same
// candidates, up to the rounding of the scores' sums (a GEMM adds in another order).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "select/candidate_rescore.hpp"

namespace sa {

// Calls with at least this many queries rescore by blocks (fewer: per list, as decode does).
constexpr int64_t kBlockRescoreMinQueries = 8;
// Queries per block: their GEMM rows are this times the list's query heads.
constexpr int64_t kBlockRescoreQueries = 256;

// One list of a block: query i, list l, its candidates in s.candidates (the input).
struct BlockList {
  int64_t query = 0;
  SelectionList list;
  RescoreScratch *scratch = nullptr;
};

// Every KV head's rows as contiguous f32 (what the GEMM reads), converted on demand: a head's
// first slots up to the largest prefix a dense block asked for (one task converts, others of
// the head wait), or the rows themselves when they are f32 and contiguous already. Shared by
// the blocks of a call; dense blocks see few keys, so little is converted (never more than
// N x D floats per head).
class KeysF32 {
 public:
  KeysF32(const NativeRows &rows, int64_t heads, int64_t n);
  // Head h's rows [0, prefix) (prefix <= n); safe to call from concurrent tasks.
  const float *head(int h, int64_t prefix);

 private:
  const NativeRows &rows_;
  int64_t n_;
  bool in_place_;
  std::vector<std::unique_ptr<float[]>> copy_;
  std::vector<int64_t> converted_;
  std::unique_ptr<std::mutex[]> mutex_;
};

// A task's buffers (its slot of the call's scratch).
struct BlockRescoreScratch {
  std::vector<float> queries, scores;  // the block's queries (GEMM rows), their scores
  std::vector<BlockList> lists;        // the caller's: the block's lists
  std::vector<RescoreScratch> own;     // the caller's: lists' buffers, when it keeps none per list
  RescoreTaskScratch task;
};

// Finishes every list of the block (all of one KV head): plans, scores (one GEMM when dense,
// else per list) and writes each. rows: the native rows (the keys' own or the host's), which
// keys_f32 converts.
void rescore_block(const sa_context &ctx, const KeyStore &keys, const NativeRows &rows, KeysF32 &keys_f32,
                   const SelectRequest &req, const BlockList *lists, int64_t n, BlockRescoreScratch &t);

// A selector whose lists propose candidates (lsh, hnsw) selects a prefill with these: tasks
// over (block of kBlockRescoreQueries queries, KV head), each proposing every list of the
// block (propose fills rs.candidates; it may use rs.queries; `slot` is the task's slot of the
// call's scratch, of which there are block_task_slots), then rescoring them with rescore_block.
using ProposeCandidates = std::function<void(int64_t i, const SelectionList &l, int slot, RescoreScratch &rs)>;
int block_task_slots(const sa_context &ctx, const SelectRequest &req, int64_t kv_heads);
void select_by_blocks(const sa_context &ctx, const KeyStore &keys, const SelectRequest &req,
                      const ProposeCandidates &propose);

// How many keys each query of a request sees (by position, and segment when segments are on):
// the graph and hash selectors score a prefill's query exactly when it sees few keys (a GEMM
// over them beats proposing candidates), by binary search in the key store's position order.
// With per-KV-head positions (the page selector after sa_index_update_heads) a query sees a
// number of keys per head; it counts as the fewest, so that every head that sees few keys is
// scored exactly (the others then are too: exact is never worse).
class VisibleCounts {
 public:
  VisibleCounts(const KeyStore &keys, const SelectRequest &req);
  int64_t operator()(int64_t i) const;
  // When every query sees at most `limit` keys, selects them all exactly by the exact
  // selector's path (it streams the keys: cheaper than rescoring every slot as candidates)
  // and returns true; else does nothing and returns false.
  bool select_exactly_if_all_within(const sa_context &ctx, int64_t limit) const;
  // Selects every query that sees at most `limit` keys by the exact selector's path, in runs
  // of consecutive such queries, and hands each run of the other queries to `rest` as a request
  // of its own (query_chunk); a prefill's queries at ascending positions make one run of each.
  void select_exactly_within(const sa_context &ctx, int64_t limit,
                             const std::function<void(const SelectRequest &)> &rest) const;

 private:
  const KeyStore &keys_;
  const SelectRequest &req_;
};

// Queries [i0, i1) of req as a request of their own (queries, positions, segments and output
// rows): a selector that keeps state per list of a call runs a long prefill in such chunks.
SelectRequest query_chunk(const SelectRequest &req, int64_t i0, int64_t i1);

}  // namespace sa
