// Calls from the host's own threads: an OpenMP parallel region of the host (as ggml and
// llama.cpp run their CPU threads) and a std::thread pool, each thread calling sa_select for
// every selector kind and sa_attend (dense and sparse, with and without slot_mass in its own
// buffer), on one shared context and index set or on per-thread ones, with contexts of 1 and
// 2 threads. Every output must equal, bit for bit, a serial run on the main thread. Fixed-budget
// eviction loops (sa_cache_evict, one set of tokens and per KV head, pooled scores or not, with
// sa_attend's slot_mass) likewise; and the calls of per-KV-head eviction (indexes refilled with
// sa_index_update_heads, their clones, sa_attend with head_key_positions), a borrow_keys index,
// sa_select_batch and sa_attend_paged over a paged cache. Also the limit on a context's thread
// count.
#include <gtest/gtest.h>
#include <omp.h>

#include <climits>
#include <functional>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "build_features.hpp"
#include "test_util.hpp"
#include "weights_file.hpp"

namespace {

using sat::Rng;
using sat::Tensor;

constexpr int kHostThreads = 8;
constexpr int64_t kHkv = 2, kHq = 4, kD = 32;
// Attend reads kN keys (long enough for decode to split its lists); indexes hold the first
// kIndexN (each build is per thread in half the cases: kept small for the scalar and ASan runs).
constexpr int64_t kN = 1024, kIndexN = 384;
constexpr int32_t kTopK = 16, kWindow = 8, kSinks = 2;
constexpr int64_t kWidth = kTopK + kWindow + kSinks;

const std::vector<sa_selector_kind> kKinds = sat::built_kinds(
    {SA_SELECTOR_EXACT, SA_SELECTOR_PAGE, SA_SELECTOR_LSH, SA_SELECTOR_HNSW, SA_SELECTOR_LEARNED, SA_SELECTOR_INDEXER});

// Everything the calls read, made once on the main thread and only read afterwards.
struct Inputs {
  Tensor keys, values;          // [kN, kHkv, kD] F16
  std::vector<Tensor> queries;  // a decode step [1, kHq, kD] and a prefill block [8, kHq, kD]
  std::vector<Tensor> indices;  // the exact selection of each query batch, for sparse attend
  std::string learned_path, indexer_path;
};

sa_index_options options_for(sa_selector_kind kind, const Inputs &in) {
  sa_index_options o = SA_INDEX_OPTIONS_INIT;
  o.kind = kind;
  o.num_kv_heads = int32_t(kHkv);
  o.head_dim = int32_t(kD);
  o.dtype = SA_DTYPE_F16;
  o.hnsw.ef_construction = 16;
  o.hnsw.ef_search = 32;  // 384 visible keys: the graph is searched, not bypassed
  if (kind == SA_SELECTOR_LEARNED) o.learned.weights_path = in.learned_path.c_str();
  if (kind == SA_SELECTOR_INDEXER) o.learned.weights_path = in.indexer_path.c_str();
  o.learned.layer = 0;
  return o;
}

sa_select_options select_options() {
  sa_select_options o = SA_SELECT_OPTIONS_INIT;
  o.top_k = kTopK, o.window = kWindow, o.sinks = kSinks;
  return o;
}

// What one run of every call produced, in call order; compared byte for byte.
struct Outcome {
  std::vector<std::string> labels;
  std::vector<std::vector<unsigned char>> bytes;
  std::vector<std::string> failures;
  int max_threads_before = 0, max_threads_after = 0;  // the host's omp_get_max_threads()

