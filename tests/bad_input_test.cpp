// Every public function fed bad input, table-driven. Each case starts from a valid set of
// arguments (the baseline, which is itself checked to succeed), breaks exactly one thing,
// and asserts the exact status, a non-empty sa_last_error(), and that nothing was written:
// every output tensor is poisoned with canaries, out-params hold sentinels, and the index
// keeps its size and its selections.
//
// Status choices where the header leaves room (the most specific code wins):
// - NULL option struct: the defaults, except where a required field has none
//   (sa_index_create: num_kv_heads, head_dim; sa_cache_evict: budget): SA_ERR_NULL_POINTER.
//   Conventions.NullOptionsMeanDefaults checks the accepting side.
// - An option value outside its domain (negative counts, unknown enum values, NaN or
//   negative or infinite scale, mass_target outside [0, 1], mass_decay outside [0, 1],
//   positions < 0 (< -1 for evict), duplicate update slots, an evict budget below
//   sinks + window + incoming, NaN eviction scores): SA_ERR_INVALID_ARGUMENT.
// - The index's storage dtype not F32/F16/BF16: SA_ERR_DTYPE.
// - Rank, a dimension that disagrees with another argument, a negative shape or stride,
//   sa_select's width < sinks + window + top_k, freed too small: SA_ERR_SHAPE.
// - An unknown device value: SA_ERR_INVALID_ARGUMENT; a CUDA tensor on this CPU build:
//   SA_ERR_BACKEND_UNAVAILABLE (SA_ERR_UNSUPPORTED also accepted; where a CUDA plugin and
//   device are usable, SA_ERR_INVALID_ARGUMENT for a CUDA tensor among CPU ones).
// - Slots or indices outside the cache: SA_ERR_OUT_OF_RANGE.
// - Shapes or strides whose element or byte offsets overflow: SA_ERR_OVERFLOW.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <thread>

#include "build_features.hpp"
#include "test_util.hpp"
#include "weights_file.hpp"

namespace {

using sat::Tensor;

constexpr int64_t kNKv = 10, kHkv = 2, kHq = 4, kD = 8, kNq = 2, kWidth = 12;
sa_context *const kCtxSentinel = reinterpret_cast<sa_context *>(uintptr_t(0x1234));
sa_index *const kIndexSentinel = reinterpret_cast<sa_index *>(uintptr_t(0x5678));

// Valid arguments for every call; cases break one thing.
struct Fx {
  sat::ContextPtr ctx_owner;
  sat::IndexPtr ix_owner;
  sa_context *ctx = nullptr;
  sa_index *ix = nullptr;

  // sa_context_create / sa_index_create
  sa_context_options ctx_opt = SA_CONTEXT_OPTIONS_INIT;
  sa_context *ctx_out = kCtxSentinel;
  sa_index_options ix_opt = SA_INDEX_OPTIONS_INIT;
  sa_index *ix_out = kIndexSentinel;

  // sa_index_append / sa_index_update / sa_index_size
  Tensor keys;
  std::vector<int32_t> slots = {1, 3};
  Tensor upd_keys;
  std::vector<int64_t> upd_pos = {20, 21};
  int64_t size_out = -7;

  // sa_select
  Tensor sel_q, sel_out;
  sa_select_options sel_opt = SA_SELECT_OPTIONS_INIT;
  std::vector<int32_t> qseg = {0, 0}, kseg = std::vector<int32_t>(kNKv, 0);

  // sa_attend
  Tensor q, k, v, indices, out, lse, att_mass;
  sa_attend_options att_opt = SA_ATTEND_OPTIONS_INIT;

  // sa_cache_evict
  Tensor ev_scores, ev_pos, ev_freed;
  sa_evict_options ev_opt = SA_EVICT_OPTIONS_INIT;
  int64_t n_freed = -7;

  // The selection the index gives for a fixed query; refused calls must not change it.
  Tensor probe_q;
  sa_select_options probe_opt = SA_SELECT_OPTIONS_INIT;
  std::vector<double> baseline_selection;

