// Decode attention on device tensors: dense or gathered, split over keys with an exact merge;
// contiguous rows (sa_attend) or a paged batch (sa_attend_paged), one kernel for both.
#pragma once

#include "sparseattn_plugin.h"

namespace sacuda {

// Validates what the kernels need beyond the core's checks and enqueues the work on a->stream.
void attend(const sa_plugin_attend_args &a);
void attend_paged(const sa_plugin_attend_paged_args &a);

}  // namespace sacuda