  // This run against the serial one: its failures reported, else the same calls, the same bytes.
  void expect_as(const Outcome &serial) const {
    for (const std::string &f : failures) ADD_FAILURE() << f;
    if (!failures.empty()) return;
    ASSERT_EQ(labels, serial.labels);
    for (size_t k = 0; k < bytes.size(); ++k) EXPECT_TRUE(bytes[k] == serial.bytes[k]) << labels[k];
  }
  void fail(const std::string &label, sa_status s) {
    failures.push_back(label + ": " + sa_status_name(s) + ": " + sa_last_error());
  }
  void record(const std::string &label, sa_status s, std::initializer_list<Tensor *> outs) {
    if (s != SA_OK) return fail(label, s);
    std::vector<unsigned char> b;
    for (Tensor *t : outs) {
      const unsigned char *p = static_cast<const unsigned char *>(t->data());
      b.insert(b.end(), p, p + size_t(t->numel()) * sat::dtype_bytes(t->dtype()));
    }
    labels.push_back(label);
    bytes.push_back(std::move(b));
  }
};

// A context of `threads` and one index per kind over the first kIndexN keys, appended in two
// parts (projections by GEMM, then by the small-batch loop). Failures go to `o`; nullptrs are
// then left.
struct Indexes {
  sat::ContextPtr ctx;
  std::vector<sat::IndexPtr> ix;
};

Indexes build(int32_t threads, const Inputs &in, Outcome &o) {
  Indexes r;
  sa_context_options co = SA_CONTEXT_OPTIONS_INIT;
  co.threads = threads;
  sa_context *c = nullptr;
  sa_status s = sa_context_create(&co, &c);
  if (s != SA_OK) {
    o.fail("context", s);
    return r;
  }
  r.ctx.reset(c);
  Tensor head = in.keys, tail = in.keys;  // rows [0, 360) and [360, kIndexN) as views of copies
  head.t()->shape[0] = 360;
  tail.t()->shape[0] = kIndexN - 360;
  tail.t()->data = static_cast<char *>(tail.data()) + 360 * kHkv * kD * 2;
  for (sa_selector_kind kind : kKinds) {
    const std::string label = "index kind " + std::to_string(int(kind));
    const sa_index_options opt = options_for(kind, in);
    sa_index *raw = nullptr;
    s = sa_index_create(r.ctx.get(), &opt, &raw);
    if (s != SA_OK) {
      o.fail(label, s);
      r.ix.emplace_back();
      continue;
    }
    r.ix.emplace_back(raw);
    if ((s = sa_index_append(raw, head.t())) != SA_OK || (s = sa_index_append(raw, tail.t())) != SA_OK) o.fail(label, s);
  }
  return r;
}

// Every call, in a fixed order, into buffers of this run (slot_mass included).
void run_all(sa_context *ctx, const std::vector<sat::IndexPtr> &ix, const Inputs &in, Outcome &o) {
  if (!ctx || ix.size() != std::size(kKinds)) return o.failures.push_back("no context or indexes");
  const sa_select_options so = select_options();
  for (size_t k = 0; k < ix.size(); ++k)
    for (size_t b = 0; b < in.queries.size(); ++b) {
      const std::string label = "select kind " + std::to_string(int(kKinds[k])) + " batch " + std::to_string(b);
      if (!ix[k]) {
        o.failures.push_back(label + ": no index");
        continue;
      }
      Tensor out(SA_DTYPE_I32, {in.queries[b].dim(0), kHkv, kWidth});
      o.record(label, sa_select(ix[k].get(), in.queries[b].t(), &so, out.t()), {&out});
    }
  for (size_t b = 0; b < in.queries.size(); ++b) {
    const int64_t n_q = in.queries[b].dim(0);
    for (int sparse = 0; sparse < 2; ++sparse)
      for (int mass = 0; mass < (sparse ? 3 : 2); ++mass) {  // none, per KV head [kHkv, kN], shared [kN]
        const std::string label = std::string(sparse ? "sparse" : "dense") + " attend, mass " + std::to_string(mass) +
                                  ", batch " + std::to_string(b);
        Tensor out(SA_DTYPE_F32, {n_q, kHq, kD}), lse(SA_DTYPE_F32, {n_q, kHq});
        Tensor slot_mass = mass == 1 ? Tensor(SA_DTYPE_F32, {kHkv, kN}) : Tensor(SA_DTYPE_F32, {kN});
        slot_mass.set_values(std::vector<double>(size_t(slot_mass.numel()), 1.0));  // decayed, then added to
        sa_attend_options ao = SA_ATTEND_OPTIONS_INIT;
        ao.causal = 1;
        if (mass) ao.slot_mass = slot_mass.t(), ao.mass_decay = 0.5f;
        const sa_status s = sa_attend(ctx, in.queries[b].t(), in.keys.t(), in.values.t(),
                                      sparse ? in.indices[b].t() : nullptr, &ao, out.t(), lse.t());
        if (mass) o.record(label, s, {&out, &lse, &slot_mass});
        else o.record(label, s, {&out, &lse});
      }
  }
}

Inputs make_inputs() {
  Inputs in;
  Rng rng(1207);
  in.keys = sat::random_tensor(rng, SA_DTYPE_F16, {kN, kHkv, kD});
  in.values = sat::random_tensor(rng, SA_DTYPE_F16, {kN, kHkv, kD});
  for (int64_t n_q : {int64_t(1), int64_t(8)})  // per-query scoring and the GEMM paths
    in.queries.push_back(sat::random_tensor(rng, SA_DTYPE_F32, {n_q, kHq, kD}, {}, 2.0));
  const int64_t S = 8, NI = 2;
  in.learned_path = wf::write_file(wf::file_bytes({
      {"layers.0.q_proj", "F32", {kHkv, S, kD}, wf::random_values(rng, size_t(kHkv * S * kD), 0.3), ""},
      {"layers.0.k_proj", "F32", {S, kD}, wf::random_values(rng, size_t(S * kD), 0.3), ""},
  }), "learned");
  in.indexer_path = wf::write_file(wf::file_bytes({
      {"layers.0.indexer.q_proj", "F32", {NI, S, kHq * kD}, wf::random_values(rng, size_t(NI * S * kHq * kD), 0.2), ""},
      {"layers.0.indexer.head_weights", "F32", {NI, kHq * kD}, wf::random_values(rng, size_t(NI * kHq * kD), 0.2), ""},
      {"layers.0.indexer.k_proj", "F32", {S, kHkv * kD}, wf::random_values(rng, size_t(S * kHkv * kD), 0.2), ""},
  }), "indexer");
  // Sparse attend reads the exact selection (made here, serially).
  auto ctx = sat::make_context(1);
  auto exact = sat::make_index(ctx.get(), int32_t(kHkv), int32_t(kD), SA_DTYPE_F16);
  EXPECT_SA_OK(sa_index_append(exact.get(), in.keys.t()));
  const sa_select_options so = select_options();
  for (const Tensor &q : in.queries) {
    in.indices.emplace_back(SA_DTYPE_I32, std::vector<int64_t>{q.dim(0), kHkv, kWidth});
    EXPECT_SA_OK(sa_select(exact.get(), q.t(), &so, in.indices.back().t()));
  }
  return in;
}

enum class Host { openmp, std_threads };

// fn(t) on kHostThreads host threads at once: the host's OpenMP team, or std::threads.
void on_host_threads(Host host, const std::function<void(int)> &fn, std::vector<int> &team_sizes) {
  team_sizes.assign(kHostThreads, 0);
  if (host == Host::openmp) {
#pragma omp parallel num_threads(kHostThreads)
    {
      const int t = omp_get_thread_num();
      team_sizes[size_t(t)] = omp_in_parallel() ? omp_get_num_threads() : 0;
      fn(t);
    }
  } else {
    std::vector<std::thread> pool;
    for (int t = 0; t < kHostThreads; ++t) pool.emplace_back([&, t] {
      team_sizes[size_t(t)] = kHostThreads;
      fn(t);
    });
    for (std::thread &th : pool) th.join();
  }
}

struct Case {
  const char *name;
  Host host;
  int32_t threads;  // the contexts' thread count
  bool shared;      // one context and index set for all host threads, else one per thread
};

class HostCalls : public ::testing::TestWithParam<Case> {};

TEST_P(HostCalls, MatchASerialRunBitForBit) {
  const Case c = GetParam();
  const Inputs in = make_inputs();
  Outcome serial;
  {
    Indexes ref = build(1, in, serial);
    run_all(ref.ctx.get(), ref.ix, in, serial);
  }
  ASSERT_TRUE(serial.failures.empty()) << serial.failures.front();
  ASSERT_EQ(serial.labels.size(), kKinds.size() * 2u + 2u * 5u);  // a selection per kind and batch, 5 attends per batch

  Outcome shared_setup;
  Indexes shared;
  if (c.shared) {
    shared = build(c.threads, in, shared_setup);
    ASSERT_TRUE(shared_setup.failures.empty()) << shared_setup.failures.front();
  }
  std::vector<Outcome> got(kHostThreads);
  std::vector<int> team;
  on_host_threads(c.host, [&](int t) {
    Outcome &o = got[size_t(t)];
    o.max_threads_before = omp_get_max_threads();
    Outcome setup;
    Indexes own;
    if (!c.shared) own = build(c.threads, in, setup);  // appends inside the host's region too
    const Indexes &use = c.shared ? shared : own;
    for (int rep = 0; rep < 2; ++rep) {  // a second round reuses whatever the first left behind
      Outcome round = setup;
      run_all(use.ctx.get(), use.ix, in, round);
      if (rep == 0) {
        o.labels = round.labels, o.bytes = round.bytes, o.failures = round.failures;
      } else if (round.bytes != o.bytes) {
        o.failures.push_back("the second round differs from the first");
      }
    }
    o.max_threads_after = omp_get_max_threads();
  }, team);

  for (int t = 0; t < kHostThreads; ++t) {
    SCOPED_TRACE(testing::Message() << "host thread " << t);
    EXPECT_EQ(team[size_t(t)], kHostThreads) << "the host region must really be parallel";
    const Outcome &o = got[size_t(t)];
    EXPECT_EQ(o.max_threads_after, o.max_threads_before) << "the host's OpenMP setting changed";
    o.expect_as(serial);
  }
}

INSTANTIATE_TEST_SUITE_P(
    HostThreads, HostCalls,
    ::testing::Values(Case{"OpenMpRegion_Threads1_Shared", Host::openmp, 1, true},
                      Case{"OpenMpRegion_Threads2_Shared", Host::openmp, 2, true},
                      Case{"OpenMpRegion_Threads1_PerThread", Host::openmp, 1, false},
                      Case{"OpenMpRegion_Threads2_PerThread", Host::openmp, 2, false},
                      Case{"StdThreads_Threads1_Shared", Host::std_threads, 1, true},
                      Case{"StdThreads_Threads2_Shared", Host::std_threads, 2, true},
                      Case{"StdThreads_Threads1_PerThread", Host::std_threads, 1, false},
                      Case{"StdThreads_Threads2_PerThread", Host::std_threads, 2, false}),
    [](const ::testing::TestParamInfo<Case> &info) { return std::string(info.param.name); });

// A fixed-budget decode loop as a host runs it per sequence: every step sa_cache_evict (one set of
// tokens, or per KV head; scores pooled over `pool` positions or not), the token's K/V into the freed slot(s), then sa_attend with slot_mass
// (and per-head positions) over the cache. Returns every freed slot, the final positions and the
// slot mass, as bytes.
std::vector<unsigned char> evict_loop(sa_context *ctx, const Inputs &in, bool per_head, int64_t pool,
                                      std::string &failure) {
  constexpr int64_t B = 96, T = 200, row = kHkv * kD;
  const int64_t rows = per_head ? kHkv : 1;
  std::vector<uint16_t> kc(size_t(B * row)), vc(size_t(B * row));
  std::vector<int64_t> pos(size_t(rows * B), -1), head_pos, n_freed(static_cast<size_t>(rows));
  std::vector<float> mass(size_t(kHkv * B), 0.f), out(size_t(kHq * kD));
  std::vector<int32_t> freed(size_t(rows * 2)), log;
  auto tensor = [](void *data, sa_dtype dt, std::initializer_list<int64_t> shape) {
    sa_tensor t{};
    t.data = data, t.dtype = dt, t.device = SA_DEVICE_CPU, t.rank = int32_t(shape.size());
    int i = 0;
    for (int64_t x : shape) t.shape[i++] = x;
    return t;
  };
  sa_evict_options eo = SA_EVICT_OPTIONS_INIT;
  eo.budget = B, eo.sinks = 2, eo.window = 8, eo.per_head = per_head, eo.score_pool = pool;
  const uint16_t *keys = static_cast<const uint16_t *>(const_cast<Tensor &>(in.keys).data());
  const uint16_t *values = static_cast<const uint16_t *>(const_cast<Tensor &>(in.values).data());
  const uint16_t *queries = static_cast<const uint16_t *>(const_cast<Tensor &>(in.queries[1]).data());
  int64_t filled = 0;
  for (int64_t t = 0; t < T; ++t) {
    sa_tensor sc = tensor(mass.data(), SA_DTYPE_F32, {kHkv, B});
    sa_tensor ps = per_head ? tensor(pos.data(), SA_DTYPE_I64, {kHkv, B}) : tensor(pos.data(), SA_DTYPE_I64, {B});
    sa_tensor fr = per_head ? tensor(freed.data(), SA_DTYPE_I32, {kHkv, 2}) : tensor(freed.data(), SA_DTYPE_I32, {2});
    sa_status st = sa_cache_evict(ctx, &eo, &sc, &ps, &fr, n_freed.data());
    if (st != SA_OK) return failure = std::string("sa_cache_evict: ") + sa_last_error(), std::vector<unsigned char>{};
    for (int64_t h = 0; h < rows; ++h) {
      const int32_t s = freed[size_t(h * 2)];
      log.push_back(s);
      const int64_t h0 = per_head ? h : 0, nh = per_head ? 1 : kHkv;
      std::copy_n(keys + t * row + h0 * kD, nh * kD, &kc[size_t(s * row + h0 * kD)]);
      std::copy_n(values + t * row + h0 * kD, nh * kD, &vc[size_t(s * row + h0 * kD)]);
      for (int64_t x = h0; x < h0 + nh; ++x) mass[size_t(x * B + s)] = 0.f;
      pos[size_t(h * B + s)] = t;
      filled = std::max<int64_t>(filled, s + 1);
    }
    sa_attend_options ao = SA_ATTEND_OPTIONS_INIT;
    if (per_head) {
      head_pos.resize(size_t(kHkv * filled));
      for (int64_t h = 0; h < kHkv; ++h) std::copy_n(&pos[size_t(h * B)], filled, &head_pos[size_t(h * filled)]);
      ao.head_key_positions = head_pos.data();
    } else {
      ao.key_positions = pos.data();
    }
    sa_tensor m = tensor(mass.data(), SA_DTYPE_F32, {kHkv, filled});
    m.strides[0] = B, m.strides[1] = 1;
    ao.slot_mass = &m;
    sa_tensor q = tensor(const_cast<uint16_t *>(queries + (t % 8) * kHq * kD), SA_DTYPE_F16, {1, kHq, kD});
    sa_tensor k = tensor(kc.data(), SA_DTYPE_F16, {filled, kHkv, kD}), v = tensor(vc.data(), SA_DTYPE_F16, {filled, kHkv, kD});
    sa_tensor o = tensor(out.data(), SA_DTYPE_F32, {1, kHq, kD});
    st = sa_attend(ctx, &q, &k, &v, nullptr, &ao, &o, nullptr);
    if (st != SA_OK) return failure = std::string("sa_attend: ") + sa_last_error(), std::vector<unsigned char>{};
  }
  std::vector<unsigned char> bytes;
  auto add = [&](const void *p, size_t n) {
    bytes.insert(bytes.end(), static_cast<const unsigned char *>(p), static_cast<const unsigned char *>(p) + n);
  };
  add(log.data(), log.size() * sizeof(int32_t));
  add(pos.data(), pos.size() * sizeof(int64_t));
  add(mass.data(), mass.size() * sizeof(float));
  return bytes;
}

// Eviction loops (one set, per KV head; pooled scores or not) on every host thread at once, on a
// shared context or one per thread, give exactly the serial run's slots, positions and slot mass.
TEST_P(HostCalls, EvictionLoopsMatchASerialRunBitForBit) {
  const Case c = GetParam();
  const Inputs in = make_inputs();
  std::string failure;
  constexpr int64_t kPool = 3;
  std::vector<unsigned char> serial[4];  // [per_head * 2 + pooled]
  {
    auto ctx = sat::make_context(1);
    for (int v = 0; v < 4; ++v) {
      serial[v] = evict_loop(ctx.get(), in, v / 2 == 1, v % 2 ? kPool : 0, failure);
      ASSERT_EQ(failure, "");
    }
  }
  ASSERT_NE(serial[0], serial[2]) << "per-head eviction kept the single set's tokens";
  ASSERT_NE(serial[0], serial[1]) << "pooling changed nothing: the loop does not test it";
  sat::ContextPtr shared = sat::make_context(c.threads);
  std::vector<std::string> failures(kHostThreads);
  std::vector<int> team;
  on_host_threads(c.host, [&](int t) {
    sat::ContextPtr own;
    if (!c.shared) own = sat::make_context(c.threads);
    sa_context *ctx = c.shared ? shared.get() : own.get();
    for (int rep = 0; rep < 4; ++rep) {
      const int v = (t + rep) % 4;
      std::string f;
      if (evict_loop(ctx, in, v / 2 == 1, v % 2 ? kPool : 0, f) != serial[v])
        failures[size_t(t)] += (f.empty() ? "differs" : f) + "; ";
    }
  }, team);
  for (int t = 0; t < kHostThreads; ++t) {
    EXPECT_EQ(team[size_t(t)], kHostThreads) << "the host region must really be parallel";
    EXPECT_EQ(failures[size_t(t)], "") << "host thread " << t;
  }
}

// Per-KV-head eviction's index state, borrowed keys and the batched calls over a paged cache,
// from host threads: the host's cache after one step of per-head refills (each KV head's own
// slots and positions), the indexes that learned it through sa_index_update_heads (exact, page,
// page with borrow_keys), and a batch of two sequences in a paged cache (that cache, then the
// first kShortN keys) with per-head positions for every physical slot.
constexpr int64_t kRefill = 8, kShortN = 200, kPage = 16;
constexpr int64_t kPages0 = kIndexN / kPage, kPages1 = (kShortN + kPage - 1) / kPage, kPages = kPages0 + kPages1 + 1;
constexpr int64_t kSlots = kPages * kPage;

struct HeadInputs {
  std::vector<int32_t> slots;      // [kHkv][kRefill]: head h's refilled slots
  std::vector<int64_t> positions;  // [kHkv][kRefill]: the positions they now hold
  Tensor refill;                   // [kRefill, kHkv, kD]: the keys refilled (row i: slot i of each head)
  Tensor cache_k, cache_v;         // [kIndexN, kHkv, kD] after the refill
  std::vector<int64_t> head_pos;   // [kHkv][kIndexN]
  Tensor pages_k, pages_v;         // [kPages, kPage, kHkv, kD]: sequence 0's pages backwards, then 1's
  Tensor table, lens, starts;      // I32 [2, kPages0], I64 [2], I32 [3]
  std::vector<int64_t> slot_pos;   // [kHkv][kSlots]; -1 in the spare page
  Tensor batch_q;                  // [9, kHq, kD]: 8 queries of sequence 0, then 1 of sequence 1
};

HeadInputs make_head_inputs(const Inputs &in) {
  HeadInputs h;
  Rng rng(4711);
  h.refill = sat::random_tensor(rng, SA_DTYPE_F16, {kRefill, kHkv, kD});
  h.cache_k = Tensor(SA_DTYPE_F16, {kIndexN, kHkv, kD});
  h.cache_v = Tensor(SA_DTYPE_F16, {kIndexN, kHkv, kD});
  for (int64_t t = 0; t < kIndexN; ++t)
    for (int64_t hk = 0; hk < kHkv; ++hk)
      for (int64_t x = 0; x < kD; ++x) {
        h.cache_k.set({t, hk, x}, in.keys.get({t, hk, x}));
        h.cache_v.set({t, hk, x}, in.values.get({t, hk, x}));
      }
  h.head_pos.resize(size_t(kHkv * kIndexN));
  for (int64_t hk = 0; hk < kHkv; ++hk)
    for (int64_t t = 0; t < kIndexN; ++t) h.head_pos[size_t(hk * kIndexN + t)] = t;
  for (int64_t hk = 0; hk < kHkv; ++hk)
    for (int64_t i = 0; i < kRefill; ++i) {
      const int32_t slot = int32_t((i * 37 + hk * 11 + 5) % kIndexN);  // distinct within a head
      const int64_t pos = kIndexN + i * kHkv + hk;                     // another token per head
      h.slots.push_back(slot);
      h.positions.push_back(pos);
      h.head_pos[size_t(hk * kIndexN + slot)] = pos;
      for (int64_t x = 0; x < kD; ++x) {
        h.cache_k.set({slot, hk, x}, h.refill.get({i, hk, x}));
        h.cache_v.set({slot, hk, x}, rng.normal());
      }
    }
  // Token t of sequence 0 in page kPages0 - 1 - t / kPage; of sequence 1 in page kPages0 + t / kPage.
  h.pages_k = Tensor(SA_DTYPE_F16, {kPages, kPage, kHkv, kD});
  h.pages_v = Tensor(SA_DTYPE_F16, {kPages, kPage, kHkv, kD});
  h.slot_pos.assign(size_t(kHkv * kSlots), -1);
  h.table = Tensor(SA_DTYPE_I32, {2, kPages0});
  for (int64_t j = 0; j < kPages0; ++j) {
    h.table.set({0, j}, double(kPages0 - 1 - j));
    h.table.set({1, j}, j < kPages1 ? double(kPages0 + j) : -7.0);  // past its length: never read
  }
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < (b ? kShortN : kIndexN); ++t) {
      const int64_t page = b ? kPages0 + t / kPage : kPages0 - 1 - t / kPage, off = t % kPage;
      for (int64_t hk = 0; hk < kHkv; ++hk) {
        h.slot_pos[size_t(hk * kSlots + page * kPage + off)] = b ? t : h.head_pos[size_t(hk * kIndexN + t)];
        for (int64_t x = 0; x < kD; ++x) {
          h.pages_k.set({page, off, hk, x}, b ? in.keys.get({t, hk, x}) : h.cache_k.get({t, hk, x}));
          h.pages_v.set({page, off, hk, x}, b ? in.values.get({t, hk, x}) : h.cache_v.get({t, hk, x}));
        }
      }
    }
  h.lens = sat::tensor_of(SA_DTYPE_I64, {2}, {double(kIndexN), double(kShortN)});
  h.starts = sat::tensor_of(SA_DTYPE_I32, {3}, {0, 8, 9});
  h.batch_q = Tensor(SA_DTYPE_F32, {9, kHq, kD});
  for (int64_t i = 0; i < 9; ++i)
    for (int64_t g = 0; g < kHq; ++g)
      for (int64_t x = 0; x < kD; ++x)
        h.batch_q.set({i, g, x}, i < 8 ? in.queries[1].get({i, g, x}) : in.queries[0].get({0, g, x}));
  return h;
}