  Fx() {
    sat::Rng rng(300);
    ctx_owner = sat::make_context(1);
    ctx = ctx_owner.get();
    ix_owner = sat::make_index(ctx, int32_t(kHkv), int32_t(kD), SA_DTYPE_F32);
    ix = ix_owner.get();
    ix_opt.num_kv_heads = int32_t(kHkv);
    ix_opt.head_dim = int32_t(kD);
    Tensor init = sat::random_tensor(rng, SA_DTYPE_F32, {kNKv, kHkv, kD});
    EXPECT_EQ(sa_index_append(ix, init.t()), SA_OK) << sa_last_error();
    keys = sat::random_tensor(rng, SA_DTYPE_F32, {3, kHkv, kD});
    upd_keys = sat::random_tensor(rng, SA_DTYPE_F32, {2, kHkv, kD});

    sel_q = sat::random_tensor(rng, SA_DTYPE_F32, {kNq, kHq, kD});
    sel_out = Tensor(SA_DTYPE_I32, {kNq, kHkv, kWidth});
    sel_out.poison();
    sel_opt.top_k = 4;
    sel_opt.window = 4;
    sel_opt.sinks = 4;

    q = sat::random_tensor(rng, SA_DTYPE_F32, {kNq, kHq, kD});
    k = sat::random_tensor(rng, SA_DTYPE_F32, {kNKv, kHkv, kD});
    v = sat::random_tensor(rng, SA_DTYPE_F32, {kNKv, kHkv, kD});
    indices = Tensor(SA_DTYPE_I32, {kNq, kHkv, 3});
    indices.set_values({0, 4, 9, 1, -1, 2, 3, 3, 8, 0, 5, -1});
    out = Tensor(SA_DTYPE_F32, {kNq, kHq, kD});
    out.poison();
    lse = Tensor(SA_DTYPE_F32, {kNq, kHq});
    lse.poison();
    att_mass = Tensor(SA_DTYPE_F32, {kHkv, kNKv});  // accumulation on in every attend case
    att_mass.set_values(std::vector<double>(size_t(kHkv * kNKv), 0.5));
    att_mass.snapshot();
    att_opt.slot_mass = att_mass.t();
    att_opt.mass_decay = 0.5f;

    ev_scores = sat::random_tensor(rng, SA_DTYPE_F32, {kNKv});
    ev_pos = Tensor(SA_DTYPE_I64, {kNKv});
    ev_pos.set_values({0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
    ev_freed = Tensor(SA_DTYPE_I32, {kNKv});
    ev_freed.poison();
    ev_opt.budget = 8;
    ev_opt.incoming = 1;
    ev_opt.sinks = 1;
    ev_opt.window = 2;

    probe_q = sel_q;
    probe_opt = sel_opt;
    baseline_selection = current_selection();
  }

  std::vector<double> current_selection() {
    Tensor o(SA_DTYPE_I32, {kNq, kHkv, kWidth});
    std::vector<int64_t> p = {9, 9};
    sa_select_options so = probe_opt;
    so.query_positions = p.data();  // independent of the index's largest position
    EXPECT_EQ(sa_select(ix, probe_q.t(), &so, o.t()), SA_OK) << sa_last_error();
    return o.values();
  }

  sa_status context_create() { return sa_context_create(&ctx_opt, &ctx_out); }
  sa_status index_create() { return sa_index_create(ctx, &ix_opt, &ix_out); }
  sa_status append() { return sa_index_append(ix, keys.t()); }
  sa_status update() { return sa_index_update(ix, slots.data(), int64_t(slots.size()), upd_keys.t(), upd_pos.data()); }
  sa_status size() { return sa_index_size(ix, &size_out); }
  sa_status select() { return sa_select(ix, sel_q.t(), &sel_opt, sel_out.t()); }
  sa_status attend() { return sa_attend(ctx, q.t(), k.t(), v.t(), indices.t(), &att_opt, out.t(), lse.t()); }
  sa_status evict() { return sa_cache_evict(ctx, &ev_opt, ev_scores.t(), ev_pos.t(), ev_freed.t(), &n_freed); }
};

// Weights for a learned index of the fixture's shape (layer 0), and the same file cut short.
const std::string &learned_weights() {
  static const std::string path = wf::write_file(wf::file_bytes({
      {"layers.0.q_proj", "F32", {kHkv, 4, kD}, std::vector<double>(size_t(kHkv * 4 * kD), 0.25), ""},
      {"layers.0.k_proj", "F16", {4, kD}, std::vector<double>(size_t(4 * kD), 0.5), ""},
  }));
  return path;
}
const std::string &truncated_weights() {
  static const std::string path = [] {
    std::string bytes = wf::file_bytes({{"layers.0.q_proj", "F32", {kHkv, 4, kD}, std::vector<double>(size_t(kHkv * 4 * kD), 0.25), ""}});
    return wf::write_file(bytes.substr(0, bytes.size() - 3));
  }();
  return path;
}
void use_learned(Fx &f, const std::string &path, sa_selector_kind kind = SA_SELECTOR_LEARNED) {
  f.ix_opt.kind = kind;
  f.ix_opt.learned.weights_path = path.c_str();
  f.ix_opt.learned.layer = 0;
}

struct Case {
  std::string name;
  sa_status want;
  std::function<sa_status(Fx &)> call;
  const char *mentions = nullptr;  // a word the message must contain (the argument's name)
};

void PrintTo(const Case &c, std::ostream *os) { *os << c.name; }

void make_cuda(sa_tensor *t) {
  t->device = SA_DEVICE_CUDA;
  t->device_id = 0;
}
// Shape [2^40, ...] with strides whose largest element offset needs ~2^80.
void make_overflowing(sa_tensor *t) {
  t->shape[0] = int64_t(1) << 40;
  t->strides[0] = int64_t(1) << 40;
  t->strides[1] = t->shape[2];
  t->strides[2] = 1;
}

std::vector<Case> cases() {
  std::vector<Case> c;
  auto add = [&](std::string name, sa_status want, std::function<sa_status(Fx &)> call, const char *mentions = nullptr) {
    c.push_back({std::move(name), want, std::move(call), mentions});
  };

  // ---- sa_context_create
  add("ContextCreateNullOut", SA_ERR_NULL_POINTER, [](Fx &f) { return sa_context_create(&f.ctx_opt, nullptr); });
  add("ContextStructSizeZero", SA_ERR_STRUCT_SIZE, [](Fx &f) { f.ctx_opt.struct_size = 0; return f.context_create(); });
  add("ContextStructSizeTooSmall", SA_ERR_STRUCT_SIZE,
      [](Fx &f) { f.ctx_opt.struct_size = sizeof(size_t); return f.context_create(); });
  add("ContextNegativeThreads", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.ctx_opt.threads = -1; return f.context_create(); });
  add("ContextUnknownIsa", SA_ERR_INVALID_ARGUMENT,
      [](Fx &f) { f.ctx_opt.isa = sa_isa(42); return f.context_create(); });
  add("ContextUnknownDevice", SA_ERR_INVALID_ARGUMENT,
      [](Fx &f) { f.ctx_opt.device = sa_device_type(9); return f.context_create(); }, "device");
  add("ContextNegativeDeviceId", SA_ERR_INVALID_ARGUMENT,
      [](Fx &f) { f.ctx_opt.device_id = -1; return f.context_create(); }, "device_id");
  add("ContextCudaPluginMissing", SA_ERR_BACKEND_UNAVAILABLE, [](Fx &f) {
    f.ctx_opt.device = SA_DEVICE_CUDA;
    f.ctx_opt.cuda_plugin_path = "/nonexistent/libsparseattn_cuda.so";
    return f.context_create();
  }, "/nonexistent/libsparseattn_cuda.so");

  // ---- sa_index_create
  add("IndexCreateNullCtx", SA_ERR_NULL_POINTER, [](Fx &f) { return sa_index_create(nullptr, &f.ix_opt, &f.ix_out); });
  add("IndexCreateNullOptions", SA_ERR_NULL_POINTER, [](Fx &f) { return sa_index_create(f.ctx, nullptr, &f.ix_out); });
  add("IndexCreateNullOut", SA_ERR_NULL_POINTER, [](Fx &f) { return sa_index_create(f.ctx, &f.ix_opt, nullptr); });
  add("IndexStructSizeZero", SA_ERR_STRUCT_SIZE, [](Fx &f) { f.ix_opt.struct_size = 0; return f.index_create(); });
  add("IndexStructSizeTooSmall", SA_ERR_STRUCT_SIZE,
      [](Fx &f) {
        // The smallest accepted size ends before learned.rescore (hosts built before it).
        f.ix_opt.struct_size = offsetof(sa_index_options, learned) + offsetof(sa_learned_options, rescore) - 1;
        return f.index_create();
      });
  add("IndexZeroKvHeads", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.ix_opt.num_kv_heads = 0; return f.index_create(); },
      "num_kv_heads");
  add("IndexNegativeKvHeads", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.ix_opt.num_kv_heads = -2; return f.index_create(); });
  add("IndexZeroHeadDim", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.ix_opt.head_dim = 0; return f.index_create(); },
      "head_dim");
  add("IndexIntegerDtype", SA_ERR_DTYPE, [](Fx &f) { f.ix_opt.dtype = SA_DTYPE_I32; return f.index_create(); });
  add("IndexNegativeCapacity", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.ix_opt.capacity = -1; return f.index_create(); });
  add("IndexUnknownKind", SA_ERR_INVALID_ARGUMENT,
      [](Fx &f) { f.ix_opt.kind = sa_selector_kind(77); return f.index_create(); });
  // Selector options, checked for the kind that reads them.
  auto page = [](int32_t page_size) {
    return [page_size](Fx &f) {
      f.ix_opt.kind = SA_SELECTOR_PAGE;
      f.ix_opt.page.page_size = page_size;
      return f.index_create();
    };
  };
  add("IndexPageSizeZero", SA_ERR_INVALID_ARGUMENT, page(0), "page_size");
  add("IndexPageSizeNegative", SA_ERR_INVALID_ARGUMENT, page(-16), "page_size");
  auto lsh = [](int32_t rounds, int32_t bits, int32_t probes) {
    return [=](Fx &f) {
      f.ix_opt.kind = SA_SELECTOR_LSH;
      f.ix_opt.lsh.rounds = rounds;
      f.ix_opt.lsh.bits = bits;
      f.ix_opt.lsh.probes = probes;
      return f.index_create();
    };
  };
  add("IndexLshRoundsZero", SA_ERR_INVALID_ARGUMENT, lsh(0, 0, 2), "lsh.rounds");
  add("IndexLshRoundsTooMany", SA_ERR_INVALID_ARGUMENT, lsh(65, 0, 2), "lsh.rounds");
  add("IndexLshBitsNegative", SA_ERR_INVALID_ARGUMENT, lsh(8, -1, 2), "lsh.bits");
  add("IndexLshBitsTooMany", SA_ERR_INVALID_ARGUMENT, lsh(8, 25, 2), "lsh.bits");
  add("IndexLshProbesNegative", SA_ERR_INVALID_ARGUMENT, lsh(8, 0, -1), "lsh.probes");
  add("IndexLshProbesTooMany", SA_ERR_INVALID_ARGUMENT, lsh(8, 0, 65), "lsh.probes");
  // HNSW options: degree and beams in range (hnswlib needs M >= 2; huge values would
  // allocate without bound).
  struct HnswCase { const char *name, *field; int32_t m, efc, efs; };
  // Only where the build has HNSW: otherwise sa_index_create refuses the kind itself.
  if (sat::selector_built(SA_SELECTOR_HNSW)) {
    for (const HnswCase &h : {HnswCase{"IndexHnswMOne", "hnsw.m", 1, 100, 256},
                              HnswCase{"IndexHnswMNegative", "hnsw.m", -16, 100, 256},
                              HnswCase{"IndexHnswMHuge", "hnsw.m", 1 << 30, 100, 256},
                              HnswCase{"IndexHnswEfConstructionZero", "hnsw.ef_construction", 16, 0, 256},
                              HnswCase{"IndexHnswEfConstructionHuge", "hnsw.ef_construction", 16, INT32_MAX, 256},
                              HnswCase{"IndexHnswEfSearchZero", "hnsw.ef_search", 16, 100, 0},
                              HnswCase{"IndexHnswEfSearchHuge", "hnsw.ef_search", 16, 100, INT32_MAX}})
      add(h.name, SA_ERR_INVALID_ARGUMENT,
          [h](Fx &f) {
            f.ix_opt.kind = SA_SELECTOR_HNSW;
            f.ix_opt.hnsw.m = h.m;
            f.ix_opt.hnsw.ef_construction = h.efc;
            f.ix_opt.hnsw.ef_search = h.efs;
            return f.index_create();
          },
          h.field);
  }

  // learned and indexer kinds: the weights file
  add("LearnedNullWeightsPath", SA_ERR_NULL_POINTER,
      [](Fx &f) { use_learned(f, learned_weights()); f.ix_opt.learned.weights_path = nullptr; return f.index_create(); },
      "weights_path");
  add("IndexerNullWeightsPath", SA_ERR_NULL_POINTER,
      [](Fx &f) { use_learned(f, learned_weights(), SA_SELECTOR_INDEXER); f.ix_opt.learned.weights_path = nullptr; return f.index_create(); },
      "weights_path");
  add("LearnedNegativeRescore", SA_ERR_INVALID_ARGUMENT,
      [](Fx &f) { use_learned(f, learned_weights()); f.ix_opt.learned.rescore = -1; return f.index_create(); },
      "opt->learned.rescore is -1");
  add("LearnedHugeRescore", SA_ERR_INVALID_ARGUMENT,
      [](Fx &f) { use_learned(f, learned_weights()); f.ix_opt.learned.rescore = 65537; return f.index_create(); },
      "opt->learned.rescore is 65537, expected 0 (one stage) to 65536");
  add("LearnedRescoreOverflow", SA_ERR_INVALID_ARGUMENT,
      [](Fx &f) { use_learned(f, learned_weights()); f.ix_opt.learned.rescore = INT64_MAX; return f.index_create(); },
      "opt->learned.rescore");
  add("LearnedNegativeLayer", SA_ERR_INVALID_ARGUMENT,
      [](Fx &f) { use_learned(f, learned_weights()); f.ix_opt.learned.layer = -1; return f.index_create(); }, "layer");
  add("LearnedMissingFile", SA_ERR_INVALID_ARGUMENT, [](Fx &f) {
    static const std::string missing = ::testing::TempDir() + "sa_missing_weights.safetensors";
    use_learned(f, missing);
    return f.index_create();
  }, "cannot open");
  add("LearnedTruncatedFile", SA_ERR_FORMAT, [](Fx &f) { use_learned(f, truncated_weights()); return f.index_create(); },
      "weights_path");
  add("LearnedMissingLayer", SA_ERR_FORMAT,
      [](Fx &f) { use_learned(f, learned_weights()); f.ix_opt.learned.layer = 3; return f.index_create(); }, "layer 3");
  add("LearnedWrongHeadDim", SA_ERR_SHAPE,
      [](Fx &f) { use_learned(f, learned_weights()); f.ix_opt.head_dim = kD * 2; return f.index_create(); }, "head_dim");
  add("LearnedWrongKvHeads", SA_ERR_SHAPE,
      [](Fx &f) { use_learned(f, learned_weights()); f.ix_opt.num_kv_heads = 3; return f.index_create(); }, "num_kv_heads");
  add("IndexerHeadBiasWrongShape", SA_ERR_SHAPE, [](Fx &f) {
    static const std::string path = wf::write_file(wf::file_bytes({
        {"layers.0.indexer.q_proj", "F32", {2, 4, kHq * kD}, std::vector<double>(size_t(2 * 4 * kHq * kD), 0.1), ""},
        {"layers.0.indexer.head_weights", "F32", {2, kHq * kD}, std::vector<double>(size_t(2 * kHq * kD), 0.0), ""},
        {"layers.0.indexer.k_proj", "F32", {4, kHkv * kD}, std::vector<double>(size_t(4 * kHkv * kD), 0.1), ""},
        {"layers.0.indexer.head_bias", "F32", {3}, {1.0, 1.0, 1.0}, ""},  // 2 heads
    }));
    use_learned(f, path, SA_SELECTOR_INDEXER);
    return f.index_create();
  }, "indexer.head_bias");
  add("IndexerWithoutIndexerTensors", SA_ERR_FORMAT,
      [](Fx &f) { use_learned(f, learned_weights(), SA_SELECTOR_INDEXER); return f.index_create(); }, "indexer.q_proj");

  // ---- sa_index_append
  add("AppendNullIndex", SA_ERR_NULL_POINTER, [](Fx &f) { return sa_index_append(nullptr, f.keys.t()); });
  add("AppendNullKeys", SA_ERR_NULL_POINTER, [](Fx &f) { return sa_index_append(f.ix, nullptr); });
  add("AppendNullData", SA_ERR_NULL_POINTER, [](Fx &f) { f.keys.t()->data = nullptr; return f.append(); });
  add("AppendIntegerKeys", SA_ERR_DTYPE, [](Fx &f) { f.keys.t()->dtype = SA_DTYPE_I32; return f.append(); });
  add("AppendRank2", SA_ERR_SHAPE, [](Fx &f) { f.keys.t()->rank = 2; return f.append(); });
  add("AppendRank0", SA_ERR_SHAPE, [](Fx &f) { f.keys.t()->rank = 0; return f.append(); });
  add("AppendRank5", SA_ERR_SHAPE, [](Fx &f) { f.keys.t()->rank = 5; return f.append(); });
  add("AppendWrongHeads", SA_ERR_SHAPE, [](Fx &f) { f.keys.t()->shape[1] = 1; return f.append(); });
  add("AppendWrongHeadDim", SA_ERR_SHAPE, [](Fx &f) { f.keys.t()->shape[2] = kD - 1; return f.append(); });
  add("AppendNegativeCount", SA_ERR_SHAPE, [](Fx &f) { f.keys.t()->shape[0] = -1; return f.append(); });
  add("AppendNegativeStride", SA_ERR_SHAPE, [](Fx &f) {
    sa_tensor *t = f.keys.t();
    t->strides[0] = -kHkv * kD, t->strides[1] = kD, t->strides[2] = 1;
    return f.append();
  });
  add("AppendOverflowingStrides", SA_ERR_OVERFLOW, [](Fx &f) { make_overflowing(f.keys.t()); return f.append(); });
  add("AppendCudaKeys", SA_ERR_BACKEND_UNAVAILABLE, [](Fx &f) { make_cuda(f.keys.t()); return f.append(); });
  add("AppendUnknownDevice", SA_ERR_INVALID_ARGUMENT,
      [](Fx &f) { f.keys.t()->device = sa_device_type(7); return f.append(); });

  // ---- sa_index_update
  add("UpdateNullIndex", SA_ERR_NULL_POINTER,
      [](Fx &f) { return sa_index_update(nullptr, f.slots.data(), 2, f.upd_keys.t(), f.upd_pos.data()); });
  add("UpdateNullSlots", SA_ERR_NULL_POINTER,
      [](Fx &f) { return sa_index_update(f.ix, nullptr, 2, f.upd_keys.t(), f.upd_pos.data()); });
  add("UpdateNullKeys", SA_ERR_NULL_POINTER,
      [](Fx &f) { return sa_index_update(f.ix, f.slots.data(), 2, nullptr, f.upd_pos.data()); });
  add("UpdateNegativeCount", SA_ERR_INVALID_ARGUMENT,
      [](Fx &f) { return sa_index_update(f.ix, f.slots.data(), -1, f.upd_keys.t(), f.upd_pos.data()); });
  add("UpdateCountMismatchesKeys", SA_ERR_SHAPE,
      [](Fx &f) { return sa_index_update(f.ix, f.slots.data(), 1, f.upd_keys.t(), f.upd_pos.data()); });
  add("UpdateSlotPastSize", SA_ERR_OUT_OF_RANGE, [](Fx &f) { f.slots[1] = int32_t(kNKv); return f.update(); }, "slots");
  add("UpdateNegativeSlot", SA_ERR_OUT_OF_RANGE, [](Fx &f) { f.slots[0] = -1; return f.update(); });
  add("UpdateDuplicateSlots", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.slots[1] = f.slots[0]; return f.update(); });
  add("UpdateNegativePosition", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.upd_pos[1] = -5; return f.update(); });
  add("UpdateWrongHeadDim", SA_ERR_SHAPE, [](Fx &f) { f.upd_keys.t()->shape[2] = kD + 1; return f.update(); });
  add("UpdateIntegerKeys", SA_ERR_DTYPE, [](Fx &f) { f.upd_keys.t()->dtype = SA_DTYPE_I64; return f.update(); });
  add("UpdateCudaKeys", SA_ERR_BACKEND_UNAVAILABLE, [](Fx &f) { make_cuda(f.upd_keys.t()); return f.update(); });

  // ---- sa_index_size
  add("SizeNullIndex", SA_ERR_NULL_POINTER, [](Fx &f) { return sa_index_size(nullptr, &f.size_out); });
  add("SizeNullOut", SA_ERR_NULL_POINTER, [](Fx &f) { return sa_index_size(f.ix, nullptr); });

  // ---- sa_select
  add("SelectNullIndex", SA_ERR_NULL_POINTER, [](Fx &f) { return sa_select(nullptr, f.sel_q.t(), &f.sel_opt, f.sel_out.t()); });
  add("SelectNullQueries", SA_ERR_NULL_POINTER, [](Fx &f) { return sa_select(f.ix, nullptr, &f.sel_opt, f.sel_out.t()); });
  add("SelectNullIndices", SA_ERR_NULL_POINTER, [](Fx &f) { return sa_select(f.ix, f.sel_q.t(), &f.sel_opt, nullptr); });
  add("SelectNullQueryData", SA_ERR_NULL_POINTER, [](Fx &f) { f.sel_q.t()->data = nullptr; return f.select(); });
  add("SelectNullIndicesData", SA_ERR_NULL_POINTER, [](Fx &f) { f.sel_out.t()->data = nullptr; return f.select(); });
  add("SelectStructSizeZero", SA_ERR_STRUCT_SIZE, [](Fx &f) { f.sel_opt.struct_size = 0; return f.select(); });
  add("SelectStructSizeTooSmall", SA_ERR_STRUCT_SIZE,
      [](Fx &f) { f.sel_opt.struct_size = offsetof(sa_select_options, cuda_stream) - 1; /* short of the first version */ return f.select(); });
  add("SelectWrongHeadDim", SA_ERR_SHAPE, [](Fx &f) { f.sel_q.t()->shape[2] = kD - 2; return f.select(); });
  add("SelectHqNotMultipleOfHkv", SA_ERR_SHAPE, [](Fx &f) { f.sel_q.t()->shape[1] = 3; return f.select(); });
  add("SelectIntegerQueries", SA_ERR_DTYPE, [](Fx &f) { f.sel_q.t()->dtype = SA_DTYPE_I32; return f.select(); });
  add("SelectQueriesRank2", SA_ERR_SHAPE, [](Fx &f) { f.sel_q.t()->rank = 2; return f.select(); });
  add("SelectI64Indices", SA_ERR_DTYPE, [](Fx &f) { f.sel_out.t()->dtype = SA_DTYPE_I64; return f.select(); });
  add("SelectF32Indices", SA_ERR_DTYPE, [](Fx &f) { f.sel_out.t()->dtype = SA_DTYPE_F32; return f.select(); });
  add("SelectIndicesWrongNq", SA_ERR_SHAPE, [](Fx &f) { f.sel_out.t()->shape[0] = 1; return f.select(); });
  add("SelectIndicesWrongHeads", SA_ERR_SHAPE, [](Fx &f) { f.sel_out.t()->shape[1] = 1; return f.select(); });
  add("SelectPerQueryHeadNeedsHqRows", SA_ERR_SHAPE, [](Fx &f) { f.sel_opt.per_query_head = 1; return f.select(); });
  add("SelectWidthTooSmall", SA_ERR_SHAPE, [](Fx &f) { f.sel_out.t()->shape[2] = kWidth - 1; return f.select(); });
  add("SelectHugeBudgetNeedsHugeWidth", SA_ERR_SHAPE, [](Fx &f) {
    f.sel_opt.top_k = INT32_MAX, f.sel_opt.window = INT32_MAX, f.sel_opt.sinks = INT32_MAX;
    return f.select();
  });
  add("SelectZeroTopK", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.sel_opt.top_k = 0; return f.select(); }, "top_k");
  add("SelectNegativeTopK", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.sel_opt.top_k = -3; return f.select(); });
  add("SelectNegativeWindow", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.sel_opt.window = -1; return f.select(); }, "window");
  add("SelectNegativeSinks", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.sel_opt.sinks = -1; return f.select(); }, "sinks");
  add("SelectNegativeMassTarget", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.sel_opt.mass_target = -0.1f; return f.select(); });
  add("SelectMassTargetAboveOne", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.sel_opt.mass_target = 1.5f; return f.select(); });
  add("SelectNanMassTarget", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.sel_opt.mass_target = NAN; return f.select(); });
  add("SelectNanScale", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.sel_opt.scale = NAN; return f.select(); });
  add("SelectNegativeScale", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.sel_opt.scale = -1.f; return f.select(); });
  add("SelectQuerySegmentsWithoutKeySegments", SA_ERR_INVALID_ARGUMENT,
      [](Fx &f) { f.sel_opt.query_segments = f.qseg.data(); return f.select(); });
  add("SelectKeySegmentsWithoutQuerySegments", SA_ERR_INVALID_ARGUMENT,
      [](Fx &f) { f.sel_opt.key_segments = f.kseg.data(); return f.select(); });
  add("SelectCudaQueries", SA_ERR_BACKEND_UNAVAILABLE, [](Fx &f) { make_cuda(f.sel_q.t()); return f.select(); });
  add("SelectCudaIndices", SA_ERR_BACKEND_UNAVAILABLE, [](Fx &f) { make_cuda(f.sel_out.t()); return f.select(); });
  add("SelectOverflowingIndices", SA_ERR_OVERFLOW, [](Fx &f) {
    sa_tensor *t = f.sel_out.t();
    t->strides[0] = int64_t(1) << 62, t->strides[1] = kWidth, t->strides[2] = 1;
    t->shape[0] = kNq;  // offset (kNq-1) * 2^62 * 4 bytes overflows
    return f.select();
  });

  // ---- sa_attend
  add("AttendNullCtx", SA_ERR_NULL_POINTER, [](Fx &f) {
    return sa_attend(nullptr, f.q.t(), f.k.t(), f.v.t(), f.indices.t(), &f.att_opt, f.out.t(), f.lse.t());
  });
  add("AttendNullQ", SA_ERR_NULL_POINTER, [](Fx &f) {
    return sa_attend(f.ctx, nullptr, f.k.t(), f.v.t(), f.indices.t(), &f.att_opt, f.out.t(), f.lse.t());
  });
  add("AttendNullK", SA_ERR_NULL_POINTER, [](Fx &f) {
    return sa_attend(f.ctx, f.q.t(), nullptr, f.v.t(), f.indices.t(), &f.att_opt, f.out.t(), f.lse.t());
  });
  add("AttendNullV", SA_ERR_NULL_POINTER, [](Fx &f) {
    return sa_attend(f.ctx, f.q.t(), f.k.t(), nullptr, f.indices.t(), &f.att_opt, f.out.t(), f.lse.t());
  });
  add("AttendNullOut", SA_ERR_NULL_POINTER, [](Fx &f) {
    return sa_attend(f.ctx, f.q.t(), f.k.t(), f.v.t(), f.indices.t(), &f.att_opt, nullptr, f.lse.t());
  });
  add("AttendNullQData", SA_ERR_NULL_POINTER, [](Fx &f) { f.q.t()->data = nullptr; return f.attend(); });
  add("AttendNullKData", SA_ERR_NULL_POINTER, [](Fx &f) { f.k.t()->data = nullptr; return f.attend(); });
  add("AttendNullVData", SA_ERR_NULL_POINTER, [](Fx &f) { f.v.t()->data = nullptr; return f.attend(); });
  add("AttendNullOutData", SA_ERR_NULL_POINTER, [](Fx &f) { f.out.t()->data = nullptr; return f.attend(); });
  add("AttendNullLseData", SA_ERR_NULL_POINTER, [](Fx &f) { f.lse.t()->data = nullptr; return f.attend(); });
  add("AttendNullIndicesData", SA_ERR_NULL_POINTER, [](Fx &f) { f.indices.t()->data = nullptr; return f.attend(); });
  add("AttendStructSizeZero", SA_ERR_STRUCT_SIZE, [](Fx &f) { f.att_opt.struct_size = 0; return f.attend(); });
  add("AttendStructSizeTooSmall", SA_ERR_STRUCT_SIZE,
      [](Fx &f) { f.att_opt.struct_size = offsetof(sa_attend_options, cuda_stream) - 1; /* short of the first version */ return f.attend(); });
  add("AttendIntegerK", SA_ERR_DTYPE, [](Fx &f) { f.k.t()->dtype = SA_DTYPE_I32; return f.attend(); });
  add("AttendVDtypeDiffersFromK", SA_ERR_DTYPE, [](Fx &f) { f.v.t()->dtype = SA_DTYPE_F16; return f.attend(); });
  add("AttendQF16WithKF32", SA_ERR_DTYPE, [](Fx &f) { f.q.t()->dtype = SA_DTYPE_F16; return f.attend(); });
  add("AttendOutF16WithQF32", SA_ERR_DTYPE, [](Fx &f) { f.out.t()->dtype = SA_DTYPE_F16; return f.attend(); });
  add("AttendLseF16", SA_ERR_DTYPE, [](Fx &f) { f.lse.t()->dtype = SA_DTYPE_F16; return f.attend(); });
  add("AttendI64Indices", SA_ERR_DTYPE, [](Fx &f) { f.indices.t()->dtype = SA_DTYPE_I64; return f.attend(); });
  add("AttendF32Indices", SA_ERR_DTYPE, [](Fx &f) { f.indices.t()->dtype = SA_DTYPE_F32; return f.attend(); });
  add("AttendKWrongHeadDim", SA_ERR_SHAPE, [](Fx &f) { f.k.t()->shape[2] = kD / 2; return f.attend(); });
  add("AttendVWrongCount", SA_ERR_SHAPE, [](Fx &f) { f.v.t()->shape[0] = kNKv - 1; return f.attend(); });
  add("AttendVWrongHeads", SA_ERR_SHAPE, [](Fx &f) { f.v.t()->shape[1] = 1; return f.attend(); });
  add("AttendHqNotMultipleOfHkv", SA_ERR_SHAPE, [](Fx &f) {
    f.q.t()->shape[1] = 3;
    f.out.t()->shape[1] = 3;
    f.lse.t()->shape[1] = 3;
    return sa_attend(f.ctx, f.q.t(), f.k.t(), f.v.t(), nullptr, &f.att_opt, f.out.t(), f.lse.t());
  });
  add("AttendOutWrongNq", SA_ERR_SHAPE, [](Fx &f) { f.out.t()->shape[0] = 1; return f.attend(); });
  add("AttendOutWrongHeads", SA_ERR_SHAPE, [](Fx &f) { f.out.t()->shape[1] = 2; return f.attend(); });
  add("AttendOutWrongHeadDim", SA_ERR_SHAPE, [](Fx &f) { f.out.t()->shape[2] = kD - 1; return f.attend(); });
  add("AttendLseWrongShape", SA_ERR_SHAPE, [](Fx &f) { f.lse.t()->shape[1] = kHq + 1; return f.attend(); });
  add("AttendLseRank3", SA_ERR_SHAPE, [](Fx &f) {
    f.lse.t()->rank = 3;
    f.lse.t()->shape[2] = 1;
    return f.attend();
  });
  add("AttendIndicesWrongNq", SA_ERR_SHAPE, [](Fx &f) { f.indices.t()->shape[0] = 1; return f.attend(); });
  add("AttendIndicesWrongHeads", SA_ERR_SHAPE, [](Fx &f) { f.indices.t()->shape[1] = 3; return f.attend(); });
  add("AttendQRank2", SA_ERR_SHAPE, [](Fx &f) { f.q.t()->rank = 2; return f.attend(); });
  add("AttendKRank4", SA_ERR_SHAPE, [](Fx &f) { f.k.t()->rank = 4; f.k.t()->shape[3] = 1; return f.attend(); });
  add("AttendNegativeShape", SA_ERR_SHAPE, [](Fx &f) { f.k.t()->shape[0] = -4; f.v.t()->shape[0] = -4; return f.attend(); });
  add("AttendNegativeStride", SA_ERR_SHAPE, [](Fx &f) {
    sa_tensor *t = f.q.t();
    t->strides[0] = kHq * kD, t->strides[1] = -kD, t->strides[2] = 1;
    return f.attend();
  });
  add("AttendIndexEqualToNkv", SA_ERR_OUT_OF_RANGE, [](Fx &f) { f.indices.set({1, 1, 2}, double(kNKv)); return f.attend(); },
      "indices");
  add("AttendIndexBelowMinusOne", SA_ERR_OUT_OF_RANGE, [](Fx &f) { f.indices.set({0, 1, 0}, -2); return f.attend(); });
  add("AttendIndexInt32Max", SA_ERR_OUT_OF_RANGE, [](Fx &f) { f.indices.set({0, 0, 0}, INT32_MAX); return f.attend(); });
  add("AttendIndexInt32Min", SA_ERR_OUT_OF_RANGE, [](Fx &f) { f.indices.set({1, 0, 1}, INT32_MIN); return f.attend(); });
  add("AttendOverflowingKV", SA_ERR_OVERFLOW, [](Fx &f) {
    make_overflowing(f.k.t());
    make_overflowing(f.v.t());
    return f.attend();
  });
  add("AttendOverflowingElementCount", SA_ERR_OVERFLOW, [](Fx &f) {
    f.k.t()->shape[0] = int64_t(1) << 62;  // contiguous: 2^62 * 2 * 8 elements
    f.v.t()->shape[0] = int64_t(1) << 62;
    return sa_attend(f.ctx, f.q.t(), f.k.t(), f.v.t(), nullptr, &f.att_opt, f.out.t(), f.lse.t());
  });
  add("AttendOverflowingByteCount", SA_ERR_OVERFLOW, [](Fx &f) {
    sa_tensor *t = f.out.t();  // largest element offset fits in int64, its byte offset does not
    t->strides[0] = int64_t(1) << 61, t->strides[1] = kD, t->strides[2] = 1;
    return f.attend();
  });
  add("AttendCudaQ", SA_ERR_BACKEND_UNAVAILABLE, [](Fx &f) { make_cuda(f.q.t()); return f.attend(); });
  add("AttendCudaKV", SA_ERR_BACKEND_UNAVAILABLE, [](Fx &f) {
    make_cuda(f.k.t());
    make_cuda(f.v.t());
    return f.attend();
  });
  add("AttendCudaOut", SA_ERR_BACKEND_UNAVAILABLE, [](Fx &f) { make_cuda(f.out.t()); return f.attend(); });
  add("AttendUnknownDevice", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.q.t()->device = sa_device_type(3); return f.attend(); });
  add("AttendNanScale", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.att_opt.scale = NAN; return f.attend(); }, "scale");
  add("AttendNegativeScale", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.att_opt.scale = -0.5f; return f.attend(); });
  add("AttendInfiniteScale", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.att_opt.scale = INFINITY; return f.attend(); });
  add("AttendMassF16", SA_ERR_DTYPE, [](Fx &f) { f.att_mass.t()->dtype = SA_DTYPE_F16; return f.attend(); }, "slot_mass");
  // Outputs whose strides make elements share memory (several threads would write one
  // element): refused with SA_ERR_SHAPE.
  add("AttendOutZeroStride", SA_ERR_SHAPE, [](Fx &f) {
    f.out.t()->strides[0] = 0, f.out.t()->strides[1] = kD, f.out.t()->strides[2] = 1;
    return f.attend();
  }, "out");
  add("AttendOutHeadsOverlap", SA_ERR_SHAPE, [](Fx &f) {
    f.out.t()->strides[0] = kHq * kD, f.out.t()->strides[1] = kD / 2, f.out.t()->strides[2] = 1;
    return f.attend();
  }, "out");
  add("AttendLseZeroStride", SA_ERR_SHAPE, [](Fx &f) {
    f.lse.t()->strides[0] = kHq, f.lse.t()->strides[1] = 0;
    return f.attend();
  }, "lse");
  add("AttendMassZeroStride", SA_ERR_SHAPE, [](Fx &f) {
    f.att_mass.t()->strides[0] = 0, f.att_mass.t()->strides[1] = 1;
    return f.attend();
  }, "slot_mass");
  add("SelectIndicesZeroStride", SA_ERR_SHAPE, [](Fx &f) {
    f.sel_out.t()->strides[0] = 0, f.sel_out.t()->strides[1] = kWidth, f.sel_out.t()->strides[2] = 1;
    return f.select();
  }, "indices");
  // Token positions outside the rule (queries: |p| <= SA_MAX_POSITION; keys and slots: 0 ..
  // SA_MAX_POSITION or -1): p + 1 and p - window would overflow (INT64_MAX made a causal query
  // see nothing, INT64_MIN overflowed in the selectors).
  add("AttendQueryPositionInt64Max", SA_ERR_INVALID_ARGUMENT, [](Fx &f) {
    static const int64_t qp[kNq] = {3, INT64_MAX};
    f.att_opt.causal = 1, f.att_opt.query_positions = qp;
    return f.attend();
  }, "query_positions[1]");
  add("AttendQueryPositionInt64Min", SA_ERR_INVALID_ARGUMENT, [](Fx &f) {
    static const int64_t qp[kNq] = {INT64_MIN, 3};
    f.att_opt.causal = 1, f.att_opt.query_positions = qp;
    return f.attend();
  }, "query_positions[0]");
  add("AttendKeyPositionPastMax", SA_ERR_INVALID_ARGUMENT, [](Fx &f) {
    static int64_t kp[kNKv] = {0, 1, 2, 3, 4, 5, 6, 7, 8, SA_MAX_POSITION + 1};
    f.att_opt.causal = 1, f.att_opt.key_positions = kp;
    return f.attend();
  }, "key_positions[9]");
  add("AttendKeyPositionBelowMinusOne", SA_ERR_INVALID_ARGUMENT, [](Fx &f) {
    static int64_t kp[kNKv] = {0, 1, -2, 3, 4, 5, 6, 7, 8, 9};
    f.att_opt.key_positions = kp;
    return f.attend();
  }, "key_positions[2]");
  add("SelectQueryPositionInt64Max", SA_ERR_INVALID_ARGUMENT, [](Fx &f) {
    static const int64_t qp[kNq] = {5, INT64_MAX};
    f.sel_opt.query_positions = qp;
    return f.select();
  }, "query_positions[1]");
  add("SelectQueryPositionInt64Min", SA_ERR_INVALID_ARGUMENT, [](Fx &f) {
    static const int64_t qp[kNq] = {INT64_MIN, 5};
    f.sel_opt.query_positions = qp;
    return f.select();
  }, "query_positions[0]");
  add("UpdatePositionInt64Max", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.upd_pos[0] = INT64_MAX; return f.update(); },
      "positions[0]");
  add("EvictPositionPastMax", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.ev_pos.set({4}, double(SA_MAX_POSITION) * 1.5); return f.evict(); },
      "positions[4]");
  // budget + incoming near INT64_MAX: the floor sum sinks + window + incoming overflowed.
  add("EvictBudgetAndIncomingNearInt64Max", SA_ERR_INVALID_ARGUMENT, [](Fx &f) {
    f.ev_opt.budget = INT64_MAX, f.ev_opt.incoming = INT64_MAX - 1;
    return f.evict();
  }, "budget");
  add("AttendMassWrongKeyCount", SA_ERR_SHAPE, [](Fx &f) { f.att_mass.t()->shape[1] = kNKv - 1; return f.attend(); },
      "slot_mass");
  add("AttendMassWrongHeads", SA_ERR_SHAPE, [](Fx &f) { f.att_mass.t()->shape[0] = kHq; return f.attend(); }, "slot_mass");
  add("AttendMassSharedWrongLength", SA_ERR_SHAPE, [](Fx &f) {
    sa_tensor *t = f.att_mass.t();
    t->rank = 1, t->shape[0] = kNKv + 1;
    return f.attend();
  });
  add("AttendMassRank3", SA_ERR_SHAPE, [](Fx &f) {
    sa_tensor *t = f.att_mass.t();
    t->rank = 3, t->shape[2] = 1;
    return f.attend();
  }, "rank 3");
  add("AttendMassNullData", SA_ERR_NULL_POINTER, [](Fx &f) { f.att_mass.t()->data = nullptr; return f.attend(); },
      "slot_mass");
  add("AttendMassCuda", SA_ERR_BACKEND_UNAVAILABLE, [](Fx &f) { make_cuda(f.att_mass.t()); return f.attend(); });
  add("AttendMassNegativeStride", SA_ERR_SHAPE, [](Fx &f) {
    sa_tensor *t = f.att_mass.t();
    t->strides[0] = -kNKv, t->strides[1] = 1;
    return f.attend();
  });
  add("AttendMassDecayNan", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.att_opt.mass_decay = NAN; return f.attend(); },
      "mass_decay");
  add("AttendMassDecayNegative", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.att_opt.mass_decay = -0.1f; return f.attend(); });
  add("AttendMassDecayAboveOne", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.att_opt.mass_decay = 1.5f; return f.attend(); });

  // ---- sa_cache_evict
  add("EvictNullCtx", SA_ERR_NULL_POINTER, [](Fx &f) {
    return sa_cache_evict(nullptr, &f.ev_opt, f.ev_scores.t(), f.ev_pos.t(), f.ev_freed.t(), &f.n_freed);
  });
  add("EvictNullOptions", SA_ERR_NULL_POINTER, [](Fx &f) {
    return sa_cache_evict(f.ctx, nullptr, f.ev_scores.t(), f.ev_pos.t(), f.ev_freed.t(), &f.n_freed);
  });
  add("EvictNullScores", SA_ERR_NULL_POINTER, [](Fx &f) {
    return sa_cache_evict(f.ctx, &f.ev_opt, nullptr, f.ev_pos.t(), f.ev_freed.t(), &f.n_freed);
  });
  add("EvictNullPositions", SA_ERR_NULL_POINTER, [](Fx &f) {
    return sa_cache_evict(f.ctx, &f.ev_opt, f.ev_scores.t(), nullptr, f.ev_freed.t(), &f.n_freed);
  });
  add("EvictNullFreed", SA_ERR_NULL_POINTER, [](Fx &f) {
    return sa_cache_evict(f.ctx, &f.ev_opt, f.ev_scores.t(), f.ev_pos.t(), nullptr, &f.n_freed);
  });
  add("EvictNullCount", SA_ERR_NULL_POINTER, [](Fx &f) {
    return sa_cache_evict(f.ctx, &f.ev_opt, f.ev_scores.t(), f.ev_pos.t(), f.ev_freed.t(), nullptr);
  });
  add("EvictNullScoresData", SA_ERR_NULL_POINTER, [](Fx &f) { f.ev_scores.t()->data = nullptr; return f.evict(); });
  add("EvictNullFreedData", SA_ERR_NULL_POINTER, [](Fx &f) { f.ev_freed.t()->data = nullptr; return f.evict(); });
  add("EvictStructSizeZero", SA_ERR_STRUCT_SIZE, [](Fx &f) { f.ev_opt.struct_size = 0; return f.evict(); });
  add("EvictStructSizeTooSmall", SA_ERR_STRUCT_SIZE,
      [](Fx &f) { f.ev_opt.struct_size = offsetof(sa_evict_options, window) + sizeof(int32_t) - 1; return f.evict(); });
  add("EvictNegativeBudget", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.ev_opt.budget = -1; return f.evict(); }, "budget");
  add("EvictNegativeIncoming", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.ev_opt.incoming = -1; return f.evict(); });
  add("EvictNegativeSinks", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.ev_opt.sinks = -1; return f.evict(); });
  add("EvictNegativeWindow", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.ev_opt.window = -1; return f.evict(); });
  add("EvictBudgetBelowSinksWindowIncoming", SA_ERR_INVALID_ARGUMENT, [](Fx &f) {
    f.ev_opt.sinks = 5, f.ev_opt.window = 3;  // 5 + 3 + 1 incoming > budget 8
    return f.evict();
  }, "budget");
  add("EvictRepeatedPositionsExceedBudget", SA_ERR_INVALID_ARGUMENT, [](Fx &f) {
    f.ev_pos.set_values({0, 9, 9, 9, 9, 9, 9, 9, 9, 9});  // nine slots in the window
    return f.evict();
  }, "budget");
  add("EvictNanScore", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.ev_scores.set({4}, NAN); return f.evict(); }, "NaN");
  add("EvictPositionsLongerThanScores", SA_ERR_SHAPE, [](Fx &f) { f.ev_pos.t()->shape[0] = kNKv - 1; return f.evict(); },
      "positions");
  add("EvictPositionBelowMinusOne", SA_ERR_INVALID_ARGUMENT, [](Fx &f) { f.ev_pos.set({2}, -2); return f.evict(); });
  add("EvictF16Scores", SA_ERR_DTYPE, [](Fx &f) { f.ev_scores.t()->dtype = SA_DTYPE_F16; return f.evict(); });
  add("EvictI32Positions", SA_ERR_DTYPE, [](Fx &f) { f.ev_pos.t()->dtype = SA_DTYPE_I32; return f.evict(); });
  add("EvictI64Freed", SA_ERR_DTYPE, [](Fx &f) { f.ev_freed.t()->dtype = SA_DTYPE_I64; return f.evict(); });
  add("EvictScoresRank3", SA_ERR_SHAPE, [](Fx &f) {
    sa_tensor *t = f.ev_scores.t();
    t->rank = 3, t->shape[0] = 1, t->shape[1] = 1, t->shape[2] = kNKv;
    return f.evict();
  });
  add("EvictPositionsRank2", SA_ERR_SHAPE, [](Fx &f) {
    sa_tensor *t = f.ev_pos.t();
    t->rank = 2, t->shape[0] = 1, t->shape[1] = kNKv;
    return f.evict();
  });
  add("EvictScoresLengthMismatch", SA_ERR_SHAPE, [](Fx &f) { f.ev_scores.t()->shape[0] = kNKv - 1; return f.evict(); });
  add("EvictFreedTooSmall", SA_ERR_SHAPE, [](Fx &f) { f.ev_freed.t()->shape[0] = 2; return f.evict(); });
  add("EvictCudaScores", SA_ERR_BACKEND_UNAVAILABLE, [](Fx &f) { make_cuda(f.ev_scores.t()); return f.evict(); });
  add("EvictOverflowingPositions", SA_ERR_OVERFLOW, [](Fx &f) {
    f.ev_pos.t()->shape[0] = int64_t(1) << 61;  // 2^61 * 8 bytes
    f.ev_scores.t()->shape[0] = int64_t(1) << 61;
    return f.evict();
  });
  return c;
}

