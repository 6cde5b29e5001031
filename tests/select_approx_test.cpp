// The approximate selectors (page with and without refine, lsh) through sa_select: planted
// needle keys are found; the shared contract (visible slots only, ascending, sinks and window
// by position, -1 padding) holds against the brute-force oracle under causal positions,
// segments, appends and updates; per-query-head lists; mass targets; identical results for
// any thread count and under concurrent calls.
#include <gtest/gtest.h>

#include <memory>
#include <thread>

#include "mirrored_index.hpp"

namespace {

using sat::Rng;
using sat::Tensor;
using sat::contains;
using sat::row_of;
using sat::select_options;

struct Config {
  const char *name;
  sa_selector_kind kind;
  int32_t refine;     // page
  int32_t page_size;  // page
  int32_t bits;       // lsh
  // How far a planted needle stands out (its norm, for keys of norm ~sqrt(D)). Page bounds
  // sum each coordinate's extreme over the page, so with random keys a needle only lifts its
  // page when its coordinates exceed the others' extremes.
  double gain;
};

void PrintTo(const Config &c, std::ostream *os) { *os << c.name; }

constexpr int64_t kHkv = 2, kHq = 4, kD = 32;

sa_index_options approx_options(const Config &c) {
  sa_index_options o = sat::index_options(c.kind, kHkv, kD, SA_DTYPE_F32);
  o.page.refine = c.refine;
  o.page.page_size = c.page_size;
  o.lsh.bits = c.bits;
  return o;
}

// An index of one approximate kind and its mirror in the oracle; outputs top_k + window +
// sinks wide.
struct Approx : sat::MirroredIndex {
  explicit Approx(const Config &c, int32_t threads = 1) : MirroredIndex(approx_options(c), threads) {}
  void update(const std::vector<int32_t> &slots, const Tensor &keys, const std::vector<int64_t> &pos) {
    MirroredIndex::update(slots, keys, pos.data());
  }
  Tensor select(const Tensor &q, const sa_select_options &o) {
    return MirroredIndex::select(q, o, int64_t(o.top_k) + o.window + o.sinks);
  }
};

Tensor random_keys(Rng &rng, int64_t n) {
  Tensor k(SA_DTYPE_F32, {n, kHkv, kD});
  k.randomize(rng);
  return k;
}




// Sets key row `slot` of `keys`, head h, to `gain` times the unit direction of the summed
// query heads [g0, g1) of query i: a key every one of those heads attends to.
void plant(Tensor &keys, int64_t slot, int64_t h, const Tensor &q, int64_t i, int64_t g0, int64_t g1, double gain) {
  std::vector<double> dir(kD, 0.0);
  double norm = 0;
  for (int64_t d = 0; d < kD; ++d) {
    for (int64_t g = g0; g < g1; ++g) dir[size_t(d)] += q.get({i, g, d});
    norm += dir[size_t(d)] * dir[size_t(d)];
  }
  for (int64_t d = 0; d < kD; ++d) keys.set({slot, h, d}, gain * dir[size_t(d)] / std::sqrt(norm));
}

// The shared contract of every row against the oracle: visible slots only, ascending, every
// forced slot (sinks and window by position), -1 padding, at most top_k scored slots.
void check_contract(const Approx &a, const Tensor &q, const sa_select_options &o, const Tensor &out) {
  ref::SelectArgs args = ref::SelectArgs::from(o);
  for (int64_t i = 0; i < out.dim(0); ++i) {
    // Approximate: no claim about which scored keys (no ranking, no scores needed).
    const ref::RowExpectation e = ref::expect_visible(a.cache, q, args, i);
    for (int64_t h = 0; h < out.dim(1); ++h)
      EXPECT_TRUE(ref::check_row(e, row_of(out, i, h), 1e-4, o.top_k)) << "query " << i << ", head " << h;
  }
}

class ApproxSelect : public ::testing::TestWithParam<Config> {};

// Each query's KV heads get a key aligned with the group's queries among random keys.
TEST_P(ApproxSelect, FindsPlantedNeedles) {
  Rng rng(501);
  Approx a(GetParam());
  ASSERT_NE(a.ix, nullptr);
  const int64_t n = 6000, n_q = 3;
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {n_q, kHq, kD});
  Tensor keys = random_keys(rng, n);
  auto needle = [](int64_t i, int64_t h) { return int32_t(700 + 1700 * i + 300 * h); };
  for (int64_t i = 0; i < n_q; ++i)
    for (int64_t h = 0; h < kHkv; ++h) plant(keys, needle(i, h), h, q, i, h * 2, h * 2 + 2, GetParam().gain);
  a.append(keys);
  sa_select_options o = select_options(16, 8, 2);
  Tensor out = a.select(q, o);
  check_contract(a, q, o, out);
  for (int64_t i = 0; i < n_q; ++i)
    for (int64_t h = 0; h < kHkv; ++h) EXPECT_TRUE(contains(row_of(out, i, h), needle(i, h))) << "query " << i << ", head " << h;
}

