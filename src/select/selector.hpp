// The interface every selector implements. Selectors know nothing of the C ABI: the api
// layer validates arguments and hands them resolved requests.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/context.hpp"
#include "core/error.hpp"
#include "core/tensor_view.hpp"
#include "select/host_keys.hpp"
#include "select/key_store.hpp"

namespace sa {

struct SelectRequest {
  TensorView queries;                 // [n_q, H_q, D], f32/f16/bf16
  std::vector<int64_t> positions;     // position of each query (resolved defaults)
  const int32_t *query_segments = nullptr;
  const int32_t *key_segments = nullptr;
  int32_t top_k = 0, window = 0, sinks = 0;
  bool per_query_head = false;
  float mass_target = 0.f;
  float scale = 0.f;                  // > 0
  TensorView indices;                 // i32 [n_q, H_kv or H_q, width], validated
  // The host's keys, covering every slot of the index: set (by the api layer) exactly when the
  // index was created with borrow_keys; selectors that keep no copy of the keys read these.
  const HostKeys *host_keys = nullptr;
};

class Selector {
 public:
  virtual ~Selector() = default;
  // keys: [n, H_kv, D] validated; new slots take positions max_pos + 1, ...
  virtual void append(const TensorView &keys) = 0;
  // Refills distinct existing slots with keys [n, H_kv, D] at the given positions.
  virtual void update(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions) = 0;
  // Whether the selector can keep a token per KV head in each slot (sa_index_update_heads):
  // its state must read positions per head (KeyStore::positions(h)). The api layer refuses
  // per-head updates to the others.
  virtual bool supports_per_head() const { return false; }
  // Refills per KV head: see KeyStore::update_heads. Called only when supports_per_head().
  virtual void update_heads(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions);
  // Drops slots [keep, size), which hold every position above the kept ones (checked by the
  // caller with slots().trailing_slots_from): afterwards the selector is in the state the same
  // appends and updates would have left without the dropped slots (see sa_index_truncate).
  virtual void truncate(int64_t keep) = 0;
  // An independent deep copy in the same state; reads *this only (safe beside select).
  virtual std::unique_ptr<Selector> clone() const = 0;
  virtual void select(const sa_context &ctx, const SelectRequest &req) const = 0;
  virtual int64_t size() const = 0;
  virtual int64_t max_position() const = 0;  // -1 when empty
  // Bytes the selector holds (capacities of its containers, not counting the object itself).
  virtual size_t memory_bytes() const = 0;
  // Whether the scores it ranks by are attention logits (so opt->mass_target can be met);
  // false for the indexer, whose scores are its own.
  virtual bool scores_are_attention() const { return true; }
  // The slots' positions (and the keys the selector stores for them).
  virtual const KeyStore &slots() const = 0;
};

inline void Selector::update_heads(const int32_t *, int64_t, const TensorView &, const int64_t *) {
  fail(SA_ERR_INTERNAL, "per-KV-head update reached a selector that keeps one position per slot");
}

}  // namespace sa