// The indexes of one run: exact, page and borrowing page, refilled per head; and the page index
// of the batch's second sequence.
struct HeadIndexes {
  sat::ContextPtr ctx;
  std::vector<sat::IndexPtr> per_head;  // exact, page, page with borrow_keys
  sat::IndexPtr second;
};

HeadIndexes build_heads(int32_t threads, const Inputs &in, const HeadInputs &h, Outcome &o) {
  HeadIndexes r;
  r.ctx = sat::make_context(threads);
  if (!r.ctx) {
    o.failures.push_back("context");
    return r;
  }
  Tensor first = in.keys;
  first.t()->shape[0] = kIndexN;
  for (int v = 0; v < 3; ++v) {
    sa_index_options opt = options_for(v == 0 ? SA_SELECTOR_EXACT : SA_SELECTOR_PAGE, in);
    opt.page.page_size = 16;
    opt.borrow_keys = v == 2;
    sa_index *raw = nullptr;
    sa_status s = sa_index_create(r.ctx.get(), &opt, &raw);
    if (s == SA_OK) r.per_head.emplace_back(raw);
    if (s == SA_OK && (s = sa_index_append(raw, first.t())) == SA_OK)
      s = sa_index_update_heads(raw, h.slots.data(), kRefill, h.refill.t(), h.positions.data());
    if (s != SA_OK) o.fail("per-head index " + std::to_string(v), s);
  }
  sa_index_options opt = options_for(SA_SELECTOR_PAGE, in);
  sa_index *raw = nullptr;
  sa_status s = sa_index_create(r.ctx.get(), &opt, &raw);
  if (s == SA_OK) r.second.reset(raw);
  Tensor short_keys = in.keys;
  short_keys.t()->shape[0] = kShortN;
  if (s != SA_OK || (s = sa_index_append(raw, short_keys.t())) != SA_OK) o.fail("second sequence's index", s);
  return r;
}

