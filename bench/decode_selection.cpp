#include "decode_selection.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <stdexcept>

namespace quality {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

sa_dtype library_dtype(npy::Dtype d) { return d == npy::Dtype::F16 ? SA_DTYPE_F16 : SA_DTYPE_F32; }


std::string call_error(const char *call, sa_status st) {
  return std::string(call) + ": " + sa_status_name(st) + ": " + sa_last_error();
}

struct IndexDeleter {
  void operator()(sa_index *ix) const { sa_index_destroy(&ix); }
};

void check_positions(const QkvLayer &layer, const std::vector<int64_t> &positions) {
  if (positions.empty()) throw std::invalid_argument("no query positions");
  for (int64_t p : positions)
    if (p < layer.first_query || p >= layer.tokens)
      throw std::invalid_argument("query position " + std::to_string(p) + " outside the layer's queries [" +
                                  std::to_string(layer.first_query) + ", " + std::to_string(layer.tokens) + ")");
}

SelectorKind make_kind(const char *name, const char *about, sa_selector_kind kind, int refine = 1) {
  SelectorKind k{name, about, sa_index_options_default()};
  k.options.kind = kind;
  k.options.page.refine = refine;
  k.needs_weights = kind == SA_SELECTOR_LEARNED || kind == SA_SELECTOR_INDEXER;
  return k;
}

// Keys [from, to) of the layer as an append.
sa_status append_keys(sa_index *ix, const QkvLayer &layer, sa_dtype dtype, int64_t from, int64_t to) {
  const size_t item = npy::itemsize(layer.k.dtype);
  const sa_tensor keys =
      tensor3(layer.k.data.data() + size_t(layer.kv_offset(from, 0)) * item, dtype, to - from, layer.hkv, layer.d);
  return sa_index_append(ix, &keys);
}

}  // namespace

sa_tensor tensor3(const void *data, sa_dtype dtype, int64_t a, int64_t b, int64_t c) {
  sa_tensor t{};
  t.data = const_cast<void *>(data);
  t.dtype = dtype;
  t.device = SA_DEVICE_CPU;
  t.rank = 3;
  t.shape[0] = a;
  t.shape[1] = b;
  t.shape[2] = c;
  return t;  // all-zero strides: contiguous
}

const char *order_name(BuildOrder order) {
  switch (order) {
    case BuildOrder::all: return "all";
    case BuildOrder::decode: return "decode";
    case BuildOrder::prompt_decode: return "prompt+decode";
  }
  return "?";
}

bool parse_order(const std::string &name, BuildOrder *order) {
  for (BuildOrder o : {BuildOrder::all, BuildOrder::decode, BuildOrder::prompt_decode})
    if (name == order_name(o)) {
      *order = o;
      return true;
    }
  return false;
}

sa_index_options SelectorKind::index_options(const std::string &weights, int layer) const {
  sa_index_options o = options;
  if (needs_weights) {
    o.learned.weights_path = weights.c_str();
    o.learned.layer = layer;
  }
  return o;
}

double DecodeSetting::scale_for(int64_t d) const { return scale > 0 ? scale : 1.0 / std::sqrt(double(d)); }

const std::vector<SelectorKind> &selector_kinds() {
  static const std::vector<SelectorKind> kinds = {
      make_kind("exact", "all scores, exact top-K (the oracle)", SA_SELECTOR_EXACT),
      make_kind("page", "Quest page bounds, candidates rescored exactly", SA_SELECTOR_PAGE, 1),
      make_kind("page-norefine", "Quest page bounds, whole pages kept", SA_SELECTOR_PAGE, 0),
      make_kind("lsh", "multi-round SimHash, multi-probe, rescored", SA_SELECTOR_LSH),
      make_kind("hnsw", "HNSW graph per KV head, rescored", SA_SELECTOR_HNSW),
  };
  return kinds;
}

const std::vector<SelectorKind> &all_selector_kinds() {
  static const std::vector<SelectorKind> kinds = [] {
    std::vector<SelectorKind> all = selector_kinds();
    all.push_back(make_kind("learned", "learned projections (weights file), rescored", SA_SELECTOR_LEARNED));
    all.push_back(make_kind("indexer", "lightning indexer (weights file)", SA_SELECTOR_INDEXER));
    return all;
  }();
  return kinds;
}

const SelectorKind *find_selector_kind(const std::string &name) {
  for (const SelectorKind &k : all_selector_kinds())
    if (k.name == name) return &k;
  return nullptr;
}

std::vector<int64_t> spread_positions(int64_t lo, int64_t hi, int64_t count) {
  if (lo < 0 || hi <= lo || count < 1 || count > hi - lo)
    throw std::invalid_argument("cannot spread " + std::to_string(count) + " distinct positions over [" +
                                std::to_string(lo) + ", " + std::to_string(hi) + ")");
  std::vector<int64_t> out;
  for (int64_t i = 0; i < count; ++i) out.push_back(lo + i * (hi - lo) / count);
  return out;
}