// per_query_head: one list per query head, each with its own needle.
TEST_P(ApproxSelect, PerQueryHeadNeedles) {
  Rng rng(502);
  Approx a(GetParam());
  ASSERT_NE(a.ix, nullptr);
  const int64_t n = 5000;
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {2, kHq, kD});
  Tensor keys = random_keys(rng, n);
  auto needle = [](int64_t i, int64_t g) { return int32_t(400 + 1100 * g + 150 * i); };
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t g = 0; g < kHq; ++g) plant(keys, needle(i, g), g / 2, q, i, g, g + 1, GetParam().gain);
  a.append(keys);
  sa_select_options o = select_options(16, 4, 1);  // a whole page of 16 fits
  o.per_query_head = 1;
  Tensor out = a.select(q, o);
  check_contract(a, q, o, out);
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t g = 0; g < kHq; ++g) EXPECT_TRUE(contains(row_of(out, i, g), needle(i, g))) << "query " << i << ", head " << g;
}

// Explicit positions: a needle after the query's position is invisible, one before is found.
TEST_P(ApproxSelect, CausalPositions) {
  Rng rng(503);
  Approx a(GetParam());
  ASSERT_NE(a.ix, nullptr);
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {2, kHq, kD});
  Tensor keys = random_keys(rng, 4000);
  for (int64_t h = 0; h < kHkv; ++h) {
    plant(keys, 900 + h, h, q, 0, 2 * h, 2 * h + 2, GetParam().gain);   // before query 0 (position 2000)
    plant(keys, 2500 + h, h, q, 0, 2 * h, 2 * h + 2, GetParam().gain);  // after it
    plant(keys, 3100 + h, h, q, 1, 2 * h, 2 * h + 2, GetParam().gain);  // before query 1 (position 3500)
  }
  a.append(keys);
  std::vector<int64_t> pos = {2000, 3500};
  sa_select_options o = select_options(16, 8, 2);
  o.query_positions = pos.data();
  Tensor out = a.select(q, o);
  check_contract(a, q, o, out);
  for (int64_t h = 0; h < kHkv; ++h) {
    EXPECT_TRUE(contains(row_of(out, 0, h), int32_t(900 + h)));
    EXPECT_FALSE(contains(row_of(out, 0, h), int32_t(2500 + h)));
    EXPECT_TRUE(contains(row_of(out, 1, h), int32_t(3100 + h)));
  }
}

// Packed sequences: a needle of another segment is never chosen, one of the query's own is.
TEST_P(ApproxSelect, SegmentsAreRespected) {
  Rng rng(504);
  Approx a(GetParam());
  ASSERT_NE(a.ix, nullptr);
  const int64_t n = 4000;
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {2, kHq, kD});
  Tensor keys = random_keys(rng, n);
  std::vector<int32_t> kseg(n), qseg = {0, 1};
  for (int64_t s = 0; s < n; ++s) kseg[size_t(s)] = int32_t((s / 500) % 2);  // blocks of 500
  for (int64_t h = 0; h < kHkv; ++h) {
    plant(keys, 100 + h, h, q, 0, 2 * h, 2 * h + 2, GetParam().gain);  // segment 0, query 0's
    plant(keys, 600 + h, h, q, 0, 2 * h, 2 * h + 2, GetParam().gain);  // segment 1, aligned with query 0
    plant(keys, 1600 + h, h, q, 1, 2 * h, 2 * h + 2, GetParam().gain); // segment 1, query 1's
  }
  a.append(keys);
  sa_select_options o = select_options(16, 8, 2);
  o.query_segments = qseg.data();
  o.key_segments = kseg.data();
  Tensor out = a.select(q, o);
  check_contract(a, q, o, out);
  for (int64_t h = 0; h < kHkv; ++h) {
    EXPECT_TRUE(contains(row_of(out, 0, h), int32_t(100 + h)));
    EXPECT_FALSE(contains(row_of(out, 0, h), int32_t(600 + h)));
    EXPECT_TRUE(contains(row_of(out, 1, h), int32_t(1600 + h)));
  }
}

