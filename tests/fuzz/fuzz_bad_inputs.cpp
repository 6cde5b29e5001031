// Invalid calls: a valid call of the scenario with exactly one thing broken (a NULL, a shape, a
// stride, a dtype, a device, an out-of-range index or position, overlapping output strides, an
// option outside its domain, a page table or query_starts that lies). Each must return the
// status the header's conventions give (bad_input_test.cpp lists them), leave a message, write
// no byte of any output (poisoned canaries) and leave the index as it was (its size and a probe
// selection, bit for bit).
#include <cmath>
#include <functional>
#include <limits>

#include "fuzz_layout.hpp"
#include "fuzz_scenario.hpp"

namespace apifuzz {

namespace {

const std::vector<sa_status> kCuda = {SA_ERR_BACKEND_UNAVAILABLE, SA_ERR_UNSUPPORTED};

// Explicit row-major strides for t (so one can be changed).
void make_explicit(sa_tensor *t) {
  int64_t s = 1;
  for (int i = t->rank - 1; i >= 0; --i) {
    t->strides[i] = s;
    s *= t->shape[i] > 0 ? t->shape[i] : 1;
  }
}

// A dimension of extent > 1 whose stride can be made 0 with the others not (all-zero strides
// mean contiguous), or -1.
int wide_dim(ByteSource &in, const sa_tensor &t) {
  std::vector<int> dims;
  if (t.rank < 2) return -1;
  for (int i = 0; i < t.rank; ++i)
    if (t.shape[i] > 1) dims.push_back(i);
  return dims.empty() ? -1 : in.pick(dims);
}

bool has_elements(const sa_tensor &t) {
  int64_t n = 1;
  for (int i = 0; i < t.rank; ++i) n *= t.shape[i];
  return n > 0;
}

sa_dtype other_float(sa_dtype a, sa_dtype b) {
  for (sa_dtype d : {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16})
    if (d != a && d != b) return d;
  return SA_DTYPE_I32;
}

}  // namespace

// Runs one mutation picked from `ms`; checks its status, message and the untouched outputs.
void Scenario::expect_refused(std::vector<Mutation> &ms, std::initializer_list<const sat::Tensor *> outputs,
                              const char *call) {
  if (ms.empty()) return;
  Mutation &m = ms[size_t(in_.range(0, int64_t(ms.size()) - 1))];
  report_.say("bad ", call, ": ", m.name);
  const sa_status s = m.call();
  bool wanted = false;
  std::string names;
  for (sa_status w : m.want) {
    wanted |= s == w;
    names += std::string(names.empty() ? "" : " or ") + sa_status_name(w);
  }
  report_.require(wanted, call, " with ", m.name, " returned ", sa_status_name(s), ", expected ", names, " (",
                  sa_last_error(), ")");
  report_.require(*sa_last_error() != '\0', call, " with ", m.name, " left no message");
  for (const sat::Tensor *t : outputs) report_.require(t->untouched(), call, " with ", m.name, " wrote an output");
}

void Scenario::bad_select(FuzzIndex &fx) {
  SelectCase c = make_select_case(fx);
  c.bind();
  sa_index *ix = fx.ix();
  sa_tensor *q = c.q.t(), *out = c.out.t();
  sa_select_options &o = c.opt;
  auto call = [&] { return sa_select(ix, q, &o, out); };
  std::vector<Mutation> m;
  auto add = [&](std::string name, std::vector<sa_status> want, std::function<void()> change) {
    m.push_back({std::move(name), std::move(want), [=, &c]() {
                   change();
                   return sa_select(ix, c.q.t(), &c.opt, c.out.t());
                 }});
  };
  m.push_back({"ix NULL", {SA_ERR_NULL_POINTER}, [&] { return sa_select(nullptr, q, &o, out); }});
  m.push_back({"queries NULL", {SA_ERR_NULL_POINTER}, [&] { return sa_select(ix, nullptr, &o, out); }});
  m.push_back({"indices NULL", {SA_ERR_NULL_POINTER}, [&] { return sa_select(ix, q, &o, nullptr); }});
  if (has_elements(*q)) add("queries.data NULL", {SA_ERR_NULL_POINTER}, [=] { q->data = nullptr; });
  if (has_elements(*out)) add("indices.data NULL", {SA_ERR_NULL_POINTER}, [=] { out->data = nullptr; });
  add("struct_size 0", {SA_ERR_STRUCT_SIZE}, [&] { o.struct_size = 0; });
  add("struct_size short of the first version", {SA_ERR_STRUCT_SIZE},
      [&] { o.struct_size = offsetof(sa_select_options, cuda_stream) - 1; });
  add("queries head_dim + 1", {SA_ERR_SHAPE}, [=] { q->shape[2] += 1; });
  add("queries heads not a positive multiple of H_kv", {SA_ERR_SHAPE},
      [=, &fx] { q->shape[1] = fx.h_kv() > 1 ? q->shape[1] + 1 : 0; });
  add("queries rank 2", {SA_ERR_SHAPE}, [=] { q->rank = 2; });
  add("queries dtype i32", {SA_ERR_DTYPE}, [=] { q->dtype = SA_DTYPE_I32; });
  add("indices dtype i64", {SA_ERR_DTYPE}, [=] { out->dtype = SA_DTYPE_I64; });
  add("indices dtype f32", {SA_ERR_DTYPE}, [=] { out->dtype = SA_DTYPE_F32; });
  add("indices rows n_q + 1", {SA_ERR_SHAPE}, [=] { out->shape[0] += 1; });
  add("indices lists + 1", {SA_ERR_SHAPE}, [=] { out->shape[1] += 1; });
  add("indices width one short of sinks + window + top_k", {SA_ERR_SHAPE},
      [=, &o] { out->shape[2] = int64_t(o.sinks) + o.window + o.top_k - 1; });
  const int dim = wide_dim(in_, *out);
  if (dim >= 0)
    add("indices stride " + std::to_string(dim) + " zero (elements overlap)", {SA_ERR_SHAPE}, [=] {
      make_explicit(out);
      out->strides[dim] = 0;
    });
  if (out->shape[0] >= 2)
    add("indices strides past the address space", {SA_ERR_OVERFLOW}, [=] {
      make_explicit(out);
      out->strides[0] = int64_t(1) << 62;
    });
  add("top_k 0", {SA_ERR_INVALID_ARGUMENT}, [&] { o.top_k = 0; });
  add("top_k -3", {SA_ERR_INVALID_ARGUMENT}, [&] { o.top_k = -3; });
  add("window -1", {SA_ERR_INVALID_ARGUMENT}, [&] { o.window = -1; });
  add("sinks -1", {SA_ERR_INVALID_ARGUMENT}, [&] { o.sinks = -1; });
  add("mass_target NaN", {SA_ERR_INVALID_ARGUMENT}, [&] { o.mass_target = NAN; });
  add("mass_target 1.5", {SA_ERR_INVALID_ARGUMENT}, [&] { o.mass_target = 1.5f; });
  add("mass_target -0.1", {SA_ERR_INVALID_ARGUMENT}, [&] { o.mass_target = -0.1f; });
  add("scale NaN", {SA_ERR_INVALID_ARGUMENT}, [&] { o.scale = NAN; });
  add("scale -1", {SA_ERR_INVALID_ARGUMENT}, [&] { o.scale = -1.f; });
  add("scale inf", {SA_ERR_INVALID_ARGUMENT}, [&] { o.scale = INFINITY; });
  if (q->shape[0] >= 1) {
    const int64_t i = in_.range(0, q->shape[0] - 1);
    const int64_t bad = in_.pick({INT64_MAX, INT64_MIN, SA_MAX_POSITION + 1, -SA_MAX_POSITION - 1});
    add("query_positions[" + std::to_string(i) + "] = " + std::to_string(bad), {SA_ERR_INVALID_ARGUMENT}, [=, &c] {
      if (!c.has_qpos)
        for (int64_t r = 0; r < c.q.dim(0); ++r) c.qpos[size_t(r)] = 0;
      c.qpos[size_t(i)] = bad;
      c.opt.query_positions = c.qpos.data();
    });
  }
  add("query_segments without key_segments", {SA_ERR_INVALID_ARGUMENT}, [&] {
    o.query_segments = c.qseg.data();
    o.key_segments = nullptr;
  });
  add("key_segments without query_segments", {SA_ERR_INVALID_ARGUMENT}, [&] {
    o.query_segments = nullptr;
    o.key_segments = c.kseg.data();
  });
  add("queries negative stride", {SA_ERR_SHAPE}, [=] {
    make_explicit(q);
    q->strides[0] = -q->strides[0] - 1;
  });
  add("queries negative shape", {SA_ERR_SHAPE}, [=] { q->shape[0] = -1; });
  add("queries on CUDA", kCuda, [=] { q->device = SA_DEVICE_CUDA; });
  add("indices on CUDA", kCuda, [=] { out->device = SA_DEVICE_CUDA; });
  add("queries on unknown device 7", {SA_ERR_INVALID_ARGUMENT}, [=] { q->device = sa_device_type(7); });
  if (fx.borrows()) {
    add("borrowing index without keys", {SA_ERR_NULL_POINTER}, [&] { o.keys = nullptr; });
    if (fx.size() >= 1) add("keys one row short", {SA_ERR_SHAPE}, [&] { c.keys.shape[0] = fx.size() - 1; });
    add("keys heads + 1", {SA_ERR_SHAPE}, [&] { c.keys.shape[1] += 1; });
    add("keys head_dim + 1", {SA_ERR_SHAPE}, [&] { c.keys.shape[2] += 1; });
    add("keys dtype i32", {SA_ERR_DTYPE}, [&] { c.keys.dtype = SA_DTYPE_I32; });
    add("keys rank 2", {SA_ERR_SHAPE}, [&] { c.keys.rank = 2; });
  }
  if (fx.opt.kind == SA_SELECTOR_INDEXER)
    add("mass_target 0.5 on an indexer", {SA_ERR_UNSUPPORTED}, [&] { o.mass_target = 0.5f; });
  (void)call;
  expect_refused(m, {&c.out}, "sa_select");
}

void Scenario::bad_attend() {
  AttendCase c = make_attend_case(nullptr, nullptr);
  c.bind();
  sa_context *ctx = ctx_.get();
  sa_tensor *q = c.q.t(), *out = c.out.t(), *lse = c.has_lse ? c.lse.t() : nullptr, *k = &c.kd, *v = &c.vd;
  sa_tensor *idx = c.has_indices ? c.indices.t() : nullptr, *mass = c.mass.t();
  sa_attend_options &o = c.opt;
  const bool mass_on = c.has_mass && o.struct_size > offsetof(sa_attend_options, slot_mass);
  const int64_t n_q = q->shape[0], n_kv = k->shape[0];
  std::vector<Mutation> m;
  auto add = [&](std::string name, std::vector<sa_status> want, std::function<void()> change) {
    m.push_back({std::move(name), std::move(want), [=, &o]() {
                   change();
                   return sa_attend(ctx, q, k, v, idx, &o, out, lse);
                 }});
  };
  m.push_back({"ctx NULL", {SA_ERR_NULL_POINTER}, [&] { return sa_attend(nullptr, q, k, v, idx, &o, out, lse); }});
  m.push_back({"q NULL", {SA_ERR_NULL_POINTER}, [&] { return sa_attend(ctx, nullptr, k, v, idx, &o, out, lse); }});
  m.push_back({"k NULL", {SA_ERR_NULL_POINTER}, [&] { return sa_attend(ctx, q, nullptr, v, idx, &o, out, lse); }});
  m.push_back({"v NULL", {SA_ERR_NULL_POINTER}, [&] { return sa_attend(ctx, q, k, nullptr, idx, &o, out, lse); }});
  m.push_back({"out NULL", {SA_ERR_NULL_POINTER}, [&] { return sa_attend(ctx, q, k, v, idx, &o, nullptr, lse); }});
  if (has_elements(*q)) add("q.data NULL", {SA_ERR_NULL_POINTER}, [=] { q->data = nullptr; });
  if (has_elements(*k)) add("k.data NULL", {SA_ERR_NULL_POINTER}, [=] { k->data = nullptr; });
  if (has_elements(*k)) add("v.data NULL", {SA_ERR_NULL_POINTER}, [=] { v->data = nullptr; });
  if (has_elements(*out)) add("out.data NULL", {SA_ERR_NULL_POINTER}, [=] { out->data = nullptr; });
  if (lse && has_elements(*lse)) add("lse.data NULL", {SA_ERR_NULL_POINTER}, [=] { lse->data = nullptr; });
  if (idx && has_elements(*idx)) add("indices.data NULL", {SA_ERR_NULL_POINTER}, [=] { idx->data = nullptr; });
  if (mass_on && has_elements(*mass)) add("slot_mass.data NULL", {SA_ERR_NULL_POINTER}, [=] { mass->data = nullptr; });
  add("struct_size 0", {SA_ERR_STRUCT_SIZE}, [&] { o.struct_size = 0; });
  add("struct_size short of the first version", {SA_ERR_STRUCT_SIZE},
      [&] { o.struct_size = offsetof(sa_attend_options, cuda_stream) - 1; });
  add("k dtype i32", {SA_ERR_DTYPE}, [=] { k->dtype = SA_DTYPE_I32; });
  add("v dtype differs from k", {SA_ERR_DTYPE}, [=] { v->dtype = other_float(k->dtype, k->dtype); });
  add("q dtype neither f32 nor k's", {SA_ERR_DTYPE}, [=] { q->dtype = other_float(SA_DTYPE_F32, k->dtype); });
  add("out dtype neither f32 nor q's", {SA_ERR_DTYPE}, [=] { out->dtype = other_float(SA_DTYPE_F32, q->dtype); });
  if (lse) add("lse dtype f16", {SA_ERR_DTYPE}, [=] { lse->dtype = SA_DTYPE_F16; });
  if (idx) add("indices dtype i64", {SA_ERR_DTYPE}, [=] { idx->dtype = SA_DTYPE_I64; });
  if (mass_on) add("slot_mass dtype f16", {SA_ERR_DTYPE}, [=] { mass->dtype = SA_DTYPE_F16; });
  add("k head_dim + 1", {SA_ERR_SHAPE}, [=] { k->shape[2] += 1; });
  if (v->data) add("v rows + 1", {SA_ERR_SHAPE}, [=] { v->shape[0] += 1; });  // else a NULL data too
  add("v heads + 1", {SA_ERR_SHAPE}, [=] { v->shape[1] += 1; });
  add("out rows + 1", {SA_ERR_SHAPE}, [=] { out->shape[0] += 1; });
  add("out heads + 1", {SA_ERR_SHAPE}, [=] { out->shape[1] += 1; });
  add("out head_dim + 1", {SA_ERR_SHAPE}, [=] { out->shape[2] += 1; });
  if (lse) add("lse heads + 1", {SA_ERR_SHAPE}, [=] { lse->shape[1] += 1; });
  if (lse) add("lse rank 3", {SA_ERR_SHAPE}, [=] { lse->rank = 3; lse->shape[2] = 1; });
  if (idx) add("indices rows + 1", {SA_ERR_SHAPE}, [=] { idx->shape[0] += 1; });
  if (idx) add("indices lists neither H_kv nor H_q", {SA_ERR_SHAPE}, [=] { idx->shape[1] = q->shape[1] + 1; });
  add("q rank 2", {SA_ERR_SHAPE}, [=] { q->rank = 2; });
  add("k rank 4", {SA_ERR_SHAPE}, [=] { k->rank = 4; k->shape[3] = 1; });
  if (k->shape[1] > 1) add("q heads not a multiple of k's", {SA_ERR_SHAPE}, [=] { q->shape[1] += 1; });
  add("q negative stride", {SA_ERR_SHAPE}, [=] {
    make_explicit(q);
    q->strides[1] = -q->strides[1] - 1;
  });
  add("k and v negative rows", {SA_ERR_SHAPE}, [=] { k->shape[0] = v->shape[0] = -4; });
  if (idx && has_elements(*idx)) {
    const int64_t i = in_.range(0, idx->shape[0] - 1), l = in_.range(0, idx->shape[1] - 1),
                  x = in_.range(0, idx->shape[2] - 1);
    const int64_t bad = in_.pick({n_kv, int64_t(-2), int64_t(INT32_MAX), int64_t(INT32_MIN)});
    add("indices[" + std::to_string(i) + "][" + std::to_string(l) + "][" + std::to_string(x) + "] = " +
            std::to_string(bad),
        {SA_ERR_OUT_OF_RANGE}, [=, &c] { c.indices.set({i, l, x}, double(bad)); });
  }
  int dim = wide_dim(in_, *out);
  if (dim >= 0)
    add("out stride " + std::to_string(dim) + " zero (elements overlap)", {SA_ERR_SHAPE}, [=] {
      make_explicit(out);
      out->strides[dim] = 0;
    });
  if (out->shape[1] > 1 && out->shape[2] > 1)
    add("out heads overlap (stride[1] = D - 1)", {SA_ERR_SHAPE}, [=] {
      make_explicit(out);
      out->strides[1] = out->shape[2] - 1;
    });
  if (n_q >= 2)
    add("out strides past the address space", {SA_ERR_OVERFLOW}, [=] {
      make_explicit(out);
      out->strides[0] = int64_t(1) << 62;
    });
  if (lse && (dim = wide_dim(in_, *lse)) >= 0)
    add("lse stride " + std::to_string(dim) + " zero", {SA_ERR_SHAPE}, [=] {
      make_explicit(lse);
      lse->strides[dim] = 0;
    });
  if (mass_on && (dim = wide_dim(in_, *mass)) >= 0)
    add("slot_mass stride " + std::to_string(dim) + " zero", {SA_ERR_SHAPE}, [=] {
      make_explicit(mass);
      mass->strides[dim] = 0;
    });
  add("scale NaN", {SA_ERR_INVALID_ARGUMENT}, [&] { o.scale = NAN; });
  add("scale -0.5", {SA_ERR_INVALID_ARGUMENT}, [&] { o.scale = -0.5f; });
  add("scale inf", {SA_ERR_INVALID_ARGUMENT}, [&] { o.scale = INFINITY; });
  if (n_q >= 1) {
    const int64_t i = in_.range(0, n_q - 1);
    const int64_t bad = in_.pick({INT64_MAX, INT64_MIN, SA_MAX_POSITION + 1, -SA_MAX_POSITION - 1});
    add("query_positions[" + std::to_string(i) + "] = " + std::to_string(bad), {SA_ERR_INVALID_ARGUMENT}, [=, &c] {
      c.qpos[size_t(i)] = bad;
      c.opt.query_positions = c.qpos.data();
    });
  }
  if (n_kv >= 1) {
    const int64_t r = in_.range(0, n_kv - 1);
    const int64_t bad = in_.pick({int64_t(-2), INT64_MIN, SA_MAX_POSITION + 1, INT64_MAX});
    add("key_positions[" + std::to_string(r) + "] = " + std::to_string(bad), {SA_ERR_INVALID_ARGUMENT}, [=, &c] {
      c.kpos[size_t(r)] = bad;
      c.opt.key_positions = c.kpos.data();
    });
  }
  if (mass_on) {
    add("slot_mass key rows + 1", {SA_ERR_SHAPE}, [=] { mass->shape[mass->rank - 1] += 1; });
    add("slot_mass rank 3", {SA_ERR_SHAPE}, [=] { mass->rank = 3; mass->shape[2] = 1; });
    if (mass->rank == 2) add("slot_mass heads + 1", {SA_ERR_SHAPE}, [=] { mass->shape[0] += 1; });
    add("slot_mass on CUDA", kCuda, [=] { mass->device = SA_DEVICE_CUDA; });
    add("mass_decay NaN", {SA_ERR_INVALID_ARGUMENT}, [&] { o.mass_decay = NAN; });
    add("mass_decay -0.1", {SA_ERR_INVALID_ARGUMENT}, [&] { o.mass_decay = -0.1f; });
    add("mass_decay 1.5", {SA_ERR_INVALID_ARGUMENT}, [&] { o.mass_decay = 1.5f; });
  }
  add("q on CUDA", kCuda, [=] { q->device = SA_DEVICE_CUDA; });
  add("q on unknown device 3", {SA_ERR_INVALID_ARGUMENT}, [=] { q->device = sa_device_type(3); });
  report_.say(c.words);
  expect_refused(m, {&c.out, &c.lse, &c.mass}, "sa_attend");
}

void Scenario::bad_append(FuzzIndex &fx) {
  const int64_t n = in_.range(1, 6);
  std::string kw;
  sat::Tensor keys = random_tensor(in_, rng_, SA_DTYPE_F32, {n, fx.h_kv(), fx.d()}, 1.0, &kw);
  sa_tensor *k = keys.t();
  sa_index *ix = fx.ix();
  std::vector<Mutation> m;
  auto add = [&](std::string name, std::vector<sa_status> want, std::function<void()> change) {
    m.push_back({std::move(name), std::move(want), [=]() {
                   change();
                   return sa_index_append(ix, k);
                 }});
  };
  m.push_back({"ix NULL", {SA_ERR_NULL_POINTER}, [=] { return sa_index_append(nullptr, k); }});
  m.push_back({"keys NULL", {SA_ERR_NULL_POINTER}, [=] { return sa_index_append(ix, nullptr); }});
  add("keys.data NULL", {SA_ERR_NULL_POINTER}, [=] { k->data = nullptr; });
  add("keys dtype i32", {SA_ERR_DTYPE}, [=] { k->dtype = SA_DTYPE_I32; });
  add("keys rank 2", {SA_ERR_SHAPE}, [=] { k->rank = 2; });
  add("keys heads + 1", {SA_ERR_SHAPE}, [=] { k->shape[1] += 1; });
  add("keys head_dim - 1", {SA_ERR_SHAPE}, [=] { k->shape[2] -= 1; });
  add("keys rows -1", {SA_ERR_SHAPE}, [=] { k->shape[0] = -1; });
  add("keys negative stride", {SA_ERR_SHAPE}, [=] {
    make_explicit(k);
    k->strides[0] = -k->strides[0];
  });
  add("keys strides past the address space", {SA_ERR_OVERFLOW}, [=] {
    k->shape[0] = int64_t(1) << 40;
    make_explicit(k);
    k->strides[0] = int64_t(1) << 40;
  });
  add("keys on CUDA", kCuda, [=] { k->device = SA_DEVICE_CUDA; });
  add("keys on unknown device 7", {SA_ERR_INVALID_ARGUMENT}, [=] { k->device = sa_device_type(7); });
  expect_refused(m, {}, "sa_index_append");
}

void Scenario::bad_update(FuzzIndex &fx) {
  if (fx.size() == 0) return;
  const int64_t n = std::min<int64_t>(in_.range(1, 4), fx.size());
  std::vector<int32_t> slots;
  for (int64_t s = 0; s < fx.size() && int64_t(slots.size()) < n; ++s)
    if (in_.chance(50) || fx.size() - s <= n - int64_t(slots.size())) slots.push_back(int32_t(s));
  slots.push_back(0);  // room for one more, never passed unless n says so
  std::vector<int64_t> positions(size_t(n) + 1, 0);
  std::string kw;
  sat::Tensor keys = random_tensor(in_, rng_, SA_DTYPE_F16, {n, fx.h_kv(), fx.d()}, 1.0, &kw);
  sa_tensor *k = keys.t();
  sa_index *ix = fx.ix();
  std::vector<Mutation> m;
  auto add = [&](std::string name, std::vector<sa_status> want, std::function<void()> change, int64_t count) {
    m.push_back({std::move(name), std::move(want), [=, &slots, &positions]() {
                   change();
                   return sa_index_update(ix, slots.data(), count, k, positions.data());
                 }});
  };
  m.push_back({"ix NULL", {SA_ERR_NULL_POINTER}, [&] { return sa_index_update(nullptr, slots.data(), n, k, nullptr); }});
  m.push_back({"slots NULL", {SA_ERR_NULL_POINTER}, [&] { return sa_index_update(ix, nullptr, n, k, nullptr); }});
  m.push_back({"keys NULL", {SA_ERR_NULL_POINTER}, [&] { return sa_index_update(ix, slots.data(), n, nullptr, nullptr); }});
  add("n -1", {SA_ERR_INVALID_ARGUMENT}, [] {}, -1);
  add("n one more than the keys", {SA_ERR_SHAPE}, [] {}, n + 1);
  const size_t at = size_t(in_.range(0, n - 1));
  const int64_t bad_slot = in_.pick({fx.size(), int64_t(-1), int64_t(INT32_MAX), int64_t(INT32_MIN)});
  add("slots[" + std::to_string(at) + "] = " + std::to_string(bad_slot), {SA_ERR_OUT_OF_RANGE},
      [&slots, at, bad_slot] { slots[at] = int32_t(bad_slot); }, n);
  if (n >= 2) add("a slot twice", {SA_ERR_INVALID_ARGUMENT}, [&slots, n] { slots[size_t(n - 1)] = slots[0]; }, n);
  const int64_t bad_pos = in_.pick({int64_t(-1), int64_t(-5), SA_MAX_POSITION + 1, INT64_MIN, INT64_MAX});
  add("positions[" + std::to_string(at) + "] = " + std::to_string(bad_pos), {SA_ERR_INVALID_ARGUMENT},
      [&positions, at, bad_pos] { positions[at] = bad_pos; }, n);
  add("keys head_dim + 1", {SA_ERR_SHAPE}, [=] { k->shape[2] += 1; }, n);
  add("keys dtype i64", {SA_ERR_DTYPE}, [=] { k->dtype = SA_DTYPE_I64; }, n);
  add("keys on CUDA", kCuda, [=] { k->device = SA_DEVICE_CUDA; }, n);
  expect_refused(m, {}, "sa_index_update");
}

void Scenario::bad_truncate_or_clone(FuzzIndex &fx) {
  sa_index *ix = fx.ix();
  sa_index *const sentinel = reinterpret_cast<sa_index *>(uintptr_t(0x5678));
  sa_index *copy = sentinel;
  std::vector<Mutation> m;
  const sa_status not_borrowing = fx.borrows() ? SA_ERR_UNSUPPORTED : SA_ERR_INVALID_ARGUMENT;
  m.push_back({"truncate ix NULL", {SA_ERR_NULL_POINTER}, [] { return sa_index_truncate(nullptr, 0); }});
  const int64_t neg = in_.pick({int64_t(-1), INT64_MIN});
  m.push_back({"truncate at position " + std::to_string(neg), {not_borrowing}, [=] { return sa_index_truncate(ix, neg); }});
  for (int64_t p : fx.pos)
    if (fx.truncate_keep(p) < 0) {
      m.push_back({"truncate at position " + std::to_string(p) + " (a later slot holds an earlier position)",
                   {not_borrowing}, [=] { return sa_index_truncate(ix, p); }});
      break;
    }
  m.push_back({"clone ix NULL", {SA_ERR_NULL_POINTER}, [&] { return sa_index_clone(nullptr, &copy); }});
  m.push_back({"clone out NULL", {SA_ERR_NULL_POINTER}, [=] { return sa_index_clone(ix, nullptr); }});
  expect_refused(m, {}, "sa_index_truncate / sa_index_clone");
  report_.require(copy == sentinel, "a refused sa_index_clone wrote *out");
}

void Scenario::bad_attend_paged(PagedCase pc) {
  const int64_t n_q = pc.q.dim(0), h_q = pc.q.dim(1), d = main_.d(), S = pc.num_slots();
  sa_paged_kv kv = pc.desc();
  sa_tensor *q = pc.q.t();
  const sa_tensor *qs = pc.has_starts ? pc.query_starts.t() : nullptr;
  sat::Tensor out = poisoned_output(in_, SA_DTYPE_F32, {n_q, h_q, d}, nullptr);
  sat::Tensor lse = poisoned_output(in_, SA_DTYPE_F32, {n_q, h_q}, nullptr);
  sat::Tensor indices;
  const bool sparse = in_.chance(50);
  if (sparse) {
    const int64_t width = in_.range(1, 6);
    indices = sat::Tensor(SA_DTYPE_I32, {n_q, main_.h_kv(), width});
    for (int64_t e = 0; e < indices.numel(); ++e)
      indices.set({e / (main_.h_kv() * width), (e / width) % main_.h_kv(), e % width}, double(S ? rng_.below(S) : -1));
  }
  sa_tensor *idx = sparse ? indices.t() : nullptr;
  sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
  std::vector<int64_t> qpos(size_t(std::max<int64_t>(n_q, 1)), 0), kpos(size_t(std::max<int64_t>(S, 1)), 0);
  sa_context *ctx = ctx_.get();
  std::vector<Mutation> m;
  auto add = [&](std::string name, std::vector<sa_status> want, std::function<void()> change) {
    m.push_back({std::move(name), std::move(want), [=, &kv, &o, &out, &lse]() {
                   change();
                   return sa_attend_paged(ctx, q, qs, &kv, idx, &o, out.t(), lse.t());
                 }});
  };
  m.push_back({"ctx NULL", {SA_ERR_NULL_POINTER}, [&] { return sa_attend_paged(nullptr, q, qs, &kv, idx, &o, out.t(), lse.t()); }});
  m.push_back({"kv NULL", {SA_ERR_NULL_POINTER}, [&] { return sa_attend_paged(ctx, q, qs, nullptr, idx, &o, out.t(), lse.t()); }});
  m.push_back({"q NULL", {SA_ERR_NULL_POINTER}, [&] { return sa_attend_paged(ctx, nullptr, qs, &kv, idx, &o, out.t(), lse.t()); }});
  m.push_back({"out NULL", {SA_ERR_NULL_POINTER}, [&] { return sa_attend_paged(ctx, q, qs, &kv, idx, &o, nullptr, lse.t()); }});
  add("kv struct_size 0", {SA_ERR_STRUCT_SIZE}, [&] { kv.struct_size = 0; });
  add("kv->k rank 2", {SA_ERR_SHAPE}, [&] { kv.k.rank = 2; });
  add("kv->v dtype differs", {SA_ERR_DTYPE}, [&] { kv.v.dtype = other_float(kv.k.dtype, kv.k.dtype); });
  add("kv->v rows + 1", {SA_ERR_SHAPE}, [&] { kv.v.shape[0] += 1; });
  add("q head_dim + 1", {SA_ERR_SHAPE}, [=] { q->shape[2] += 1; });
  if (!pc.rank3) {
    add("kv->page_table absent", {SA_ERR_NULL_POINTER}, [&] { kv.page_table = sa_tensor{}; });
    add("page_size 0", {SA_ERR_SHAPE}, [&] { kv.k.shape[1] = kv.v.shape[1] = 0; });
  }
  if (pc.has_table) {
    add("kv->seq_lens absent", {SA_ERR_NULL_POINTER}, [&] { kv.seq_lens = sa_tensor{}; });
    add("kv->seq_lens of B + 1", {SA_ERR_SHAPE}, [&] { kv.seq_lens.shape[0] += 1; });
    const int64_t b = in_.range(0, pc.B - 1);
    add("kv->seq_lens[" + std::to_string(b) + "] = -1", {SA_ERR_OUT_OF_RANGE}, [&pc, b] { pc.lens.set({b}, -1); });
    add("kv->seq_lens[" + std::to_string(b) + "] past its page table row", {SA_ERR_SHAPE},
        [&pc, b] { pc.lens.set({b}, double(pc.max_pages * pc.P + 1)); });
    std::vector<int64_t> used;
    for (int64_t s = 0; s < pc.B; ++s)
      if (pc.len[size_t(s)] > 0) used.push_back(s);
    if (!used.empty()) {
      const int64_t u = in_.pick(used), j = in_.range(0, int64_t(pc.pages[size_t(u)].size()) - 1);
      const int64_t bad = in_.pick({pc.num_pages, int64_t(-1), int64_t(INT32_MAX)});
      add("page_table[" + std::to_string(u) + "][" + std::to_string(j) + "] = " + std::to_string(bad),
          {SA_ERR_OUT_OF_RANGE}, [&pc, u, j, bad] { pc.table.set({u, j}, double(bad)); });
    }
  }
  if (pc.has_starts) {
    add("query_starts of B + 2", {SA_ERR_SHAPE}, [=] { const_cast<sa_tensor *>(qs)->shape[0] += 1; });
    add("query_starts[0] = 1", {SA_ERR_INVALID_ARGUMENT}, [&pc] { pc.query_starts.set({0}, 1); });
    if (n_q >= 1) add("query_starts[B] = n_q - 1", {SA_ERR_INVALID_ARGUMENT}, [&pc, n_q] { pc.query_starts.set({pc.B}, double(n_q - 1)); });
    if (pc.B >= 2) add("query_starts[1] past n_q", {SA_ERR_INVALID_ARGUMENT}, [&pc, n_q] { pc.query_starts.set({1}, double(n_q + 1)); });
    if (n_q != pc.B)
      m.push_back({"no query_starts with n_q != B", {SA_ERR_SHAPE},
                   [&] { return sa_attend_paged(ctx, q, nullptr, &kv, idx, &o, out.t(), lse.t()); }});
  }
  if (pc.has_slot_pos) {
    add("slot_positions one short", {SA_ERR_SHAPE}, [&] { kv.slot_positions.shape[0] -= 1; });
    if (S >= 1) {
      const int64_t s = in_.range(0, S - 1);
      add("slot_positions[" + std::to_string(s) + "] = -2", {SA_ERR_INVALID_ARGUMENT}, [&pc, s] { pc.slot_pos.set({s}, -2); });
    }
    add("causal with slot_positions and no query_positions", {SA_ERR_INVALID_ARGUMENT}, [&] { o.causal = 1; });
  }
  add("key_positions given", {SA_ERR_INVALID_ARGUMENT}, [&] { o.key_positions = kpos.data(); });
  // Per-KV-head positions [H_kv, slots]: instead of slot_positions, in range, with a per-head mass.
  std::vector<int64_t> &hpos = pc.head_positions;
  sat::Tensor shared_mass = poisoned_output(in_, SA_DTYPE_F32, {S}, nullptr);
  if (pc.has_slot_pos)
    add("head_key_positions and slot_positions", {SA_ERR_INVALID_ARGUMENT}, [&] { o.head_key_positions = hpos.data(); });
  if (S >= 1) {
    const int64_t j = in_.range(0, main_.h_kv() * S - 1);
    const int64_t bad = in_.pick({int64_t(-2), INT64_MIN, SA_MAX_POSITION + 1, INT64_MAX});
    add("head_key_positions[" + std::to_string(j) + "] = " + std::to_string(bad), {SA_ERR_INVALID_ARGUMENT},
        [&, j, bad] {
          kv.slot_positions = sa_tensor{};
          hpos[size_t(j)] = bad;
          o.head_key_positions = hpos.data();
        });
  }
  add("slot_mass [slots] with head_key_positions", {SA_ERR_SHAPE}, [&] {
    kv.slot_positions = sa_tensor{};
    o.head_key_positions = hpos.data();
    o.slot_mass = shared_mass.t();
  });
  if (n_q >= 1)
    add("query_positions[0] = INT64_MIN", {SA_ERR_INVALID_ARGUMENT}, [&] {
      qpos[0] = INT64_MIN;
      o.query_positions = qpos.data();
    });
  if (sparse && indices.numel() > 0) {
    const int64_t bad = in_.pick({S, int64_t(-2)});
    add("indices[0][0][0] = " + std::to_string(bad), {SA_ERR_OUT_OF_RANGE}, [&indices, bad] { indices.set({0, 0, 0}, double(bad)); });
  }
  report_.say("paged call ", sparse ? "with index lists" : "dense");
  expect_refused(m, {&out, &lse, &shared_mass}, "sa_attend_paged");
}

void Scenario::bad_select_batch(const std::vector<FuzzIndex *> &seqs, PagedCase pc) {
  std::vector<sa_index *> handles;
  bool any_borrow = false;
  for (FuzzIndex *fx : seqs) {
    handles.push_back(fx->ix());
    any_borrow |= fx->borrows();
  }
  SelectCase c;
  c.q = pc.q;
  random_select_options(c, main_, true);
  c.opt.mass_target = 0;
  c.pass_keys = false;
  c.bind();
  const int64_t B = pc.B;
  sa_paged_kv kv = pc.desc();
  const sa_tensor *qs = pc.has_starts ? pc.query_starts.t() : nullptr;
  sa_select_options &o = c.opt;
  sa_tensor *out = c.out.t();
  std::vector<Mutation> m;
  auto call_with = [&](int64_t n, sa_index *const *ixs, const sa_paged_kv *k) {
    return sa_select_batch(ixs, n, c.q.t(), qs, &o, k, out);
  };
  m.push_back({"n_seqs -1", {SA_ERR_INVALID_ARGUMENT}, [&] { return call_with(-1, handles.data(), &kv); }});
  if (B >= 1) {
    m.push_back({"indexes NULL", {SA_ERR_NULL_POINTER}, [&] { return call_with(B, nullptr, &kv); }});
    const int64_t b = in_.range(0, B - 1);
    m.push_back({"indexes[" + std::to_string(b) + "] NULL", {SA_ERR_NULL_POINTER}, [&, b] {
                   handles[size_t(b)] = nullptr;
                   return call_with(B, handles.data(), &kv);
                 }});
    m.push_back({"n_seqs one less than kv holds", {SA_ERR_SHAPE}, [&] { return call_with(B - 1, handles.data(), &kv); }});
  }
  m.push_back({"segments in a batch", {SA_ERR_INVALID_ARGUMENT}, [&] {
                 o.query_segments = c.qseg.data();
                 o.key_segments = c.kseg.data();
                 return call_with(B, handles.data(), &kv);
               }});
  m.push_back({"width one short", {SA_ERR_SHAPE}, [&] {
                 out->shape[2] = int64_t(o.sinks) + o.window + o.top_k - 1;
                 return call_with(B, handles.data(), &kv);
               }});
  m.push_back({"top_k 0", {SA_ERR_INVALID_ARGUMENT}, [&] {
                 o.top_k = 0;
                 return call_with(B, handles.data(), &kv);
               }});
  m.push_back({"indices dtype i64", {SA_ERR_DTYPE}, [&] {
                 out->dtype = SA_DTYPE_I64;
                 return call_with(B, handles.data(), &kv);
               }});
  if (any_borrow)
    m.push_back({"borrowing indexes without kv", {SA_ERR_NULL_POINTER}, [&] { return call_with(B, handles.data(), nullptr); }});
  if (pc.has_table)
    for (int64_t b = 0; b < B; ++b)
      if (seqs[size_t(b)]->size() >= 1) {
        m.push_back({"kv->seq_lens[" + std::to_string(b) + "] shorter than its index", {SA_ERR_SHAPE}, [&, b] {
                       pc.lens.set({b}, double(seqs[size_t(b)]->size() - 1));
                       return call_with(B, handles.data(), &kv);
                     }});
        break;
      }
  if (pc.has_starts && pc.q.dim(0) >= 1)
    m.push_back({"query_starts not ending at n_q", {SA_ERR_INVALID_ARGUMENT}, [&] {
                   pc.query_starts.set({B}, double(pc.q.dim(0) - 1));
                   return call_with(B, handles.data(), &kv);
                 }});
  expect_refused(m, {&c.out}, "sa_select_batch");
}

}  // namespace apifuzz