bool cuda_usable() {
  sa_context_options o = SA_CONTEXT_OPTIONS_INIT;
  o.device = SA_DEVICE_CUDA;
  sa_context *c = nullptr;
  const bool ok = sa_context_create(&o, &c) == SA_OK;
  sa_context_destroy(&c);
  return ok;
}

class BadInput : public ::testing::TestWithParam<Case> {};

TEST_P(BadInput, RefusedWithExactStatusAndNoWrites) {
  const Case &c = GetParam();
  Fx f;
  ASSERT_TRUE(f.ctx && f.ix);
  int64_t size_before = -1;
  ASSERT_SA_OK(sa_index_size(f.ix, &size_before));

  sa_status s = c.call(f);
  if (c.want == SA_ERR_BACKEND_UNAVAILABLE && s == SA_ERR_UNSUPPORTED) s = SA_ERR_BACKEND_UNAVAILABLE;
  // Where a CUDA plugin and device are usable, a CUDA tensor among CPU ones is a device mix-up.
  if (c.want == SA_ERR_BACKEND_UNAVAILABLE && s == SA_ERR_INVALID_ARGUMENT && cuda_usable())
    s = SA_ERR_BACKEND_UNAVAILABLE;
  EXPECT_EQ(s, c.want) << "got " << sa_status_name(s) << ", wanted " << sa_status_name(c.want) << ": "
                       << sa_last_error();
  const std::string message = sa_last_error();
  EXPECT_NE(message, "") << "no message for a failed call";
  if (c.mentions) {
    EXPECT_NE(message.find(c.mentions), std::string::npos) << "message: " << message;
  }

  // Nothing written: outputs, out-params, the index.
  EXPECT_TRUE(f.sel_out.untouched()) << "select output";
  EXPECT_TRUE(f.out.untouched()) << "attend out";
  EXPECT_TRUE(f.lse.untouched()) << "attend lse";
  EXPECT_TRUE(f.att_mass.untouched()) << "attend slot_mass";
  EXPECT_TRUE(f.ev_freed.untouched()) << "evict freed";
  EXPECT_EQ(f.n_freed, -7);
  EXPECT_EQ(f.size_out, -7);
  EXPECT_EQ(f.ctx_out, kCtxSentinel);
  EXPECT_EQ(f.ix_out, kIndexSentinel);
  int64_t size_after = -1;
  ASSERT_SA_OK(sa_index_size(f.ix, &size_after));
  EXPECT_EQ(size_after, size_before) << "a refused call changed the index";
  EXPECT_EQ(f.current_selection(), f.baseline_selection) << "a refused call changed the index";
}