// Every call, in a fixed order, into buffers of this run.
void run_heads(const HeadIndexes &ix, const Inputs &in, const HeadInputs &h, Outcome &o) {
  if (!ix.ctx || ix.per_head.size() != 3 || !ix.second) return o.failures.push_back("no context or indexes");
  sa_context *ctx = ix.ctx.get();
  sa_select_options so = select_options();
  so.keys = h.cache_k.t();  // read by the borrowing index only
  std::vector<Tensor> exact_lists;
  for (size_t v = 0; v < ix.per_head.size(); ++v)
    for (size_t b = 0; b < in.queries.size(); ++b) {
      Tensor out(SA_DTYPE_I32, {in.queries[b].dim(0), kHkv, kWidth});
      o.record("per-head select " + std::to_string(v) + " batch " + std::to_string(b),
               sa_select(ix.per_head[v].get(), in.queries[b].t(), &so, out.t()), {&out});
      if (v == 0) exact_lists.push_back(out);
    }
  for (size_t v = 0; v < 2; ++v) {  // clones of the shared index, made while others select on it
    sa_index *copy = nullptr;
    sa_status s = sa_index_clone(ix.per_head[v].get(), &copy);
    sat::IndexPtr owned(s == SA_OK ? copy : nullptr);
    Tensor out(SA_DTYPE_I32, {in.queries[1].dim(0), kHkv, kWidth});
    if (s == SA_OK) s = sa_select(copy, in.queries[1].t(), &so, out.t());
    o.record("select on a clone of per-head index " + std::to_string(v), s, {&out});
  }
  for (size_t b = 0; b < in.queries.size(); ++b)
    for (int sparse = 0; sparse < 2; ++sparse) {
      const int64_t n_q = in.queries[b].dim(0);
      Tensor out(SA_DTYPE_F32, {n_q, kHq, kD}), lse(SA_DTYPE_F32, {n_q, kHq});
      Tensor mass = sat::tensor_of(SA_DTYPE_F32, {kHkv, kIndexN}, std::vector<double>(size_t(kHkv * kIndexN), 1.0));
      sa_attend_options ao = SA_ATTEND_OPTIONS_INIT;
      ao.causal = 1;
      ao.head_key_positions = h.head_pos.data();
      ao.slot_mass = mass.t();
      ao.mass_decay = 0.5f;
      const sa_tensor *lists = sparse && b < exact_lists.size() ? exact_lists[b].t() : nullptr;
      o.record(std::string(sparse ? "sparse" : "dense") + " attend, head positions, batch " + std::to_string(b),
               sa_attend(ctx, in.queries[b].t(), h.cache_k.t(), h.cache_v.t(), lists, &ao, out.t(), lse.t()),
               {&out, &lse, &mass});
    }
  sa_paged_kv kv = SA_PAGED_KV_INIT;
  kv.k = *h.pages_k.t();
  kv.v = *h.pages_v.t();
  kv.page_table = *h.table.t();
  kv.seq_lens = *h.lens.t();
  sa_index *const batch[2] = {ix.per_head[2].get(), ix.second.get()};  // the borrowing one reads kv->k
  Tensor physical(SA_DTYPE_I32, {9, kHkv, kWidth});
  sa_select_options bo = select_options();
  o.record("select_batch", sa_select_batch(batch, 2, h.batch_q.t(), h.starts.t(), &bo, &kv, physical.t()), {&physical});
  for (int sparse = 0; sparse < 2; ++sparse) {
    Tensor out(SA_DTYPE_F32, {9, kHq, kD}), lse(SA_DTYPE_F32, {9, kHq});
    Tensor mass = sat::tensor_of(SA_DTYPE_F32, {kHkv, kSlots}, std::vector<double>(size_t(kHkv * kSlots), 1.0));
    sa_attend_options ao = SA_ATTEND_OPTIONS_INIT;
    ao.causal = 1;
    ao.head_key_positions = h.slot_pos.data();
    ao.slot_mass = mass.t();
    o.record(std::string(sparse ? "sparse" : "dense") + " attend_paged, head positions",
             sa_attend_paged(ctx, h.batch_q.t(), h.starts.t(), &kv, sparse ? physical.t() : nullptr, &ao, out.t(),
                             lse.t()),
             {&out, &lse, &mass});
  }
}