DecodeSelection select_decode(sa_context *ctx, const sa_index_options &kind, const QkvLayer &layer,
                              const std::vector<int64_t> &positions, int32_t top_k, const DecodeSetting &setting,
                              int repeat) {
  check_positions(layer, positions);
  DecodeSelection sel;
  sel.lists = setting.per_query_head ? layer.hq : layer.hkv;
  sel.width = setting.width(top_k);
  const sa_dtype dtype = library_dtype(layer.k.dtype);
  const int64_t n_keys = *std::max_element(positions.begin(), positions.end()) + 1;
  auto failed = [&](const char *call, sa_status st) {
    sel.status = st;
    sel.error = call_error(call, st);
    sel.indices.clear();
    return sel;
  };

  const bool interleaved = setting.order != BuildOrder::all;
  if (interleaved && !std::is_sorted(positions.begin(), positions.end()))
    throw std::invalid_argument(std::string("build order ") + order_name(setting.order) +
                                " selects as keys arrive: query positions must ascend");
  // Keys appended before the first selection; the rest one at a time as queries need them.
  int64_t first = n_keys;
  if (setting.order == BuildOrder::decode) first = 0;
  if (setting.order == BuildOrder::prompt_decode)
    first = std::min(n_keys, setting.prompt >= 0 ? setting.prompt : positions.front());

  sa_index_options o = kind;
  o.num_kv_heads = int32_t(layer.hkv);
  o.head_dim = int32_t(layer.d);
  o.dtype = dtype;
  o.capacity = n_keys;
  auto t_build = Clock::now();
  sa_index *raw = nullptr;
  sa_status st = sa_index_create(ctx, &o, &raw);
  if (st != SA_OK) return failed("sa_index_create", st);
  std::unique_ptr<sa_index, IndexDeleter> ix(raw);
  if (first > 0 && (st = append_keys(ix.get(), layer, dtype, 0, first)) != SA_OK) return failed("sa_index_append", st);
  sel.build_seconds = seconds_since(t_build);
  int64_t appended = first;

  sel.indices.assign(positions.size() * size_t(sel.lists) * size_t(sel.width), -1);
  sa_select_options so = sa_select_options_default();
  so.top_k = top_k;
  so.window = setting.window;
  so.sinks = setting.sinks;
  so.per_query_head = setting.per_query_head ? 1 : 0;
  so.scale = float(setting.scale_for(layer.d));
  const size_t item = npy::itemsize(layer.q.dtype);
  sel.select_seconds = 0;
  for (size_t i = 0; i < positions.size(); ++i) {
    t_build = Clock::now();
    for (; appended <= positions[i]; ++appended)  // the query's own key arrives before it selects
      if ((st = append_keys(ix.get(), layer, dtype, appended, appended + 1)) != SA_OK)
        return failed("sa_index_append", st);
    sel.build_seconds += seconds_since(t_build);
    so.query_positions = &positions[i];
    const sa_tensor q = tensor3(layer.q.data.data() + size_t(layer.q_offset(positions[i], 0)) * item, dtype, 1,
                                layer.hq, layer.d);
    sa_tensor out = tensor3(sel.indices.data() + i * size_t(sel.lists) * size_t(sel.width), SA_DTYPE_I32, 1,
                            sel.lists, sel.width);
    double best = std::numeric_limits<double>::infinity();
    for (int r = 0; r < std::max(1, repeat); ++r) {
      const auto t0 = Clock::now();
      st = sa_select(ix.get(), &q, &so, &out);
      best = std::min(best, seconds_since(t0));
      if (st != SA_OK) return failed("sa_select", st);
    }
    sel.select_seconds += best;
  }
  return sel;
}

sa_status attend_selection(sa_context *ctx, const QkvLayer &layer, const std::vector<int64_t> &positions,
                           const DecodeSelection &selection, const DecodeSetting &setting, std::vector<float> *out,
                           std::string *error) {
  check_positions(layer, positions);
  if (!selection.ok()) throw std::invalid_argument("attend_selection: the selection failed");
  const sa_dtype dtype = library_dtype(layer.k.dtype);
  const size_t item = npy::itemsize(layer.q.dtype), row = size_t(layer.hq * layer.d) * item;
  // The queries' rows side by side: [n_q, H_q, D] in the data's dtype.
  std::vector<unsigned char> q(positions.size() * row);
  for (size_t i = 0; i < positions.size(); ++i)
    std::copy_n(layer.q.data.data() + size_t(layer.q_offset(positions[i], 0)) * item, row, q.data() + i * row);
  const int64_t n_q = int64_t(positions.size());
  out->assign(size_t(n_q * layer.hq * layer.d), 0.f);
  const sa_tensor qt = tensor3(q.data(), dtype, n_q, layer.hq, layer.d);
  const sa_tensor kt = tensor3(layer.k.data.data(), dtype, layer.tokens, layer.hkv, layer.d);
  const sa_tensor vt = tensor3(layer.v.data.data(), dtype, layer.tokens, layer.hkv, layer.d);
  const sa_tensor it = tensor3(selection.indices.data(), SA_DTYPE_I32, n_q, selection.lists, selection.width);
  sa_tensor ot = tensor3(out->data(), SA_DTYPE_F32, n_q, layer.hq, layer.d);
  sa_attend_options ao = sa_attend_options_default();
  ao.scale = float(setting.scale_for(layer.d));
  ao.causal = 1;
  ao.query_positions = positions.data();
  const sa_status st = sa_attend(ctx, &qt, &kt, &vt, &it, &ao, &ot, nullptr);
  if (st != SA_OK) *error = call_error("sa_attend", st);
  return st;
}

}  // namespace quality