// Appends in chunks of every size, selections in between: each chunk's needle (aligned with
// a query of its own) is found, then made an ordinary key again (an update at its own
// position) so that needles never compete.
TEST_P(ApproxSelect, AppendGrowth) {
  Rng rng(505);
  Approx a(GetParam());
  ASSERT_NE(a.ix, nullptr);
  sa_select_options o = select_options(16, 4, 1);
  int64_t total = 0;
  for (int64_t chunk : {1, 2, 13, 100, 700, 1500, 3000}) {
    Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {1, kHq, kD});
    Tensor keys = random_keys(rng, chunk);
    const int64_t at = chunk / 2;  // the chunk's middle row carries the needle
    for (int64_t h = 0; h < kHkv; ++h) plant(keys, at, h, q, 0, 2 * h, 2 * h + 2, GetParam().gain);
    a.append(keys);
    total += chunk;
    std::vector<int64_t> pos = {total - 1 + 50};  // a later query: the window holds no key
    sa_select_options oq = o;
    oq.query_positions = pos.data();
    Tensor out = a.select(q, oq);
    check_contract(a, q, oq, out);
    for (int64_t h = 0; h < kHkv; ++h)
      EXPECT_TRUE(contains(row_of(out, 0, h), int32_t(total - chunk + at))) << "after " << total << " keys, head " << h;
    a.update({int32_t(total - chunk + at)}, random_keys(rng, 1), {total - chunk + at});
  }
}

// A freed slot refilled with a new key at a new position: the new needle is found, the
// overwritten one is gone, and positions (not slot order) decide the window and sinks.
TEST_P(ApproxSelect, UpdateRefillsFreedSlots) {
  Rng rng(506);
  Approx a(GetParam());
  ASSERT_NE(a.ix, nullptr);
  const int64_t n = 4000;
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {1, kHq, kD});
  Tensor keys = random_keys(rng, n);
  for (int64_t h = 0; h < kHkv; ++h) plant(keys, 1234, h, q, 0, 2 * h, 2 * h + 2, GetParam().gain);
  a.append(keys);
  sa_select_options o = select_options(16, 4, 2);
  Tensor before = a.select(q, o);
  for (int64_t h = 0; h < kHkv; ++h) ASSERT_TRUE(contains(row_of(before, 0, h), 1234));

  // Slot 1234 gets a random key; slot 3000 the needle; slot 1 (a sink) a random key; all at
  // new positions past the end, slot 1's the newest.
  Tensor fresh = random_keys(rng, 3);
  for (int64_t h = 0; h < kHkv; ++h) plant(fresh, 1, h, q, 0, 2 * h, 2 * h + 2, GetParam().gain);
  a.update({1234, 3000, 1}, fresh, {n, n + 1, n + 30});
  // A query at n + 20: the window (n + 16, n + 20] holds no key, slot 1 is in its future.
  std::vector<int64_t> pos = {n + 20};
  sa_select_options oq = o;
  oq.query_positions = pos.data();
  Tensor after = a.select(q, oq);
  check_contract(a, q, oq, after);
  for (int64_t h = 0; h < kHkv; ++h) {
    std::vector<int32_t> row = row_of(after, 0, h);
    EXPECT_TRUE(contains(row, 3000)) << "head " << h;
    EXPECT_FALSE(contains(row, 1234)) << "head " << h;
    EXPECT_FALSE(contains(row, 1)) << "head " << h << ": slot 1 now holds a later position";
  }
  // The default position (the newest, n + 30): slot 1 is in the window, slot 0 still a sink.
  Tensor latest = a.select(q, o);
  check_contract(a, q, o, latest);
  for (int64_t h = 0; h < kHkv; ++h) {
    EXPECT_TRUE(contains(row_of(latest, 0, h), 1));
    EXPECT_TRUE(contains(row_of(latest, 0, h), 0));
  }
}

// Mass targets: a needle holding nearly all the attention is enough alone; a target the
// window already reaches adds nothing; larger targets keep supersets of smaller ones.
TEST_P(ApproxSelect, MassTarget) {
  Rng rng(507);
  Approx a(GetParam()), plain(GetParam());
  ASSERT_NE(a.ix, nullptr);
  ASSERT_NE(plain.ix, nullptr);
  const int64_t n = 3000;
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {1, kHq, kD});
  Tensor keys = random_keys(rng, n);
  plain.append(keys);
  for (int64_t h = 0; h < kHkv; ++h) plant(keys, 777, h, q, 0, 2 * h, 2 * h + 2, 40.0);
  a.append(keys);
  auto count = [](const std::vector<int32_t> &r) { return std::count_if(r.begin(), r.end(), [](int32_t s) { return s >= 0; }); };

  sa_select_options o = select_options(32, 0, 0);
  o.mass_target = 0.5f;
  Tensor one = a.select(q, o);
  std::vector<int32_t> just_needle(32, -1);
  just_needle[0] = 777;
  for (int64_t h = 0; h < kHkv; ++h) EXPECT_EQ(row_of(one, 0, h), just_needle) << "head " << h;

  sa_select_options w = select_options(32, 16, 0);  // random keys: the window holds some mass
  w.mass_target = 1e-6f;
  Tensor window_only = plain.select(q, w);
  check_contract(plain, q, w, window_only);
  for (int64_t h = 0; h < kHkv; ++h) EXPECT_EQ(count(row_of(window_only, 0, h)), 16);

  std::vector<std::vector<int32_t>> previous(kHkv);
  for (float target : {0.05f, 0.2f, 0.5f}) {
    sa_select_options t = select_options(32, 16, 0);
    t.mass_target = target;
    Tensor out = plain.select(q, t);
    check_contract(plain, q, t, out);
    for (int64_t h = 0; h < kHkv; ++h) {
      std::vector<int32_t> row = row_of(out, 0, h);
      for (int32_t s : previous[size_t(h)])
        if (s >= 0) {
          EXPECT_TRUE(contains(row, s)) << "target " << target << " dropped slot " << s;
        }
      previous[size_t(h)] = row;
    }
  }
}