// The per-head, borrowing and paged batch calls on every host thread at once (shared handles or
// one set per thread, built inside the host's threads then) give exactly the serial run's bytes.
TEST_P(HostCalls, PerHeadAndPagedCallsMatchASerialRunBitForBit) {
  const Case c = GetParam();
  const Inputs in = make_inputs();
  const HeadInputs h = make_head_inputs(in);
  Outcome serial;
  {
    HeadIndexes ref = build_heads(1, in, h, serial);
    run_heads(ref, in, h, serial);
  }
  ASSERT_TRUE(serial.failures.empty()) << serial.failures.front();
  ASSERT_EQ(serial.labels.size(), 3u * 2u + 2u + 2u * 2u + 1u + 2u);
  Outcome shared_setup;
  HeadIndexes shared;
  if (c.shared) {
    shared = build_heads(c.threads, in, h, shared_setup);
    ASSERT_TRUE(shared_setup.failures.empty()) << shared_setup.failures.front();
  }
  std::vector<Outcome> got(kHostThreads);
  std::vector<int> team;
  on_host_threads(c.host, [&](int t) {
    Outcome &o = got[size_t(t)];
    HeadIndexes own;
    if (!c.shared) own = build_heads(c.threads, in, h, o);
    for (int rep = 0; rep < 2; ++rep) {
      Outcome round;
      run_heads(c.shared ? shared : own, in, h, round);
      if (rep == 0) o.labels = round.labels, o.bytes = round.bytes;
      else if (round.bytes != o.bytes) o.failures.push_back("the second round differs from the first");
      o.failures.insert(o.failures.end(), round.failures.begin(), round.failures.end());
    }
  }, team);
  for (int t = 0; t < kHostThreads; ++t) {
    SCOPED_TRACE(testing::Message() << "host thread " << t);
    EXPECT_EQ(team[size_t(t)], kHostThreads) << "the host region must really be parallel";
    got[size_t(t)].expect_as(serial);
  }
}

