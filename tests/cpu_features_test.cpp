// cpu_best_isa() (CPUID + XGETBV, src/kernels/kernel_table.cpp) against the kernel's own view of
// the CPU: the flags line of /proc/cpuinfo, which lists a feature only when the CPU has it and
// the kernel enabled its register state.
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "kernels/kernels.hpp"

namespace {

std::set<std::string> cpuinfo_flags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::set<std::string> flags;
    for (std::string w; words >> w;) flags.insert(w);
    return flags;
  }
  return {};
}

TEST(CpuFeatures, BestIsaMatchesProcCpuinfo) {
#if !defined(SA_HAVE_X86_KERNELS)
  GTEST_SKIP() << "x86 only (an AArch64 build always has NEON)";
#else
  std::set<std::string> f = cpuinfo_flags();
  if (f.empty()) GTEST_SKIP() << "no /proc/cpuinfo flags line";
  auto has = [&](const char *name) { return f.count(name) != 0; };
  sa_isa expected = SA_ISA_SCALAR;
  if (has("avx2") && has("fma") && has("f16c")) {
    expected = SA_ISA_AVX2;
    if (has("avx512f") && has("avx512bw") && has("avx512dq") && has("avx512vl")) expected = SA_ISA_AVX512;
  }
  EXPECT_EQ(int(sa::cpu_best_isa()), int(expected));
#endif
}

// The AVX-512 table built with VNNI is picked exactly when the CPU has AVX-512 and VNNI.
TEST(CpuFeatures, Avx512VnniMatchesProcCpuinfo) {
#if !defined(SA_HAVE_X86_KERNELS)
  GTEST_SKIP() << "x86 only";
#else
  std::set<std::string> f = cpuinfo_flags();
  if (f.empty()) GTEST_SKIP() << "no /proc/cpuinfo flags line";
  const bool expected = sa::cpu_best_isa() == SA_ISA_AVX512 && f.count("avx512_vnni") != 0;
  EXPECT_EQ(sa::cpu_has_avx512_vnni(), expected);
  if (sa::cpu_best_isa() == SA_ISA_AVX512)
    EXPECT_EQ(&sa::kernel_table(SA_ISA_AUTO), expected ? &sa::kernels_avx512_vnni : &sa::kernels_avx512);
#endif
}

}  // namespace