// The same index data with 1 and 2 threads, and concurrent calls from several std::threads
// on one index, give identical selections.
TEST_P(ApproxSelect, ThreadsAndConcurrencyGiveIdenticalResults) {
  Rng rng(508);
  Approx one(GetParam(), 1), two(GetParam(), 2);
  ASSERT_NE(one.ix, nullptr);
  ASSERT_NE(two.ix, nullptr);
  Tensor keys = random_keys(rng, 3000);
  one.append(keys);
  two.append(keys);
  Tensor more = random_keys(rng, 900);  // an append after the first build
  one.append(more);
  two.append(more);
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {6, kHq, kD});
  sa_select_options o = select_options(24, 8, 2);
  Tensor serial = one.select(q, o);
  EXPECT_EQ(two.select(q, o).values(), serial.values());

  std::vector<Tensor> outs(4, Tensor(SA_DTYPE_I32, {6, kHkv, 34}));
  std::vector<std::thread> threads;
  std::vector<sa_status> status(4, SA_OK);
  for (size_t t = 0; t < outs.size(); ++t)
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 3 && status[t] == SA_OK; ++rep) status[t] = sa_select(two.ix.get(), q.t(), &o, outs[t].t());
    });
  for (auto &t : threads) t.join();
  for (size_t t = 0; t < outs.size(); ++t) {
    EXPECT_EQ(status[t], SA_OK) << sa_status_name(status[t]);
    EXPECT_EQ(outs[t].values(), serial.values()) << "thread " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, ApproxSelect,
                         ::testing::Values(Config{"PageRefine", SA_SELECTOR_PAGE, 1, 16, 0, 20.0},
                                           Config{"PageRefineSmallPages", SA_SELECTOR_PAGE, 1, 3, 0, 20.0},
                                           Config{"PageWhole", SA_SELECTOR_PAGE, 0, 16, 0, 20.0},
                                           Config{"Lsh", SA_SELECTOR_LSH, 0, 16, 0, 6.0},
                                           Config{"LshFixedBits", SA_SELECTOR_LSH, 0, 16, 6, 6.0}),
                         [](const ::testing::TestParamInfo<Config> &info) { return std::string(info.param.name); });

// Refine rescoring is exact over its candidates: when the candidate pages cover the whole
// index (top_k + 2048 keys or more), page+refine equals the exact oracle, mass targets too.
TEST(PageSelect, RefineOverEveryPageEqualsExact) {
  Rng rng(510);
  Approx a(Config{"PageRefine", SA_SELECTOR_PAGE, 1, 7, 0, 0.0});
  ASSERT_NE(a.ix, nullptr);
  a.append(random_keys(rng, 1500));
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {3, kHq, kD});
  for (int per_head : {0, 1})
    for (float mass : {0.f, 0.6f}) {
      sa_select_options o = select_options(20, 8, 3);
      o.per_query_head = per_head;
      o.mass_target = mass;
      Tensor out = a.select(q, o);
      ref::SelectArgs args = ref::SelectArgs::from(o);
      for (int64_t i = 0; i < out.dim(0); ++i)
        for (int64_t h = 0; h < out.dim(1); ++h)
          EXPECT_TRUE(ref::check_row(ref::expect_row(a.cache, q, args, i, h), row_of(out, i, h), 1e-4, mass > 0 ? 1 : 0))
              << "per_head " << per_head << ", mass " << mass << ", query " << i << ", head " << h;
    }
}

