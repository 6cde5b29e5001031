// sa_select with random options (top_k, window, sinks, per_query_head, mass_target, scale,
// query_positions, segments, host keys for borrow_keys, an older struct_size), checked list by
// list: slots ascending then -1 padding, only visible slots, every sink and window slot, at
// most top_k scored slots; and against the brute-force reference wherever the selector is
// documented to be exact (the exact kind; page with refine, which rescores every page when the
// index holds fewer than top_k + 2048 keys; HNSW when a query sees few enough keys).
#include <algorithm>
#include <cmath>
#include <thread>

#include "fuzz_layout.hpp"
#include "fuzz_scenario.hpp"

namespace apifuzz {

namespace {

// A query position for an index whose largest position is top.
int64_t random_query_position(ByteSource &in, int64_t top) {
  switch (in.range(0, 7)) {
    case 0: return in.range(-3, 3);
    case 1: return SA_MAX_POSITION - in.range(0, 2);
    case 2: return -SA_MAX_POSITION + in.range(0, 2);
    default: return std::max(-SA_MAX_POSITION, std::min(SA_MAX_POSITION, top + in.range(-12, 4)));
  }
}

// A selection under a mass target: it reaches the target (or takes every key top_k allows) and
// takes no key past it: without its least scored key it was still short. Scores are the
// reference's (the group's summed probability; mass = score / group size); float sums in the
// library may cross the target a little early or late, hence the tolerance.
::testing::AssertionResult mass_target_met(const ref::RowExpectation &e, const std::vector<int32_t> &row,
                                           const sa_select_options &o, int64_t group) {
  constexpr double kTol = 1e-4;
  double mass = 0, least = INFINITY;
  int64_t scored = 0;
  for (size_t s = 0; s < e.visible.size(); ++s) {
    const double m = e.score[s] / double(group);
    if (e.forced[s]) {
      mass += m;  // kept whatever the target (their presence is checked by check_row)
    } else if (e.visible[s] && sat::contains(row, int32_t(s))) {
      mass += m;
      least = std::min(least, m);
      ++scored;
    }
  }
  const int64_t cap = std::min<int64_t>(o.top_k, int64_t(e.ranked.size()));
  if (scored < cap && mass < double(o.mass_target) - kTol)
    return ::testing::AssertionFailure() << "mass " << mass << " with " << scored << " scored slots misses mass_target "
                                         << o.mass_target;
  if (scored > 0 && mass - least >= double(o.mass_target) + kTol)
    return ::testing::AssertionFailure() << "mass " << mass - least << " reached mass_target " << o.mass_target
                                         << " before the last of " << scored << " scored slots";
  return ::testing::AssertionSuccess();
}

}  // namespace

void Scenario::random_select_options(SelectCase &c, const FuzzIndex &fx, bool batch) {
  const int64_t n_q = c.q.dim(0), h_q = c.q.dim(1);
  sa_select_options &o = c.opt;
  o = SA_SELECT_OPTIONS_INIT;
  o.top_k = int32_t(in_.skewed(1, 16, 400));
  o.window = int32_t(in_.skewed(0, 8, 64));
  o.sinks = int32_t(in_.skewed(0, 4, 16));
  o.per_query_head = in_.chance(30) ? 1 : 0;
  if (fx.opt.kind != SA_SELECTOR_INDEXER && in_.chance(20))
    o.mass_target = in_.chance(50) ? in_.pick({0.5f, 0.9f, 0.99f, 1.0f}) : float(in_.range(1, 1000)) / 1000.f;
  if (in_.chance(30)) o.scale = float(in_.range(5, 150)) / 100.f;
  c.has_qpos = in_.chance(40);
  c.qpos.assign(size_t(std::max<int64_t>(n_q, 1)), 0);
  if (c.has_qpos)
    for (int64_t i = 0; i < n_q; ++i) c.qpos[size_t(i)] = random_query_position(in_, fx.max_pos());
  c.has_segments = !batch && in_.chance(20);
  c.qseg.assign(size_t(std::max<int64_t>(n_q, 1)), 0);
  c.kseg.assign(size_t(std::max<int64_t>(fx.size(), 1)), 0);
  if (c.has_segments) {
    for (int32_t &s : c.qseg) s = int32_t(in_.range(0, 2));
    for (int32_t &s : c.kseg) s = int32_t(in_.range(0, 2));
  }
  const int64_t lists = o.per_query_head ? h_q : fx.h_kv();
  const int64_t width = int64_t(o.sinks) + o.window + o.top_k + in_.range(0, 3);
  std::string ow;
  c.out = poisoned_output(in_, SA_DTYPE_I32, {n_q, lists, width}, &ow);
  // Borrowing indexes read the host's keys (at least size rows); others ignore opt.keys, even
  // a descriptor that would be refused.
  c.pass_keys = fx.borrows() || in_.chance(15);
  if (fx.borrows()) {
    c.keys = fx.host_keys(std::min(fx.max_slots, fx.size() + in_.range(0, 3)));
  } else {
    c.keys = sa_tensor{};
    c.keys.rank = 2;
    c.keys.dtype = SA_DTYPE_I32;
  }
  const bool old_struct = !fx.borrows() && in_.chance(10);  // a host built before cuda_stream and keys
  if (old_struct) o.struct_size = offsetof(sa_select_options, cuda_stream);
  std::ostringstream w;
  w << "top_k " << o.top_k << ", window " << o.window << ", sinks " << o.sinks << ", per_query_head "
    << o.per_query_head << ", mass_target " << o.mass_target << ", scale " << o.scale;
  if (c.has_qpos) w << ", query_positions " << list_words(c.qpos.data(), n_q);
  if (c.has_segments) {
    std::vector<int64_t> qs(c.qseg.begin(), c.qseg.begin() + n_q), ks(c.kseg.begin(), c.kseg.begin() + fx.size());
    w << ", query_segments " << list_words(qs.data(), n_q) << ", key_segments " << list_words(ks.data(), fx.size());
  }
  if (c.pass_keys) w << (fx.borrows() ? ", host keys of " : ", ignored bogus keys") << (fx.borrows() ? std::to_string(c.keys.shape[0]) + " rows" : "");
  if (old_struct) w << ", struct_size of the first version";
  w << "; indices " << ow << " width " << width;
  c.words += w.str();
}

SelectCase Scenario::make_select_case(const FuzzIndex &fx) {
  SelectCase c;
  const int64_t n_q = in_.chance(10) ? in_.range(0, 12) : in_.range(1, 4);
  std::string qw;
  c.q = random_tensor(in_, rng_, in_.pick({SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16}), {n_q, fx.h_kv() * group_, fx.d()},
                      1.0, &qw);
  c.words = "queries [" + std::to_string(n_q) + ", " + std::to_string(fx.h_kv() * group_) + ", " +
            std::to_string(fx.d()) + "] " + qw + ", ";
  random_select_options(c, fx, false);
  c.bind();
  return c;
}

void Scenario::check_select(FuzzIndex &fx, SelectCase &c) {
  // Sometimes the same selection runs on two host threads at once, beside a clone of the index
  // (both only read it; the header allows it): under TSan, races on the index's shared state.
  const bool concurrent = in_.chance(10);
  report_.say("select on ", fx.size(), " slots", concurrent ? " (also on two threads at once, beside a clone)" : "",
              ": ", c.words);
  SelectCase a = c, b = c;
  std::vector<sa_status> side(3, SA_OK);
  std::vector<std::thread> threads;
  sa_index *copy = nullptr;
  if (concurrent) {
    threads.emplace_back([&] { side[0] = a.run(fx.ix()); });
    threads.emplace_back([&] { side[1] = b.run(fx.ix()); });
    threads.emplace_back([&] { side[2] = sa_index_clone(fx.ix(), &copy); });
  }
  const sa_status s = c.run(fx.ix());
  for (std::thread &t : threads) t.join();
  sat::IndexPtr clone(copy);
  report_.require_ok(s, "sa_select");
  report_.require(c.out.only_elements_written(), "sa_select wrote outside indices");
  if (concurrent) {
    report_.require(side[0] == SA_OK && side[1] == SA_OK, "concurrent sa_select failed");
    report_.require(side[2] == (fx.borrows() ? SA_ERR_UNSUPPORTED : SA_OK), "concurrent sa_index_clone returned ",
                    sa_status_name(side[2]));
    report_.require(a.out.values() == c.out.values() && b.out.values() == c.out.values(),
                    "selections made at once on two threads differ");
  }
  verify_selection(fx, c, fx.host_k.dtype());
  if (fx.owning && !(fx.opt.kind == SA_SELECTOR_LSH && fx.refilled)) {
    SelectCase twin = c;
    twin.out.poison();
    report_.require_ok(twin.run(fx.owning.get()), "sa_select (owning twin)");
    report_.require(twin.out.values() == c.out.values(), "a borrow_keys index selects differently from an owning ",
                    "index of the same dtype given the same calls");
  }
}

// Whether the selection for a query that sees `visible` keys (causally, in the list's KV head)
// must equal the exact top-K. Documented: page with refine rescores the best pages holding
// top_k + 2048 keys (all of them when the index holds no more), and in a call of 8 or more
// queries scores a query that sees at most twice that exactly; HNSW scores every key exactly when a query sees at most 2 * max(ef_search, top_k)
// (12 * when top_k > ef_search: src/select/hnsw_selector.cpp, kWideBeamExactFactor; 32 * in a
// call of 8 or more queries, kPrefillExactFactor).
bool Scenario::selector_is_exact_here(const FuzzIndex &fx, const SelectCase &c, int64_t visible) const {
  switch (fx.opt.kind) {
    case SA_SELECTOR_EXACT: return true;
    case SA_SELECTOR_PAGE: {
      const int64_t candidates = int64_t(c.opt.top_k) + 2048;
      return fx.opt.page.refine != 0 && (fx.size() <= candidates || (c.out.dim(0) >= 8 && visible <= 2 * candidates));
    }
    case SA_SELECTOR_HNSW: {
      const int64_t ef = fx.opt.hnsw.ef_search, k = c.opt.top_k;
      const int64_t factor = std::max<int64_t>(k > ef ? 12 : 2, c.out.dim(0) >= 8 ? 32 : 0);
      return visible <= factor * std::max(ef, k);
    }
    default: return false;
  }
}

void Scenario::verify_selection(const FuzzIndex &fx, SelectCase &c, sa_dtype host_dtype) {
  c.bind();
  // One cache per KV head when the heads' slots hold different positions (a per-head refill).
  std::vector<ref::KeyCache> caches;
  for (int64_t h = 0; h < (fx.per_head() ? fx.h_kv() : 1); ++h) caches.push_back(fx.scoring_cache(host_dtype, h));
  ref::SelectArgs args = ref::SelectArgs::from(c.opt);
  const int64_t n_q = c.out.dim(0), lists = c.out.dim(1), width = c.out.dim(2);
  // Default query positions count from the largest position a slot holds.
  std::vector<int64_t> qpos(size_t(std::max<int64_t>(n_q, 1)));
  for (int64_t i = 0; i < n_q; ++i) qpos[size_t(i)] = c.opt.query_positions ? c.opt.query_positions[i] : fx.top() - n_q + 1 + i;
  args.query_positions = qpos.data();
  for (int64_t i = 0; i < n_q; ++i) {
    std::vector<int32_t> first;
    for (int64_t h = 0; h < lists; ++h) {
      const int64_t hk = c.opt.per_query_head ? h / group_ : h;
      const std::vector<int64_t> &pos = fx.pos_of(hk);
      ref::RowExpectation e = ref::expect_row(caches[fx.per_head() ? size_t(hk) : 0], c.q, args, i, h);
      const std::vector<int32_t> row = sat::row_of(c.out, i, h);
      int64_t sees = 0, scored = 0, forced = 0;
      for (int64_t p : pos) sees += p <= e.position;  // in this list's KV head
      for (char f : e.forced) forced += f;
      for (int64_t s : e.ranked) scored += sat::contains(row, int32_t(s));
      bool exact = selector_is_exact_here(fx, c, sees);
      // Repeated positions can make the kept slots outnumber sinks + window: the list may then
      // be too short for all of them and the scored ones. The header: sinks and window always
      // stay (scored slots get what remains); when they alone exceed the width, the window's are
      // kept first, the most recent first, then the sinks', the oldest first, ties by lower slot.
      const bool crowded = forced + std::min<int64_t>(c.opt.top_k, int64_t(e.ranked.size())) > width;
      if (forced > width) {
        std::vector<std::pair<int64_t, int64_t>> order;  // (rank, slot)
        for (int64_t s = 0; s < fx.size(); ++s) {
          if (!e.forced[size_t(s)]) continue;
          const int64_t p = pos[size_t(s)];
          order.push_back({p > e.position - c.opt.window ? e.position - p : c.opt.window + p, s});
        }
        std::sort(order.begin(), order.end());
        for (size_t j = size_t(width); j < order.size(); ++j) e.forced[size_t(order[j].second)] = 0;
      }
      if (crowded) exact = false;
      // With a mass target the count is where a float sum crosses it: compared by mass instead.
      const bool by_mass = exact && c.opt.mass_target > 0;
      ::testing::AssertionResult ok =
          exact ? ref::check_row(e, row, 1e-4, by_mass ? int64_t(row.size()) : 0) : ref::check_row(e, row, 1.0, int64_t(row.size()));
      if (ok && by_mass) ok = mass_target_met(e, row, c.opt, c.opt.per_query_head ? 1 : group_);
      if (!ok) {
        std::vector<int64_t> r(row.begin(), row.end()), p;
        for (int32_t s : row)
          if (s >= 0 && s < fx.size()) p.push_back(pos[size_t(s)]);
        report_.fail("query ", i, " list ", h, exact ? " (must equal the exact top-K)" : "", " at position ",
                     e.position, ": ", ok.message(), "; the list is ", list_words(r.data(), int64_t(r.size())),
                     ", at positions ", list_words(p.data(), int64_t(p.size())), crowded ? " (sinks and window crowd the list)" : "");
      }
      report_.require(scored <= c.opt.top_k, "query ", i, " list ", h, ": ", scored, " scored slots, top_k ",
                      c.opt.top_k);
      // The one-stage indexer (rescore 0) writes one list per query to every row of it; with a
      // second stage each row's pool is rescored for that row's heads.
      if (fx.opt.kind == SA_SELECTOR_INDEXER && fx.opt.learned.rescore == 0) {
        if (h == 0) first = row;
        report_.require(row == first, "indexer: query ", i, " list ", h, " differs from list 0");
      }
    }
  }
}

}  // namespace apifuzz
