// The Checker's comparisons and report rows, and the helpers every kernel family shares.
#include <cmath>
#include <cstdio>
#include <cstring>

#include "checkasm.hpp"

namespace checkasm {

double Rng::normal() {
  double u1 = uniform(), u2 = uniform();
  if (u1 < 1e-300) u1 = 1e-300;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

const char *dtype_name(sa_dtype dt) {
  switch (dt) {
    case SA_DTYPE_F16: return "f16";
    case SA_DTYPE_BF16: return "bf16";
    default: return "f32";
  }
}

std::vector<float> random_query(Rng &rng, int g, int D, double spread) {
  std::vector<float> q(size_t(g) * size_t(D));
  const double sigma = spread / std::sqrt(double(D));
  for (auto &x : q) x = float(rng.normal() * sigma);
  return q;
}

const char *isa_name(sa_isa isa) {
  switch (isa) {
    case SA_ISA_NEON: return "neon";
    case SA_ISA_AVX2: return "avx2";
    case SA_ISA_AVX512: return "avx512";
    default: return "scalar";
  }
}

Checker::Checker(const Options &options, const sa::KernelTable &t)
    : opt(options), tested(t), ref(sa::kernels_scalar) {}

EntryReport *Checker::begin(const std::string &name) {
  if (!opt.filter.empty() && name.find(opt.filter) == std::string::npos) return nullptr;
  reports.emplace_back();
  reports.back().name = name;
  reports.back().isa = isa_name(tested.isa);
  return &reports.back();
}

Rng Checker::rng_for(const std::string &name) const {
  uint64_t h = 1469598103934665603ull;  // FNV-1a of the name, mixed with the seed
  for (unsigned char ch : name) h = (h ^ ch) * 1099511628211ull;
  return Rng(opt.seed ^ h);
}

void Checker::fail(EntryReport &r, const std::string &message) {
  // The first few failures of an entry say enough; the count says the rest.
  if (++r.failures <= 5) std::printf("  FAIL %s %s: %s\n", r.name.c_str(), r.isa, message.c_str());
}

void Checker::expect_close(EntryReport &r, double got, double want, double bound, double scale,
                           const std::string &where, const char *what) {
  const double err = got == want ? 0.0 : std::fabs(got - want);  // equal infinities: no error
  if (!(err <= bound)) {
    char line[160];
    std::snprintf(line, sizeof line, "%s: got %.9g, scalar %.9g (|diff| %.3g > bound %.3g)", what, got, want, err,
                  bound);
    fail(r, std::string(line) + " in " + where);
    return;
  }
  const double ulp = scale > 0 ? std::ldexp(1.0, std::ilogb(scale) - 23) : 0.0;  // f32 ulp at `scale`
  const double ulps = ulp > 0 ? err / ulp : 0.0;
  if (ulps > r.max_err_ulp) r.max_err_ulp = ulps;
  if (bound > 0 && err / bound > r.worst_of_bound) r.worst_of_bound = err / bound;
}

void Checker::expect_same_bits(EntryReport &r, float got, float want, const std::string &where, const char *what) {
  if (std::memcmp(&got, &want, sizeof got) != 0) {
    char line[160];
    std::snprintf(line, sizeof line, "%s: got %.9g, scalar %.9g (must match bit for bit)", what, double(got),
                  double(want));
    fail(r, std::string(line) + " in " + where);
  }
}

void Checker::expect(EntryReport &r, bool ok, const std::string &where, const char *what) {
  if (!ok) fail(r, std::string(what) + " in " + where);
}

}  // namespace checkasm