// The same over more pages than one bound task covers (512) and more candidates than one
// rescoring task scores (1024), on 2 threads: the split selection equals the exact oracle, and
// the lists of 1 and 2 threads are identical.
TEST(PageSelect, RefineSplitOverTasksEqualsExact) {
  Rng rng(511);
  Approx a(Config{"PageRefine", SA_SELECTOR_PAGE, 1, 1, 0, 0.0}, 2);
  Approx serial(Config{"PageRefine", SA_SELECTOR_PAGE, 1, 1, 0, 0.0}, 1);
  ASSERT_NE(a.ix, nullptr);
  ASSERT_NE(serial.ix, nullptr);
  const Tensor keys = random_keys(rng, 1800);  // 1800 pages of 1 slot: 4 bound tasks per list
  a.append(keys);
  serial.append(keys);
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {2, kHq, kD});
  for (int per_head : {0, 1}) {
    sa_select_options o = select_options(20, 8, 3);
    o.per_query_head = per_head;
    Tensor out = a.select(q, o), out1 = serial.select(q, o);
    ref::SelectArgs args = ref::SelectArgs::from(o);
    for (int64_t i = 0; i < out.dim(0); ++i)
      for (int64_t h = 0; h < out.dim(1); ++h) {
        EXPECT_TRUE(ref::check_row(ref::expect_row(a.cache, q, args, i, h), row_of(out, i, h), 1e-4, 0))
            << "per_head " << per_head << ", query " << i << ", head " << h;
        EXPECT_EQ(row_of(out, i, h), row_of(out1, i, h)) << "threads 2 vs 1, query " << i << ", head " << h;
      }
  }
}

// Lists of the prefill `out` (queries q at positions pos) that differ from the same query asked
// alone, over every step-th query from `first` on.
int64_t differing_from_alone(Approx &a, const Tensor &q, const sa_select_options &o, const std::vector<int64_t> &pos,
                             const Tensor &out, int64_t step, int64_t first = 0) {
  int64_t differing = 0;
  for (int64_t i = first; i < out.dim(0); i += step) {
    sa_select_options o1 = o;
    o1.query_positions = &pos[size_t(i)];
    const Tensor single = a.select(sat::row_tensor(q, i), o1);
    for (int64_t h = 0; h < out.dim(1); ++h) differing += row_of(single, 0, h) != row_of(out, i, h);
  }
  return differing;
}

// Prefill (8 or more queries in one call) rescores by blocks of queries, through one GEMM over
// the keys a block sees when its candidates are dense there (block_rescore.hpp): at 1500 keys
// the blocks are. Its lists equal those of the same queries asked one at a time (the per-list
// path) but for rounding ties, per KV head and per query head, with a mass target, on 1 and 2
// threads; page+refine's (every query sees fewer than twice its candidate keys: scored exactly
// in a prefill, page_selector.cpp) equal the brute-force oracle's, and so do LSH's for the queries that see at most 32 x top_k keys (scored exactly in a
// prefill: lsh_selector.cpp, kPrefillExactFactor).
TEST(PrefillSelect, BlocksChooseAsOneQueryAtATime) {
  Rng rng(515);
  const Tensor keys = random_keys(rng, 1500);
  const int64_t n_q = 300;
  const Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {n_q, kHq, kD});
  std::vector<int64_t> pos(static_cast<size_t>(n_q));
  for (int64_t i = 0; i < n_q; ++i) pos[size_t(i)] = i * 5;
  for (const Config &c : {Config{"PageRefine", SA_SELECTOR_PAGE, 1, 7, 0, 0.0}, Config{"Lsh", SA_SELECTOR_LSH, 0, 16, 0, 0.0}})
    for (int32_t threads : {1, 2}) {
      Approx a(c, threads);
      ASSERT_NE(a.ix, nullptr);
      a.append(keys);
      for (int per_head : {0, 1})
        for (float mass : {0.f, 0.6f}) {
          SCOPED_TRACE(testing::Message() << c.name << ", threads " << threads << ", per_head " << per_head << ", mass " << mass);
          sa_select_options o = select_options(20, 8, 3);
          o.per_query_head = per_head;
          o.mass_target = mass;
          o.query_positions = pos.data();
          const Tensor out = a.select(q, o);
          check_contract(a, q, o, out);
          // LSH: queries 0..127 see at most 32 x 20 keys.
          const int64_t hashed = c.kind == SA_SELECTOR_LSH ? 128 : 0, exact_end = c.kind == SA_SELECTOR_LSH ? hashed : n_q;
          EXPECT_LE(differing_from_alone(a, q, o, pos, out, 3, hashed), 1) << "lists where prefill and one query alone differ";
          const ref::SelectArgs args = ref::SelectArgs::from(o);
          for (int64_t i = 0; i < exact_end; i += 3)
            for (int64_t h = 0; h < out.dim(1); ++h)
              EXPECT_TRUE(ref::check_row(ref::expect_row(a.cache, q, args, i, h), row_of(out, i, h), 1e-4, mass > 0 ? 1 : 0))
                  << "query " << i << ", list " << h;
        }
    }
}

