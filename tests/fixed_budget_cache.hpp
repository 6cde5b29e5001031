// A host engine's fixed-budget KV cache, as the tests drive it: `budget` slots of K/V (f32,
// [budget, H_kv, D]), the position each slot holds, accumulated attention per slot
// (sa_attend's slot_mass, [H_kv, budget]) and a selection index. Once full, every decode step
//   1. sa_cache_evict frees one slot by accumulated attention (sinks and window protected),
//   2. the new token's K/V go into that slot and sa_index_update refills it at the new position,
//   3. sa_select picks the slots the new query attends,
//   4. sa_attend runs over them and adds their probabilities to slot_mass.
// Every buffer is allocated up front, so a step allocates nothing on the test's side (the
// memory test counts the library's allocations around steps).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "test_util.hpp"

namespace sat {

struct BudgetConfig {
  sa_selector_kind kind = SA_SELECTOR_EXACT;
  int32_t h_q = 2, h_kv = 1, d = 16;
  int64_t budget = 1024;
  int32_t sinks = 4, window = 64, top_k = 64;
  float mass_decay = 1.f;
  float recent_share = -1.f;  // sa_evict_options.recent_share; < 0: the library's default
  uint64_t seed = 1;
  // Keys and queries share a random unit direction; `planted_position` gets a key along it
  // (strongly attended), `shunned_first` .. +shunned_count keys against it (barely attended).
  double query_bias = 0.0;
  int64_t planted_position = -1;
  int64_t shunned_first = -1, shunned_count = 0;
};

inline sa_tensor raw_tensor(void *data, sa_dtype dtype, std::initializer_list<int64_t> shape) {
  sa_tensor t{};
  t.data = data;
  t.dtype = dtype;
  t.device = SA_DEVICE_CPU;
  t.rank = int32_t(shape.size());
  int i = 0;
  for (int64_t s : shape) t.shape[i++] = s;
  return t;
}

class FixedBudgetCache {
 public:
  FixedBudgetCache(sa_context *ctx, const BudgetConfig &c)
      : ctx_(ctx), c_(c), rng_(c.seed), row_elems_(size_t(c.h_kv) * size_t(c.d)) {
    const int64_t B = c.budget, H = c.h_kv, D = c.d;
    k_.assign(size_t(B * H * D), 0.f);
    v_.assign(size_t(B * H * D), 0.f);
    positions_.assign(size_t(B), -1);
    mass_.assign(size_t(H * B), 0.f);
    q_.assign(size_t(B) * size_t(c.h_q) * size_t(D), 0.f);  // room for a prompt's queries
    out_.assign(size_t(B) * size_t(c.h_q) * size_t(D), 0.f);
    width_ = int64_t(c.sinks) + c.window + c.top_k;
    indices_.assign(size_t(H * width_), -1);
    new_k_.assign(size_t(H * D), 0.f);
    direction_.assign(size_t(D), 0.f);
    double norm = 0;
    for (double &x : direction_) {
      x = rng_.normal();
      norm += x * x;
    }
    for (double &x : direction_) x /= std::sqrt(norm);
    freed_.assign(2, -1);
    evict_opt_.budget = B;
    evict_opt_.incoming = 1;
    evict_opt_.sinks = c.sinks;
    evict_opt_.window = c.window;
    if (c.recent_share >= 0.f) evict_opt_.recent_share = c.recent_share;
    select_opt_.top_k = c.top_k;
    select_opt_.window = c.window;
    select_opt_.sinks = c.sinks;
    select_opt_.query_positions = &query_pos_;
    attend_opt_.causal = 1;
    attend_opt_.query_positions = &query_pos_;
    attend_opt_.key_positions = positions_.data();
    attend_opt_.mass_decay = c.mass_decay;
    mass_t_ = raw_tensor(mass_.data(), SA_DTYPE_F32, {H, B});
    attend_opt_.slot_mass = &mass_t_;
    k_t_ = raw_tensor(k_.data(), SA_DTYPE_F32, {B, H, D});
    v_t_ = raw_tensor(v_.data(), SA_DTYPE_F32, {B, H, D});
    new_k_t_ = raw_tensor(new_k_.data(), SA_DTYPE_F32, {1, H, D});
    q1_t_ = raw_tensor(q_.data(), SA_DTYPE_F32, {1, c.h_q, D});
    out1_t_ = raw_tensor(out_.data(), SA_DTYPE_F32, {1, c.h_q, D});
    idx_t_ = raw_tensor(indices_.data(), SA_DTYPE_I32, {1, H, width_});
    pos_t_ = raw_tensor(positions_.data(), SA_DTYPE_I64, {B});
    freed_t_ = raw_tensor(freed_.data(), SA_DTYPE_I32, {2});
  }
  FixedBudgetCache(const FixedBudgetCache &) = delete;
  FixedBudgetCache &operator=(const FixedBudgetCache &) = delete;
  ~FixedBudgetCache() { sa_index_destroy(&ix_); }

  // SA_ERR_UNSUPPORTED when this build lacks the selector kind.
  sa_status create_index() {
    sa_index_options o = SA_INDEX_OPTIONS_INIT;
    o.kind = c_.kind;
    o.num_kv_heads = c_.h_kv;
    o.head_dim = c_.d;
    o.dtype = SA_DTYPE_F32;
    o.capacity = c_.budget;
    return sa_index_create(ctx_, &o, &ix_);
  }

