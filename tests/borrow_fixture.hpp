// The borrowed-keys tests' fixture: an index that keeps its own copy of the keys and one created
// with borrow_keys, fed the same keys, with the host's K (in some layout) holding them too; a
// scenario of appends (a prompt, single keys, batches across an LSH doubling without a selection
// in between) and refills, comparing the two indexes' selections after every step.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "build_features.hpp"
#include "test_util.hpp"
#include "weights_file.hpp"

namespace bt {

using sat::Rng;
using sat::Tensor;

constexpr int64_t kHkv = 2, kHq = 4, kD = 32;

struct Kind {
  std::string name;
  std::function<sa_index_options(sa_dtype)> options;
  bool mass = true;  // mass targets supported
};

inline sa_index_options base_options(sa_selector_kind kind, sa_dtype dtype) {
  sa_index_options o = SA_INDEX_OPTIONS_INIT;
  o.kind = kind;
  o.num_kv_heads = int32_t(kHkv);
  o.head_dim = int32_t(kD);
  o.dtype = dtype;
  return o;
}

// Every kind that borrows, with options that make each path run (refine and whole pages,
// adapted and fixed LSH bits, two-stage learned selection, the indexer).
inline std::vector<Kind> kinds() {
  static const std::string learned_path = [] {
    Rng rng(71);
    const int64_t S = 8;
    return wf::write_file(wf::file_bytes({{"layers.0.q_proj", "F32", {S, kD}, wf::random_values(rng, S * kD, 0.3), ""},
                                          {"layers.0.k_proj", "F32", {S, kD}, wf::random_values(rng, S * kD, 0.3), ""}}),
                          "borrow_learned");
  }();
  static const std::string indexer_path = [] {
    Rng rng(72);
    const int64_t NI = 3, S = 6;
    return wf::write_file(
        wf::file_bytes({{"layers.0.indexer.q_proj", "F32", {NI, S, kHq * kD}, wf::random_values(rng, NI * S * kHq * kD, 0.2), ""},
                        {"layers.0.indexer.head_weights", "F32", {NI, kHq * kD}, wf::random_values(rng, NI * kHq * kD, 0.2), ""},
                        {"layers.0.indexer.k_proj", "F32", {S, kHkv * kD}, wf::random_values(rng, S * kHkv * kD, 0.2), ""}}),
        "borrow_indexer");
  }();
  std::vector<Kind> k;
  k.push_back({"exact", [](sa_dtype dt) { return base_options(SA_SELECTOR_EXACT, dt); }});
  k.push_back({"page_refine", [](sa_dtype dt) { return base_options(SA_SELECTOR_PAGE, dt); }});
  k.push_back({"page_whole", [](sa_dtype dt) {
                 sa_index_options o = base_options(SA_SELECTOR_PAGE, dt);
                 o.page.refine = 0;
                 o.page.page_size = 8;
                 return o;
               }});
  k.push_back({"lsh_adapted", [](sa_dtype dt) {
                 sa_index_options o = base_options(SA_SELECTOR_LSH, dt);
                 o.lsh.rounds = 4;
                 return o;
               }});
  k.push_back({"lsh_fixed", [](sa_dtype dt) {
                 sa_index_options o = base_options(SA_SELECTOR_LSH, dt);
                 o.lsh.bits = 6;
                 o.lsh.probes = 1;
                 return o;
               }});
  if (sat::selector_built(SA_SELECTOR_HNSW))
    k.push_back({"hnsw", [](sa_dtype dt) {
                   sa_index_options o = base_options(SA_SELECTOR_HNSW, dt);
                   o.hnsw.ef_search = 48;
                   return o;
                 }});
  k.push_back({"learned", [](sa_dtype dt) {
                 sa_index_options o = base_options(SA_SELECTOR_LEARNED, dt);
                 o.learned.weights_path = learned_path.c_str();
                 o.learned.rescore = 4;
                 return o;
               }});
  k.push_back({"indexer",
               [](sa_dtype dt) {
                 sa_index_options o = base_options(SA_SELECTOR_INDEXER, dt);
                 o.learned.weights_path = indexer_path.c_str();
                 return o;
               },
               false});
  return k;
}

enum class Layout { token_major, padded, head_major, dim_strided };

inline const char *layout_name(Layout l) {
  switch (l) {
    case Layout::token_major: return "token_major";
    case Layout::padded: return "padded";
    case Layout::head_major: return "head_major";
    default: return "dim_strided";
  }
}

// The host's K cache: `cap` rows [cap, H_kv, D] in a layout; slot s is row s.
struct HostK {
  Tensor k;
  HostK(sa_dtype dt, int64_t cap, Layout layout) : k(dt, {cap, kHkv, kD}, strides(layout, cap)) {}
  static std::vector<int64_t> strides(Layout l, int64_t cap) {
    switch (l) {
      case Layout::token_major: return {};  // contiguous, described with zero strides
      case Layout::padded: return sat::padded_strides(kHkv + 1, kD + 8);
      case Layout::head_major: return sat::head_major_strides(cap, kD);
      default: return {kHkv * kD * 2, kD * 2, 2};  // every other element: packed by the library
    }
  }
  void write(int64_t slot, const Tensor &src, int64_t row) {
    for (int64_t h = 0; h < kHkv; ++h)
      for (int64_t d = 0; d < kD; ++d) k.set({slot, h, d}, src.get({row, h, d}));
  }
  // The first n rows (the descriptor of the whole buffer with a shorter first dimension).
  sa_tensor view(int64_t n) const {
    sa_tensor t = *k.t();
    t.shape[0] = n;
    return t;
  }
};

// Two indexes of the same options, one owning its keys and one borrowing, and the host's K.
struct Pair {
  sat::ContextPtr ctx;
  sat::IndexPtr owned, borrowed;
  HostK host;
  sa_dtype dtype;
  int64_t size = 0, max_pos = -1;

