#include "attend/attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "attend/slot_mass.hpp"
#include "core/half.hpp"
#include "core/countdown.hpp"
#include "core/phase_times.hpp"
#include "core/threading.hpp"

namespace sa {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
// Split long lists until about this many tasks exist (4 per thread on 16 threads), never below
// kMinSplitKeys keys a task; bench/floor_loops.hpp (split_parts) mirrors the split.
constexpr int64_t kTargetTasks = 64;
constexpr int64_t kMinSplitKeys = 256;

void store_scalar(const TensorView &t, int64_t off, float x) {
  switch (t.dtype) {
    case SA_DTYPE_F16: t.ptr<uint16_t>()[off] = f32_to_f16(x); break;
    case SA_DTYPE_BF16: t.ptr<uint16_t>()[off] = f32_to_bf16(x); break;
    default: t.ptr<float>()[off] = x; break;
  }
}

// K or V with a unit stride along D, as the kernels need: the caller's tensor when it has one,
// else a packed copy (a slow path for exotic layouts).
struct RowMajorKV {
  std::vector<char> packed;
  const char *base = nullptr;
  int64_t token_stride = 0, head_stride = 0;  // elements

  RowMajorKV(const TensorView &t) {
    if (t.stride[2] == 1 || t.shape[2] <= 1) {
      base = t.bytes();
      token_stride = t.stride[0];
      head_stride = t.stride[1];
      return;
    }
    const int64_t n = t.shape[0], H = t.shape[1], D = t.shape[2];
    const size_t es = dtype_size(t.dtype);
    packed.resize(size_t(n * H * D) * es);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t d = 0; d < D; ++d)
          std::memcpy(&packed[size_t((i * H + h) * D + d) * es],
                      t.bytes() + size_t(i * t.stride[0] + h * t.stride[1] + d * t.stride[2]) * es, es);
    base = packed.data();
    token_stride = H * D;
    head_stride = D;
  }
};

// One unit of output: query i, query heads [h0, h0 + g). Dense units hold every head of the
// query, so that a task walks the cache token block by token block across all KV heads and
// reads memory in order; sparse units hold the heads that share one index list.
struct Unit {
  int64_t i;
  int h0, g;
  int list_head;  // sparse: the row of the index tensor holding the list
};

struct Task {
  int64_t unit;
  int64_t begin, end;  // the part of the unit's key list this task folds
};

constexpr int64_t kTokenBlock = 64;  // dense: tokens per pass over the KV heads
constexpr int64_t kFusedMassFloats = int64_t(1) << 22;  // most scores kept for slot mass (16 MB)

}  // namespace