  // Fills every slot with a prompt (positions 0 .. budget-1, slot = position), indexes it and
  // runs the prompt's causal attention once to seed slot_mass (H2O).
  sa_status prefill() {
    const int64_t B = c_.budget;
    for (int64_t s = 0; s < B; ++s) {
      make_token(s, &k_[size_t(s) * row_elems_], &v_[size_t(s) * row_elems_]);
      make_query(&q_[size_t(s * c_.h_q * c_.d)]);
      positions_[size_t(s)] = s;
    }
    sa_status st = sa_index_append(ix_, &k_t_);
    if (st != SA_OK) return st;
    sa_tensor q = raw_tensor(q_.data(), SA_DTYPE_F32, {B, c_.h_q, c_.d});
    sa_tensor out = raw_tensor(out_.data(), SA_DTYPE_F32, {B, c_.h_q, c_.d});
    sa_attend_options o = attend_opt_;
    o.query_positions = nullptr;  // the prompt's own positions 0 .. B-1
    st = sa_attend(ctx_, &q, &k_t_, &v_t_, nullptr, &o, &out, nullptr);
    next_pos_ = B;
    return st;
  }

  // One decode step for the token at position next_position().
  sa_status step() {
    int64_t n_freed = 0;
    sa_status st = sa_cache_evict(ctx_, &evict_opt_, &mass_t_, &pos_t_, &freed_t_, &n_freed);
    if (st != SA_OK) return st;
    if (n_freed != 1) return SA_ERR_INTERNAL;
    const int32_t slot = freed_[0];
    evicted_position_ = positions_[size_t(slot)];
    make_token(next_pos_, &k_[size_t(slot) * row_elems_], &v_[size_t(slot) * row_elems_]);
    for (size_t x = 0; x < row_elems_; ++x) new_k_[x] = k_[size_t(slot) * row_elems_ + x];
    positions_[size_t(slot)] = next_pos_;
    for (int64_t h = 0; h < c_.h_kv; ++h) mass_[size_t(h * c_.budget + slot)] = 0.f;  // a new token starts at 0
    st = sa_index_update(ix_, &slot, 1, &new_k_t_, &next_pos_);
    if (st != SA_OK) return st;
    last_slot_ = slot;
    query_pos_ = next_pos_;
    make_query(q_.data());
    st = sa_select(ix_, &q1_t_, &select_opt_, &idx_t_);
    if (st != SA_OK) return st;
    st = sa_attend(ctx_, &q1_t_, &k_t_, &v_t_, &idx_t_, &attend_opt_, &out1_t_, nullptr);
    ++next_pos_;
    return st;
  }

  sa_index *index() { return ix_; }
  const BudgetConfig &config() const { return c_; }
  int64_t next_position() const { return next_pos_; }
  int64_t evicted_position() const { return evicted_position_; }  // of the last step
  int32_t last_slot() const { return last_slot_; }
  const std::vector<int64_t> &positions() const { return positions_; }
  const std::vector<float> &mass() const { return mass_; }
  int64_t width() const { return width_; }
  // Last step's query [1, H_q, D], selection [1, H_kv, width], output [1, H_q, D], K and V.
  const sa_tensor *query() const { return &q1_t_; }
  const sa_tensor *selection() const { return &idx_t_; }
  const sa_tensor *output() const { return &out1_t_; }
  const sa_tensor *keys() const { return &k_t_; }
  const sa_tensor *values() const { return &v_t_; }
  int64_t query_position() const { return query_pos_; }

 private:
  void make_token(int64_t position, float *k, float *v) {
    double along = 0;
    if (position == c_.planted_position) along = 4.0;
    if (c_.shunned_count > 0 && position >= c_.shunned_first && position < c_.shunned_first + c_.shunned_count)
      along = -4.0;
    for (int64_t h = 0; h < c_.h_kv; ++h)
      for (int64_t x = 0; x < c_.d; ++x) {
        double base = along != 0 ? along * direction_[size_t(x)] * std::sqrt(double(c_.d)) : rng_.normal();
        k[h * c_.d + x] = float(base);
        v[h * c_.d + x] = float(rng_.normal());
      }
  }
  void make_query(float *q) {
    for (int64_t h = 0; h < c_.h_q; ++h)
      for (int64_t x = 0; x < c_.d; ++x)
        q[h * c_.d + x] = float(rng_.normal() + c_.query_bias * direction_[size_t(x)] * std::sqrt(double(c_.d)));
  }

  sa_context *ctx_;
  BudgetConfig c_;
  Rng rng_;
  sa_index *ix_ = nullptr;
  size_t row_elems_;
  std::vector<float> k_, v_, mass_, q_, out_, new_k_;
  std::vector<int64_t> positions_;
  std::vector<int32_t> indices_, freed_;
  std::vector<double> direction_;
  int64_t width_ = 0, next_pos_ = 0, query_pos_ = 0, evicted_position_ = -1;
  int32_t last_slot_ = -1;
  sa_evict_options evict_opt_ = SA_EVICT_OPTIONS_INIT;
  sa_select_options select_opt_ = SA_SELECT_OPTIONS_INIT;
  sa_attend_options attend_opt_ = SA_ATTEND_OPTIONS_INIT;
  sa_tensor mass_t_{}, k_t_{}, v_t_{}, new_k_t_{}, q1_t_{}, out1_t_{}, idx_t_{}, pos_t_{}, freed_t_{};
};

}  // namespace sat
