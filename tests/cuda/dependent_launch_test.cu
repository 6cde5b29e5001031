// The decode step's kernels (page bounds, page candidates, the decode attention over the rows
// they chose) are launched as programmatic dependents of the kernel before them on the stream
// (compute capability 9.0+): each must still see everything that kernel wrote. A kernel that
// allows its dependents at once, idles and then writes the query is queued right before
// sa_select (and before sa_attend); a selection with another query runs first, so the call's
// scratch holds other scores. Then the step as an engine queues it: the decode is placed while
// the candidates kernel still writes the rows, and the rows held another query's choice before.
// Rows and output must be those of the same calls made on a synchronised stream.
#include <cmath>
#include <initializer_list>
#include <random>

#include "cuda_helpers.cuh"
#include "index_options.cuh"

namespace {

// One block: lets the kernel after it be launched at once (as a producer that allows
// dependents early would), idles about `ns` nanoseconds (the global timer), then copies n values.
__global__ void late_copy(uint16_t *dst, const uint16_t *src, int n, long long ns) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
  if (threadIdx.x == 0) {
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do {
      asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    } while (t - t0 < (unsigned long long)ns);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < n; e += blockDim.x) dst[e] = src[e];
}

TEST(CudaDependentLaunch, StepKernelsSeeTheKernelBeforeThem) {
  NEED_GPU(c);
  cudaStream_t s = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  sa_context_options co = SA_CONTEXT_OPTIONS_INIT;
  co.device = SA_DEVICE_CUDA;
  co.cuda_stream = s;
  sa_context *g = nullptr;
  SA_OK_(sa_context_create(&co, &g));
  // 4096 pages of 16: the streamed bounds and two blocks of candidates; 128 pages chosen.
  constexpr int D = 128, Hq = 8, Hkv = 2, width = 4 + 64 + 2048;
  constexpr int64_t n = 65536;
  std::mt19937_64 rng(91);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<uint16_t> keys(size_t(n) * Hkv * D), vals(keys.size());
  for (auto &x : keys) x = to_bf16(nd(rng));
  for (auto &x : vals) x = to_bf16(nd(rng));
  std::vector<uint16_t> qa(size_t(Hq) * D), qb(qa.size());
  for (auto &x : qa) x = to_bf16(nd(rng));
  for (auto &x : qb) x = to_bf16(nd(rng));
  uint16_t *dk = to_device(keys), *dv = to_device(vals), *dqa = to_device(qa), *dqb = to_device(qb);
  uint16_t *dq1 = to_device(qa), *dq2 = to_device(qa);  // hold qa until the late copies write qb
  sa_index_options io = device_index_options(SA_SELECTOR_PAGE, Hkv, D, 16);
  sa_index *ix = nullptr;
  SA_OK_(sa_index_create(g, &io, &ix));
  sa_tensor tk = desc(dk, SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CUDA);
  sa_tensor tv = desc(dv, SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CUDA);
  SA_OK_(sa_index_append(ix, &tk));
  const std::vector<int32_t> idx_poison(size_t(Hkv) * width, -7);
  const std::vector<float> out_poison(size_t(Hq) * D, NAN);
  int32_t *di = to_device(idx_poison), *di_ref = to_device(idx_poison);
  float *dout = to_device(out_poison), *dout_ref = to_device(out_poison);
  auto tq = [&](uint16_t *d) { return desc(d, SA_DTYPE_BF16, {1, Hq, D}, SA_DEVICE_CUDA); };
  sa_tensor ti = desc(di, SA_DTYPE_I32, {1, Hkv, width}, SA_DEVICE_CUDA);
  sa_tensor ti_ref = desc(di_ref, SA_DTYPE_I32, {1, Hkv, width}, SA_DEVICE_CUDA);
  sa_tensor to = desc(dout, SA_DTYPE_F32, {1, Hq, D}, SA_DEVICE_CUDA);
  sa_tensor to_ref = desc(dout_ref, SA_DTYPE_F32, {1, Hq, D}, SA_DEVICE_CUDA);
  sa_select_options so = SA_SELECT_OPTIONS_INIT;
  so.top_k = 2048;
  so.window = 64;
  so.sinks = 4;
  so.cuda_stream = s;
  sa_attend_options ao = SA_ATTEND_OPTIONS_INIT;
  ao.cuda_stream = s;

  // The expected rows and output: qb's, each call on a synchronised stream.
  sa_tensor qb_t = tq(dqb);
  SA_OK_(sa_select(ix, &qb_t, &so, &ti_ref));
  CUDA_OK(cudaStreamSynchronize(s));
  SA_OK_(sa_attend(g, &qb_t, &tk, &tv, &ti_ref, &ao, &to_ref, nullptr));
  CUDA_OK(cudaStreamSynchronize(s));
  const auto idx_ref = to_host(di_ref, idx_poison.size());
  const auto out_ref = to_host(dout_ref, out_poison.size());
  // qa's selection first (its scores in the call's scratch), then the calls behind late writes.
  sa_tensor qa_t = tq(dqa);
  SA_OK_(sa_select(ix, &qa_t, &so, &ti));
  CUDA_OK(cudaStreamSynchronize(s));
  ASSERT_NE(to_host(di, idx_poison.size()), idx_ref) << "qa and qb must select differently for the test to tell";
  CUDA_OK(cudaMemcpy(di, idx_poison.data(), idx_poison.size() * 4, cudaMemcpyHostToDevice));
  const sa_tensor t1 = tq(dq1), t2 = tq(dq2);
  late_copy<<<1, 256, 0, s>>>(dq1, dqb, Hq * D, 200 * 1000);
  SA_OK_(sa_select(ix, &t1, &so, &ti));
  late_copy<<<1, 256, 0, s>>>(dq2, dqb, Hq * D, 200 * 1000);
  SA_OK_(sa_attend(g, &t2, &tk, &tv, &ti, &ao, &to, nullptr));
  CUDA_OK(cudaStreamSynchronize(s));
  EXPECT_EQ(to_host(di, idx_poison.size()), idx_ref);
  auto out = to_host(dout, out_poison.size());
  for (size_t e = 0; e < out.size(); ++e)
    ASSERT_NEAR(out[e], out_ref[e], 1e-6 * (1 + std::fabs(out_ref[e]))) << "out " << e;

  // Select then attend, queued back to back, the rows holding qa's choice before.
  for (int round = 0; round < 20; ++round) {
    SA_OK_(sa_select(ix, &qa_t, &so, &ti));
    CUDA_OK(cudaMemcpy(dout, out_poison.data(), out_poison.size() * 4, cudaMemcpyHostToDevice));
    CUDA_OK(cudaStreamSynchronize(s));
    SA_OK_(sa_select(ix, &qb_t, &so, &ti));
    SA_OK_(sa_attend(g, &qb_t, &tk, &tv, &ti, &ao, &to, nullptr));
    CUDA_OK(cudaStreamSynchronize(s));
    ASSERT_EQ(to_host(di, idx_poison.size()), idx_ref) << "round " << round;
    out = to_host(dout, out_poison.size());
    for (size_t e = 0; e < out.size(); ++e)
      ASSERT_NEAR(out[e], out_ref[e], 1e-6 * (1 + std::fabs(out_ref[e]))) << "round " << round << ", out " << e;
  }

  sa_index_destroy(&ix);
  sa_context_destroy(&g);
  for (void *p : std::initializer_list<void *>{dk, dv, dqa, dqb, dq1, dq2, di, di_ref, dout, dout_ref}) cudaFree(p);
  cudaStreamDestroy(s);
}

}  // namespace
