// sa_cache_evict in the scenario's decode loop: scores as sa_attend's slot_mass leaves them
// (ties, zeros, infinities), positions the index's (one set, or per KV head; some slots empty),
// random policy options (budget, incoming, sinks, window, score_mean with mass_decay, head_max,
// recent_share, score_pool) and older struct_sizes that must take the defaults. Checked against
// a reference written from the header: the count, the empty slots first, then evicted slots that
// are occupied, never protected, and ranked lowest first (scores compared with a float
// tolerance: the reference computes the per-step mean its own way); refusals for what the header
// refuses, with nothing written. The incoming tokens then refill the freed slots through
// sa_index_update (or sa_index_update_heads), as the header's host recipe does.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "fuzz_layout.hpp"
#include "fuzz_scenario.hpp"

namespace apifuzz {

namespace {

struct EvictPolicy {
  int64_t budget = 0, incoming = 1, pool = 0;
  int32_t sinks = 4, window = 64;
  bool mean = true, head_max = false;
  double decay = double(0.99f), recent_share = 0.875;
};

// sum_{i < age} decay^i, by the geometric series' closed form.
double steps_seen(double age, double decay) {
  if (decay >= 1) return age;
  if (decay <= 0) return 1;
  return (1 - std::pow(decay, age)) / (1 - decay);
}

struct EvictExpectation {
  sa_status status = SA_OK;
  std::vector<int32_t> empties;  // the empty slots freed first
  int64_t evict = 0;             // occupied slots to free after them
  std::vector<double> key;       // per slot: its ranking score (pooled)
  std::vector<char> evictable;   // per slot: occupied and not protected
};

// One set of slots: scores rows [rows][n], positions [n].
EvictExpectation expect_evict(const EvictPolicy &p, const std::vector<float> &scores, int64_t rows,
                              const std::vector<int64_t> &pos) {
  EvictExpectation e;
  const int64_t n = int64_t(pos.size());
  int64_t occupied = 0, max_pos = -1;
  for (int64_t s = 0; s < n; ++s) {
    if (pos[size_t(s)] < -1 || pos[size_t(s)] > SA_MAX_POSITION) return e.status = SA_ERR_INVALID_ARGUMENT, e;
    if (pos[size_t(s)] >= 0) ++occupied, max_pos = std::max(max_pos, pos[size_t(s)]);
  }
  std::vector<double> ranked(size_t(n), 0);
  for (int64_t s = 0; s < n; ++s) {
    double v = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const float x = scores[size_t(r * n + s)];
      if (std::isnan(x)) return e.status = SA_ERR_INVALID_ARGUMENT, e;
      v = p.head_max ? (r == 0 ? x : std::max<double>(v, x)) : v + x;
    }
    if (std::isnan(v)) return e.status = SA_ERR_INVALID_ARGUMENT, e;  // +inf and -inf summed
    const int64_t ps = pos[size_t(s)];
    if (ps >= 0 && p.mean) v /= steps_seen(double(max_pos - ps) + 1, p.decay);
    ranked[size_t(s)] = v;
  }
  const int64_t window = std::max<int64_t>(p.window, int64_t(p.recent_share * double(p.budget - p.incoming - p.sinks)));
  e.key.assign(size_t(n), 0);
  e.evictable.assign(size_t(n), 0);
  int64_t evictable = 0;
  for (int64_t s = 0; s < n; ++s) {
    const int64_t ps = pos[size_t(s)];
    if (ps < 0) {
      if (ps == -1 && int64_t(e.empties.size()) < p.incoming) e.empties.push_back(int32_t(s));
      continue;
    }
    double k = ranked[size_t(s)];
    for (int64_t o = 0; p.pool > 0 && o < n; ++o)
      if (pos[size_t(o)] >= 0 && std::max(pos[size_t(o)], ps) - std::min(pos[size_t(o)], ps) <= p.pool)
        k = std::max(k, ranked[size_t(o)]);
    e.key[size_t(s)] = k;
    e.evictable[size_t(s)] = !(ps < p.sinks || ps > max_pos - window);
    evictable += e.evictable[size_t(s)];
  }
  e.evict = std::max<int64_t>(0, occupied - (p.budget - p.incoming));
  if (evictable < e.evict) e.status = SA_ERR_INVALID_ARGUMENT;  // repeated positions crowd the budget
  return e;
}

// A row of freed slots against the expectation: the empties, then evict slots ranked lowest.
::testing::AssertionResult freed_valid(const EvictExpectation &e, const std::vector<int32_t> &freed) {
  const size_t m = e.empties.size();
  if (freed.size() != m + size_t(e.evict))
    return ::testing::AssertionFailure() << freed.size() << " slots freed, expected " << m << " empty + " << e.evict;
  for (size_t i = 0; i < m; ++i)
    if (freed[i] != e.empties[i]) return ::testing::AssertionFailure() << "freed[" << i << "] = " << freed[i] << ", expected empty slot " << e.empties[i];
  std::vector<char> taken(e.key.size(), 0);
  auto close_or_below = [](double a, double b) { return a <= b || a - b <= 1e-5 * std::max(std::fabs(a), std::fabs(b)); };
  for (size_t i = m; i < freed.size(); ++i) {
    const int32_t s = freed[i];
    if (s < 0 || size_t(s) >= e.key.size() || !e.evictable[size_t(s)] || taken[size_t(s)])
      return ::testing::AssertionFailure() << "freed[" << i << "] = " << s << " is not an evictable slot (or twice)";
    taken[size_t(s)] = 1;
    if (i > m && !close_or_below(e.key[size_t(freed[i - 1])], e.key[size_t(s)]))
      return ::testing::AssertionFailure() << "freed[" << i << "] = " << s << " ranks below the slot before it";
  }
  for (size_t s = 0; s < e.key.size(); ++s)
    for (size_t i = m; i < freed.size() && e.evictable[s] && !taken[s]; ++i)
      if (!close_or_below(e.key[size_t(freed[i])], e.key[s]))
        return ::testing::AssertionFailure() << "slot " << freed[i] << " (score " << e.key[size_t(freed[i])]
                                             << ") freed before slot " << s << " (score " << e.key[s] << ")";
  return ::testing::AssertionSuccess();
}

float random_mass(ByteSource &in) {
  switch (in.range(0, 9)) {
    case 0: return 0.f;
    case 1: return in.chance(50) ? INFINITY : -INFINITY;
    case 2: return in.chance(5) ? NAN : 1.f;
    default: return float(in.range(0, 64)) / 16.f;  // ties are common
  }
}

}  // namespace

