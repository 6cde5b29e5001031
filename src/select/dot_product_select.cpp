#include "select/dot_product_select.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>

#include "core/half.hpp"
#include "core/half_rows.hpp"
#include "core/threading.hpp"
#include "select/key_panels.hpp"
#include "select/mass_filter.hpp"
#include "select/score_matmul.hpp"
#include "select/selection_merge.hpp"

namespace sa {
namespace {

constexpr int64_t kGemmMinQueries = 8;         // fewer queries: one SIMD pass per query
constexpr int64_t kScoreBlockFloats = 1 << 22; // score buffer per scratch slot (16 MB)
constexpr int64_t kMaxQueryBlock = 64;
// With score_panels (AVX-512): blocks of about kPanelBlockRows score rows while they take at
// most kPanelBlockFloats (32 rows of 4K keys: 512 KB, which the softmax passes then read from
// L2; oneDNN's blocks of 256 rows were read from L3). Over more keys, blocks as large as
// oneDNN's: every block streams the keys it scores from L3 or memory, so fewer and larger.
constexpr int64_t kPanelBlockRows = 32, kPanelBlockFloats = 1 << 17;
// The all-heads pass over the host's keys: slots per task, and per buffered block (every head's
// rows of a block: 8 heads of 128 f16 values, 128 KiB, stay in L2 between copy and kernel).
// Measured (bench_select select_exact_borrowed against select_exact, 128K f16 keys, H_kv 8,
// token-major, 1 thread, alternating runs on a loaded machine): this pass 1.2-1.3x the owning
// index's per-head pass over its own contiguous rows, for blocks of 16 to 128 slots alike; a
// per-head pass over the strided rows (copied in blocks) 1.8-2x, every head re-walking the
// cache; this pass with a row-stride score kernel reading each head's rows in place instead of
// copying them 1.2-1.6x (no gain: no such kernel). A head-major host K is scored in place.
constexpr int64_t kAllHeadsChunk = 4096;
constexpr int64_t kAllHeadsBlock = 64;

// Keys a query may see all lie in a prefix of the slots: limit[i] is the length of query i's
// prefix (slots past it hold only positions above the query's), rounded up to a multiple of
// kLimitRound so the SIMD reductions over it add exactly what they add over every slot (the
// slots they skip are -inf). Causal prefill scores about half the keys of a dense pass.
// ordered: slots hold ascending positions from 0 on (no update reordered them, no empty slot)
// and there are no segments, so query i sees exactly the slots j < count[i] (window and sinks
// are found by position as always).
constexpr int64_t kLimitRound = 16;

struct VisiblePrefixes {
  std::vector<int64_t> limit, count;
  bool ordered = false;
};

VisiblePrefixes visible_prefixes(const SelectRequest &req, const int64_t *pos, int64_t n) {
  VisiblePrefixes v;
  // after[j]: the lowest position among slots [j, n); non-decreasing in j.
  std::vector<int64_t> after(size_t(n) + 1, std::numeric_limits<int64_t>::max());
  for (int64_t j = n - 1; j >= 0; --j) after[size_t(j)] = std::min(after[size_t(j) + 1], pos[j]);
  v.ordered = !req.query_segments && (n == 0 || pos[0] >= 0);
  for (int64_t j = 1; j < n && v.ordered; ++j) v.ordered = pos[j] > pos[j - 1];
  const int64_t n_q = req.queries.shape[0];
  v.limit.resize(size_t(n_q));
  v.count.resize(size_t(n_q));
  for (int64_t i = 0; i < n_q; ++i) {
    const int64_t p = req.positions[size_t(i)];
    // The first j whose suffix holds no position <= p (with ordered positions: the visible count).
    const int64_t j = std::upper_bound(after.begin(), after.end() - 1, p) - after.begin();
    v.count[size_t(i)] = j;
    v.limit[size_t(i)] = std::min(n, (j + kLimitRound - 1) / kLimitRound * kLimitRound);
  }
  return v;
}

// A list's pivot (mass_filter.hpp) is the previous query's k-th best mass times a ratio that
// adapts: down when fewer than keep masses reached it (the floor's path then ran), up towards 1
// when more than kPivotSpare * keep did. Lists whose keep is more than 1/kPivotMinShare of their
// keys take the floor's path at once.
constexpr int64_t kPivotMinShare = 4, kPivotSpare = 2;
constexpr float kRatioStart = 0.9f, kRatioDown = 0.8f, kRatioUp = 0.5f;

// One task's buffers (a slot of the call's scratch), sized before the parallel region.
struct Scratch {
  std::vector<float> queries, scores, mass;
  std::vector<const float *> rows;       // a list's score rows (one per query head)
  std::vector<float> inv;                // their softmax normalisers
  std::vector<float> kth_masses;         // a list's candidate masses, for its k-th best
  std::vector<int32_t> reaching;         // slots whose mass reaches the pivot
  std::vector<int32_t> chosen;           // write_merged's
  // Per list of a KV head: the pivot state, kept across the task's blocks.
  std::vector<float> last_kth, pivot_ratio;
  std::vector<uint8_t> visible;
  std::vector<Candidate> cands;
  std::vector<uint64_t> keys;            // kth_best's
  std::vector<int32_t> forced;
  std::vector<char> block;  // the host's rows copied for the kernels (borrowed keys)
  // score_panels' row maxima of the block in scores (when has_max): rows [count, limit) apart.
  std::vector<int64_t> row_limit;
  std::vector<float> row_lanes, row_max;
  std::vector<uint8_t> row_unknown;
  bool has_max = false;
  RescoreScratch rescore;
};

// cands = {mass[j], j} for the n reaching slots j (ascending) that are not forced (ascending).
void choosable_reaching(const int32_t *reaching, int64_t n, const std::vector<int32_t> &forced, const float *mass,
                        std::vector<Candidate> &cands) {
  cands.resize(size_t(n));
  Candidate *c = cands.data();  // fields written one by one: a pushed pair went through the stack
  size_t f = 0, w = 0;
  for (int64_t k = 0; k < n; ++k) {
    const int32_t j = reaching[k];
    while (f < forced.size() && forced[f] < j) ++f;
    if (f < forced.size() && forced[f] == j) continue;
    c[w].score = mass[j];
    c[w++].slot = j;
  }
  cands.resize(w);
}

// What write_selection writes when the list holds every forced slot and the best `keep` of the
// candidates in `by_slot` (ascending by slot, as collected), kth the keep-th best of them: those
// ranking before kth and kth itself, merged with the forced slots (ascending), then -1 padding.
// No sort: both inputs are in slot order already.
void write_merged(const std::vector<int32_t> &forced, const std::vector<Candidate> &by_slot, const Candidate &kth,
                  std::vector<int32_t> &chosen, int32_t *out, int64_t width, int64_t stride) {
  chosen.resize(by_slot.size());
  size_t n = 0;
  for (const Candidate &c : by_slot) {  // branch-free: a third of them are dropped, unpredictably
    chosen[n] = c.slot;
    n += !((kth.score > c.score) | ((kth.score == c.score) & (kth.slot < c.slot)));
  }
  size_t f = 0;
  int64_t w = 0;
  for (size_t k = 0; k < n; ++k) {
    for (; f < forced.size() && forced[f] < chosen[k]; ++f) out[w++ * stride] = forced[f];
    out[w++ * stride] = chosen[k];
  }
  for (; f < forced.size(); ++f) out[w++ * stride] = forced[f];
  for (; w < width; ++w) out[w * stride] = -1;
}

// Keeps the best `count` of cands (the order write_selection ranks by) as the rescoring input.
void take_best(std::vector<Candidate> &cands, int64_t count, std::vector<int32_t> &out) {
  if (count < int64_t(cands.size()))
    std::nth_element(cands.begin(), cands.begin() + count, cands.end(), ranks_before);
  const size_t n = std::min(cands.size(), size_t(count));
  out.clear();
  for (size_t j = 0; j < n; ++j) out.push_back(cands[j].slot);
}

}  // namespace

void select_by_dot_product(const sa_context &ctx, const SelectRequest &req, const KeyStore &keys_,
                           const QueryMap &map_query, const RescoreStage &rescore) {
  const int64_t n_q = req.queries.shape[0], H_q = req.queries.shape[1], D = keys_.dim();
  const int64_t H_kv = keys_.heads(), G = H_q / H_kv, n = keys_.size();
  const TensorView &out = req.indices;
  const int64_t width = out.shape[2];
  const bool two_stage = rescore.native && rescore.candidates > 0;
  // Per KV head once heads hold their own positions (KeyStore::per_head), else one for all.
  std::vector<VisiblePrefixes> head_prefixes(keys_.per_head() ? size_t(H_kv) : 1);
  for (size_t r = 0; r < head_prefixes.size(); ++r) head_prefixes[r] = visible_prefixes(req, keys_.positions(int64_t(r)), n);
  auto prefixes_of = [&](int64_t h) -> const VisiblePrefixes & {
    return head_prefixes[head_prefixes.size() > 1 ? size_t(h) : 0];
  };

  if (n == 0) return write_all_padding(out);  // nothing to choose from
  const NativeRows rows = native_rows(keys_, req);  // the store's rows, or the host's
  const NativeRows native = !two_stage ? rows : rescore.borrowed ? host_rows(req, req.queries.shape[2])
                                                                  : NativeRows(*rescore.native);
  const bool gemm = n_q >= kGemmMinQueries;
  // The GEMM as score_panels' loop over packed keys (the same bits as oneDNN's), else matmul_abt.
  const bool panels = gemm && ctx.kernels->isa == SA_ISA_AVX512 && score_panels_built();
  const int64_t max_block =
      panels && kPanelBlockRows * n <= kPanelBlockFloats ? std::max<int64_t>(1, kPanelBlockRows / G) : kMaxQueryBlock;
  const int64_t qblock =
      gemm ? std::max<int64_t>(1, std::min<int64_t>(max_block, kScoreBlockFloats / std::max<int64_t>(1, G * n))) : 1;
  // A score row's stride: score_panels writes whole panels.
  const int64_t ld = panels ? (n + kPanelKeys - 1) / kPanelKeys * kPanelKeys : n;
  const int64_t n_blocks = (n_q + qblock - 1) / qblock;
  const int threads = ctx.threads;
  // The host's keys with the rows of one head apart (token-major or paged): one pass over the
  // cache scores every head (see below) instead of a strided pass per head.
  const bool all_heads_pass = !gemm && !rows.contiguous();
  // Query blocks run per head (keys converted to f32 head by head) or all heads at once.
  const bool per_head = gemm && (panels || rows.dtype() != SA_DTYPE_F32 || !rows.contiguous());
  const int64_t tasks = all_heads_pass ? std::max<int64_t>(H_kv, (n + kAllHeadsChunk - 1) / kAllHeadsChunk)
                        : per_head     ? n_blocks
                                       : H_kv * n_blocks;
  const int slots = loop_slots(threads, tasks);

  std::vector<Scratch> scratch(static_cast<size_t>(slots));
  for (Scratch &s : scratch) {
    s.queries.resize(size_t(qblock * G * D));
    if (!all_heads_pass) s.scores.resize(size_t(qblock * G * ld));
    s.mass.resize(size_t(n));
    s.rows.resize(size_t(G));
    s.reaching.resize(size_t(n + kReachingSlack));
    s.inv.resize(size_t(G));
    // No pivot for a task's first list; then the last list's, whichever block or head the task
    // ran before (a pivot decides how fast a list is ranked, never what it holds).
    s.last_kth.assign(size_t(G), 0.f);
    s.pivot_ratio.assign(size_t(G), kRatioStart);
    s.visible.resize(size_t(n));
    s.cands.reserve(size_t(n));
    s.forced.reserve(size_t(req.sinks) + size_t(req.window) + size_t(req.top_k));
    if (panels) {
      s.row_limit.resize(size_t(qblock * G));
      s.row_lanes.resize(size_t(qblock * G * kPanelKeys));
      s.row_max.resize(size_t(qblock * G));
      s.row_unknown.resize(size_t(qblock * G));
    }
  }
  OmpThreadLimit omp_limit(threads);  // oneDNN inside follows the context's thread count

  // Lists of KV head h for queries [i0, i1) from their scores: scores[((i - i0) * G + g) * lds + j]
  // for query head g of the group and slot j (overwritten).
  auto select_block = [&](Scratch &s, int64_t h, int64_t i0, int64_t i1, float *scores, int64_t lds) {
    const int64_t *pos = keys_.positions(h);
    const VisiblePrefixes &prefixes = prefixes_of(h);
    const std::vector<int64_t> &limits = prefixes.limit;
    for (int64_t i = i0; i < i1; ++i) {
      const KeepRule rule = keep_rule(req, i);
      const QueryVisibility visible = query_visibility(req, i);
      const int64_t m = limits[size_t(i)];  // slots [m, n) are invisible to query i
      if (!prefixes.ordered)  // else visible: exactly [0, count)
        for (int64_t j = 0; j < m; ++j) s.visible[size_t(j)] = visible(int32_t(j), pos[j]);
      // One list per KV head (the group's heads together) or per query head.
      const int64_t unit_heads = req.per_query_head ? 1 : G;
      for (int64_t g0 = 0; g0 < G; g0 += unit_heads) {
        const float norm = 1.f / float(unit_heads);
        const int64_t end = prefixes.ordered ? prefixes.count[size_t(i)] : m;  // slots a choice may take
        float *mass = s.mass.data();
        // write_selection takes at most top_k; the rescoring stage its own count.
        const int64_t keep = two_stage ? rescore.candidates : int64_t(req.top_k);
        float &last_kth = s.last_kth[size_t(g0)], &ratio = s.pivot_ratio[size_t(g0)];
        collect_forced(keys_, req, i, h, s.forced);
        // With a pivot (see below), the masses reaching it are collected as they are made.
        const bool pivot = prefixes.ordered && keep > 0 && keep * kPivotMinShare <= end && last_kth > 0.f;
        bool filtered = false;  // s.cands holds the masses reaching the pivot, at least keep of them
        if (prefixes.ordered) {
          for (int64_t g = g0; g < g0 + unit_heads; ++g) {
            float *row = &scores[size_t(((i - i0) * G + g) * lds)];
            std::fill(row + prefixes.count[size_t(i)], row + m, -std::numeric_limits<float>::infinity());
            s.rows[size_t(g - g0)] = row;
            const size_t r = size_t((i - i0) * G + g);  // a maximum from score_panels, unless unknown
            const bool known = s.has_max && !s.row_unknown[r];
            s.inv[size_t(g - g0)] = known ? softmax_inv_sum(*ctx.kernels, row, m, s.row_max[r])
                                          : softmax_inv_sum(*ctx.kernels, row, m);
          }
          if (!pivot) {
            group_mass(s.rows.data(), s.inv.data(), unit_heads, end, norm, mass);
          } else {
            // The previous query's k-th best mass (queries of a prefill are neighbours) scaled
            // down a little: when at least keep choosable masses reach it, the best keep are
            // among them (every other mass is below each of them), else the floor below decides.
            const int64_t reached = group_mass_reaching(s.rows.data(), s.inv.data(), unit_heads, end, norm, mass,
                                                        last_kth * ratio, s.reaching.data(),
                                                        ctx.kernels->isa == SA_ISA_AVX512);
            if (reached >= keep) choosable_reaching(s.reaching.data(), reached, s.forced, mass, s.cands);
            filtered = reached >= keep && int64_t(s.cands.size()) >= keep;
            // Aim for between keep and kPivotSpare * keep reaching it.
            if (!filtered) ratio *= kRatioDown;
            else if (int64_t(s.cands.size()) > kPivotSpare * keep) ratio += (1.f - ratio) * kRatioUp;
          }
        } else {
          std::fill(s.mass.begin(), s.mass.begin() + m, 0.f);
          for (int64_t g = g0; g < g0 + unit_heads; ++g) {
            float *row = &scores[size_t(((i - i0) * G + g) * lds)];
            for (int64_t j = 0; j < m; ++j)
              if (!s.visible[size_t(j)]) row[j] = -std::numeric_limits<float>::infinity();
            add_softmax_mass(*ctx.kernels, row, m, s.mass.data());
          }
          for (int64_t j = 0; j < end; ++j) mass[j] *= norm;
        }
        float forced_mass = 0.f;
        for (int32_t j : s.forced) forced_mass += mass[j];
        // The floor is taken over the choosable slots alone: the others' masses are masked.
        if (prefixes.ordered) {
          for (int32_t j : s.forced) mass[j] = -std::numeric_limits<float>::infinity();
        } else {
          for (int64_t j = 0; j < m; ++j)
            if (!s.visible[size_t(j)] || always_kept(pos[j], rule)) mass[j] = -std::numeric_limits<float>::infinity();
        }
        // Every candidate of the list and every forced slot fit: written in slot order as they are.
        const bool merged = filtered && !two_stage && !(req.mass_target > 0.f) &&
                            int64_t(s.forced.size()) + keep <= width;
        Candidate kth{};  // with merged: the keep-th best candidate
        if (merged) {
          kth = kth_best(s.cands, size_t(keep - 1), s.keys);
        } else if (filtered) {  // the best keep of the reaching ones (ties by lower slot), as the floor's path keeps
          nth_best(s.cands, size_t(keep - 1));
          s.cands.resize(size_t(keep));
        } else {
          const float floor = best_floor(mass, end, keep);
          BestCandidates best(s.cands, keep);
          if (prefixes.ordered) {
            for (int64_t j = 0; j < end; ++j)
              if (!(mass[j] < floor) && !always_kept(pos[j], rule)) best.add(mass[j], int32_t(j));
          } else {
            for (int64_t j = 0; j < m; ++j)
              if (!(mass[j] < floor) && s.visible[size_t(j)] && !always_kept(pos[j], rule)) best.add(mass[j], int32_t(j));
          }
        }
        // The next query's pivot: the k-th best mass (NaNs apart; cands keep their order).
        if (merged) {
          last_kth = kth.score;
        } else if (filtered) {
          last_kth = s.cands[size_t(keep - 1)].score;
        } else if (prefixes.ordered && keep > 0) {
          s.kth_masses.clear();
          for (const Candidate &c : s.cands)
            if (c.score == c.score) s.kth_masses.push_back(c.score);
          last_kth = 0.f;  // none: no pivot
          if (int64_t(s.kth_masses.size()) >= keep) {
            std::nth_element(s.kth_masses.begin(), s.kth_masses.begin() + (keep - 1), s.kth_masses.end(),
                             std::greater<float>());
            last_kth = s.kth_masses[size_t(keep - 1)];
          }
        }
        const SelectionList l = selection_list(req, H_kv, req.per_query_head ? h * G + g0 : h);
        if (merged) {
          write_merged(s.forced, s.cands, kth, s.chosen, selection_row(req, i, l), width, out.stride[2]);
          continue;
        }
        if (two_stage) {  // the forced slots are the rescoring's to add
          take_best(s.cands, rescore.candidates, s.rescore.candidates);
          rescore_candidates(ctx, *rescore.native, native, req, i, l, s.rescore);
          continue;
        }
        write_selection(s.cands, s.forced, forced_mass, rule, pos, selection_row(req, i, l), width, out.stride[2],
                        s.rescore.write);
      }
    }
  };

  float key_bound = 0.f;  // panel_bound of the head's packed keys (with panels)
  // next: the block this slot is likely to take next (per head, blocks go out in descending
  // order to a team of `slots`), whose queries are fetched while this one is scored: a
  // prefill's queries come from memory (64 MB of f32 at 4K queries, H_q 32, D 128), 2 KB at a
  // time.
  auto run_block = [&](int64_t h, int64_t b, const float *keys_f32, int slot, int64_t next) {
    Scratch &s = scratch[size_t(slot)];
    const int64_t i0 = b * qblock, i1 = std::min(n_q, i0 + qblock);
    const SelectionList group{h, h, h * G, G};  // the KV head's query heads
    if (next >= 0)
      for (int64_t i = next * qblock, end = std::min(n_q, i + qblock); i < end; ++i) prefetch_list_queries(req, i, group);
    for (int64_t i = i0; i < i1; ++i) map_query(i, group, &s.queries[size_t((i - i0) * G * D)]);
    // Only the block's visible prefix is scored (select_block reads no further).
    const std::vector<int64_t> &limits = prefixes_of(h).limit;
    const int64_t m = *std::max_element(limits.begin() + i0, limits.begin() + i1);
    s.has_max = keys_f32 && panels && prefixes_of(h).ordered;
    if (keys_f32 && panels) {
      // Each row's maximum over the slots its query sees (select_block's softmax needs it).
      const std::vector<int64_t> &counts = prefixes_of(h).count;
      for (int64_t i = i0; s.has_max && i < i1; ++i)
        std::fill_n(&s.row_limit[size_t((i - i0) * G)], G, counts[size_t(i)]);
      const RowMaxima maxima{key_bound, s.row_limit.data(), s.row_lanes.data(), s.row_max.data(), s.row_unknown.data()};
      score_panels(s.queries.data(), (i1 - i0) * G, keys_f32, m, D, s.scores.data(), ld, s.has_max ? &maxima : nullptr);
    } else if (keys_f32) {
      if (m > 0) matmul_abt(s.queries.data(), (i1 - i0) * G, keys_f32, m, D, s.scores.data(), ld);
    } else {
      for (int64_t i = i0; i < i1; ++i)
        score_slot_range(*ctx.kernels, rows, int(h), &s.queries[size_t((i - i0) * G * D)], G, 0,
                         limits[size_t(i)], &s.scores[size_t((i - i0) * G * ld)], ld, s.block);
    }
    select_block(s, h, i0, i1, s.scores.data(), ld);
  };

  if (all_heads_pass) {
    // Per query: chunks of slots in parallel, each reading every head's rows of a block of
    // slots (consecutive in a token-major or paged cache) into a small buffer, head by head,
    // and scoring them into [head][g][slot]; then each head's lists in parallel. The scores are
    // those of the per-head pass (a row's dot product does not depend on where it lies).
    // Scratch: H_q * n scores (16 MiB at 128K keys and 32 query heads).
    std::vector<float> scores(size_t(H_kv * G * n)), q_all(size_t(H_kv * G * D));
    const size_t rb = rows.row_bytes();
    const int64_t chunks = std::min<int64_t>((n + kAllHeadsChunk - 1) / kAllHeadsChunk, 64 * threads);
    const int64_t chunk = (n + chunks - 1) / chunks;
    for (int64_t i = 0; i < n_q; ++i) {
      for (int64_t h = 0; h < H_kv; ++h) map_query(i, SelectionList{h, h, h * G, G}, &q_all[size_t(h * G * D)]);
      parallel_for_slots(slots, chunks, [&](int64_t c, int slot) {
        Scratch &s = scratch[size_t(slot)];
        s.block.resize(size_t(H_kv * kAllHeadsBlock) * rb);
        for (int64_t j0 = c * chunk, end = std::min(n, j0 + chunk); j0 < end; j0 += kAllHeadsBlock) {
          const int64_t m = std::min(kAllHeadsBlock, end - j0);
          for (int64_t j = 0; j < m; ++j)
            for (int64_t h = 0; h < H_kv; ++h)
              std::memcpy(s.block.data() + size_t(h * kAllHeadsBlock + j) * rb, rows.row(int(h), j0 + j), rb);
          for (int64_t h = 0; h < H_kv; ++h)
            score_rows_grouped(ctx.kernels->of(rows.dtype()), &q_all[size_t(h * G * D)], G, D,
                               s.block.data() + size_t(h * kAllHeadsBlock) * rb, m, &scores[size_t(h * G * n + j0)], n);
        }
      });
      parallel_for_slots(slots, H_kv, [&](int64_t h, int slot) {
        select_block(scratch[size_t(slot)], h, i, i + 1, &scores[size_t(h * G * n)], n);
      });
    }
    return;
  }

  if (per_head) {
    // oneDNN takes contiguous f32 rows, score_panels packed panels: convert one head's keys at a
    // time, then score every query block.
    std::vector<float> keys_f32(size_t(panels ? panel_floats(n, D) : n * D));
    const int64_t chunk_rows = std::max<int64_t>(1, 65536 / D / kPanelKeys) * kPanelKeys;  // whole panels
    const bool f16c = kernels_have_f16c(*ctx.kernels);
    const int64_t chunks = (n + chunk_rows - 1) / chunk_rows;
    std::vector<float> chunk_bound(static_cast<size_t>(chunks));  // panel_bound of each chunk's panels
    for (int64_t h = 0; h < H_kv; ++h) {
      const sa_dtype dt = rows.dtype();
      parallel_for(threads, chunks, [&](int64_t c) {
        chunk_bound[size_t(c)] = 0.f;
        std::vector<float> panel_rows(size_t(panels ? kPanelKeys * D : 0));  // a panel's rows, then packed
        for (int64_t j = c * chunk_rows, end = std::min(n, j + chunk_rows); j < end; ++j) {
          const void *row = rows.row(int(h), j);
          const int64_t lane = j % kPanelKeys;
          float *dst = panels ? &panel_rows[size_t(lane * D)] : &keys_f32[size_t(j * D)];
          if (dt == SA_DTYPE_F32) {
            std::copy_n(static_cast<const float *>(row), D, dst);
          } else if (dt == SA_DTYPE_F16) {
            f16_to_f32_n(static_cast<const uint16_t *>(row), D, dst, f16c);
          } else {
            const uint16_t *src = static_cast<const uint16_t *>(row);
            for (int64_t d = 0; d < D; ++d) dst[d] = bf16_to_f32(src[d]);
          }
          if (panels && (lane == kPanelKeys - 1 || j + 1 == n)) {
            float *panel = &keys_f32[size_t(j / kPanelKeys * kPanelKeys * D)];
            pack_panel(panel_rows.data(), lane + 1, D, panel);
            chunk_bound[size_t(c)] = std::max(chunk_bound[size_t(c)], panel_bound(panel, kPanelKeys * D));
          }
        }
      });
      if (panels) key_bound = *std::max_element(chunk_bound.begin(), chunk_bound.end());
      // The last blocks first: causal blocks grow with their position, so the largest go out
      // first and the team ends on small ones.
      parallel_for_slots(slots, n_blocks, [&](int64_t b, int slot) {
        run_block(h, n_blocks - 1 - b, keys_f32.data(), slot, n_blocks - 1 - b - slots);
      });
    }
  } else {
    parallel_for_slots(slots, H_kv * n_blocks, [&](int64_t t, int slot) {
      const int64_t h = t / n_blocks;
      run_block(h, t % n_blocks, gemm ? static_cast<const float *>(rows.row(int(h), 0)) : nullptr, slot,
                t + slots < H_kv * n_blocks && (t + slots) / n_blocks == h ? (t + slots) % n_blocks : -1);
    });
  }
}

}  // namespace sa
