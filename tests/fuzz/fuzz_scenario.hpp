// One API round-trip scenario decoded from a byte string: a context, an index of a random kind
// grown by appends, updates, per-KV-head refills, evictions (sa_cache_evict, then the refill of
// the freed slots), truncations and clones, then selections, attention (plain and paged, with
// per-head positions, batched selection) checked against the double-precision and brute-force
// references, and bad inputs checked for a status, a message and untouched outputs. The steps live in the fuzz_*.cpp
// files named after them; api_fuzz.cpp runs them in order.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "fuzz_index.hpp"
#include "fuzz_input.hpp"
#include "fuzz_report.hpp"
#include "test_util.hpp"

namespace apifuzz {

// sa_select's arguments, valid for one index; pointers in opt are bound to the vectors here by
// bind() (call it after any copy).
struct SelectCase {
  sat::Tensor q, out;
  sa_select_options opt = SA_SELECT_OPTIONS_INIT;
  bool has_qpos = false, has_segments = false;
  std::vector<int64_t> qpos;
  std::vector<int32_t> qseg, kseg;
  bool pass_keys = false;  // opt.keys = keys (required by borrow_keys indexes)
  sa_tensor keys{};
  std::string words;

  void bind() {
    opt.query_positions = has_qpos ? qpos.data() : nullptr;
    opt.query_segments = has_segments ? qseg.data() : nullptr;
    opt.key_segments = has_segments ? kseg.data() : nullptr;
    opt.keys = pass_keys ? &keys : nullptr;
  }
  sa_status run(sa_index *ix) {
    bind();
    return sa_select(ix, q.t(), &opt, out.t());
  }
};

// sa_attend's arguments.
struct AttendCase {
  sat::Tensor q, k, v, indices, out, lse, mass;
  sa_tensor kd{}, vd{};  // what is passed as k and v: views of k/v or of a host cache
  bool has_indices = false, has_lse = false, has_mass = false, has_qpos = false, has_kpos = false;
  bool has_hpos = false;  // head_key_positions (then no key_positions)
  std::vector<int64_t> qpos, kpos, hpos;  // hpos: [H_kv][n_kv]
  std::vector<double> mass_before;
  sa_attend_options opt = SA_ATTEND_OPTIONS_INIT;
  std::string words;

  void bind() {
    opt.query_positions = has_qpos ? qpos.data() : nullptr;
    opt.key_positions = has_kpos ? kpos.data() : nullptr;
    opt.head_key_positions = has_hpos ? hpos.data() : nullptr;
    opt.slot_mass = has_mass ? mass.t() : nullptr;
  }
  sa_status run(sa_context *ctx) {
    bind();
    return sa_attend(ctx, q.t(), &kd, &vd, has_indices ? indices.t() : nullptr, &opt, out.t(),
                     has_lse ? lse.t() : nullptr);
  }
};

// A paged cache holding B sequences (sequence b: the keys of indexes[b] in slot order, then a
// few tokens no index holds), and the arguments of sa_select_batch and sa_attend_paged over it.
struct PagedCase {
  int64_t B = 0, P = 1, num_pages = 0, max_pages = 1;
  bool rank3 = false;  // k/v as [n, H_kv, D] rows (pages of one row)
  sat::Tensor k, v, table, lens, slot_pos;
  bool has_table = true, has_slot_pos = false;
  std::vector<int64_t> len;
  std::vector<std::vector<int32_t>> pages;  // per sequence, in token order
  std::vector<int64_t> positions;           // per physical slot (-1: empty)
  std::vector<int64_t> head_positions;      // [H_kv][physical slot]: each head's (per-head indexes)
  bool any_per_head = false;                // some sequence's index was refilled per KV head

  sat::Tensor q, query_starts;
  bool has_starts = false;
  std::vector<int64_t> starts;  // [B + 1]

  std::string words;

