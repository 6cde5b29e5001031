// Eviction for a fixed-budget KV cache: which slots the incoming tokens should take.
#pragma once

#include <cstdint>
#include <vector>

namespace sa {

struct EvictRequest {
  const float *scores = nullptr;  // [rows][n], summed over rows
  int64_t rows = 1;
  int64_t row_stride = 0, col_stride = 1;
  const int64_t *positions = nullptr;  // [n] with stride pos_stride; -1 = empty slot
  int64_t pos_stride = 1;
  int64_t n = 0;
  int64_t budget = 0, incoming = 1;
  int32_t sinks = 0, window = 0;
  // Scores are accumulated attention (sa_attend's slot_mass with mass_decay = decay): rank by
  // the mass per step seen, the sum divided by sum_{i < age} decay^i with age = max_pos - p + 1
  // the queries that have seen the slot. false: the raw sum.
  bool mean = false;
  double decay = 1.0;
  bool row_max = false;  // a slot's score is its best row's (KV head), not the sum over rows
  // > 0: a slot is ranked by the best ranked score of the occupied slots whose positions are
  // within pool of its own (SnapKV's pooling: the neighbours of a token that gets attention
  // stay with it). 0: its own score.
  int64_t pool = 0;
};

// Empty slots first (at most `incoming`), then the occupied slots to evict so that
// occupied + incoming <= budget: lowest (pooled) score first (see EvictRequest), ties by older position, then
// lower slot. Sinks and the window of the newest position are never chosen. Throws
// SA_ERR_INVALID_ARGUMENT for NaN scores, bad positions or a budget the protected slots exceed
// (possible even when budget >= sinks + window + incoming if positions repeat).
std::vector<int32_t> choose_evictions(const EvictRequest &req);

// The policy's refusals, for choose_evictions and for a device that ran the same policy: the
// first slot (in slot order) whose scores are NaN (summed: only the sum over rows is, +inf
// and -inf), and a budget that the protected slots exceed.
[[noreturn]] void fail_nan_score(int64_t slot, bool summed);
[[noreturn]] void fail_budget(const EvictRequest &req, int64_t protected_count);

}  // namespace sa
