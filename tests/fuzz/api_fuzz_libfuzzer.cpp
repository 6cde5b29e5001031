// libFuzzer target for the API round-trip fuzzer (clang, -Dfuzz): a failed check aborts, so
// libFuzzer keeps the input; run_one has printed the scenario in words.
#include <cstdlib>

#include "api_fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (apifuzz::run_one(data, size) != 0) std::abort();
  return 0;
}