INSTANTIATE_TEST_SUITE_P(Table, BadInput, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case> &info) { return info.param.name; });

// The baseline arguments are valid: each call succeeds untouched, so every case above fails
// because of its one change.
TEST(BadInputBaseline, EveryCallSucceeds) {
  Fx f;
  ASSERT_TRUE(f.ctx && f.ix);
  ASSERT_SA_OK(f.context_create());
  sat::ContextPtr c(f.ctx_out);
  ASSERT_SA_OK(f.index_create());
  sat::IndexPtr i(f.ix_out);
  EXPECT_SA_OK(f.append());
  EXPECT_SA_OK(f.update());
  EXPECT_SA_OK(f.size());
  EXPECT_EQ(f.size_out, kNKv + 3);
  EXPECT_SA_OK(f.select());
  EXPECT_TRUE(f.sel_out.only_elements_written());
  EXPECT_SA_OK(f.attend());
  EXPECT_TRUE(f.out.only_elements_written());
  EXPECT_TRUE(f.lse.only_elements_written());
  EXPECT_TRUE(f.att_mass.only_elements_written());
  EXPECT_SA_OK(f.evict());
  EXPECT_EQ(f.n_freed, 3);
  EXPECT_TRUE(f.ev_freed.only_elements_written());
  // Segments given together are fine.
  f.sel_opt.query_segments = f.qseg.data();
  f.kseg.resize(kNKv + 3, 0);
  f.sel_opt.key_segments = f.kseg.data();
  EXPECT_SA_OK(f.select());
  // The learned cases' weights file is valid for the fixture's index options.
  use_learned(f, learned_weights());
  f.ix_out = nullptr;
  ASSERT_SA_OK(f.index_create());
  sat::IndexPtr learned(f.ix_out);
}

