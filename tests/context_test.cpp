// Version, contexts (threads, instruction-set caps including the SA_ISA variable) and the
// function table as seen from C++.
#include <gtest/gtest.h>

#include "test_util.hpp"

namespace {

TEST(Version, MatchesHeader) {
  EXPECT_EQ(sa_version(), uint32_t(SA_VERSION));
  std::string expect = std::to_string(SA_VERSION_MAJOR) + "." + std::to_string(SA_VERSION_MINOR) + "." +
                       std::to_string(SA_VERSION_PATCH);
  EXPECT_EQ(std::string(sa_version_string()), expect);
}

TEST(Version, FunctionTable) {
  const sa_api *api = sa_get_api(SA_ABI_VERSION);
  ASSERT_NE(api, nullptr);
  EXPECT_GE(api->struct_size, sizeof(sa_api));
  EXPECT_EQ(api->abi_version, uint32_t(SA_ABI_VERSION));
  EXPECT_EQ(api->index_create, &sa_index_create);
  EXPECT_EQ(api->index_update, &sa_index_update);
  EXPECT_EQ(api->context_isa, &sa_context_isa);
  EXPECT_EQ(sa_get_api(SA_ABI_VERSION), api) << "the table is static";
  EXPECT_EQ(sa_get_api(SA_ABI_VERSION + 1), nullptr);
  // An older host asking for an older ABI (0 predates the first) gets NULL or the table.
  const sa_api *old = sa_get_api(0);
  EXPECT_TRUE(old == nullptr || old == api);
}

TEST(Context, DefaultsMatchInitMacro) {
  sa_context_options a = SA_CONTEXT_OPTIONS_INIT, b = sa_context_options_default();
  EXPECT_EQ(a.struct_size, b.struct_size);
  EXPECT_EQ(a.threads, b.threads);
  EXPECT_EQ(a.isa, b.isa);
}

TEST(Context, NullOptionsMeanDefaults) {
  sa_context *ctx = nullptr;
  ASSERT_SA_OK(sa_context_create(nullptr, &ctx));
  EXPECT_GE(sa_context_threads(ctx), 1);
  sa_context_destroy(&ctx);
  EXPECT_EQ(ctx, nullptr);
}

void *test_alloc(void *, size_t, int32_t, void *) { return nullptr; }
void test_free(void *, void *, size_t, int32_t, void *) {}

TEST(Context, CudaAllocatorNeedsBothFunctions) {
  sa_context *ctx = nullptr;
  sa_context_options o = SA_CONTEXT_OPTIONS_INIT;
  EXPECT_EQ(o.cuda_allocator.alloc, nullptr);
  EXPECT_EQ(o.cuda_allocator.free, nullptr);
  o.cuda_allocator.alloc = test_alloc;
  EXPECT_EQ(sa_context_create(&o, &ctx), SA_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(sa_last_error()).find("cuda_allocator.alloc is set but .free is NULL"), std::string::npos)
      << sa_last_error();
  EXPECT_EQ(ctx, nullptr);
  o.cuda_allocator.alloc = nullptr;
  o.cuda_allocator.free = test_free;
  EXPECT_EQ(sa_context_create(&o, &ctx), SA_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(sa_last_error()).find("cuda_allocator.free is set but .alloc is NULL"), std::string::npos)
      << sa_last_error();
  // Both: a CPU context takes it and never calls it (test_alloc would fail a device call).
  o.cuda_allocator.alloc = test_alloc;
  ASSERT_SA_OK(sa_context_create(&o, &ctx));
  sa_context_destroy(&ctx);
}

// A host built before cuda_allocator passes a shorter struct: whatever follows it in memory
// is not read, and the plugin's own allocator is used.
TEST(Context, OlderStructSizeGetsTheDefaultAllocator) {
  sa_context_options o = SA_CONTEXT_OPTIONS_INIT;
  o.threads = 1;
  o.cuda_allocator.alloc = test_alloc;  // one half only: refused if it were read
  o.struct_size = offsetof(sa_context_options, cuda_allocator);
  sa_context *ctx = nullptr;
  ASSERT_SA_OK(sa_context_create(&o, &ctx));
  EXPECT_EQ(sa_context_threads(ctx), 1);
  sa_context_destroy(&ctx);
}

TEST(Context, Threads) {
  for (int32_t t : {1, 2, 3}) {
    auto ctx = sat::make_context(t);
    ASSERT_NE(ctx, nullptr);
    EXPECT_EQ(sa_context_threads(ctx.get()), t);
  }
  auto all = sat::make_context(0);
  ASSERT_NE(all, nullptr);
  EXPECT_GE(sa_context_threads(all.get()), 1);
}

// The context never runs an instruction set above its cap, the environment's cap, or what
// the CPU has; and below those it picks the best available.
TEST(Context, IsaCaps) {
  sa_isa env = sat::env_isa_cap();
  for (sa_isa want : {SA_ISA_SCALAR, SA_ISA_AVX2, SA_ISA_AVX512, SA_ISA_AUTO}) {
    auto ctx = sat::make_context(1, want);
    ASSERT_NE(ctx, nullptr);
    sa_isa got = sa_context_isa(ctx.get());
    SCOPED_TRACE(testing::Message() << "asked " << sa_isa_name(want) << ", got " << sa_isa_name(got));
    EXPECT_NE(got, SA_ISA_AUTO);
    EXPECT_LE(sat::isa_rank(got), sat::isa_rank(want));
    if (env != SA_ISA_AUTO) {
      EXPECT_LE(sat::isa_rank(got), sat::isa_rank(env));
    }
    EXPECT_TRUE(sat::cpu_has(got) || got == SA_ISA_NEON);
    // Best available under the caps (x86).
    sa_isa best = SA_ISA_SCALAR;
    for (sa_isa c : {SA_ISA_AVX2, SA_ISA_AVX512})
      if (sat::cpu_has(c) && sat::isa_rank(c) <= sat::isa_rank(want) &&
          (env == SA_ISA_AUTO || sat::isa_rank(c) <= sat::isa_rank(env)))
        best = c;
#if defined(__x86_64__)
    EXPECT_EQ(got, best);
#endif
  }
  if (env == SA_ISA_SCALAR) {
    auto ctx = sat::make_context(1, SA_ISA_AUTO);
    ASSERT_NE(ctx, nullptr);
    EXPECT_EQ(sa_context_isa(ctx.get()), SA_ISA_SCALAR) << "SA_ISA=scalar caps every context";
  }
}

}  // namespace
