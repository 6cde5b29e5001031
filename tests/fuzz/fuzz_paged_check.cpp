// A batch of sequences in a paged cache (pages shuffled, of 1 to 64 rows, padded or rank-3
// cells, junk past each page-table row, optional slot positions): sa_select_batch must equal
// one sa_select per sequence (mapped to physical slots when kv is given), each of which is
// checked like any selection; sa_attend_paged (the batch's physical lists, random lists or
// dense) against the reference run per sequence over the cache gathered by the test itself.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "fuzz_layout.hpp"
#include "fuzz_scenario.hpp"
#include "reference_attention.hpp"

namespace apifuzz {

namespace {

// Rows [q0, q1) of a [n, H, X] tensor, contiguous.
sat::Tensor rows_of(const sat::Tensor &t, int64_t q0, int64_t q1) {
  sat::Tensor r(t.dtype(), {q1 - q0, t.dim(1), t.dim(2)});
  for (int64_t i = q0; i < q1; ++i)
    for (int64_t h = 0; h < t.dim(1); ++h)
      for (int64_t x = 0; x < t.dim(2); ++x) r.set({i - q0, h, x}, t.get({i, h, x}));
  return r;
}

double key_at(const PagedCase &pc, const sat::Tensor &t, int64_t slot, int64_t h, int64_t x) {
  return pc.rank3 ? t.get({slot, h, x}) : t.get({slot / pc.P, slot % pc.P, h, x});
}

}  // namespace

PagedCase Scenario::make_paged_case(const std::vector<FuzzIndex *> &seqs) {
  PagedCase pc;
  const int64_t B = int64_t(seqs.size()), h_kv = main_.h_kv(), d = main_.d();
  pc.B = B;
  pc.P = in_.chance(30) ? in_.pick({int64_t(1), int64_t(64)}) : in_.range(1, 20);
  pc.rank3 = pc.P == 1 && in_.chance(50);
  // Without a page table: one sequence of every row (rank 3 only).
  pc.has_table = !(pc.rank3 && B == 1 && in_.chance(40));
  int64_t need = 0;
  for (int64_t b = 0; b < B; ++b) {
    pc.len.push_back(seqs[size_t(b)]->size() + (pc.has_table ? in_.range(0, 3) : 0));
    need += (pc.len.back() + pc.P - 1) / pc.P;
    pc.max_pages = std::max(pc.max_pages, (pc.len.back() + pc.P - 1) / pc.P);
  }
  pc.num_pages = need + (pc.has_table ? in_.range(0, 2) : 0);
  if (pc.has_table) pc.max_pages += in_.range(0, 1);
  std::vector<int32_t> order(static_cast<size_t>(pc.num_pages));
  std::iota(order.begin(), order.end(), 0);
  if (pc.has_table)
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[size_t(rng_.below(int64_t(i)))]);
  size_t next = 0;
  pc.pages.resize(size_t(B));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < (pc.len[size_t(b)] + pc.P - 1) / pc.P; ++j) pc.pages[size_t(b)].push_back(order[next++]);

  const sa_dtype dt = in_.pick({SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16});
  std::vector<int64_t> shape = pc.rank3 ? std::vector<int64_t>{pc.num_pages, h_kv, d}
                                        : std::vector<int64_t>{pc.num_pages, pc.P, h_kv, d};
  std::string kw, vw;
  pc.k = random_tensor(in_, rng_, dt, shape, 1.0, &kw);
  pc.v = random_tensor(in_, rng_, dt, shape, 1.0, &vw);
  // Token t of sequence b: slot t of its index (as the index holds it), then tokens no index has.
  // Per-KV-head positions: each head's slot holds what that head's index slot holds.
  pc.positions.assign(size_t(pc.num_slots()), -1);
  pc.head_positions.assign(size_t(h_kv * pc.num_slots()), -1);
  for (int64_t b = 0; b < B; ++b) {
    const FuzzIndex &fx = *seqs[size_t(b)];
    pc.any_per_head |= fx.per_head();
    int64_t after = fx.max_pos();
    for (int64_t t = 0; t < pc.len[size_t(b)]; ++t) {
      const int64_t s = pc.slot(b, t);
      pc.positions[size_t(s)] = t < fx.size() ? fx.pos_of(0)[size_t(t)] : std::min(SA_MAX_POSITION, ++after);
      for (int64_t h = 0; h < h_kv; ++h)
        pc.head_positions[size_t(h * pc.num_slots() + s)] = t < fx.size() ? fx.pos_of(h)[size_t(t)] : pc.positions[size_t(s)];
      if (t >= fx.size()) continue;
      for (int64_t h = 0; h < h_kv; ++h)
        for (int64_t x = 0; x < d; ++x) {
          const double kv = fx.keys[size_t((t * h_kv + h) * d + x)];
          if (pc.rank3) pc.k.set({s, h, x}, kv);
          else pc.k.set({s / pc.P, s % pc.P, h, x}, kv);
        }
    }
  }
  std::string tw;
  if (pc.has_table) {
    const std::vector<int64_t> table_strides = random_strides(in_, {B, pc.max_pages});
    tw = ", page table " + strides_words(table_strides);
    pc.table = sat::Tensor(SA_DTYPE_I32, {B, pc.max_pages}, table_strides);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < pc.max_pages; ++j)
        pc.table.set({b, j}, j < int64_t(pc.pages[size_t(b)].size()) ? double(pc.pages[size_t(b)][size_t(j)])
                                                                      : double(rng_.below(5000)) - 2500);  // junk
    pc.lens = sat::Tensor(in_.pick({SA_DTYPE_I32, SA_DTYPE_I64}), {B}, random_strides(in_, {B}));
    for (int64_t b = 0; b < B; ++b) pc.lens.set({b}, double(pc.len[size_t(b)]));
    tw += std::string(", seq_lens ") + dtype_word(pc.lens.dtype());
  }
  pc.has_slot_pos = in_.chance(40);
  if (pc.has_slot_pos) {
    pc.slot_pos = sat::Tensor(SA_DTYPE_I64, {pc.num_slots()}, random_strides(in_, {pc.num_slots()}));
    // Written as integers: positions near SA_MAX_POSITION do not survive a double.
    for (int64_t s = 0; s < pc.num_slots(); ++s)
      std::memcpy(static_cast<int64_t *>(pc.slot_pos.data()) + pc.slot_pos.offset({s}), &pc.positions[size_t(s)],
                  sizeof(int64_t));
  }

  // Queries: n_b per sequence (one each without query_starts).
  pc.has_starts = in_.chance(60);
  pc.starts.assign(1, 0);
  for (int64_t b = 0; b < B; ++b) pc.starts.push_back(pc.starts.back() + (pc.has_starts ? in_.range(0, 3) : 1));
  const int64_t n_q = pc.starts.back();
  std::string qw;
  pc.q = random_tensor(in_, rng_, in_.chance(50) ? SA_DTYPE_F32 : dt, {n_q, h_kv * group_, d}, 1.0, &qw);
  if (pc.has_starts) {
    pc.query_starts = sat::Tensor(in_.pick({SA_DTYPE_I32, SA_DTYPE_I64}), {B + 1}, random_strides(in_, {B + 1}));
    for (int64_t b = 0; b <= B; ++b) pc.query_starts.set({b}, double(pc.starts[size_t(b)]));
  }
  std::ostringstream w;
  w << "paged cache: " << B << " sequences of " << list_words(pc.len.data(), B) << " tokens, "
    << (pc.rank3 ? "rank-3 rows" : "pages of " + std::to_string(pc.P) + " rows") << ", " << pc.num_pages
    << " pages" << (pc.has_table ? tw : ", no page table") << ", k " << kw << ", v " << vw
    << (pc.has_slot_pos ? ", slot_positions" : "") << "; queries " << qw << " starts "
    << list_words(pc.starts.data(), B + 1) << (pc.has_starts ? "" : " (no query_starts)");
  pc.words = w.str();
  report_.say(pc.words);
  return pc;
}