// ------------------------------------------------------------------ conventions

TEST(Conventions, DestroyAcceptsNull) {
  sa_context_destroy(nullptr);
  sa_index_destroy(nullptr);
  sa_context *c = nullptr;
  sa_index *i = nullptr;
  sa_context_destroy(&c);
  sa_index_destroy(&i);
  auto ctx = sat::make_context(1);
  ASSERT_NE(ctx, nullptr);
  sa_context *raw = ctx.release();
  sa_index *ix = sat::make_index(raw, 1, 4).release();
  ASSERT_NE(ix, nullptr);
  sa_index_destroy(&ix);
  EXPECT_EQ(ix, nullptr);
  sa_context_destroy(&raw);
  EXPECT_EQ(raw, nullptr);
}

// A newer host passes a larger struct; the extra bytes must be ignored.
TEST(Conventions, LargerStructSizeIsAccepted) {
  struct Padded {
    sa_attend_options opt;
    unsigned char future[64];
  } p;
  std::memset(&p, 0, sizeof p);
  p.opt = SA_ATTEND_OPTIONS_INIT;
  p.opt.struct_size = sizeof p;
  Fx f;
  ASSERT_TRUE(f.ctx);
  EXPECT_SA_OK(sa_attend(f.ctx, f.q.t(), f.k.t(), f.v.t(), nullptr, &p.opt, f.out.t(), f.lse.t()));

  struct PaddedSel {
    sa_select_options opt;
    unsigned char future[64];
  } s;
  std::memset(&s, 0, sizeof s);
  s.opt = f.sel_opt;
  s.opt.struct_size = sizeof s;
  EXPECT_SA_OK(sa_select(f.ix, f.sel_q.t(), &s.opt, f.sel_out.t()));

  struct PaddedCtx {
    sa_context_options opt;
    unsigned char future[64];
  } c;
  std::memset(&c, 0, sizeof c);
  c.opt = SA_CONTEXT_OPTIONS_INIT;
  c.opt.struct_size = sizeof c;
  sa_context *ctx = nullptr;
  EXPECT_SA_OK(sa_context_create(&c.opt, &ctx));
  sa_context_destroy(&ctx);
}

