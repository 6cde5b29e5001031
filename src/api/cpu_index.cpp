// The CPU backend of sa_index: a selector from select/, keys in host memory.
#include <vector>

#include "api/cpu_select.hpp"
#include "api/index.hpp"
#include "core/context.hpp"
#include "core/error.hpp"
#include "core/positions.hpp"
#include "select/selector_factory.hpp"

namespace sa {
namespace {

const char *selector_kind_name(sa_selector_kind kind) {
  switch (enum_value(kind)) {
    case SA_SELECTOR_EXACT: return "exact";
    case SA_SELECTOR_PAGE: return "page";
    case SA_SELECTOR_LSH: return "LSH";
    case SA_SELECTOR_HNSW: return "HNSW";
    case SA_SELECTOR_LEARNED: return "learned";
    case SA_SELECTOR_INDEXER: return "indexer";
    default: return "unknown";
  }
}

class CpuIndex final : public IndexBackend {
 public:
  CpuIndex(const sa_index_options &opt, const sa_context &ctx, std::unique_ptr<Selector> selector)
      : opt_(opt), ctx_(ctx), selector_(std::move(selector)) {}

  Device device() const override { return Device{}; }
  int64_t size() const override { return selector_->size(); }
  int64_t max_position() const override { return selector_->max_position(); }
  const Selector *cpu_selector() const override { return selector_.get(); }

  void append(const TensorView &keys) override { selector_->append(keys); }

  void update(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions) override {
    selector_->update(slots, n, keys, positions);
  }

  void update_heads(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions) override {
    if (!selector_->supports_per_head())
      fail(SA_ERR_UNSUPPORTED, "ix is a %s index, which keeps one token per slot for every KV head; per-KV-head "
                               "slots need an exact or page index", selector_kind_name(opt_.kind));
    selector_->update_heads(slots, n, keys, positions);
  }

  void truncate(int64_t position) override {
    const KeyStore &slots = selector_->slots();
    const int64_t keep = slots.trailing_slots_from(position);
    if (keep < 0 && slots.per_head())
      fail(SA_ERR_INVALID_ARGUMENT, "position %lld: in some KV head a slot holding a position >= position is followed "
           "by one that would stay, or the heads would keep different numbers of slots; only the index's last slots "
           "(appended drafts) can be dropped", (long long)position);
    if (keep < 0) {  // name a dropped slot that a kept one follows
      const int64_t *pos = slots.positions();
      int64_t first = 0, last = slots.size() - 1;
      while (pos[first] < position) ++first;
      while (pos[last] >= position) --last;
      fail(SA_ERR_INVALID_ARGUMENT, "position %lld: slot %lld holds position %lld >= position, but slot %lld after "
           "it holds %lld and would stay; only the index's last slots (appended drafts) can be dropped",
           (long long)position, (long long)first, (long long)pos[first], (long long)last, (long long)pos[last]);
    }
    if (keep == slots.size()) return;  // nothing at or past position
    selector_->truncate(keep);
  }

  std::unique_ptr<IndexBackend> clone() const override {
    if (opt_.borrow_keys)
      fail(SA_ERR_UNSUPPORTED, "ix borrows its keys (borrow_keys); sa_index_clone takes indexes that keep their "
                               "own copy for now");
    return std::make_unique<CpuIndex>(opt_, ctx_, selector_->clone());
  }

  void select(const SelectCall &call) const override {
    const sa_select_options &o = call.opt;
    const int64_t n_q = call.queries.shape[0];
    if (o.query_positions) check_positions(o.query_positions, n_q, 1, "opt->query_positions", PositionsOf::queries);
    if (o.mass_target > 0.f && !selector_->scores_are_attention())
      fail(SA_ERR_UNSUPPORTED, "opt->mass_target is %g; this selector's scores are not attention masses (use 0)",
           double(o.mass_target));
    std::vector<int32_t> scratch;
    const TensorView tmp = scratch_for(call.indices, scratch);
    SelectRequest req = cpu_request(opt_, selector_->max_position(), call.queries, tmp, o, 0, n_q);
    std::vector<char> packed;
    HostKeys host;
    if (opt_.borrow_keys) {
      host = borrowed_keys(opt_, selector_->size(), o.keys, packed);
      req.host_keys = &host;
    }
    if (n_q == 0) return;
    selector_->select(ctx_, req);
    copy_out(scratch, call.indices);
  }

 private:
  const sa_index_options opt_;
  const sa_context &ctx_;
  std::unique_ptr<Selector> selector_;
};

}  // namespace

std::unique_ptr<IndexBackend> make_cpu_backend(const sa_index_options &opt, const sa_context &ctx) {
  return std::make_unique<CpuIndex>(opt, ctx, make_selector(opt, ctx));
}

}  // namespace sa