void attend(const sa_context &ctx, const AttendProblem &p) {
  const int64_t n_q = p.q.shape[0], H_q = p.q.shape[1], D = p.q.shape[2];
  const int64_t n_kv = p.k.shape[0], H_kv = p.k.shape[1];
  const int64_t G = H_q / H_kv;
  const bool shared_lists = p.shared_lists;
  const bool sparse = p.indices != nullptr || shared_lists;
  int64_t width = p.indices ? p.indices->shape[2] : 0;
  if (shared_lists)
    for (int64_t i = 0; i < n_q; ++i) width = std::max(width, p.list_len[i]);

  SA_PHASE_START(phase);
  RowMajorKV K(p.k), V(p.v);
  const size_t es = dtype_size(p.k.dtype);

  // Index lists with a unit stride along the list.
  std::vector<int32_t> packed_idx;
  const int32_t *idx = nullptr;
  int64_t idx_s0 = 0, idx_s1 = 0;
  if (shared_lists) {
    idx = p.list_data;  // per query: list_start[i], the same list for every head
  } else if (sparse) {
    const TensorView &ix = *p.indices;
    if (ix.stride[2] == 1 || width <= 1) {
      idx = ix.ptr<const int32_t>();
      idx_s0 = ix.stride[0];
      idx_s1 = ix.stride[1];
    } else {
      packed_idx.resize(size_t(ix.shape[0] * ix.shape[1] * width));
      for (int64_t a = 0; a < ix.shape[0]; ++a)
        for (int64_t b = 0; b < ix.shape[1]; ++b)
          for (int64_t c = 0; c < width; ++c)
            packed_idx[size_t((a * ix.shape[1] + b) * width + c)] =
                ix.ptr<const int32_t>()[a * ix.stride[0] + b * ix.stride[1] + c * ix.stride[2]];
      idx = packed_idx.data();
      idx_s0 = ix.shape[1] * width;
      idx_s1 = width;
    }
  }

  // Causal limit of each query.
  int64_t last_pos = n_kv - 1;
  if (p.causal && p.key_positions && !p.query_positions) {
    last_pos = -1;
    const int64_t n_pos = p.key_pos_head_stride ? H_kv * p.key_pos_head_stride : n_kv;
    for (int64_t r = 0; r < n_pos; ++r) last_pos = std::max(last_pos, p.key_positions[r]);
  }
  const bool limited_by_length = shared_lists && !p.key_positions;
  auto pos_limit = [&](int64_t i) -> int64_t {
    if (!p.causal || limited_by_length) return INT64_MAX;
    return p.query_positions ? p.query_positions[i] : last_pos - n_q + 1 + i;
  };

  // Accumulated attention per key row: its buffers are allocated here, before any output.
  std::unique_ptr<SlotMass> mass;
  if (p.slot_mass) {
    MassLayout ml;
    ml.q = p.q;
    ml.qscale = p.scale * kLog2e;
    ml.n_kv = n_kv;
    ml.H_kv = H_kv;
    ml.kv_dtype = p.k.dtype;
    ml.k_base = K.base;
    ml.k_token_stride = K.token_stride;
    ml.k_head_stride = K.head_stride;
    if (sparse) {
      ml.sparse = true;
      ml.idx = idx;
      ml.idx_s0 = idx_s0;
      ml.idx_s1 = idx_s1;
      ml.width = width;
      ml.lists = shared_lists ? H_kv : p.indices->shape[1];
      ml.per_query_head = p.per_query_head;
      ml.list_start = p.list_start;
      ml.list_len = p.list_len;
    }
    ml.key_positions = p.key_positions;
    ml.key_pos_head_stride = p.key_pos_head_stride;
    std::vector<int64_t> limits(static_cast<size_t>(n_q));
    for (int64_t i = 0; i < n_q; ++i) limits[size_t(i)] = pos_limit(i);
    mass = std::make_unique<SlotMass>(ml, std::move(limits), *p.slot_mass, p.mass_decay);
  }
  if (n_q == 0) {
    if (mass) mass->accumulate(ctx);
    return;
  }

  std::vector<Unit> units;
  // Shared lists are walked like the dense range: every head of the query at once, block by
  // block, so each token's K/V rows of all heads are read together.
  const bool all_heads = !sparse || shared_lists;
  if (all_heads) {
    for (int64_t i = 0; i < n_q; ++i) units.push_back({i, 0, int(H_q), 0});
  } else if (p.per_query_head) {
    for (int64_t i = 0; i < n_q; ++i)
      for (int h = 0; h < H_q; ++h) units.push_back({i, h, 1, h});
  } else {
    for (int64_t i = 0; i < n_q; ++i)
      for (int kvh = 0; kvh < H_kv; ++kvh) units.push_back({i, int(kvh * G), int(G), kvh});
  }
  auto list_of = [&](const Unit &u) -> const int32_t * {
    return shared_lists ? idx + p.list_start[u.i] : idx + u.i * idx_s0 + u.list_head * idx_s1;
  };
  auto list_length = [&](const Unit &u) -> int64_t {
    if (shared_lists) return p.list_len[u.i];
    if (sparse) return width;
    if (p.causal && !p.key_positions) return std::max<int64_t>(0, std::min(n_kv, pos_limit(u.i) + 1));
    return n_kv;
  };

  // Split long lists when there are too few units to keep the threads busy (decode). The split
  // depends on the shapes only, so results do not change with the thread count.
  const int64_t n_units = int64_t(units.size());
  int64_t splits = 1;
  if (n_units < kTargetTasks) splits = (kTargetTasks + n_units - 1) / n_units;
  std::vector<Task> tasks;
  tasks.reserve(size_t(n_units * splits));
  for (int64_t u = 0; u < n_units; ++u) {
    int64_t len = list_length(units[size_t(u)]);
    int64_t parts = std::max<int64_t>(1, std::min(splits, len / kMinSplitKeys));
    for (int64_t s = 0; s < parts; ++s) tasks.push_back({u, len * s / parts, len * (s + 1) / parts});
  }
  const bool merged = int64_t(tasks.size()) > n_units;

  // Softmax states (m, l, acc per head of a unit): one per task when lists are split (merged
  // below), else one per slot (a thread of the loop's team).
  const int64_t max_heads = all_heads ? H_q : p.per_query_head ? 1 : G;
  const int64_t state_floats = max_heads * (D + 2);
  // Slot mass over short lists: the softmax pass keeps every entry's scores ([unit][head]
  // [entry], -inf for the entries it skips), so the masses need no second pass over K.
  std::vector<float> entry_scores;
  if (mass && sparse && !shared_lists && n_units * max_heads * width <= kFusedMassFloats)
    entry_scores.assign(size_t(n_units * max_heads * width), -std::numeric_limits<float>::infinity());
  const int slots = loop_slots(ctx.threads, int64_t(tasks.size()));
  std::vector<float> states(size_t((merged ? int64_t(tasks.size()) : slots) * state_floats));
  std::vector<float> qbuf(size_t(slots * max_heads * D));
  const float qscale = p.scale * kLog2e;

  // State layout: m[max_heads], l[max_heads], acc[max_heads][D].
  auto write_unit = [&](const Unit &u, const float *st) {
    const float *m = st, *l = st + max_heads, *acc = st + 2 * max_heads;
    for (int h = 0; h < u.g; ++h) {
      const int64_t qh = u.h0 + h;
      const bool empty = !(l[h] > 0.f);
      const float inv = empty ? 0.f : 1.f / l[h];
      if (mass) mass->lse2()[u.i * H_q + qh] = empty ? -std::numeric_limits<float>::infinity() : m[h] + std::log2(l[h]);
      const int64_t base = u.i * p.out.stride[0] + qh * p.out.stride[1];
      for (int64_t d = 0; d < D; ++d) store_scalar(p.out, base + d * p.out.stride[2], acc[h * D + d] * inv);
      if (p.lse) {
        float v = empty ? -std::numeric_limits<float>::infinity() : (m[h] + std::log2(l[h])) * kLn2;
        p.lse->ptr<float>()[u.i * p.lse->stride[0] + qh * p.lse->stride[1]] = v;
      }
    }
  };

  // Exact merge of a unit's split states [t0, t1): each part rescaled to the common maximum,
  // into `total` (state_floats), then written. Run by the task finishing the unit's last part,
  // while other units' parts are still folded.
  auto merge_unit = [&](size_t t0, size_t t1, float *total) {
    const Unit &u = units[size_t(tasks[t0].unit)];
    float *M = total, *Lsum = M + max_heads, *A = M + 2 * max_heads;
    for (int h = 0; h < u.g; ++h) {
      float mx = -std::numeric_limits<float>::infinity();
      for (size_t t = t0; t < t1; ++t) mx = std::max(mx, states[t * size_t(state_floats) + size_t(h)]);
      M[h] = mx;
      Lsum[h] = 0.f;
      std::fill(A + h * D, A + (h + 1) * D, 0.f);
      if (mx == -std::numeric_limits<float>::infinity()) continue;
      for (size_t t = t0; t < t1; ++t) {
        const float *st = &states[t * size_t(state_floats)];
        if (!(st[max_heads + h] > 0.f)) continue;
        const float w = std::exp2(st[h] - mx);
        Lsum[h] += st[max_heads + h] * w;
        const float *acc = st + 2 * max_heads + h * D;
        for (int64_t d = 0; d < D; ++d) A[h * D + d] += acc[d] * w;
      }
    }
    write_unit(u, total);
  };
  // Each unit's tasks are consecutive: its first task and how many are left to fold.
  std::vector<int64_t> unit_first(static_cast<size_t>(n_units + 1), int64_t(tasks.size()));
  for (int64_t t = int64_t(tasks.size()) - 1; t >= 0; --t) unit_first[size_t(tasks[size_t(t)].unit)] = t;
  Countdown parts_left;
  if (merged) parts_left.start(n_units, [&](int64_t u) { return unit_first[size_t(u) + 1] - unit_first[size_t(u)]; });
  std::vector<float> totals(merged ? size_t(slots * state_floats) : 0);

  SA_PHASE_LAP(phase, 10, sparse ? "att.setup" : "dense.setup");
  parallel_for_slots(slots, int64_t(tasks.size()), [&](int64_t t, int slot) {
    const Task &task = tasks[size_t(t)];
    const Unit &u = units[size_t(task.unit)];
    float *st = &states[size_t((merged ? t : slot) * state_floats)];
    float *m = st, *l = st + max_heads, *acc = st + 2 * max_heads;
    std::fill(m, m + u.g, -std::numeric_limits<float>::infinity());
    std::fill(l, l + u.g, 0.f);
    std::fill(acc, acc + u.g * D, 0.f);
    float *q = &qbuf[size_t(slot * max_heads * D)];
    for (int h = 0; h < u.g; ++h)
      for (int64_t d = 0; d < D; ++d)
        q[h * D + d] = qscale * read_float(p.q, u.i * p.q.stride[0] + (u.h0 + h) * p.q.stride[1] + d * p.q.stride[2]);

    const int64_t block = all_heads ? kTokenBlock : std::max<int64_t>(1, task.end - task.begin);
    for (int64_t b = task.begin; b < task.end && n_kv > 0; b += block) {
      const int64_t e = std::min(task.end, b + block);
      // Heads of the unit in runs that share a KV head, at most kMaxGroup per kernel call.
      for (int h = 0; h < u.g;) {
        const int64_t kvh = (u.h0 + h) / G;
        const int run = int(std::min<int64_t>({int64_t(u.g - h), (kvh + 1) * G - (u.h0 + h), int64_t(kMaxGroup)}));
        RowSet rs;
        rs.k = K.base + size_t(kvh * K.head_stride) * es;
        rs.v = V.base + size_t(kvh * V.head_stride) * es;
        rs.k_stride = K.token_stride;
        rs.v_stride = V.token_stride;
        if (sparse) rs.rows = list_of(u) + b;
        else rs.begin = b;
        rs.n = e - b;
        rs.key_pos = p.key_positions ? p.key_positions + kvh * p.key_pos_head_stride : nullptr;
        rs.pos_limit = pos_limit(u.i);
        if (!entry_scores.empty()) {
          rs.scores = &entry_scores[size_t((task.unit * max_heads + h) * width + b)];
          rs.scores_ld = width;
        }
        ctx.kernels->of(p.k.dtype).attend_rows(q + h * D, run, int(D), rs, {m + h, l + h, acc + h * D});
        h += run;
      }
    }
    if (!merged) write_unit(u, st);
    else if (parts_left.finish(task.unit))
      merge_unit(size_t(unit_first[size_t(task.unit)]), size_t(unit_first[size_t(task.unit) + 1]),
                 &totals[size_t(slot * state_floats)]);
  });

  SA_PHASE_LAP(phase, sparse ? 11 : 13, sparse ? "att.tasks" : "dense.tasks");
  if (mass) mass->accumulate(ctx, entry_scores.empty() ? nullptr : entry_scores.data());
  SA_PHASE_LAP(phase, 12, "attend.mass");
}

}  // namespace sa