// NULL options are the defaults wherever every field has one; sa_index_create (num_kv_heads,
// head_dim) and sa_cache_evict (budget) have required fields and refuse NULL.
TEST(Conventions, NullOptionsMeanDefaults) {
  Fx f;
  ASSERT_TRUE(f.ctx && f.ix);
  sa_select_options so = SA_SELECT_OPTIONS_INIT;
  const int64_t width = int64_t(so.sinks) + so.window + so.top_k;
  Tensor with_null(SA_DTYPE_I32, {kNq, kHkv, width}), with_init(SA_DTYPE_I32, {kNq, kHkv, width});
  EXPECT_SA_OK(sa_select(f.ix, f.sel_q.t(), nullptr, with_null.t()));
  EXPECT_SA_OK(sa_select(f.ix, f.sel_q.t(), &so, with_init.t()));
  EXPECT_EQ(with_null.values(), with_init.values());

  sa_attend_options ao = SA_ATTEND_OPTIONS_INIT;
  Tensor out_null(SA_DTYPE_F32, {kNq, kHq, kD}), out_init(SA_DTYPE_F32, {kNq, kHq, kD});
  EXPECT_SA_OK(sa_attend(f.ctx, f.q.t(), f.k.t(), f.v.t(), f.indices.t(), nullptr, out_null.t(), nullptr));
  EXPECT_SA_OK(sa_attend(f.ctx, f.q.t(), f.k.t(), f.v.t(), f.indices.t(), &ao, out_init.t(), nullptr));
  EXPECT_EQ(out_null.values(), out_init.values());

  sa_context *c = nullptr;
  EXPECT_SA_OK(sa_context_create(nullptr, &c));
  sa_context_destroy(&c);

  sa_index *ix = nullptr;
  EXPECT_EQ(sa_index_create(f.ctx, nullptr, &ix), SA_ERR_NULL_POINTER);
  EXPECT_NE(std::string(sa_last_error()).find("opt"), std::string::npos) << sa_last_error();
  EXPECT_EQ(ix, nullptr);
  EXPECT_EQ(sa_cache_evict(f.ctx, nullptr, f.ev_scores.t(), f.ev_pos.t(), f.ev_freed.t(), &f.n_freed),
            SA_ERR_NULL_POINTER);
  EXPECT_NE(std::string(sa_last_error()).find("opt"), std::string::npos) << sa_last_error();
  EXPECT_EQ(f.n_freed, -7);
}

