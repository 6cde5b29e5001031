#include "attend/slot_mass.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/threading.hpp"
#include "core/visibility.hpp"

namespace sa {
namespace {

constexpr int64_t kDenseBlock = 1024;          // key rows per dense task
constexpr int64_t kSubBlock = 64;              // rows walked across the KV heads at once
constexpr int64_t kEntryScratch = int64_t(1) << 18;  // floats of per-entry sparse probabilities

}  // namespace

SlotMass::SlotMass(const MassLayout &layout, std::vector<int64_t> pos_limits,
                   const TensorView &mass, float decay)
    : layout_(layout), pos_limits_(std::move(pos_limits)), mass_(mass), decay_(decay) {
  D_ = layout_.q.shape[2];
  G_ = layout_.q.shape[1] / layout_.H_kv;
  const int64_t n_q = layout_.q.shape[0];
  direct_ = mass_.stride[mass_.rank - 1] == 1 || layout_.n_kv <= 1;
  lse2_.assign(size_t(n_q * layout_.q.shape[1]), -std::numeric_limits<float>::infinity());
  if (!direct_) packed_.assign(size_t(mass_rows() * layout_.n_kv), 0.f);
  if (layout_.sparse) {
    chunk_units_ = std::max<int64_t>(1, kEntryScratch / std::max<int64_t>(1, layout_.width));
    chunk_units_ = std::min(chunk_units_, n_q * layout_.lists);
    entry_mass_.assign(size_t(chunk_units_ * layout_.width), 0.f);
  }
  // Every query once, scaled to base 2 (the size of q in f32): the pass calls the kernel per
  // sub-block of keys, too often to convert q each time.
  const TensorView &Q = layout_.q;
  const int64_t H_q = Q.shape[1];
  scaled_q_.resize(size_t(n_q * H_q * D_));
  for (int64_t i = 0; i < n_q; ++i)
    for (int64_t h = 0; h < H_q; ++h)
      for (int64_t d = 0; d < D_; ++d)
        scaled_q_[size_t((i * H_q + h) * D_ + d)] =
            layout_.qscale * read_float(Q, i * Q.stride[0] + h * Q.stride[1] + d * Q.stride[2]);
}

float *SlotMass::target(int64_t r) {
  return direct_ ? mass_.ptr<float>() + r * mass_.stride[0] : packed_.data() + r * layout_.n_kv;
}

// Adds the probabilities of query i's heads [h_begin, h_end) (all of KV head kvh) for the
// entries of rs into out[entry].
void SlotMass::fold(const sa_context &ctx, int64_t i, int64_t kvh, int64_t h_begin, int64_t h_end, RowSet rs,
                    float *out) {
  rs.k = layout_.k_base + size_t(kvh * layout_.k_head_stride) * dtype_size(layout_.kv_dtype);
  rs.k_stride = layout_.k_token_stride;
  rs.key_pos = layout_.key_positions ? layout_.key_positions + kvh * layout_.key_pos_head_stride : nullptr;
  rs.pos_limit = pos_limits_[size_t(i)];
  for (int64_t h0 = h_begin; h0 < h_end; h0 += kMaxGroup) {
    const int g = int(std::min<int64_t>(kMaxGroup, h_end - h0));
    ctx.kernels->of(layout_.kv_dtype).mass_rows(&scaled_q_[size_t((i * layout_.q.shape[1] + h0) * D_)], g,
                                                int(D_), rs, &lse2_[size_t(i * layout_.q.shape[1] + h0)], out);
  }
}

// One task per block of key rows: it owns those rows' sums (of every mass row) and adds every
// query's probabilities in query order. Inside, sub-blocks walk the rows across all KV heads,
// so that memory is read in order and a sub-block stays in cache for all the queries.
void SlotMass::dense(const sa_context &ctx) {
  const int64_t n_q = layout_.q.shape[0], rows = mass_rows();
  const int64_t blocks = (layout_.n_kv + kDenseBlock - 1) / kDenseBlock;
  parallel_for(ctx.threads, blocks, [&](int64_t t) {
    const int64_t j_end = std::min(layout_.n_kv, (t + 1) * kDenseBlock);
    for (int64_t j0 = t * kDenseBlock; j0 < j_end; j0 += kSubBlock) {
      RowSet rs;
      rs.begin = j0;
      rs.n = std::min(j_end, j0 + kSubBlock) - j0;
      for (int64_t i = 0; i < n_q; ++i) {
        if (!layout_.key_positions && !sees(pos_limits_[size_t(i)], j0)) continue;  // all in the future
        for (int64_t kvh = 0; kvh < layout_.H_kv; ++kvh)
          fold(ctx, i, kvh, kvh * G_, (kvh + 1) * G_, rs, target(rows == 1 ? 0 : kvh) + j0);
      }
    }
  });
}

// Index lists may name any row, so tasks cannot own rows: a chunk of units writes per-entry
// probabilities in parallel, then one task per mass row adds them in unit order.
void SlotMass::sparse(const sa_context &ctx, const float *entry_scores) {
  const int64_t n_units = layout_.q.shape[0] * layout_.lists, rows = mass_rows(), width = layout_.width;
  auto kv_head = [&](int64_t u) { return layout_.per_query_head ? (u % layout_.lists) / G_ : u % layout_.lists; };
  auto list = [&](int64_t u) {
    if (layout_.list_start) return layout_.idx + layout_.list_start[u / layout_.lists];
    return layout_.idx + (u / layout_.lists) * layout_.idx_s0 + (u % layout_.lists) * layout_.idx_s1;
  };
  auto length = [&](int64_t u) { return layout_.list_len ? layout_.list_len[u / layout_.lists] : width; };
  for (int64_t c0 = 0; c0 < n_units; c0 += chunk_units_) {
    const int64_t c1 = std::min(n_units, c0 + chunk_units_);
    std::fill(entry_mass_.begin(), entry_mass_.begin() + (c1 - c0) * width, 0.f);
    parallel_for(ctx.threads, c1 - c0, [&](int64_t k) {
      const int64_t u = c0 + k, i = u / layout_.lists, l = u % layout_.lists;
      RowSet rs;
      rs.rows = list(u);
      rs.n = length(u);
      const int64_t h_begin = layout_.per_query_head ? l : l * G_, h_end = layout_.per_query_head ? l + 1 : (l + 1) * G_;
      float *out = entry_mass_.data() + k * width;  // not &v[i]: lists may have width 0 (an empty v)
      if (!entry_scores) return fold(ctx, i, kv_head(u), h_begin, h_end, rs, out);
      // The heads in order, as mass_rows adds them.
      for (int64_t h = h_begin; h < h_end; ++h) {
        const float lse2 = lse2_[size_t(i * layout_.q.shape[1] + h)];
        if (lse2 == -std::numeric_limits<float>::infinity()) continue;
        ctx.kernels->exp2_accumulate(&entry_scores[size_t((u * (h_end - h_begin) + (h - h_begin)) * width)], length(u),
                                     lse2, out);
      }
    });
    parallel_for(ctx.threads, rows, [&](int64_t r) {
      float *out = target(r);
      for (int64_t u = c0; u < c1; ++u) {
        if (rows > 1 && kv_head(u) != r) continue;
        const int32_t *rows_of_u = list(u);
        const float *p = entry_mass_.data() + (u - c0) * width;
        for (int64_t w = 0, n = length(u); w < n; ++w)
          if (rows_of_u[w] >= 0) out[rows_of_u[w]] += p[w];
      }
    });
  }
}

void SlotMass::accumulate(const sa_context &ctx, const float *entry_scores) {
  const int64_t rows = mass_rows(), n_kv = layout_.n_kv;
  const int64_t s0 = mass_.rank == 2 ? mass_.stride[0] : 0, s1 = mass_.stride[mass_.rank - 1];
  float *m = mass_.ptr<float>();
  // decay 0 clears the buffer (even of inf or NaN left by the host), as documented.
  auto decayed = [&](float x) { return decay_ == 0.f ? 0.f : x * decay_; };
  if (direct_ && decay_ != 1.f) {  // in blocks over the threads: one pass over every slot
    const int64_t blocks = (n_kv + kDenseBlock - 1) / kDenseBlock;
    parallel_for(ctx.threads, rows * blocks, [&](int64_t t) {
      float *row = m + (t / blocks) * s0;
      const int64_t j_end = std::min(n_kv, (t % blocks + 1) * kDenseBlock);
      for (int64_t j = (t % blocks) * kDenseBlock; j < j_end; ++j) row[j] = decayed(row[j]);
    });
  }
  if (layout_.q.shape[0] > 0) {
    if (layout_.sparse) sparse(ctx, entry_scores);
    else dense(ctx);
  }
  if (!direct_)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < n_kv; ++j) m[r * s0 + j * s1] = decayed(m[r * s0 + j * s1]) + packed_[size_t(r * n_kv + j)];
}

}  // namespace sa