  Pair(const sa_index_options &o, Layout layout, int64_t cap, int32_t threads)
      : ctx(sat::make_context(threads)), host(o.dtype, cap, layout), dtype(o.dtype) {
    sa_index *a = nullptr, *b = nullptr;
    EXPECT_SA_OK(sa_index_create(ctx.get(), &o, &a));
    sa_index_options ob = o;
    ob.borrow_keys = 1;
    EXPECT_SA_OK(sa_index_create(ctx.get(), &ob, &b));
    owned.reset(a);
    borrowed.reset(b);
  }
  bool ok() const { return owned && borrowed; }
  void append(const Tensor &keys) {
    ASSERT_SA_OK(sa_index_append(owned.get(), keys.t()));
    ASSERT_SA_OK(sa_index_append(borrowed.get(), keys.t()));
    for (int64_t r = 0; r < keys.dim(0); ++r) host.write(size + r, keys, r);
    size += keys.dim(0);
    max_pos += keys.dim(0);
  }
  void update(const std::vector<int32_t> &slots, const Tensor &keys, const std::vector<int64_t> &positions) {
    const int64_t n = int64_t(slots.size());
    ASSERT_SA_OK(sa_index_update(owned.get(), slots.data(), n, keys.t(), positions.data()));
    ASSERT_SA_OK(sa_index_update(borrowed.get(), slots.data(), n, keys.t(), positions.data()));
    for (int64_t i = 0; i < n; ++i) {
      host.write(slots[size_t(i)], keys, i);
      max_pos = std::max(max_pos, positions[size_t(i)]);
    }
  }
  // The owning index's selection (opt->keys ignored: a descriptor that would be refused).
  Tensor select_owned(const Tensor &q, sa_select_options so, int64_t rows, int64_t width) {
    Tensor out(SA_DTYPE_I32, {q.dim(0), rows, width});
    sa_tensor bogus{};
    bogus.rank = 7;
    so.keys = &bogus;
    EXPECT_SA_OK(sa_select(owned.get(), q.t(), &so, out.t()));
    return out;
  }
  Tensor select_borrowed(const Tensor &q, sa_select_options so, int64_t rows, int64_t width) {
    Tensor out(SA_DTYPE_I32, {q.dim(0), rows, width});
    out.poison();
    const sa_tensor keys = host.view(size);
    so.keys = &keys;
    EXPECT_SA_OK(sa_select(borrowed.get(), q.t(), &so, out.t()));
    EXPECT_TRUE(out.only_elements_written());
    return out;
  }
};

// One selection to compare: queries and options (query_positions point into `positions`).
struct Query {
  Tensor q;
  sa_select_options so;
  std::vector<int64_t> positions;
  int64_t rows = 0, width = 0;
};

// The selections compared after each step: a decode query, a prefill block (GEMM paths) at
// causal positions, per-query-head lists, and a mass target.
inline std::vector<Query> queries(Rng &rng, int64_t max_pos, bool mass) {
  std::vector<Query> out;
  auto add = [&](int64_t n_q, int32_t top_k, int32_t window, int32_t sinks, bool per_head, float target, bool causal) {
    Query x;
    x.q = sat::random_tensor(rng, SA_DTYPE_F32, {n_q, kHq, kD}, {}, 1.5);
    x.so = sat::select_options(top_k, window, sinks);
    x.so.per_query_head = per_head;
    x.so.mass_target = target;
    if (causal) {
      for (int64_t i = 0; i < n_q; ++i) x.positions.push_back(max_pos / 3 + rng.below(max_pos - max_pos / 3 + 1));
    }
    x.rows = per_head ? kHq : kHkv;
    x.width = int64_t(top_k) + window + sinks;
    out.push_back(std::move(x));
  };
  add(1, 16, 8, 2, false, 0.f, false);
  add(9, 24, 4, 1, false, 0.f, true);
  add(2, 8, 4, 2, true, 0.f, false);
  if (mass) add(1, 32, 4, 2, false, 0.6f, false);
  return out;
}

using Compare = std::function<void(Pair &p, Query &x, const std::string &where)>;

// Compares with sa_select on both indexes, the borrowed one reading the host's K.
inline void compare_c_api(Pair &p, Query &x, const std::string &where) {
  if (!x.positions.empty()) x.so.query_positions = x.positions.data();
  const Tensor want = p.select_owned(x.q, x.so, x.rows, x.width);
  const Tensor got = p.select_borrowed(x.q, x.so, x.rows, x.width);
  EXPECT_EQ(got.values(), want.values()) << where;
}

// The scenario, comparing after each step. cap >= 1800 rows.
inline void run_scenario(Pair &p, Rng &rng, bool mass, const Compare &compare) {
  auto check = [&](const std::string &step) {
    std::vector<Query> qs = queries(rng, p.max_pos, mass);
    for (size_t v = 0; v < qs.size(); ++v) compare(p, qs[v], step + ", query set " + std::to_string(v));
  };
  auto keys = [&](int64_t n) { return sat::random_tensor(rng, p.dtype, {n, kHkv, kD}); };
  p.append(keys(700));  // a prompt
  check("prompt");
  for (int i = 0; i < 5; ++i) {  // decode steps
    p.append(keys(1));
    check("decode step " + std::to_string(i));
  }
  // Batches without a selection between: 1105 and 1405 slots each grow LSH's tables by 5/4
  // (rebuilt by the next selection when borrowed), then more slots (1705, under 5/4 of 1405:
  // no rebuild) and refills of slots appended after the last rebuild. (A refill of a slot the
  // pending rebuild covers is the documented exception: borrow_keys in sparseattn.h.)
  p.append(keys(400));
  p.append(keys(300));
  p.append(keys(300));
  p.update({1500, 1699}, keys(2), {p.max_pos + 1, p.max_pos + 2});
  check("batches");
  // Eviction refills: new keys in freed slots at new positions (one moved back in time).
  p.update({3, 40, 41, 700, 1203, 1704}, keys(6), {p.max_pos + 1, p.max_pos + 2, 30, p.max_pos + 3, p.max_pos + 4,
                                                   p.max_pos + 5});
  check("refill");
  p.update({17}, keys(1), {p.max_pos + 1});
  p.append(keys(1));
  check("refill and append");
}

}  // namespace bt