void Scenario::evict_step(FuzzIndex &fx) {
  const int64_t H = fx.h_kv(), n = fx.size();
  const bool per_head = in_.chance(fx.per_head() ? 80 : 40);
  const int64_t sets = per_head ? H : 1;
  // The host's positions: the index's, some slots empty (evicted earlier, not yet refilled).
  std::vector<int64_t> pos(size_t(sets * n));
  for (int64_t h = 0; h < sets; ++h)
    for (int64_t s = 0; s < n; ++s)
      pos[size_t(h * n + s)] = in_.chance(8) ? -1 : fx.pos_of(per_head ? h : 0)[size_t(s)];
  const int64_t rows = per_head ? 1 : (in_.chance(50) ? H : 1);  // single set: [H, n] or [n] scores
  std::vector<float> scores(size_t(sets * rows * n));
  for (float &x : scores) x = random_mass(in_);
  EvictPolicy p;
  sa_evict_options o = SA_EVICT_OPTIONS_INIT;
  const int v = int(in_.range(0, 4));  // the struct a host built against: 0 the first version ... 4 now
  const size_t sizes[] = {offsetof(sa_evict_options, score_mean), offsetof(sa_evict_options, per_head),
                          offsetof(sa_evict_options, score_pool), offsetof(sa_evict_options, score_pool),
                          sizeof(sa_evict_options)};
  o.struct_size = per_head ? sizeof(sa_evict_options) : sizes[v];
  p.sinks = o.sinks = int32_t(in_.range(0, 6));
  p.window = o.window = int32_t(in_.range(0, 10));
  p.incoming = o.incoming = in_.range(0, 3);
  const int64_t floor = p.sinks + p.window + p.incoming;
  p.budget = o.budget = in_.chance(10) ? floor - in_.range(1, 2) : floor + in_.skewed(0, n / 2 + 2, n + 4);
  if (o.struct_size > offsetof(sa_evict_options, score_mean)) {
    p.mean = (o.score_mean = in_.chance(70)) != 0;
    p.decay = o.mass_decay = in_.pick({0.99f, 1.f, 0.f, 0.5f});
    p.head_max = (o.head_max = in_.chance(20)) != 0;
    p.recent_share = o.recent_share = in_.pick({0.875f, 0.f, 0.5f, 1.f});
  }
  if (o.struct_size > offsetof(sa_evict_options, per_head)) o.per_head = per_head;
  if (o.struct_size > offsetof(sa_evict_options, score_pool)) p.pool = o.score_pool = in_.pick({int64_t(0), int64_t(1), int64_t(5)});
  if (o.struct_size < sizeof(sa_evict_options)) {  // fields past struct_size hold garbage: ignored
    char *raw = reinterpret_cast<char *>(&o);
    for (size_t b = o.struct_size; b < sizeof o; ++b) raw[b] = char(0x7f);
  }
  if (per_head) p.head_max = false;  // not used per head
  if (!p.mean) p.decay = 1;

  const int64_t cap = in_.range(0, 4) + (in_.chance(80) ? n + p.incoming : 0);
  std::string fw;
  sat::Tensor freed = poisoned_output(in_, SA_DTYPE_I32, per_head ? std::vector<int64_t>{H, cap} : std::vector<int64_t>{cap}, &fw);
  sat::Tensor sc(SA_DTYPE_F32, rows > 1 || per_head ? std::vector<int64_t>{sets * rows, n} : std::vector<int64_t>{n});
  sat::Tensor ps(SA_DTYPE_I64, per_head ? std::vector<int64_t>{H, n} : std::vector<int64_t>{n});
  if (!scores.empty()) std::memcpy(sc.data(), scores.data(), scores.size() * sizeof(float));  // no slot: no data
  if (!pos.empty()) std::memcpy(ps.data(), pos.data(), pos.size() * sizeof(int64_t));
  std::vector<int64_t> n_freed(size_t(sets) + 2, -7);  // a guard past the heads' counts
  sat::Tensor probe(SA_DTYPE_I32, {1});
  probe.poison();
  const double canary = probe.get({0});

  // What the header promises, set by set.
  sa_status want = SA_OK;
  if (p.budget < std::max<int64_t>(1, floor)) want = SA_ERR_INVALID_ARGUMENT;  // 0: the required field unset
  std::vector<EvictExpectation> ex;
  for (int64_t h = 0; h < sets && want == SA_OK; ++h) {
    std::vector<float> row(scores.begin() + h * rows * n, scores.begin() + (h + 1) * rows * n);
    std::vector<int64_t> hp(pos.begin() + h * n, pos.begin() + (h + 1) * n);
    ex.push_back(expect_evict(p, row, rows, hp));
    want = ex.back().status;
    if (want == SA_OK && int64_t(ex.back().empties.size()) + ex.back().evict > cap) want = SA_ERR_SHAPE;
  }
  std::ostringstream w;
  w << "cache_evict " << (per_head ? "per KV head" : "one set") << " over " << n << " slots, scores "
    << (rows > 1 ? "[H, n]" : "[n]") << ", struct_size " << o.struct_size << ", budget " << p.budget << ", incoming "
    << p.incoming << ", sinks " << p.sinks << ", window " << p.window << ", score_mean " << p.mean << ", decay "
    << p.decay << ", head_max " << p.head_max << ", recent_share " << p.recent_share << ", pool " << p.pool
    << "; freed " << fw << " cap " << cap << "; expected " << sa_status_name(want);
  report_.say(w.str());
  const sa_status s = sa_cache_evict(ctx_.get(), &o, sc.t(), ps.t(), freed.t(), n_freed.data());
  report_.require(n_freed[size_t(sets)] == -7 && n_freed[size_t(sets) + 1] == -7, "sa_cache_evict wrote past n_freed's ",
                  sets, " values");
  if (want != SA_OK) {
    report_.require(s == want, "sa_cache_evict returned ",
                    sa_status_name(s), ", expected ", sa_status_name(want), ": ", sa_last_error());
    report_.require(*sa_last_error() != '\0', "refused sa_cache_evict left no message");
    report_.require(freed.untouched(), "a refused sa_cache_evict wrote freed");
    report_.require(n_freed[0] == -7, "a refused sa_cache_evict wrote n_freed");
    return;
  }
  report_.require_ok(s, "sa_cache_evict");
  report_.require(freed.only_elements_written(), "sa_cache_evict wrote outside freed");
  std::vector<std::vector<int32_t>> got(static_cast<size_t>(sets));
  for (int64_t h = 0; h < sets; ++h) {
    report_.require(n_freed[size_t(h)] >= 0 && n_freed[size_t(h)] <= cap, "n_freed[", h, "] = ", n_freed[size_t(h)]);
    for (int64_t i = 0; i < n_freed[size_t(h)]; ++i)
      got[size_t(h)].push_back(int32_t(per_head ? freed.get({h, i}) : freed.get({i})));
    for (int64_t i = n_freed[size_t(h)]; i < cap; ++i)  // nothing past the count
      report_.require((per_head ? freed.get({h, i}) : freed.get({i})) == canary, "sa_cache_evict wrote freed[", h, "][",
                      i, "] past n_freed");
    const ::testing::AssertionResult ok = freed_valid(ex[size_t(h)], got[size_t(h)]);
    std::vector<int64_t> g(got[size_t(h)].begin(), got[size_t(h)].end());
    report_.require(ok, "sa_cache_evict set ", h, " freed ", list_words(g.data(), int64_t(g.size())));
  }

  // The host recipe: incoming token t goes into freed[t] (per head: each head's own row).
  const int64_t k = p.incoming;
  bool fits = true;
  for (const std::vector<int32_t> &g : got) fits = fits && int64_t(g.size()) >= k;
  if (!fits || k == 0 || fx.top() > SA_MAX_POSITION - k) return;
  sat::Tensor keys = random_tensor(in_, rng_, SA_DTYPE_F32, {k, H, fx.d()}, 1.0, nullptr);
  const int64_t top = fx.top();
  if (per_head && fx.takes_head_updates()) {
    std::vector<int32_t> slots;
    std::vector<int64_t> positions;
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < k; ++t) slots.push_back(got[size_t(h)][size_t(t)]), positions.push_back(top + 1 + t);
    report_.say("refill the freed slots per KV head: ", list_words(std::vector<int64_t>(slots.begin(), slots.end()).data(), H * k));
    report_.require_ok(sa_index_update_heads(fx.ix(), slots.data(), k, keys.t(), positions.data()), "sa_index_update_heads (refill)");
    if (fx.owning)
      report_.require_ok(sa_index_update_heads(fx.owning.get(), slots.data(), k, keys.t(), positions.data()),
                         "sa_index_update_heads (owning twin)");
    fx.refilled = true;
    fx.mirror_update_heads(slots, k, keys, positions, rng_);
  } else if (!per_head) {
    std::vector<int32_t> slots(got[0].begin(), got[0].begin() + k);
    report_.say("refill the freed slots: ", list_words(std::vector<int64_t>(slots.begin(), slots.end()).data(), k));
    report_.require_ok(sa_index_update(fx.ix(), slots.data(), k, keys.t(), nullptr), "sa_index_update (refill)");
    if (fx.owning)
      report_.require_ok(sa_index_update(fx.owning.get(), slots.data(), k, keys.t(), nullptr), "sa_index_update (owning twin)");
    fx.refilled = true;
    fx.mirror_update(slots, keys, nullptr, rng_);
  }
}

}  // namespace apifuzz

