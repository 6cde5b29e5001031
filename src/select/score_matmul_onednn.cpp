#include "select/score_matmul.hpp"

#include <dnnl.hpp>

#include "core/error.hpp"

// Built only when the build has oneDNN (meson option `onednn`); score_matmul_portable.cpp
// defines matmul_abt otherwise.

namespace sa {

void matmul_abt(const float *A, int64_t M, const float *B, int64_t N, int64_t D, float *C, int64_t ldc) {
  using dnnl::memory;
  using dt = memory::data_type;
  try {
    static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);  // thread-safe init; stateless
    memory::desc a_md({M, D}, dt::f32, memory::dims{D, 1});
    memory::desc b_md({D, N}, dt::f32, memory::dims{1, D});  // B^T read from row-major B
    memory::desc c_md({M, N}, dt::f32, memory::dims{ldc, 1});
    // oneDNN's primitive cache makes re-creating a primitive of the same shape cheap.
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), engine);
    dnnl::stream stream(engine);
    memory a(a_md, engine, const_cast<float *>(A));
    memory b(b_md, engine, const_cast<float *>(B));
    memory c(c_md, engine, C);
    dnnl::matmul(pd).execute(stream, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
    stream.wait();
  } catch (const dnnl::error &e) {
    fail(SA_ERR_INTERNAL, "oneDNN matmul (%lld x %lld x %lld) failed: %s", (long long)M, (long long)N,
         (long long)D, e.what());
  }
}

}  // namespace sa
