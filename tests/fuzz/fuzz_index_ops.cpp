// Contexts and indexes of random kinds and options, grown by appends in random chunks, updates
// (refills at given or next positions), truncations (valid or refused) and clones; the mirror
// follows every change the library accepted, and refused changes must leave the index as it was.
#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "build_features.hpp"
#include "fuzz_layout.hpp"
#include "fuzz_scenario.hpp"
#include "weights_file.hpp"

namespace apifuzz {

namespace {

const char *kind_word(sa_selector_kind k) {
  switch (k) {
    case SA_SELECTOR_EXACT: return "exact";
    case SA_SELECTOR_PAGE: return "page";
    case SA_SELECTOR_LSH: return "lsh";
    case SA_SELECTOR_HNSW: return "hnsw";
    case SA_SELECTOR_LEARNED: return "learned";
    case SA_SELECTOR_INDEXER: return "indexer";
  }
  return "?";
}

sa_dtype float_dtype(ByteSource &in) { return in.pick({SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16}); }

std::vector<double> normals(sat::Rng &rng, size_t n, double sigma) {
  std::vector<double> v(n);
  for (double &x : v) x = sigma * rng.normal();
  return v;
}

}  // namespace

Scenario::Scenario(ByteSource &in, Report &report) : in_(in), report_(report), rng_(in.word(8)) {
  kinds_ = sat::built_kinds({SA_SELECTOR_EXACT, SA_SELECTOR_PAGE, SA_SELECTOR_LSH, SA_SELECTOR_HNSW,
                             SA_SELECTOR_LEARNED, SA_SELECTOR_INDEXER});
}

Scenario::~Scenario() {
  for (const std::string &path : weights_files_) unlink(path.c_str());
}

void Scenario::make_contexts() {
  const int32_t threads = int32_t(in_.range(1, 2));
  std::vector<sa_isa> isas = {SA_ISA_AUTO, SA_ISA_SCALAR};
  if (sat::cpu_has(SA_ISA_AVX2)) isas.push_back(SA_ISA_AVX2);
  if (sat::cpu_has(SA_ISA_AVX512)) isas.push_back(SA_ISA_AVX512);
  const sa_isa isa = in_.pick(isas);
  for (int32_t t : {threads, 3 - threads}) {
    sa_context_options o = SA_CONTEXT_OPTIONS_INIT;
    o.threads = t;
    o.isa = isa;
    sa_context *c = nullptr;
    report_.require_ok(sa_context_create(&o, &c), "sa_context_create");
    (t == threads ? ctx_ : other_ctx_).reset(c);
  }
  report_.say("context: threads ", threads, " (results compared with threads ", 3 - threads, "), isa cap ",
              sa_isa_name(isa));
}

// A safetensors file for the learned or indexer selector of o's shape; o points at it.
void Scenario::write_weights(const sa_index_options &o, std::string &words) {
  const int64_t h_kv = o.num_kv_heads, d = o.head_dim, h_q = h_kv * group_;
  const std::string dt = in_.pick({std::string("F32"), std::string("F16"), std::string("BF16")});
  std::vector<wf::Entry> entries;
  std::ostringstream w;
  if (o.kind == SA_SELECTOR_LEARNED) {
    const int64_t ds = in_.range(1, 12);
    const int64_t pq = in_.pick({int64_t(0), int64_t(1), h_kv, h_q}), pk = in_.pick({int64_t(0), int64_t(1), h_kv});
    std::vector<int64_t> qs = pq ? std::vector<int64_t>{pq, ds, d} : std::vector<int64_t>{ds, d};
    std::vector<int64_t> ks = pk ? std::vector<int64_t>{pk, ds, d} : std::vector<int64_t>{ds, d};
    entries.push_back({"layers.0.q_proj", dt, qs, normals(rng_, size_t((pq ? pq : 1) * ds * d), 0.5), ""});
    entries.push_back({"layers.0.k_proj", dt, ks, normals(rng_, size_t((pk ? pk : 1) * ds * d), 0.5), ""});
    w << "learned weights " << dt << " d_search " << ds << ", q_proj sets " << (pq ? pq : 0) << " (0: 2-d), k_proj sets "
      << (pk ? pk : 0) << ", rescore " << o.learned.rescore;
  } else {
    const int64_t heads = in_.range(1, 3), di = in_.range(1, 8);
    entries.push_back({"layers.0.indexer.q_proj", dt, {heads, di, h_q * d}, normals(rng_, size_t(heads * di * h_q * d), 0.3), ""});
    entries.push_back({"layers.0.indexer.head_weights", dt, {heads, h_q * d}, normals(rng_, size_t(heads * h_q * d), 0.3), ""});
    entries.push_back({"layers.0.indexer.k_proj", dt, {di, h_kv * d}, normals(rng_, size_t(di * h_kv * d), 0.3), ""});
    const bool bias = in_.chance(40);
    if (bias) entries.push_back({"layers.0.indexer.head_bias", dt, {heads}, normals(rng_, size_t(heads), 1.0), ""});
    w << "indexer weights " << dt << " heads " << heads << " d_index " << di << (bias ? " with head_bias" : "");
  }
  weights_files_.push_back(wf::write_file(wf::file_bytes(entries), "apifuzz"));
  words = w.str();
}

void Scenario::make_index(FuzzIndex &fx, bool is_main) {
  sa_index_options &o = fx.opt;
  o = SA_INDEX_OPTIONS_INIT;
  if (is_main) {
    o.num_kv_heads = int32_t(in_.skewed(1, 2, 3));
    o.head_dim = int32_t(in_.chance(50) ? in_.pick({1, 2, 3, 5, 7, 8, 16, 17, 31, 32, 33, 64, 72}) : in_.range(1, 72));
    group_ = in_.skewed(1, 2, 4);
  } else {
    o.num_kv_heads = main_.opt.num_kv_heads;
    o.head_dim = main_.opt.head_dim;
  }
  o.kind = in_.pick(kinds_);
  o.dtype = float_dtype(in_);
  o.capacity = in_.chance(20) ? in_.range(0, 400) : 0;
  o.borrow_keys = in_.chance(20) ? 1 : 0;
  std::ostringstream w;
  w << "index" << (is_main ? "" : " (another sequence)") << ": " << kind_word(o.kind) << ", H_kv " << o.num_kv_heads
    << ", D " << o.head_dim << ", H_q " << o.num_kv_heads * group_ << ", dtype " << dtype_word(o.dtype)
    << ", capacity " << o.capacity << (o.borrow_keys ? ", borrow_keys" : "");
  switch (o.kind) {
    case SA_SELECTOR_PAGE:
      o.page.page_size = int32_t(in_.chance(30) ? in_.range(1, 40) : in_.pick({1, 4, 8, 16}));
      o.page.refine = in_.chance(70) ? 1 : 0;
      w << ", page_size " << o.page.page_size << ", refine " << o.page.refine;
      break;
    case SA_SELECTOR_LSH:
      o.lsh.rounds = int32_t(in_.range(1, 12));
      o.lsh.bits = int32_t(in_.chance(50) ? 0 : in_.range(0, 12));
      o.lsh.probes = int32_t(in_.range(0, 6));
      o.lsh.seed = in_.word(2);
      w << ", rounds " << o.lsh.rounds << ", bits " << o.lsh.bits << ", probes " << o.lsh.probes << ", seed "
        << o.lsh.seed;
      break;
    case SA_SELECTOR_HNSW:
      o.hnsw.m = int32_t(in_.range(2, 16));
      o.hnsw.ef_construction = int32_t(in_.range(1, 48));
      o.hnsw.ef_search = int32_t(in_.chance(20) ? 192 : in_.range(1, 96));
      w << ", m " << o.hnsw.m << ", ef_construction " << o.hnsw.ef_construction << ", ef_search " << o.hnsw.ef_search;
      break;
    case SA_SELECTOR_LEARNED:
    case SA_SELECTOR_INDEXER: {
      o.learned.rescore = in_.chance(30) ? 0 : in_.range(1, 16);
      o.learned.layer = 0;
      std::string ww;
      write_weights(o, ww);
      o.learned.weights_path = weights_files_.back().c_str();
      w << ", " << ww;
      break;
    }
    default:
      break;
  }
  if (is_main && (o.kind == SA_SELECTOR_EXACT || o.kind == SA_SELECTOR_PAGE) && in_.chance(5)) {
    fx.max_slots = in_.range(2200, kMaxSlotsLarge);
    w << ", up to " << fx.max_slots << " slots";
  }
  // The host's K/V cache beside the index.
  std::string kw, vw;
  const sa_dtype host_dt = float_dtype(in_);
  fx.host_k = random_tensor(in_, rng_, host_dt, {fx.max_slots, o.num_kv_heads, o.head_dim}, 1.0, &kw);
  fx.host_v = random_tensor(in_, rng_, host_dt, {fx.max_slots, o.num_kv_heads, o.head_dim}, 1.0, &vw);
  w << "; host K " << kw << ", V " << vw;
  report_.say(w.str());
  sa_index *raw = nullptr;
  report_.require_ok(sa_index_create(ctx_.get(), &o, &raw), "sa_index_create");
  fx.handle.reset(raw);
  fx.owning.reset();
  if (o.borrow_keys && o.dtype == host_dt) {
    sa_index_options own = o;
    own.borrow_keys = 0;
    report_.require_ok(sa_index_create(ctx_.get(), &own, &raw), "sa_index_create (the owning twin)");
    fx.owning.reset(raw);
    report_.say("  (an owning twin of the same dtype gets the same calls)");
  }
}

void Scenario::grow(FuzzIndex &fx, int64_t ops) {
  for (int64_t n = 0; n < ops; ++n) {
    switch (in_.pick({0, 0, 0, 0, 1, 1, 2, 3, 4, 5, 5, 6, 6})) {
      case 0: append(fx); break;
      case 1: update(fx); break;
      case 5: update_heads(fx); break;
      case 6: evict_step(fx); break;
      case 2: truncate(fx); break;
      case 3: clone(fx); break;
      default: {
        SelectCase c = make_select_case(fx);
        check_select(fx, c);
      }
    }
  }
}

void Scenario::append(FuzzIndex &fx) {
  const bool large = fx.max_slots > kMaxSlots && in_.chance(60);
  const int64_t n = std::min(large ? in_.range(400, 2400) : in_.skewed(0, 24, 120), fx.max_slots - fx.size());
  std::string kw;
  sat::Tensor keys = random_tensor(in_, rng_, float_dtype(in_), {n, fx.h_kv(), fx.d()}, 1.0, &kw);
  const bool null_data = n == 0 && in_.chance(50);  // no element: data may be NULL
  if (null_data) keys.t()->data = nullptr;
  const bool overflow = fx.top() > SA_MAX_POSITION - n;
  report_.say("append ", n, " keys (", kw, null_data ? ", data NULL" : "", ")",
              overflow ? ": past SA_MAX_POSITION, must be refused" : "");
  const int64_t size_before = fx.size();
  const sa_status s = sa_index_append(fx.ix(), keys.t());
  if (overflow) {
    report_.require(s == SA_ERR_OVERFLOW, "append past SA_MAX_POSITION returned ", sa_status_name(s), ": ",
                    sa_last_error());
    int64_t size = -1;
    report_.require_ok(sa_index_size(fx.ix(), &size), "sa_index_size");
    report_.require(size == size_before, "a refused append changed the size to ", size);
    return;
  }
  report_.require_ok(s, "sa_index_append");
  if (fx.owning) report_.require_ok(sa_index_append(fx.owning.get(), keys.t()), "sa_index_append (owning twin)");
  fx.mirror_append(keys, rng_);
}

void Scenario::update(FuzzIndex &fx) {
  const int64_t n = std::min<int64_t>(in_.range(0, 8), fx.size());
  std::vector<int32_t> all(static_cast<size_t>(fx.size()));
  for (size_t s = 0; s < all.size(); ++s) all[s] = int32_t(s);
  for (size_t i = 0; i < size_t(n); ++i) std::swap(all[i], all[i + size_t(in_.range(0, int64_t(all.size() - i) - 1))]);
  std::vector<int32_t> slots(all.begin(), all.begin() + n);
  std::string kw;
  sat::Tensor keys = random_tensor(in_, rng_, float_dtype(in_), {n, fx.h_kv(), fx.d()}, 1.0, &kw);
  bool given = in_.chance(50);
  // Next positions past the bound must be refused like an append's (bug 1, fixed).
  const bool past_bound = !given && fx.top() > SA_MAX_POSITION - n;
  std::vector<int64_t> positions(static_cast<size_t>(n));
  const int64_t top = fx.max_pos();
  for (int64_t &p : positions) {
    switch (in_.range(0, 5)) {
      case 0: p = fx.size() ? fx.pos[size_t(in_.range(0, fx.size() - 1))] : 0; break;  // shared with another slot
      case 1: p = in_.range(0, 8); break;
      case 2: p = SA_MAX_POSITION - in_.range(0, 3); break;  // the bound: later appends overflow
      default: p = std::max<int64_t>(0, std::min(SA_MAX_POSITION, top + in_.range(-4, 6))); break;
    }
  }
  std::ostringstream w;
  w << "update slots " << list_words(std::vector<int64_t>(slots.begin(), slots.end()).data(), n) << " (" << kw << ")";
  if (given) w << " at positions " << list_words(positions.data(), n);
  else w << " at the next positions";
  if (past_bound && !given) w << ": past SA_MAX_POSITION, must be refused";
  report_.say(w.str());
  const sa_status s =
      sa_index_update(fx.ix(), n ? slots.data() : nullptr, n, keys.t(), given ? positions.data() : nullptr);
  if (past_bound && !given) {
    report_.require(s == SA_ERR_OVERFLOW || s == SA_ERR_INVALID_ARGUMENT, "update at next positions past SA_MAX_POSITION returned ",
                    sa_status_name(s));
    return;
  }
  report_.require_ok(s, "sa_index_update");
  if (fx.owning)
    report_.require_ok(sa_index_update(fx.owning.get(), n ? slots.data() : nullptr, n, keys.t(),
                                       given ? positions.data() : nullptr),
                       "sa_index_update (owning twin)");
  fx.refilled = true;
  fx.mirror_update(slots, keys, given ? positions.data() : nullptr, rng_);
}

void Scenario::truncate(FuzzIndex &fx) {
  int64_t position;
  switch (in_.range(0, 3)) {
    case 0: position = fx.size() ? fx.pos_of(in_.range(0, fx.h_kv() - 1))[size_t(in_.range(0, fx.size() - 1))] : 0; break;
    case 1: position = in_.range(-2, 3); break;
    default: position = fx.max_pos() + in_.range(-6, 2); break;
  }
  const int64_t keep = fx.truncate_keep(position);
  sa_status want = SA_OK;
  if (fx.borrows()) want = SA_ERR_UNSUPPORTED;
  else if (position < 0 || keep < 0) want = SA_ERR_INVALID_ARGUMENT;
  report_.say("truncate at position ", position, want == SA_OK ? ": keeps " : ": must be refused (", 
              want == SA_OK ? std::to_string(keep) : std::string(sa_status_name(want)), want == SA_OK ? " slots" : ")");
  const sa_status s = sa_index_truncate(fx.ix(), position);
  if (want == SA_OK) {
    report_.require_ok(s, "sa_index_truncate");
    fx.mirror_truncate(keep);
  } else {
    report_.require(s == want, "sa_index_truncate returned ", sa_status_name(s), ", expected ", sa_status_name(want),
                    ": ", sa_last_error());
    report_.require(*sa_last_error() != '\0', "refused truncate left no message");
  }
  int64_t size = -1;
  report_.require_ok(sa_index_size(fx.ix(), &size), "sa_index_size");
  report_.require(size == fx.size(), "index size ", size, " after truncate, expected ", fx.size());
}

void Scenario::clone(FuzzIndex &fx) {
  sa_index *const sentinel = reinterpret_cast<sa_index *>(uintptr_t(0x5678));
  sa_index *copy = sentinel;
  const sa_status s = sa_index_clone(fx.ix(), &copy);
  if (fx.borrows()) {
    report_.say("clone: must be refused (borrow_keys)");
    report_.require(s == SA_ERR_UNSUPPORTED, "sa_index_clone of a borrowing index returned ", sa_status_name(s));
    report_.require(copy == sentinel, "a refused sa_index_clone wrote *out");
    return;
  }
  report_.require_ok(s, "sa_index_clone");
  FuzzIndex twin;
  twin.handle.reset(copy);
  twin.opt = fx.opt;
  twin.keys = fx.keys;
  twin.pos = fx.pos;
  twin.head_pos = fx.head_pos;
  twin.max_slots = fx.max_slots;
  twin.host_k = fx.host_k;
  twin.host_v = fx.host_v;
  const int mode = int(in_.range(0, 2));
  report_.say("clone", mode == 0 ? ", then drop the source and go on with the copy"
                                 : mode == 1 ? ", then drop the copy" : ", then grow the copy alone");
  expect_same_selection(fx, twin, "a clone");
  if (mode == 0) {
    std::swap(fx, twin);  // the source is destroyed with `twin` below
  } else if (mode == 2) {
    report_.say("{ the copy:");
    append(twin);
    if (in_.chance(50)) update(twin);
    else update_heads(twin);
    SelectCase c = make_select_case(twin);
    check_select(twin, c);
    report_.say("} back to the source");
  }
}

// The same selection from two indexes that must agree bit for bit.
void Scenario::expect_same_selection(FuzzIndex &a, FuzzIndex &b, const char *what) {
  SelectCase ca = make_select_case(a);
  SelectCase cb = ca;
  if (cb.pass_keys && b.borrows()) cb.keys = b.host_keys(ca.keys.shape[0]);
  report_.say("select on both: ", ca.words);
  report_.require_ok(ca.run(a.ix()), "sa_select (source)");
  report_.require_ok(cb.run(b.ix()), "sa_select (", what, ")");
  report_.require(ca.out.values() == cb.out.values(), what, " selects differently from its source");
}

}  // namespace apifuzz