// A context's thread count is at most 1024: more is refused, with a message naming the limit
// (a million threads used to crash inside the OpenMP runtime). 1024 is accepted (no work runs).
TEST(HostThreads, ThreadCountsAboveTheLimitAreRefused) {
  for (int32_t threads : {1025, 1000000, INT32_MAX}) {
    sa_context_options o = SA_CONTEXT_OPTIONS_INIT;
    o.threads = threads;
    sa_context *ctx = nullptr;
    EXPECT_SA_ERR(SA_ERR_INVALID_ARGUMENT, sa_context_create(&o, &ctx));
    EXPECT_EQ(ctx, nullptr);
    EXPECT_NE(std::string(sa_last_error()).find("1024"), std::string::npos) << sa_last_error();
    EXPECT_NE(std::string(sa_last_error()).find("threads"), std::string::npos) << sa_last_error();
  }
  auto ctx = sat::make_context(1024);
  ASSERT_NE(ctx, nullptr);
  EXPECT_EQ(sa_context_threads(ctx.get()), 1024);
  auto all = sat::make_context(0);
  ASSERT_NE(all, nullptr);
  EXPECT_GE(sa_context_threads(all.get()), 1);
  EXPECT_LE(sa_context_threads(all.get()), 1024);
}

}  // namespace
