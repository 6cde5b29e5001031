// The context: thread count and the kernel table chosen for this CPU.
#pragma once

#include "attend/kernels.hpp"
#include "sparseattn.h"

struct sa_context {
  int threads = 1;
  sa_isa isa = SA_ISA_SCALAR;
  const sa::KernelTable *kernels = nullptr;
};

namespace sa {

// The instruction set named by the SA_ISA environment variable, or SA_ISA_AUTO.
sa_isa isa_from_environment();

// Applies defaults and caps; throws sa::Error on bad options.
void init_context(sa_context &ctx, const sa_context_options &opt);

// Scratch index of the calling thread inside parallel_for (0 outside a parallel region).
int thread_slot();

// While alive, OpenMP-parallel libraries called from this thread (oneDNN) use at most
// ctx.threads threads; restores the caller's setting afterwards.
class OmpThreadLimit {
 public:
  explicit OmpThreadLimit(int threads);
  ~OmpThreadLimit();
  OmpThreadLimit(const OmpThreadLimit &) = delete;
  OmpThreadLimit &operator=(const OmpThreadLimit &) = delete;

 private:
  int saved_;
};

}  // namespace sa