// physical: receives the batch's lists as physical slots when kv is passed (else left empty).
bool Scenario::check_select_batch(const std::vector<FuzzIndex *> &seqs, PagedCase &pc, sat::Tensor *physical) {
  const int64_t B = pc.B;
  bool any_borrow = false;
  std::vector<sa_index *> handles;
  for (int64_t b = 0; b < B; ++b) {
    handles.push_back(seqs[size_t(b)]->ix());
    any_borrow |= seqs[size_t(b)]->borrows();
  }
  // Options valid for every index of the batch: the first's, with no mass target if any index
  // is an indexer.
  SelectCase c;
  c.q = pc.q;
  random_select_options(c, main_, true);
  for (FuzzIndex *fx : seqs)
    if (fx->opt.kind == SA_SELECTOR_INDEXER) c.opt.mass_target = 0;
  if (c.has_qpos)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = pc.starts[size_t(b)]; i < pc.starts[size_t(b) + 1]; ++i)
        c.qpos[size_t(i)] = std::min(SA_MAX_POSITION, seqs[size_t(b)]->max_pos() + in_.range(-8, 2));
  c.pass_keys = false;  // ignored by sa_select_batch; the host keys come from kv
  c.bind();
  const bool use_kv = any_borrow || !pc.has_table || in_.chance(60);
  report_.say("select_batch", use_kv ? " with kv" : "", ": ", c.words);
  sa_paged_kv kv = pc.desc();
  const sa_status s = sa_select_batch(handles.data(), B, pc.q.t(), pc.has_starts ? pc.query_starts.t() : nullptr,
                                      &c.opt, use_kv ? &kv : nullptr, c.out.t());
  report_.require_ok(s, "sa_select_batch");
  report_.require(c.out.only_elements_written(), "sa_select_batch wrote outside indices");

  // One sa_select per sequence, with the host keys of a borrowing index taken from the cache.
  for (int64_t b = 0; b < B; ++b) {
    const int64_t q0 = pc.starts[size_t(b)], q1 = pc.starts[size_t(b) + 1];
    if (q1 == q0) continue;
    FuzzIndex &fx = *seqs[size_t(b)];
    SelectCase one = c;
    one.q = rows_of(pc.q, q0, q1);
    one.out = sat::Tensor(SA_DTYPE_I32, {q1 - q0, c.out.dim(1), c.out.dim(2)});
    one.qpos.assign(c.qpos.begin() + q0, c.qpos.begin() + q1);
    sat::Tensor host(pc.k.dtype(), {fx.size(), fx.h_kv(), fx.d()});
    for (int64_t t = 0; t < fx.size(); ++t)
      for (int64_t h = 0; h < fx.h_kv(); ++h)
        for (int64_t x = 0; x < fx.d(); ++x) host.set({t, h, x}, key_at(pc, pc.k, pc.slot(b, t), h, x));
    one.pass_keys = fx.borrows();
    one.keys = *host.t();
    if (fx.borrows()) one.opt.struct_size = sizeof(sa_select_options);  // the batch's may predate keys
    report_.require_ok(one.run(fx.ix()), "sa_select of sequence ", b);
    verify_selection(fx, one, pc.k.dtype());
    for (int64_t i = q0; i < q1; ++i)
      for (int64_t h = 0; h < c.out.dim(1); ++h)
        for (int64_t x = 0; x < c.out.dim(2); ++x) {
          const int64_t s = int64_t(one.out.get({i - q0, h, x})), got = int64_t(c.out.get({i, h, x}));
          const int64_t want = s < 0 || !use_kv ? s : pc.slot(b, s);
          report_.require(got == want, "sa_select_batch sequence ", b, " query ", i, " list ", h, " entry ", x, " is ",
                          got, ", one sa_select gives ", want);
        }
  }
  if (use_kv) *physical = c.out;
  return use_kv;
}

