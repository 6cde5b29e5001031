// The CPU side of sa_select and sa_select_batch, shared by both: scratch output, the host's
// keys of borrowing indexes, and the request a selector takes.
#pragma once

#include <cstdint>
#include <vector>

#include "core/paged_kv.hpp"
#include "core/tensor_view.hpp"
#include "select/selector.hpp"
#include "sparseattn.h"

namespace sa {

// Selections go to a contiguous scratch copy of `out` first and reach the caller's tensor only
// once the whole call succeeded (an allocation failing halfway leaves `out` untouched).
TensorView scratch_for(const TensorView &out, std::vector<int32_t> &buf);
void copy_out(const std::vector<int32_t> &buf, const TensorView &out);

// The host's keys of a borrow_keys index of n slots (opt->keys), validated, as the selectors
// read them. A head dimension that is not contiguous is packed into `packed` (this call's).
HostKeys borrowed_keys(const sa_index_options &io, int64_t n, const sa_tensor *keys, std::vector<char> &packed);

// The host's keys of sequence b of a paged cache, for a borrow_keys index of n slots (slot j
// of the index is token j of the sequence); pages holds the sequence's pages for the call.
HostKeys paged_keys(const PagedKV &kv, int64_t b, int64_t n, std::vector<int32_t> &pages, std::vector<char> &packed);

// The request for the queries rows [q0, q1) of one CPU index whose largest position is
// max_pos, written to `indices` (those rows).
SelectRequest cpu_request(const sa_index_options &io, int64_t max_pos, const TensorView &queries,
                          const TensorView &indices, const sa_select_options &o, int64_t q0, int64_t q1);

}  // namespace sa
