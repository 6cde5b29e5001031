// libFuzzer target for the weights reader: the input is parsed as a whole safetensors file
// image and, separately, as a JSON document. Any outcome but success or SA_ERR_FORMAT (another
// status, another exception, a crash, a sanitizer report) is a bug. Built with clang
// (-Dfuzz=enabled); the gcc build links the same entry point into fuzz_safetensors_regress.
#include <cstdint>
#include <cstdlib>

#include "core/error.hpp"
#include "io/json.hpp"
#include "io/safetensors.hpp"

namespace {

void expect_format_error(const sa::Error &e) {
  if (e.status != SA_ERR_FORMAT || e.message.empty()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  try {
    const sa::Safetensors st = sa::Safetensors::from_memory(data, size, "fuzz input");
    for (const sa::SafetensorsEntry &t : st.tensors()) {
      if (t.begin > t.end || t.end > size) std::abort();
      try {
        if (st.read_f32(t).size() != size_t(t.numel)) std::abort();
      } catch (const sa::Error &e) {
        expect_format_error(e);  // a dtype other than F32/F16/BF16
      }
    }
  } catch (const sa::Error &e) {
    expect_format_error(e);
  }
  try {
    sa::parse_json(reinterpret_cast<const char *>(data), size, "fuzz input");
  } catch (const sa::Error &e) {
    expect_format_error(e);
  }
  return 0;
}
