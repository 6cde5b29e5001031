// The distance of the HNSW graphs: 1 - a.b over vectors of f16 values, with one kernel per
// instruction set. Halving the bytes per vector (f16 instead of f32) and converting in
// registers is most of what makes the graphs cheaper to build and search than hnswlib's own
// f32 spaces.
#pragma once

#include <cstddef>

#include "sparseattn.h"

namespace sa {

// hnswlib's distance signature: (a, b, param) with param pointing to the vector length (a
// size_t, a multiple of 16).
using HalfDotDistance = float (*)(const void *a, const void *b, const void *length);

// The kernel for an instruction set the CPU has (the context's resolved ISA).
HalfDotDistance half_dot_distance(sa_isa isa);

}  // namespace sa