TEST(Conventions, StatusNames) {
  const std::pair<sa_status, const char *> names[] = {
      {SA_OK, "SA_OK"},
      {SA_ERR_NULL_POINTER, "SA_ERR_NULL_POINTER"},
      {SA_ERR_INVALID_ARGUMENT, "SA_ERR_INVALID_ARGUMENT"},
      {SA_ERR_DTYPE, "SA_ERR_DTYPE"},
      {SA_ERR_SHAPE, "SA_ERR_SHAPE"},
      {SA_ERR_OUT_OF_RANGE, "SA_ERR_OUT_OF_RANGE"},
      {SA_ERR_OVERFLOW, "SA_ERR_OVERFLOW"},
      {SA_ERR_STRUCT_SIZE, "SA_ERR_STRUCT_SIZE"},
      {SA_ERR_OUT_OF_MEMORY, "SA_ERR_OUT_OF_MEMORY"},
      {SA_ERR_UNSUPPORTED, "SA_ERR_UNSUPPORTED"},
      {SA_ERR_BACKEND_UNAVAILABLE, "SA_ERR_BACKEND_UNAVAILABLE"},
      {SA_ERR_FORMAT, "SA_ERR_FORMAT"},
      {SA_ERR_INTERNAL, "SA_ERR_INTERNAL"},
  };
  for (auto [s, n] : names) EXPECT_STREQ(sa_status_name(s), n);
  ASSERT_NE(sa_status_name(sa_status(999)), nullptr);
  ASSERT_NE(sa_status_name(sa_status(-1)), nullptr);
}

