// sa_attend with random shapes, dtypes, layouts and options against the double-precision
// reference: dense or sparse (the lists sa_select just wrote, over the host's cache, or random
// lists with -1 entries and duplicates, per KV head or per query head), causal with default or
// given positions (key positions -1: empty rows), lse, slot_mass accumulation with decay (per
// KV head or shared), an older struct_size that must ignore slot_mass. The same call on a
// context with the other thread count must give the same bits.
#include <algorithm>
#include <cmath>

#include "fuzz_layout.hpp"
#include "fuzz_scenario.hpp"
#include "reference_attention.hpp"

namespace apifuzz {

namespace {

// Values are normal(0, 1): an output's rounding error scales with them, not with the output.
constexpr double kValueScaleFloor = 0.05;

double out_tolerance(sa_dtype out, sa_dtype kv) {
  switch (out) {
    case SA_DTYPE_F16: return 2e-3;    // one f16 rounding of each output plus slack
    case SA_DTYPE_BF16: return 1.6e-2;  // one bf16 rounding
    default: return kv == SA_DTYPE_F32 ? 2e-5 : 1e-4;
  }
}

::testing::AssertionResult lse_close(const std::vector<double> &got, const std::vector<double> &want, double tol) {
  for (size_t i = 0; i < want.size(); ++i) {
    const bool ok = std::isinf(want[i]) ? got[i] == want[i]
                                        : std::fabs(got[i] - want[i]) <= tol * std::max(1.0, std::fabs(want[i]));
    if (!ok) return ::testing::AssertionFailure() << "lse[" << i << "] = " << got[i] << ", reference " << want[i];
  }
  return ::testing::AssertionSuccess();
}

}  // namespace

// The queries of `from` in a dtype sa_attend takes with kv_dtype keys (f32 or kv_dtype).
sat::Tensor Scenario::attend_queries(const sat::Tensor &from, sa_dtype kv_dtype) {
  const sa_dtype dt = in_.chance(50) ? SA_DTYPE_F32 : kv_dtype;
  std::vector<int64_t> shape = from.shape();
  sat::Tensor q(dt, shape, random_strides(in_, shape));
  for (int64_t i = 0; i < shape[0]; ++i)
    for (int64_t h = 0; h < shape[1]; ++h)
      for (int64_t x = 0; x < shape[2]; ++x) q.set({i, h, x}, from.get({i, h, x}));
  return q;
}

// fx and sel given: the queries and lists of that selection over fx's host cache. Otherwise a
// problem of random shape.
AttendCase Scenario::make_attend_case(const FuzzIndex *fx, const SelectCase *sel) {
  AttendCase c;
  std::ostringstream w;
  int64_t n_q, h_q, h_kv, d, n_kv;
  sa_dtype kv_dt;
  if (fx) {
    n_kv = fx->size();
    h_kv = fx->h_kv();
    d = fx->d();
    kv_dt = fx->host_k.dtype();
    c.kd = fx->host_keys(n_kv);
    c.vd = fx->host_values(n_kv);
    c.q = attend_queries(sel->q, kv_dt);
    n_q = c.q.dim(0);
    h_q = c.q.dim(1);
    c.has_indices = in_.chance(85);
    if (c.has_indices) c.indices = sel->out;
    // An index refilled per KV head: its heads' positions (or, sometimes, row r at position r).
    c.has_hpos = fx->per_head() && in_.chance(80);
    c.has_kpos = !fx->per_head() && in_.chance(70);
    if (c.has_kpos) c.kpos = fx->pos;
    if (c.has_hpos)
      for (int64_t h = 0; h < h_kv; ++h) c.hpos.insert(c.hpos.end(), fx->pos_of(h).begin(), fx->pos_of(h).end());
    c.has_qpos = in_.chance(50);
    c.qpos.assign(size_t(std::max<int64_t>(n_q, 1)), 0);
    for (int64_t i = 0; i < n_q; ++i)
      c.qpos[size_t(i)] = sel->has_qpos ? sel->qpos[size_t(i)] : fx->top() - n_q + 1 + i;
    w << "attend the selection over the host cache (" << n_kv << " rows, " << dtype_word(kv_dt) << "), queries "
      << dtype_word(c.q.dtype()) << (c.has_indices ? ", its index lists" : ", dense");
  } else {
    n_q = in_.chance(10) ? 0 : in_.skewed(1, 4, 10);
    h_kv = in_.skewed(1, 2, 3);
    h_q = h_kv * in_.skewed(1, 2, 4);
    d = in_.chance(50) ? in_.pick({int64_t(1), int64_t(3), int64_t(8), int64_t(16), int64_t(33), int64_t(64)})
                       : in_.range(1, 72);
    n_kv = in_.chance(10) ? 0 : in_.skewed(1, 40, 200);
    kv_dt = in_.pick({SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16});
    std::string kw, vw, qw;
    c.k = random_tensor(in_, rng_, kv_dt, {n_kv, h_kv, d}, 1.0, &kw);
    c.v = random_tensor(in_, rng_, kv_dt, {n_kv, h_kv, d}, 1.0, &vw);
    c.q = random_tensor(in_, rng_, in_.chance(50) ? SA_DTYPE_F32 : kv_dt, {n_q, h_q, d}, 1.0, &qw);
    c.kd = *c.k.t();
    c.vd = *c.v.t();
    if (n_kv == 0 && in_.chance(50)) c.kd.data = c.vd.data = nullptr;  // no element: data may be NULL
    w << "attend q [" << n_q << ", " << h_q << ", " << d << "] " << qw << ", k [" << n_kv << ", " << h_kv << ", " << d
      << "] " << kw << ", v " << vw;
    c.has_indices = in_.chance(60);
    if (c.has_indices) {
      const int64_t lists = in_.chance(50) ? h_kv : h_q, width = in_.skewed(0, 12, 40);
      std::string iw;
      c.indices = sat::Tensor(SA_DTYPE_I32, {n_q, lists, width}, random_strides(in_, {n_q, lists, width}));
      for (int64_t i = 0; i < n_q; ++i)
        for (int64_t l = 0; l < lists; ++l)
          for (int64_t x = 0; x < width; ++x) {
            const int64_t pick = rng_.below(n_kv + n_kv / 4 + 1);  // some -1, repeats count twice
            c.indices.set({i, l, x}, double(pick < n_kv ? pick : -1));
          }
      w << ", index lists [" << n_q << ", " << lists << ", " << width << "]";
    } else {
      w << ", dense";
    }
    c.has_kpos = in_.chance(40);
    c.kpos.assign(size_t(std::max<int64_t>(n_kv, 1)), 0);
    for (int64_t r = 0; r < n_kv; ++r) {
      switch (in_.range(0, 5)) {
        case 0: c.kpos[size_t(r)] = -1; break;  // empty row: never attended
        case 1: c.kpos[size_t(r)] = SA_MAX_POSITION - rng_.below(4); break;
        default: c.kpos[size_t(r)] = (r * 37) % std::max<int64_t>(n_kv, 1) * 2; break;
      }
    }
    // Per-KV-head positions instead, each head its own (-1 rows, huge positions, repeats).
    c.has_hpos = !c.has_kpos && in_.chance(30);
    c.hpos.assign(size_t(std::max<int64_t>(h_kv * n_kv, 1)), 0);
    for (int64_t j = 0; j < h_kv * n_kv; ++j) {
      switch (in_.range(0, 5)) {
        case 0: c.hpos[size_t(j)] = -1; break;
        case 1: c.hpos[size_t(j)] = SA_MAX_POSITION - rng_.below(4); break;
        case 2: c.hpos[size_t(j)] = c.kpos[size_t(j % std::max<int64_t>(n_kv, 1))]; break;
        default: c.hpos[size_t(j)] = rng_.below(2 * n_kv + 1); break;
      }
      if (c.hpos[size_t(j)] < -1) c.hpos[size_t(j)] = -1;
    }
    c.has_qpos = in_.chance(40);
    c.qpos.assign(size_t(std::max<int64_t>(n_q, 1)), 0);
    for (int64_t i = 0; i < n_q; ++i)
      c.qpos[size_t(i)] = in_.chance(10) ? in_.pick({-SA_MAX_POSITION, SA_MAX_POSITION, int64_t(-1)})
                                         : in_.range(-3, 2 * n_kv + 3);
  }
  c.opt.causal = in_.chance(60) ? 1 : 0;
  if (in_.chance(30)) c.opt.scale = float(in_.range(5, 150)) / 100.f;
  std::string ow, lw, mw;
  c.out = poisoned_output(in_, in_.chance(50) ? SA_DTYPE_F32 : c.q.dtype(), {n_q, h_q, d}, &ow);
  c.has_lse = in_.chance(70);
  c.lse = poisoned_output(in_, SA_DTYPE_F32, {n_q, h_q}, &lw);
  c.has_mass = in_.chance(40);
  const bool shared_mass = !c.has_hpos && in_.chance(30);  // per-head positions need [H_kv, n_kv]
  std::vector<int64_t> mass_shape = shared_mass ? std::vector<int64_t>{n_kv} : std::vector<int64_t>{h_kv, n_kv};
  c.mass = poisoned_output(in_, SA_DTYPE_F32, mass_shape, &mw);
  c.mass_before.resize(size_t(c.mass.numel()));
  for (double &x : c.mass_before) x = double(rng_.below(100)) / 8;  // earlier steps' sums
  c.mass.set_values(c.mass_before);
  c.mass.snapshot();
  if (c.has_mass) c.opt.mass_decay = in_.pick({1.f, 0.f, 0.5f, float(in_.range(0, 100)) / 100.f});
  const bool old_struct = in_.chance(10);  // a host built before cuda_stream, slot_mass and mass_decay
  if (old_struct) c.opt.struct_size = offsetof(sa_attend_options, cuda_stream);
  const bool abi2_struct = !old_struct && c.has_hpos && in_.chance(10);  // a host built before head_key_positions
  if (abi2_struct) c.opt.struct_size = offsetof(sa_attend_options, head_key_positions);
  w << "; causal " << c.opt.causal << ", scale " << c.opt.scale;
  if (c.has_qpos) w << ", query_positions " << list_words(c.qpos.data(), n_q);
  if (c.has_kpos) w << ", key_positions " << list_words(c.kpos.data(), n_kv);
  if (c.has_hpos) w << ", head_key_positions " << list_words(c.hpos.data(), h_kv * n_kv);
  w << "; out " << ow;
  if (c.has_lse) w << ", lse " << lw;
  if (c.has_mass) w << ", slot_mass " << (shared_mass ? "[n_kv] " : "[H_kv, n_kv] ") << mw << " decay " << c.opt.mass_decay;
  if (old_struct) w << ", struct_size of the first version (slot_mass ignored)";
  if (abi2_struct) w << ", struct_size before head_key_positions (ignored)";
  c.words = w.str();
  c.bind();
  return c;
}

void Scenario::check_attend(AttendCase &c) {
  report_.say(c.words);
  const bool compare_threads = in_.chance(30);
  AttendCase twin;
  if (compare_threads) twin = c;
  report_.require_ok(c.run(ctx_.get()), "sa_attend");
  const int64_t n_q = c.q.dim(0), h_q = c.q.dim(1), n_kv = c.kd.shape[0], h_kv = c.kd.shape[1];
  const bool mass_on = c.has_mass && c.opt.struct_size > offsetof(sa_attend_options, slot_mass);
  report_.require(c.out.only_elements_written(), "sa_attend wrote outside out");
  report_.require(c.has_lse ? c.lse.only_elements_written() : c.lse.untouched(), "sa_attend wrote outside lse");
  report_.require(mass_on ? c.mass.only_elements_written() : c.mass.untouched(),
                  mass_on ? "sa_attend wrote outside slot_mass" : "sa_attend wrote slot_mass, which it must ignore");

  // The reference reads explicit lists: dense is every row; rows at position -1 are dropped.
  const bool empty_rows = c.has_kpos;
  sat::Tensor lists;
  if (c.has_indices) {
    lists = c.indices;
  } else {
    lists = sat::Tensor(SA_DTYPE_I32, {n_q, h_kv, n_kv});
    for (int64_t i = 0; i < n_q; ++i)
      for (int64_t h = 0; h < h_kv; ++h)
        for (int64_t r = 0; r < n_kv; ++r) lists.set({i, h, r}, double(r));
  }
  if (empty_rows)
    for (int64_t i = 0; i < n_q; ++i)
      for (int64_t l = 0; l < lists.dim(1); ++l)
        for (int64_t x = 0; x < lists.dim(2); ++x) {
          const int64_t r = int64_t(lists.get({i, l, x}));
          if (r >= 0 && c.kpos[size_t(r)] == -1) lists.set({i, l, x}, -1);
        }
  std::vector<int64_t> qpos(size_t(std::max<int64_t>(n_q, 1)));
  int64_t last = n_kv - 1;
  const bool head_pos_on = c.has_hpos && c.opt.struct_size > offsetof(sa_attend_options, head_key_positions);
  if (c.has_kpos) {
    last = -1;
    for (int64_t r = 0; r < n_kv; ++r) last = std::max(last, c.kpos[size_t(r)]);
  }
  if (head_pos_on) {  // the largest position any head holds
    last = -1;
    for (int64_t j = 0; j < h_kv * n_kv; ++j) last = std::max(last, c.hpos[size_t(j)]);
  }
  for (int64_t i = 0; i < n_q; ++i) qpos[size_t(i)] = c.has_qpos ? c.qpos[size_t(i)] : last - n_q + 1 + i;
  ref::AttendArgs a;
  a.q = c.q.t();
  a.k = &c.kd;
  a.v = &c.vd;
  a.indices = lists.t();
  a.scale = c.opt.scale;
  a.causal = c.opt.causal != 0;
  a.query_positions = qpos.data();
  a.key_positions = c.has_kpos ? c.kpos.data() : nullptr;
  a.head_key_positions = head_pos_on ? c.hpos.data() : nullptr;
  const ref::AttendResult r = ref::attend(a);
  const sa_dtype kv_dt = c.kd.dtype;
  // Outputs are averages of values of unit scale: rounding is relative to that scale too, so an
  // output that cancels to near 0 (one element, D = 1) gets an absolute floor.
  const double tol = out_tolerance(c.out.dtype(), kv_dt);
  report_.require(sat::close_rel(c.out.values(), r.out, tol, kValueScaleFloor * tol), "sa_attend out");
  if (c.has_lse) report_.require(lse_close(c.lse.values(), r.lse, kv_dt == SA_DTYPE_F32 ? 1e-5 : 1e-4), "sa_attend lse");
  if (mass_on) {
    std::vector<double> want(c.mass_before.size());
    const bool shared = c.mass.t()->rank == 1;
    for (size_t j = 0; j < want.size(); ++j) want[j] = double(c.opt.mass_decay) * c.mass_before[j];
    for (int64_t h = 0; h < h_kv; ++h)
      for (int64_t j = 0; j < n_kv; ++j) want[size_t(shared ? j : h * n_kv + j)] += r.mass[size_t(h * n_kv + j)];
    report_.require(sat::close_rel(c.mass.values(), want, 1e-4, 1e-6), "sa_attend slot_mass");
  }
  (void)h_q;
  if (compare_threads) {
    report_.require_ok(twin.run(other_ctx_.get()), "sa_attend (other thread count)");
    report_.require(twin.out.values() == c.out.values(), "sa_attend out depends on the thread count");
    if (c.has_lse) report_.require(twin.lse.values() == c.lse.values(), "sa_attend lse depends on the thread count");
    report_.require(twin.mass.values() == c.mass.values(), "sa_attend slot_mass depends on the thread count");
  }
}

}  // namespace apifuzz
