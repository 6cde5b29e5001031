// The API round-trip fuzzer's entry: one byte string, one scenario (fuzz_scenario.hpp). Shared
// by the libFuzzer target (api_fuzz_libfuzzer.cpp) and the bounded driver (api_fuzz_main.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace apifuzz {

struct Outcome {
  bool failed = false;
  std::string words;    // the scenario, one step a line
  std::string failure;  // the check that failed
};

Outcome run_scenario(const uint8_t *data, size_t size);

// 0 when every check passed; otherwise prints the scenario and the failure to stderr, returns 1.
int run_one(const uint8_t *data, size_t size);

}  // namespace apifuzz