// A page prefill whose per-list state (a bound per page and query head; with refine the
// candidates' scores) would pass 32 MB runs in chunks of queries: over 20000 pages of one key,
// 700 queries take three chunks of up to 256, with and without refine (every query sees more
// than twice its candidate keys, so none is scored exactly). Every list equals the same
// query's asked alone.
TEST(PrefillSelect, PageChunksChooseAsOneQueryAtATime) {
  Rng rng(516);
  const Tensor keys = random_keys(rng, 20000);
  const int64_t n_q = 700;
  const Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {n_q, kHq, kD});
  std::vector<int64_t> pos(static_cast<size_t>(n_q));
  for (int64_t i = 0; i < n_q; ++i) pos[size_t(i)] = 19999 - (n_q - 1 - i) * 22;  // 4621 .. 19999
  for (const Config &c : {Config{"PageRefine", SA_SELECTOR_PAGE, 1, 1, 0, 0.0}, Config{"PageWhole", SA_SELECTOR_PAGE, 0, 1, 0, 0.0}}) {
    SCOPED_TRACE(c.name);
    Approx a(c, 2);
    ASSERT_NE(a.ix, nullptr);
    a.append(keys);
    sa_select_options o = select_options(20, 8, 3);
    o.query_positions = pos.data();
    const Tensor out = a.select(q, o);
    check_contract(a, q, o, out);
    EXPECT_LE(differing_from_alone(a, q, o, pos, out, 7), 1) << "lists where prefill and one query alone differ";
  }
}

// Page with refine in a prefill scores a query exactly when it sees at most twice its
// candidate keys (kPrefillExactFactor: 2 x (top_k + 2048) = 4136 here), where the same query
// alone bounds pages and misses some of the oracle's keys: those lists are the oracle's, and a
// call of only such queries selects as the exact selector does, bit for bit. Later queries
// bound pages as the same query alone does (and miss some of the oracle's keys).
TEST(PrefillSelect, PageRefineScoresExactlyBelowTwiceItsCandidates) {
  Rng rng(517);
  const Tensor keys = random_keys(rng, 7200);
  const int64_t n_q = 48, exact_end = 27, cut = 2 * (20 + 2048);
  const Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {n_q, kHq, kD});
  std::vector<int64_t> pos(static_cast<size_t>(n_q));
  for (int64_t i = 0; i < n_q; ++i) pos[size_t(i)] = 100 + 150 * i;  // 100 .. 7150
  ASSERT_LE(pos[exact_end - 1] + 1, cut);
  ASSERT_GT(pos[exact_end] + 1, cut);
  for (int32_t threads : {1, 2}) {
    SCOPED_TRACE(testing::Message() << "threads " << threads);
    Approx page(Config{"PageRefine", SA_SELECTOR_PAGE, 1, 8, 0, 0.0}, threads);
    Approx exact(Config{"Exact", SA_SELECTOR_EXACT, 0, 8, 0, 0.0}, threads);
    ASSERT_NE(page.ix, nullptr);
    ASSERT_NE(exact.ix, nullptr);
    page.append(keys);
    exact.append(keys);
    sa_select_options o = select_options(20, 8, 3);
    o.query_positions = pos.data();
    const Tensor out = page.select(q, o);
    check_contract(page, q, o, out);
    const ref::SelectArgs args = ref::SelectArgs::from(o);
    int64_t alone_missed = 0, bounded_missed = 0;
    for (int64_t i = 0; i < n_q; ++i) {
      sa_select_options o1 = o;
      o1.query_positions = &pos[size_t(i)];
      const Tensor alone = page.select(sat::row_tensor(q, i), o1);
      for (int64_t h = 0; h < kHkv; ++h) {
        const ref::RowExpectation e = ref::expect_row(page.cache, q, args, i, h);
        const bool alone_exact = ref::check_row(e, row_of(alone, 0, h));
        if (i < exact_end) {
          EXPECT_TRUE(ref::check_row(e, row_of(out, i, h))) << "query " << i << " (scored exactly), head " << h;
          alone_missed += !alone_exact;
        } else {
          EXPECT_EQ(row_of(out, i, h), row_of(alone, 0, h)) << "query " << i << " (bounds pages), head " << h;
          bounded_missed += !ref::check_row(e, row_of(out, i, h));
        }
      }
    }
    EXPECT_GT(alone_missed, 0) << "below the cut, bounding pages misses none of the oracle's keys: a weak test";
    EXPECT_GT(bounded_missed, 0) << "past the cut, the lists are the oracle's: not bounded";
    // A call of only the queries below the cut: the exact selector's path, bit for bit.
    Tensor q_early(SA_DTYPE_F32, {exact_end, kHq, kD});
    for (int64_t i = 0; i < exact_end; ++i)
      for (int64_t g = 0; g < kHq; ++g)
        for (int64_t d = 0; d < kD; ++d) q_early.set({i, g, d}, q.get({i, g, d}));
    EXPECT_EQ(page.select(q_early, o).values(), exact.select(q_early, o).values());
  }
}