TEST(Conventions, IsaNames) {
  EXPECT_STREQ(sa_isa_name(SA_ISA_SCALAR), "scalar");
  EXPECT_STREQ(sa_isa_name(SA_ISA_NEON), "neon");
  EXPECT_STREQ(sa_isa_name(SA_ISA_AVX2), "avx2");
  EXPECT_STREQ(sa_isa_name(SA_ISA_AVX512), "avx512");
  EXPECT_STREQ(sa_isa_name(SA_ISA_AUTO), "auto");
  EXPECT_NE(sa_isa_name(sa_isa(55)), nullptr);
}

// sa_last_error is per thread: a failure here is invisible to a fresh thread.
TEST(Conventions, LastErrorIsThreadLocal) {
  EXPECT_EQ(sa_index_size(nullptr, nullptr), SA_ERR_NULL_POINTER);
  std::string mine = sa_last_error();
  EXPECT_NE(mine, "");
  std::string other = "unset";
  std::thread([&] { other = sa_last_error(); }).join();
  EXPECT_EQ(other, "");
  EXPECT_EQ(std::string(sa_last_error()), mine);
}

// The other side of the position rule: SA_MAX_POSITION itself is a valid position for a key, a
// query and an append; one append past it is refused with SA_ERR_OVERFLOW and changes nothing.
TEST(Positions, TheBoundIsAValidPositionAndAppendsStopThere) {
  sat::Rng rng(404);
  auto ctx = sat::make_context(1);
  auto ix = sat::make_index(ctx.get(), int32_t(kHkv), int32_t(kD), SA_DTYPE_F32);
  Tensor keys = sat::random_tensor(rng, SA_DTYPE_F32, {kNKv, kHkv, kD});
  ASSERT_EQ(sa_index_append(ix.get(), keys.t()), SA_OK) << sa_last_error();
  Tensor one = sat::random_tensor(rng, SA_DTYPE_F32, {1, kHkv, kD});
  const int32_t slot = 0;
  const int64_t below = SA_MAX_POSITION - 1;
  ASSERT_EQ(sa_index_update(ix.get(), &slot, 1, one.t(), &below), SA_OK) << sa_last_error();
  ASSERT_EQ(sa_index_append(ix.get(), one.t()), SA_OK) << sa_last_error();  // gets SA_MAX_POSITION
  EXPECT_EQ(sa_index_append(ix.get(), one.t()), SA_ERR_OVERFLOW);
  EXPECT_NE(std::string(sa_last_error()).find("SA_MAX_POSITION"), std::string::npos) << sa_last_error();
  // A refill without positions gives the next ones, as an append would: refused the same way.
  const int32_t refill = 3;
  EXPECT_EQ(sa_index_update(ix.get(), &refill, 1, one.t(), nullptr), SA_ERR_OVERFLOW);
  EXPECT_NE(std::string(sa_last_error()).find("SA_MAX_POSITION"), std::string::npos) << sa_last_error();
  int64_t size = 0;
  ASSERT_EQ(sa_index_size(ix.get(), &size), SA_OK);
  EXPECT_EQ(size, kNKv + 1);

  // A query at the bound sees every key: each KV head's list holds the sinks at positions
  // 1..3 (slot 0 moved), the window (slots 0 and 10, at the bound) and top_k 4: 9 slots.
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {1, kHq, kD});
  Tensor idx(SA_DTYPE_I32, {1, kHkv, kWidth});
  sa_select_options so = SA_SELECT_OPTIONS_INIT;
  so.top_k = 4, so.window = 4, so.sinks = 4;
  const int64_t at_bound = SA_MAX_POSITION;
  so.query_positions = &at_bound;
  ASSERT_EQ(sa_select(ix.get(), q.t(), &so, idx.t()), SA_OK) << sa_last_error();
  const std::vector<double> lists = idx.values();
  for (int64_t h = 0; h < kHkv; ++h) {
    const auto first = lists.begin() + h * kWidth, last = first + kWidth;
    EXPECT_EQ(std::count_if(first, last, [](double e) { return e >= 0 && e <= kNKv; }), 9) << "head " << h;
    EXPECT_EQ(std::count(first, last, double(kNKv)), 1) << "head " << h << ": the key at SA_MAX_POSITION";
  }

  // Causal attention of a query at the bound over keys at 0 .. n-1 equals non-causal attention.
  Tensor k = sat::random_tensor(rng, SA_DTYPE_F32, {kNKv, kHkv, kD});
  Tensor v = sat::random_tensor(rng, SA_DTYPE_F32, {kNKv, kHkv, kD});
  Tensor causal_out(SA_DTYPE_F32, {1, kHq, kD}), plain_out(SA_DTYPE_F32, {1, kHq, kD});
  sa_attend_options ao = SA_ATTEND_OPTIONS_INIT;
  ASSERT_EQ(sa_attend(ctx.get(), q.t(), k.t(), v.t(), nullptr, &ao, plain_out.t(), nullptr), SA_OK) << sa_last_error();
  ao.causal = 1;
  ao.query_positions = &at_bound;
  ASSERT_EQ(sa_attend(ctx.get(), q.t(), k.t(), v.t(), nullptr, &ao, causal_out.t(), nullptr), SA_OK) << sa_last_error();
  EXPECT_EQ(causal_out.values(), plain_out.values());
}

}  // namespace