namespace apifuzz {

// sa_cache_evict with one thing broken; nothing may be written (freed, n_freed).
void Scenario::bad_evict(const FuzzIndex &fx) {
  const int64_t H = fx.h_kv(), n = fx.size();
  const bool per_head = in_.chance(50);
  const int64_t sets = per_head ? H : 1, cap = n + 2;
  sat::Tensor sc(SA_DTYPE_F32, per_head ? std::vector<int64_t>{H, n} : std::vector<int64_t>{n});
  sat::Tensor ps(SA_DTYPE_I64, per_head ? std::vector<int64_t>{H, n} : std::vector<int64_t>{n});
  for (int64_t j = 0; j < sets * n; ++j) {
    static_cast<float *>(sc.data())[j] = float(in_.range(0, 16)) / 4.f;
    static_cast<int64_t *>(ps.data())[j] = fx.pos_of(per_head ? j / std::max<int64_t>(n, 1) : 0)[size_t(j % std::max<int64_t>(n, 1))];
  }
  sat::Tensor freed = poisoned_output(in_, SA_DTYPE_I32, per_head ? std::vector<int64_t>{H, cap} : std::vector<int64_t>{cap}, nullptr);
  std::vector<int64_t> n_freed(size_t(sets), -7);
  sa_evict_options o = SA_EVICT_OPTIONS_INIT;
  o.budget = 4 + 64 + 1 + in_.range(0, 8);
  o.per_head = per_head;
  sa_context *ctx = ctx_.get();
  std::vector<Mutation> m;
  auto add = [&](std::string name, std::vector<sa_status> want, std::function<void()> change) {
    m.push_back({std::move(name), std::move(want), [=, &o, &sc, &ps, &freed, &n_freed]() {
                   change();
                   return sa_cache_evict(ctx, &o, sc.t(), ps.t(), freed.t(), n_freed.data());
                 }});
  };
  m.push_back({"ctx NULL", {SA_ERR_NULL_POINTER}, [&] { return sa_cache_evict(nullptr, &o, sc.t(), ps.t(), freed.t(), n_freed.data()); }});
  m.push_back({"opt NULL", {SA_ERR_NULL_POINTER}, [&] { return sa_cache_evict(ctx, nullptr, sc.t(), ps.t(), freed.t(), n_freed.data()); }});
  m.push_back({"scores NULL", {SA_ERR_NULL_POINTER}, [&] { return sa_cache_evict(ctx, &o, nullptr, ps.t(), freed.t(), n_freed.data()); }});
  m.push_back({"positions NULL", {SA_ERR_NULL_POINTER}, [&] { return sa_cache_evict(ctx, &o, sc.t(), nullptr, freed.t(), n_freed.data()); }});
  m.push_back({"freed NULL", {SA_ERR_NULL_POINTER}, [&] { return sa_cache_evict(ctx, &o, sc.t(), ps.t(), nullptr, n_freed.data()); }});
  m.push_back({"n_freed NULL", {SA_ERR_NULL_POINTER}, [&] { return sa_cache_evict(ctx, &o, sc.t(), ps.t(), freed.t(), nullptr); }});
  add("budget 0 (unset)", {SA_ERR_INVALID_ARGUMENT}, [&] { o.budget = 0; });
  add("budget below sinks + window + incoming", {SA_ERR_INVALID_ARGUMENT}, [&] { o.budget = 4 + 64; });
  add("incoming -1", {SA_ERR_INVALID_ARGUMENT}, [&] { o.incoming = -1; });
  add("incoming INT64_MAX", {SA_ERR_INVALID_ARGUMENT}, [&] { o.incoming = INT64_MAX; });
  add("mass_decay NaN", {SA_ERR_INVALID_ARGUMENT}, [&] { o.mass_decay = NAN; });
  add("recent_share 1.5", {SA_ERR_INVALID_ARGUMENT}, [&] { o.recent_share = 1.5f; });
  add("score_pool -1", {SA_ERR_INVALID_ARGUMENT}, [&] { o.score_pool = -1; });
  add("sinks -1", {SA_ERR_INVALID_ARGUMENT}, [&] { o.sinks = -1; });
  add("struct_size 0", {SA_ERR_STRUCT_SIZE}, [&] { o.struct_size = 0; });
  add("scores dtype f16", {SA_ERR_DTYPE}, [&] { sc.t()->dtype = SA_DTYPE_F16; });
  add("positions dtype i32", {SA_ERR_DTYPE}, [&] { ps.t()->dtype = SA_DTYPE_I32; });
  add("freed dtype i64", {SA_ERR_DTYPE}, [&] { freed.t()->dtype = SA_DTYPE_I64; });
  add("scores one slot more than positions", {SA_ERR_SHAPE}, [&] { sc.t()->shape[sc.t()->rank - 1] += 1; });
  if (n >= 1) {
    const int64_t j = in_.range(0, sets * n - 1);
    const int64_t bad = in_.pick({int64_t(-2), INT64_MIN, SA_MAX_POSITION + 1});
    add("positions[" + std::to_string(j) + "] = " + std::to_string(bad), {SA_ERR_INVALID_ARGUMENT},
        [&, j, bad] { static_cast<int64_t *>(ps.data())[j] = bad; });
    add("scores[" + std::to_string(j) + "] NaN", {SA_ERR_INVALID_ARGUMENT}, [&, j] { static_cast<float *>(sc.data())[j] = NAN; });
  }
  if (per_head) {
    add("freed heads + 1", {SA_ERR_SHAPE}, [&] { freed.t()->shape[0] += 1; });
    if (H > 1 && cap > 1)
      add("freed rows overlap (stride[0] = 0)", {SA_ERR_SHAPE}, [&] {
        freed.t()->strides[0] = 0;
        freed.t()->strides[1] = 1;
      });
    add("positions rank 1 with per_head", {SA_ERR_SHAPE}, [&] { ps.t()->rank = 1; });
    add("scores heads + 1", {SA_ERR_SHAPE}, [&] { sc.t()->shape[0] += 1; });
  } else {
    add("freed rank 2 without per_head", {SA_ERR_SHAPE}, [&] {
      freed.t()->rank = 2;
      freed.t()->shape[1] = 1;
    });
  }
  report_.say("cache_evict ", per_head ? "per KV head" : "one set", " over ", n, " slots");
  expect_refused(m, {&freed}, "sa_cache_evict");
  report_.require(std::all_of(n_freed.begin(), n_freed.end(), [](int64_t v) { return v == -7; }),
                  "a refused sa_cache_evict wrote n_freed");
}

}  // namespace apifuzz