// With refine, pages whose bounds tie with the threshold go to the lower pages, in whichever
// chunk of pages (512) they lie: over 3000 equal keys in pages of one, the 2068 candidate pages
// are the lowest, and the list takes the lowest slots (equal scores: lower slot first), as the
// exact selector does, on 1 and 2 threads, per KV head and per query head.
TEST(PageSelect, TiedPagesGoToTheLowerPages) {
  Rng rng(518);
  const int64_t n = 3000;
  Tensor keys(SA_DTYPE_F32, {n, kHkv, kD});
  const Tensor row = random_keys(rng, 1);
  for (int64_t s = 0; s < n; ++s)
    for (int64_t h = 0; h < kHkv; ++h)
      for (int64_t d = 0; d < kD; ++d) keys.set({s, h, d}, row.get({0, h, d}));
  const Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {1, kHq, kD});
  std::vector<int32_t> want;
  for (int32_t s = 0; s < 23; ++s) want.push_back(s);           // sinks 0..2, then the 20 lowest
  for (int32_t s = 2992; s < 3000; ++s) want.push_back(s);      // the window
  for (int32_t threads : {1, 2}) {
    Approx a(Config{"PageRefine", SA_SELECTOR_PAGE, 1, 1, 0, 0.0}, threads);
    ASSERT_NE(a.ix, nullptr);
    a.append(keys);
    for (int per_head : {0, 1}) {
      sa_select_options o = select_options(20, 8, 3);
      o.per_query_head = per_head;
      const Tensor out = a.select(q, o);
      for (int64_t h = 0; h < out.dim(1); ++h)
        EXPECT_EQ(row_of(out, 0, h), want) << "threads " << threads << ", per_head " << per_head << ", list " << h;
    }
  }
}

// A decode step's lists split over every thread (page_selector.cpp): bounds and group scores
// over 12 chunks of pages, each list ranked and planned by the task finishing its last chunk,
// 2079 candidate columns scored in 5 ranges and ranked by the task finishing the last. With
// 1, 3 and 8 threads (more than the lists, the ranges and this machine's cores) the lists are
// identical, per KV head and per query head, with a mass target too; refine over every page
// (31 pages of one slot, 31 columns: shorter than a range) equals the oracle on 8 threads.
TEST(PageSelect, DecodeSplitOverThreadsIsIdentical) {
  Rng rng(519);
  const Tensor keys = random_keys(rng, 6000);  // pages of one slot: 6000 pages > 2068 candidates
  const Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {1, kHq, kD});
  std::vector<std::unique_ptr<Approx>> runs;
  for (int32_t threads : {1, 3, 8}) {
    runs.push_back(std::make_unique<Approx>(Config{"PageRefine", SA_SELECTOR_PAGE, 1, 1, 0, 0.0}, threads));
    ASSERT_NE(runs.back()->ix, nullptr);
    runs.back()->append(keys);
  }
  for (int per_head : {0, 1})
    for (float mass : {0.f, 0.6f}) {
      SCOPED_TRACE(testing::Message() << "per_head " << per_head << ", mass " << mass);
      sa_select_options o = select_options(20, 8, 3);
      o.per_query_head = per_head;
      o.mass_target = mass;
      const Tensor out1 = runs[0]->select(q, o);
      check_contract(*runs[0], q, o, out1);
      for (size_t r = 1; r < runs.size(); ++r) EXPECT_EQ(runs[r]->select(q, o).values(), out1.values()) << "run " << r;
    }
  Approx small(Config{"PageRefine", SA_SELECTOR_PAGE, 1, 1, 0, 0.0}, 8);
  ASSERT_NE(small.ix, nullptr);
  small.append(random_keys(rng, 31));
  sa_select_options o = select_options(20, 8, 3);
  const Tensor out = small.select(q, o);
  const ref::SelectArgs args = ref::SelectArgs::from(o);
  for (int64_t h = 0; h < out.dim(1); ++h)
    EXPECT_TRUE(ref::check_row(ref::expect_row(small.cache, q, args, 0, h), row_of(out, 0, h), 1e-4, 0)) << "list " << h;
}

