// Per-KV-head eviction's calls: sa_index_update_heads with random per-head slots (distinct within
// a head, shared or not across heads) and positions (repeated, tiny, at the bound), accepted by
// exact and page indexes and refused by the other kinds; and the invalid calls of it and of
// sa_attend's head_key_positions. Selections after a per-head refill are checked head by head
// against the brute-force reference (fuzz_select_check.cpp), attention over them against the
// double-precision reference with the heads' positions (fuzz_attend_check.cpp).
#include <algorithm>

#include "fuzz_layout.hpp"
#include "fuzz_scenario.hpp"

namespace apifuzz {

namespace {

// n distinct slots of [0, size), at random.
std::vector<int32_t> distinct_slots(ByteSource &in, int64_t size, int64_t n) {
  std::vector<int32_t> all(static_cast<size_t>(size));
  for (size_t s = 0; s < all.size(); ++s) all[s] = int32_t(s);
  for (size_t i = 0; i < size_t(n); ++i) std::swap(all[i], all[i + size_t(in.range(0, int64_t(all.size() - i) - 1))]);
  return std::vector<int32_t>(all.begin(), all.begin() + n);
}

}  // namespace

void Scenario::update_heads(FuzzIndex &fx) {
  const int64_t H = fx.h_kv(), n = std::min<int64_t>(in_.range(0, 8), fx.size());
  std::vector<int32_t> slots;
  const bool same_slots = in_.chance(30);  // every head refills the same slots (with other tokens)
  std::vector<int32_t> first = distinct_slots(in_, fx.size(), n);
  for (int64_t h = 0; h < H; ++h) {
    const std::vector<int32_t> mine = h == 0 || same_slots ? first : distinct_slots(in_, fx.size(), n);
    slots.insert(slots.end(), mine.begin(), mine.end());
  }
  std::vector<int64_t> positions(size_t(H * n));
  const int64_t top = fx.max_pos();
  for (int64_t j = 0; j < H * n; ++j) {
    int64_t &p = positions[size_t(j)];
    switch (in_.range(0, 9)) {
      case 0: case 1: p = fx.size() ? fx.pos_of(j / std::max<int64_t>(n, 1))[size_t(in_.range(0, fx.size() - 1))] : 0; break;
      case 2: p = in_.range(0, 8); break;
      case 3: p = SA_MAX_POSITION - in_.range(0, 3); break;  // the bound: later appends overflow
      default: p = std::max<int64_t>(0, std::min(SA_MAX_POSITION, top + in_.range(-4, 6))); break;
    }
  }
  std::string kw;
  sat::Tensor keys = random_tensor(in_, rng_, in_.pick({SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16}), {n, H, fx.d()}, 1.0, &kw);
  const bool null_arrays = n == 0 && in_.chance(50);  // nothing to read: NULL is fine
  const sa_status want = fx.takes_head_updates() ? SA_OK : SA_ERR_UNSUPPORTED;
  std::ostringstream w;
  w << "update_heads " << n << " slots a head (" << kw << "): slots " << list_words(std::vector<int64_t>(slots.begin(), slots.end()).data(), H * n)
    << " at positions " << list_words(positions.data(), H * n) << (null_arrays ? ", arrays NULL" : "")
    << (want == SA_OK ? "" : ": must be refused (SA_ERR_UNSUPPORTED)");
  report_.say(w.str());
  const int64_t size_before = fx.size();
  const sa_status s = sa_index_update_heads(fx.ix(), null_arrays ? nullptr : slots.data(), n, keys.t(),
                                            null_arrays ? nullptr : positions.data());
  if (want != SA_OK) {
    report_.require(s == want, "sa_index_update_heads on a ", int(fx.opt.kind), " index returned ", sa_status_name(s),
                    ": ", sa_last_error());
    report_.require(*sa_last_error() != '\0', "refused sa_index_update_heads left no message");
    int64_t size = -1;
    report_.require_ok(sa_index_size(fx.ix(), &size), "sa_index_size");
    report_.require(size == size_before, "a refused sa_index_update_heads changed the size to ", size);
    return;
  }
  report_.require_ok(s, "sa_index_update_heads");
  if (fx.owning)
    report_.require_ok(sa_index_update_heads(fx.owning.get(), null_arrays ? nullptr : slots.data(), n, keys.t(),
                                             null_arrays ? nullptr : positions.data()),
                       "sa_index_update_heads (owning twin)");
  fx.refilled = true;
  fx.mirror_update_heads(slots, n, keys, positions, rng_);
}

void Scenario::bad_update_heads(FuzzIndex &fx) {
  if (fx.size() == 0) return;
  const int64_t H = fx.h_kv(), n = std::min<int64_t>(in_.range(1, 4), fx.size());
  std::vector<int32_t> slots;
  for (int64_t h = 0; h < H; ++h) {
    const std::vector<int32_t> mine = distinct_slots(in_, fx.size(), n);
    slots.insert(slots.end(), mine.begin(), mine.end());
  }
  std::vector<int64_t> positions(size_t(H * n), 0);
  for (int64_t &p : positions) p = in_.range(0, fx.max_pos() + 2);
  sat::Tensor keys = random_tensor(in_, rng_, SA_DTYPE_F32, {n, H, fx.d()}, 1.0, nullptr);
  sa_tensor *k = keys.t();
  sa_index *ix = fx.ix();
  // Argument errors come before the kind's refusal: the other kinds may answer either.
  auto want = [&](sa_status s) {
    return fx.takes_head_updates() ? std::vector<sa_status>{s} : std::vector<sa_status>{s, SA_ERR_UNSUPPORTED};
  };
  auto want2 = [&](sa_status a, sa_status b) {
    std::vector<sa_status> w = want(a);
    w.push_back(b);
    return w;
  };
  std::vector<Mutation> m;
  auto add = [&](std::string name, std::vector<sa_status> w, std::function<void()> change, int64_t count) {
    m.push_back({std::move(name), std::move(w), [=, &slots, &positions]() {
                   change();
                   return sa_index_update_heads(ix, slots.data(), count, k, positions.data());
                 }});
  };
  m.push_back({"ix NULL", {SA_ERR_NULL_POINTER},
               [&] { return sa_index_update_heads(nullptr, slots.data(), n, k, positions.data()); }});
  m.push_back({"slots NULL", want(SA_ERR_NULL_POINTER),
               [&] { return sa_index_update_heads(ix, nullptr, n, k, positions.data()); }});
  m.push_back({"positions NULL", want(SA_ERR_NULL_POINTER),
               [&] { return sa_index_update_heads(ix, slots.data(), n, k, nullptr); }});
  m.push_back({"keys NULL", want(SA_ERR_NULL_POINTER),
               [&] { return sa_index_update_heads(ix, slots.data(), n, nullptr, positions.data()); }});
  add("n -1", want(SA_ERR_INVALID_ARGUMENT), [] {}, -1);
  add("n INT64_MIN", want(SA_ERR_INVALID_ARGUMENT), [] {}, INT64_MIN);
  add("n one more than the keys", want(SA_ERR_SHAPE), [] {}, n + 1);
  add("n INT64_MAX (H_kv * n overflows)", want(SA_ERR_SHAPE), [] {}, INT64_MAX);
  add("keys rows INT64_MAX / 2 (H_kv * n overflows)", want2(SA_ERR_SHAPE, SA_ERR_OVERFLOW), [=] { k->shape[0] = INT64_MAX / 2; },
      INT64_MAX / 2);
  const int64_t h = in_.range(0, H - 1), i = in_.range(0, n - 1), at = h * n + i;
  const int64_t bad_slot = in_.pick({fx.size(), int64_t(-1), int64_t(INT32_MAX), int64_t(INT32_MIN)});
  add("head " + std::to_string(h) + " slot " + std::to_string(i) + " = " + std::to_string(bad_slot),
      want(SA_ERR_OUT_OF_RANGE), [&slots, at, bad_slot] { slots[size_t(at)] = int32_t(bad_slot); }, n);
  if (n >= 2)
    add("a slot twice in head " + std::to_string(h), want(SA_ERR_INVALID_ARGUMENT),
        [&slots, h, n] { slots[size_t(h * n + n - 1)] = slots[size_t(h * n)]; }, n);
  const int64_t bad_pos = in_.pick({int64_t(-1), int64_t(-5), SA_MAX_POSITION + 1, INT64_MIN, INT64_MAX});
  add("head " + std::to_string(h) + " position " + std::to_string(i) + " = " + std::to_string(bad_pos),
      want(SA_ERR_INVALID_ARGUMENT), [&positions, at, bad_pos] { positions[size_t(at)] = bad_pos; }, n);
  add("keys heads + 1", want(SA_ERR_SHAPE), [=] { k->shape[1] += 1; }, n);
  add("keys head_dim + 1", want(SA_ERR_SHAPE), [=] { k->shape[2] += 1; }, n);
  add("keys dtype i32", want(SA_ERR_DTYPE), [=] { k->dtype = SA_DTYPE_I32; }, n);
  add("keys.data NULL", want(SA_ERR_NULL_POINTER), [=] { k->data = nullptr; }, n);
  add("keys on CUDA", {SA_ERR_BACKEND_UNAVAILABLE, SA_ERR_UNSUPPORTED}, [=] { k->device = SA_DEVICE_CUDA; }, n);
  expect_refused(m, {}, "sa_index_update_heads");
}

// head_key_positions with key_positions, a shared slot_mass, or values outside the domain.
void Scenario::bad_head_attend(const FuzzIndex &fx) {
  const int64_t n_kv = fx.size(), H = fx.h_kv(), h_q = H * group_, d = fx.d();
  const int64_t n_q = in_.range(0, 3);
  sat::Tensor q = random_tensor(in_, rng_, SA_DTYPE_F32, {n_q, h_q, d}, 1.0, nullptr);
  sa_tensor k = fx.host_keys(n_kv), v = fx.host_values(n_kv);
  sat::Tensor out = poisoned_output(in_, SA_DTYPE_F32, {n_q, h_q, d}, nullptr);
  sat::Tensor lse = poisoned_output(in_, SA_DTYPE_F32, {n_q, h_q}, nullptr);
  sat::Tensor mass = poisoned_output(in_, SA_DTYPE_F32, {H, n_kv}, nullptr);
  sat::Tensor shared_mass = poisoned_output(in_, SA_DTYPE_F32, {n_kv}, nullptr);
  std::vector<int64_t> hpos, kpos = fx.pos;
  for (int64_t h = 0; h < H; ++h) hpos.insert(hpos.end(), fx.pos_of(h).begin(), fx.pos_of(h).end());
  if (hpos.empty()) hpos.push_back(0), kpos.push_back(0);
  sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
  o.causal = in_.chance(50) ? 1 : 0;
  o.head_key_positions = hpos.data();
  o.slot_mass = mass.t();
  sa_context *ctx = ctx_.get();
  std::vector<Mutation> m;
  auto add = [&](std::string name, std::vector<sa_status> w, std::function<void()> change) {
    m.push_back({std::move(name), std::move(w), [=, &q, &k, &v, &o, &out, &lse]() {
                   change();
                   return sa_attend(ctx, q.t(), &k, &v, nullptr, &o, out.t(), lse.t());
                 }});
  };
  add("head_key_positions and key_positions", {SA_ERR_INVALID_ARGUMENT}, [&] { o.key_positions = kpos.data(); });
  add("slot_mass [n_kv] with head_key_positions", {SA_ERR_SHAPE}, [&] { o.slot_mass = shared_mass.t(); });
  if (n_kv > 0) {
    const int64_t j = in_.range(0, H * n_kv - 1);
    const int64_t bad = in_.pick({int64_t(-2), INT64_MIN, SA_MAX_POSITION + 1, INT64_MAX});
    add("head_key_positions[" + std::to_string(j) + "] = " + std::to_string(bad), {SA_ERR_INVALID_ARGUMENT},
        [&, j, bad] { hpos[size_t(j)] = bad; });
  }
  add("slot_mass heads + 1", {SA_ERR_SHAPE}, [&] { mass.t()->shape[0] += 1; });
  report_.say("attend over the host cache with head_key_positions (", n_kv, " rows)");
  expect_refused(m, {&out, &lse, &mass, &shared_mass}, "sa_attend (head_key_positions)");
}

}  // namespace apifuzz