void Scenario::check_attend_paged(PagedCase &pc, const sat::Tensor *physical) {
  const int64_t B = pc.B, n_q = pc.q.dim(0), h_q = pc.q.dim(1), h_kv = main_.h_kv(), d = main_.d();
  const int64_t S = pc.num_slots();
  sat::Tensor indices;
  int mode = int(in_.range(0, 2));  // 0: dense, 1: random physical lists, 2: the batch's selection
  if (mode == 2 && !physical) mode = 1;
  if (mode == 2) indices = *physical;
  if (mode == 1) {
    const int64_t lists = in_.chance(50) ? h_kv : h_q, width = in_.skewed(0, 12, 30);
    indices = sat::Tensor(SA_DTYPE_I32, {n_q, lists, width}, random_strides(in_, {n_q, lists, width}));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = pc.starts[size_t(b)]; i < pc.starts[size_t(b) + 1]; ++i)
        for (int64_t l = 0; l < lists; ++l)
          for (int64_t x = 0; x < width; ++x) {
            const int64_t len = pc.len[size_t(b)];
            int64_t e = -1;
            if (len > 0 && rng_.below(5) != 0) e = pc.slot(b, rng_.below(len));
            else if (S > 0 && rng_.below(3) == 0) e = rng_.below(S);  // any slot of the cache
            indices.set({i, l, x}, double(e));
          }
  }
  sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
  o.causal = in_.chance(60) ? 1 : 0;
  if (in_.chance(30)) o.scale = float(in_.range(5, 150)) / 100.f;
  // Per-KV-head positions (replacing slot_positions, which this call then leaves out).
  const bool head_pos = in_.chance(pc.any_per_head ? 80 : 20);
  if (head_pos) {
    pc.has_slot_pos = false;
    o.head_key_positions = pc.head_positions.data();
  }
  const bool positioned = pc.has_slot_pos || head_pos;
  const bool given_qpos = (o.causal && pc.has_slot_pos) || in_.chance(30);
  std::vector<int64_t> qpos(size_t(std::max<int64_t>(n_q, 1)), 0);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t q0 = pc.starts[size_t(b)], n_b = pc.starts[size_t(b) + 1] - q0;
    // The largest position the sequence's slots hold (in any head, with per-head positions).
    int64_t top = -1;
    for (int64_t t = 0; t < pc.len[size_t(b)]; ++t)
      for (int64_t h = 0; h < (head_pos ? h_kv : 1); ++h)
        top = std::max(top, head_pos ? pc.head_positions[size_t(h * S + pc.slot(b, t))] : pc.positions[size_t(pc.slot(b, t))]);
    for (int64_t i = q0; i < q0 + n_b; ++i) {
      const int64_t deflt = (head_pos ? top + 1 : pc.len[size_t(b)]) - n_b + (i - q0);
      qpos[size_t(i)] = !given_qpos ? deflt : positioned ? std::min(SA_MAX_POSITION, top + in_.range(-6, 1))
                                                        : in_.range(-2, pc.len[size_t(b)] + 1);
    }
  }
  if (given_qpos) o.query_positions = qpos.data();
  std::string ow, lw, mw;
  sat::Tensor out = poisoned_output(in_, in_.chance(50) ? SA_DTYPE_F32 : pc.q.dtype(), {n_q, h_q, d}, &ow);
  const bool has_lse = in_.chance(70);
  bool has_mass = in_.chance(40);
  const bool shared = !head_pos && in_.chance(30);  // per-head positions need [H_kv, slots]
  sat::Tensor lse = poisoned_output(in_, SA_DTYPE_F32, {n_q, h_q}, &lw);
  sat::Tensor mass = poisoned_output(in_, SA_DTYPE_F32, shared ? std::vector<int64_t>{S} : std::vector<int64_t>{h_kv, S}, &mw);
  std::vector<double> before(size_t(mass.numel()));
  for (double &x : before) x = double(rng_.below(100)) / 8;
  mass.set_values(before);
  mass.snapshot();
  if (has_mass) {
    o.slot_mass = mass.t();
    o.mass_decay = in_.pick({1.f, 0.f, 0.5f});
  }
  std::ostringstream w;
  w << "attend_paged " << (mode == 0 ? "dense" : mode == 1 ? "random physical lists" : "the batch's selection")
    << ", causal " << o.causal << ", scale " << o.scale;
  if (given_qpos) w << ", query_positions " << list_words(qpos.data(), n_q);
  if (head_pos) w << ", head_key_positions " << list_words(pc.head_positions.data(), h_kv * S);
  w << "; out " << ow << (has_lse ? ", lse " + lw : "") << (has_mass ? ", slot_mass " + mw : "");
  report_.say(w.str());
  sa_paged_kv kv = pc.desc();
  const sa_tensor *qs = pc.has_starts ? pc.query_starts.t() : nullptr;
  const bool compare_threads = in_.chance(30);
  sat::Tensor out2 = out, lse2 = lse, mass2 = mass;
  report_.require_ok(sa_attend_paged(ctx_.get(), pc.q.t(), qs, &kv, mode ? indices.t() : nullptr, &o, out.t(),
                                     has_lse ? lse.t() : nullptr),
                     "sa_attend_paged");
  report_.require(out.only_elements_written(), "sa_attend_paged wrote outside out");
  report_.require(has_lse ? lse.only_elements_written() : lse.untouched(), "sa_attend_paged wrote outside lse");
  report_.require(has_mass ? mass.only_elements_written() : mass.untouched(), "sa_attend_paged wrote outside slot_mass");

  // Reference, sequence by sequence, over the cache gathered into rows [S, H_kv, D].
  sat::Tensor fk(pc.k.dtype(), {S, h_kv, d}), fv(pc.k.dtype(), {S, h_kv, d});
  for (int64_t s = 0; s < S; ++s)
    for (int64_t h = 0; h < h_kv; ++h)
      for (int64_t x = 0; x < d; ++x) {
        fk.set({s, h, x}, key_at(pc, pc.k, s, h, x));
        fv.set({s, h, x}, key_at(pc, pc.v, s, h, x));
      }
  std::vector<double> want_out, want_lse, want_mass(size_t(h_kv * S), 0.0);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t q0 = pc.starts[size_t(b)], q1 = pc.starts[size_t(b) + 1], len = pc.len[size_t(b)];
    if (q1 == q0) continue;
    sat::Tensor qb = rows_of(pc.q, q0, q1), lists;
    // Key positions: the slot positions, or (without them) token t of this sequence at t.
    std::vector<int64_t> kpos = pc.positions;
    if (!pc.has_slot_pos)
      for (int64_t t = 0; t < len; ++t) kpos[size_t(pc.slot(b, t))] = t;
    if (mode) {
      lists = rows_of(indices, q0, q1);
    } else {
      lists = sat::Tensor(SA_DTYPE_I32, {q1 - q0, h_kv, std::max<int64_t>(1, len)});
      for (int64_t i = 0; i < q1 - q0; ++i)
        for (int64_t h = 0; h < h_kv; ++h)
          for (int64_t t = 0; t < lists.dim(2); ++t) lists.set({i, h, t}, t < len ? double(pc.slot(b, t)) : -1.0);
    }
    if (pc.has_slot_pos && !head_pos)  // empty slots are never attended (the reference masks per head)
      for (int64_t i = 0; i < lists.dim(0); ++i)
        for (int64_t l = 0; l < lists.dim(1); ++l)
          for (int64_t x = 0; x < lists.dim(2); ++x) {
            const int64_t s = int64_t(lists.get({i, l, x}));
            if (s >= 0 && kpos[size_t(s)] < 0) lists.set({i, l, x}, -1);
          }
    ref::AttendArgs a;
    a.q = qb.t();
    a.k = fk.t();
    a.v = fv.t();
    a.indices = lists.t();
    a.scale = o.scale;
    // Sparse entries without slot positions are taken as given (the selection applied causality).
    a.causal = o.causal && (mode == 0 || positioned);
    a.query_positions = &qpos[size_t(q0)];
    // Without slot positions the library sees no empty slot (-1): random lists' rows of other
    // sequences are attended as given, so the reference gets positions only for causality.
    a.key_positions = !head_pos && (pc.has_slot_pos || a.causal) ? kpos.data() : nullptr;
    a.head_key_positions = head_pos ? pc.head_positions.data() : nullptr;
    const ref::AttendResult r = ref::attend(a);
    want_out.insert(want_out.end(), r.out.begin(), r.out.end());
    want_lse.insert(want_lse.end(), r.lse.begin(), r.lse.end());
    for (size_t j = 0; j < r.mass.size(); ++j) want_mass[j] += r.mass[j];
  }
  int64_t tokens = 0;
  for (int64_t l : pc.len) tokens += l;
  const sa_dtype dt = pc.k.dtype();
  const double tol = out.dtype() == SA_DTYPE_F16 ? 2e-3 : out.dtype() == SA_DTYPE_BF16 ? 1.6e-2 : dt == SA_DTYPE_F32 ? 2e-5 : 1e-4;
  // Averages of unit-scale values: an output that cancels to near 0 keeps an absolute floor.
  report_.require(sat::close_rel(out.values(), want_out, tol, 0.05 * tol), "sa_attend_paged out");
  if (has_lse) {
    const std::vector<double> got = lse.values();
    for (size_t j = 0; j < got.size(); ++j) {
      const bool ok = std::isinf(want_lse[j]) ? got[j] == want_lse[j]
                                              : std::fabs(got[j] - want_lse[j]) <= (dt == SA_DTYPE_F32 ? 1e-5 : 1e-4) *
                                                                                       std::max(1.0, std::fabs(want_lse[j]));
      report_.require(ok, "sa_attend_paged lse[", j, "] = ", got[j], ", reference ", want_lse[j]);
    }
  }
  if (has_mass) {
    std::vector<double> want(before.size());
    for (size_t j = 0; j < want.size(); ++j) want[j] = double(o.mass_decay) * before[j];
    for (int64_t h = 0; h < h_kv; ++h)
      for (int64_t s = 0; s < S; ++s) want[size_t(shared ? s : h * S + s)] += want_mass[size_t(h * S + s)];
    report_.require(sat::close_rel(mass.values(), want, 1e-4, 1e-6), "sa_attend_paged slot_mass");
  }
  if (compare_threads) {
    if (has_mass) o.slot_mass = mass2.t();
    report_.require_ok(sa_attend_paged(other_ctx_.get(), pc.q.t(), qs, &kv, mode ? indices.t() : nullptr, &o, out2.t(),
                                       has_lse ? lse2.t() : nullptr),
                       "sa_attend_paged (other thread count)");
    report_.require(out2.values() == out.values() && lse2.values() == lse.values() && mass2.values() == mass.values(),
                    "sa_attend_paged depends on the thread count");
  }
}

}  // namespace apifuzz