// A decode step ranks its pages from per-chunk digests (select/chunk_digest.hpp), a prefill by
// one pass over each list's pages: both must take the same candidate pages, so a decode
// query's lists equal those of a prefill of 8 copies of it (each query sees more than
// 2 x (top_k + 2048) keys, so the prefill bounds pages too). Pages of one slot over 6000 keys
// (12 chunks of 512 pages, 2068 candidate pages spanning 5): random keys; 1000
// refilled slots whose later positions leave pages unusable inside chunks. Pages of 2 with
// three bounds only, over different keys: the threshold ties across every chunk, only some of
// its ties are taken, and which decides the list. Pages of 8 over 40003 keys (a short last
// page and chunk). Per KV head (the group's summed scores) and per
// query head (the bounds), with a mass target too, a batch of 3 queries, on 1 and 3 threads.
TEST(PageSelect, DecodeRanksPagesAsPrefillDoes) {
  Rng rng(520);
  struct Case {
    const char *name;
    int32_t page;
    Tensor keys;
    std::vector<int64_t> qpos;
  };
  std::vector<Case> cases;
  cases.push_back({"random", 1, random_keys(rng, 6000), {5999, 5000, 4400}});
  {  // each page of 2 takes one of 3 pairs of rows, each coordinate of the pair in either
     // order: 3 bounds (the pair's elementwise min and max), but different keys behind each
    Tensor tied(SA_DTYPE_F32, {12000, kHkv, kD});
    const Tensor rows = random_keys(rng, 6);
    for (int64_t p = 0; p < 6000; ++p) {
      const int64_t r = 2 * rng.below(3);
      for (int64_t h = 0; h < kHkv; ++h)
        for (int64_t d = 0; d < kD; ++d) {
          const int64_t swap = rng.below(2);
          tied.set({2 * p, h, d}, rows.get({r + swap, h, d}));
          tied.set({2 * p + 1, h, d}, rows.get({r + 1 - swap, h, d}));
        }
    }
    cases.push_back({"tied", 2, tied, {11999, 10000, 8000}});
  }
  cases.push_back({"refilled", 1, random_keys(rng, 6000), {6999, 6500, 5600}});  // 4601 visible at 5600
  cases.push_back({"pages of 8", 8, random_keys(rng, 40003), {40002, 30001, 9000}});
  for (const Case &c : cases) {
    SCOPED_TRACE(c.name);
    std::vector<std::unique_ptr<Approx>> runs;
    for (int32_t threads : {1, 3}) {
      runs.push_back(std::make_unique<Approx>(Config{"PageRefine", SA_SELECTOR_PAGE, 1, c.page, 0, 0.0}, threads));
      ASSERT_NE(runs.back()->ix, nullptr);
      runs.back()->append(c.keys);
      if (std::string(c.name) == "refilled") {  // slots 2000..2999 hold positions 6000..6999
        std::vector<int32_t> slots(1000);
        std::vector<int64_t> pos(1000);
        for (int32_t j = 0; j < 1000; ++j) slots[size_t(j)] = 2000 + j, pos[size_t(j)] = 6000 + j;
        Rng krng(521);
        runs.back()->update(slots, random_keys(krng, 1000), pos);
      }
    }
    const int64_t n_q = int64_t(c.qpos.size());
    const Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {n_q, kHq, kD});
    for (int per_head : {0, 1})
      for (float mass : {0.f, 0.6f}) {
        SCOPED_TRACE(testing::Message() << "per_head " << per_head << ", mass " << mass);
        sa_select_options o = select_options(20, 8, 3);
        o.per_query_head = per_head;
        o.mass_target = mass;
        o.query_positions = c.qpos.data();
        const Tensor decode = runs[1]->select(q, o);
        check_contract(*runs[1], q, o, decode);
        EXPECT_EQ(runs[0]->select(q, o).values(), decode.values()) << "1 thread against 3";
        for (int64_t i = 0; i < n_q; ++i) {
          Tensor copies(SA_DTYPE_F32, {8, kHq, kD});
          for (int64_t r = 0; r < 8; ++r)
            for (int64_t g = 0; g < kHq; ++g)
              for (int64_t d = 0; d < kD; ++d) copies.set({r, g, d}, q.get({i, g, d}));
          std::vector<int64_t> pos(8, c.qpos[size_t(i)]);
          sa_select_options po = o;
          po.query_positions = pos.data();
          const Tensor prefill = runs[0]->select(copies, po);
          for (int64_t l = 0; l < decode.dim(1); ++l)
            EXPECT_EQ(row_of(decode, i, l), row_of(prefill, 7, l)) << "query " << i << ", list " << l;
        }
      }
  }
}

// Without refine, whole pages are taken in bound order: a page's keys come together.
TEST(PageSelect, WithoutRefineTakesWholePages) {
  Rng rng(511);
  Approx a(Config{"PageWhole", SA_SELECTOR_PAGE, 0, 8, 0, 0.0});
  ASSERT_NE(a.ix, nullptr);
  a.append(random_keys(rng, 2000));
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {2, kHq, kD});
  sa_select_options o = select_options(32, 0, 0);
  Tensor out = a.select(q, o);
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t h = 0; h < kHkv; ++h) {
      std::vector<int32_t> row = row_of(out, i, h);
      ASSERT_EQ(std::count_if(row.begin(), row.end(), [](int32_t s) { return s >= 0; }), 32);
      for (int32_t s : row) {  // 32 keys = 4 whole pages of 8
        if (s < 0) continue;
        for (int32_t m = s / 8 * 8; m < s / 8 * 8 + 8; ++m) EXPECT_TRUE(contains(row, m)) << "page of slot " << s;
      }
    }
}

}  // namespace