  int64_t num_slots() const { return num_pages * P; }
  int64_t slot(int64_t b, int64_t t) const { return int64_t(pages[size_t(b)][size_t(t / P)]) * P + t % P; }
  sa_paged_kv desc() {
    sa_paged_kv kv = SA_PAGED_KV_INIT;
    kv.k = *k.t();
    kv.v = *v.t();
    if (has_table) {
      kv.page_table = *table.t();
      kv.seq_lens = *lens.t();
    }
    if (has_slot_pos) kv.slot_positions = *slot_pos.t();
    return kv;
  }
};

// An invalid call: what it breaks, the statuses that may answer it, and the call itself.
struct Mutation {
  std::string name;
  std::vector<sa_status> want;
  std::function<sa_status()> call;
};

class Scenario {
 public:
  Scenario(ByteSource &in, Report &report);
  ~Scenario();
  void run();

 private:
  // fuzz_index_ops.cpp
  void make_contexts();
  void make_index(FuzzIndex &fx, bool is_main);
  void write_weights(const sa_index_options &o, std::string &words);
  void grow(FuzzIndex &fx, int64_t ops);
  void append(FuzzIndex &fx);
  void update(FuzzIndex &fx);
  void update_heads(FuzzIndex &fx);  // fuzz_heads.cpp
  void evict_step(FuzzIndex &fx);    // fuzz_evict.cpp: sa_cache_evict, then the incoming tokens' refill
  void truncate(FuzzIndex &fx);
  void clone(FuzzIndex &fx);
  void expect_same_selection(FuzzIndex &a, FuzzIndex &b, const char *what);

  // fuzz_select_check.cpp
  SelectCase make_select_case(const FuzzIndex &fx);
  void check_select(FuzzIndex &fx, SelectCase &c);
  void random_select_options(SelectCase &c, const FuzzIndex &fx, bool batch);
  void verify_selection(const FuzzIndex &fx, SelectCase &c, sa_dtype host_dtype);

  // fuzz_attend_check.cpp
  AttendCase make_attend_case(const FuzzIndex *fx, const SelectCase *sel);
  void check_attend(AttendCase &c);

  // fuzz_paged_check.cpp
  PagedCase make_paged_case(const std::vector<FuzzIndex *> &seqs);
  // True when it filled *physical (the lists as physical slots of the cache).
  bool check_select_batch(const std::vector<FuzzIndex *> &seqs, PagedCase &pc, sat::Tensor *physical);
  void check_attend_paged(PagedCase &pc, const sat::Tensor *physical);

  // fuzz_bad_inputs.cpp: one mutation each (the set of mutations in that file)
  void expect_refused(std::vector<Mutation> &ms, std::initializer_list<const sat::Tensor *> outputs,
                      const char *call);
  void bad_select(FuzzIndex &fx);
  void bad_attend();
  void bad_append(FuzzIndex &fx);
  void bad_update(FuzzIndex &fx);
  void bad_update_heads(FuzzIndex &fx);  // fuzz_heads.cpp
  void bad_head_attend(const FuzzIndex &fx);  // fuzz_heads.cpp
  void bad_evict(const FuzzIndex &fx);        // fuzz_evict.cpp
  void bad_truncate_or_clone(FuzzIndex &fx);
  void bad_attend_paged(PagedCase pc);  // a copy: mutations change its tensors
  void bad_select_batch(const std::vector<FuzzIndex *> &seqs, PagedCase pc);

  // api_fuzz.cpp: the index must come out of refused calls as it went in.
  void expect_index_unchanged(FuzzIndex &fx, SelectCase &probe, const std::vector<double> &before);

  sat::Tensor attend_queries(const sat::Tensor &from, sa_dtype kv_dtype);
  bool selector_is_exact_here(const FuzzIndex &fx, const SelectCase &c, int64_t visible) const;

  ByteSource &in_;
  Report &report_;
  sat::Rng rng_;
  sat::ContextPtr ctx_, other_ctx_;  // other_ctx_: the other thread count (results must not change)
  int64_t group_ = 1;                // query heads per KV head
  std::vector<sa_selector_kind> kinds_;
  std::deque<std::string> weights_files_;  // stable addresses: options point at them
  FuzzIndex main_;
  std::vector<std::unique_ptr<FuzzIndex>> others_;  // further sequences of a batch
};

}  // namespace apifuzz
