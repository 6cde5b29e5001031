// A strict reader of safetensors files (the format of Hugging Face's `safetensors`):
//   8 bytes   N, the header length, little-endian uint64
//   N bytes   a JSON object: {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]},
//             ..., "__metadata__": {"<key>": "<string>", ...} (optional)}; trailing spaces allowed
//   the rest  the data section; tensor bytes at [b, e) relative to its start, row-major,
//             little-endian
// Everything is checked before any tensor is read: the header length (at most 100 MB and
// inside the file), the JSON (see io/json.hpp), each entry's fields, that shape times the dtype
// size equals the byte span (overflow-checked), and that the spans tile the data section
// exactly: no overlap, no gap, nothing outside, nothing left over. Any violation throws
// sa::Error(SA_ERR_FORMAT) naming the file and the problem.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace sa {

constexpr uint64_t kSafetensorsMaxHeader = 100u << 20;

struct SafetensorsEntry {
  std::string name;
  std::string dtype;           // as written, e.g. "BF16"
  std::vector<int64_t> shape;
  int64_t numel = 0;
  uint64_t begin = 0, end = 0; // byte span in the data section
};

class Safetensors {
 public:
  // Reads and checks the header; tensor bytes are read on demand. A missing or unreadable
  // path, or one that is not a regular file, throws SA_ERR_INVALID_ARGUMENT.
  static Safetensors open(const std::string &path);
  // The same checks on a file image in memory (kept by pointer: it must outlive the object).
  // `origin` names the image in messages.
  static Safetensors from_memory(const void *data, size_t size, const std::string &origin);

  const std::string &origin() const { return origin_; }
  const std::vector<SafetensorsEntry> &tensors() const { return tensors_; }
  const std::vector<std::pair<std::string, std::string>> &metadata() const { return metadata_; }
  const SafetensorsEntry *find(const std::string &name) const;  // nullptr when absent

  // The values of an F32, F16 or BF16 tensor as f32, row-major. Other dtypes, or a file that
  // changed size since open(), throw SA_ERR_FORMAT.
  std::vector<float> read_f32(const SafetensorsEntry &t) const;

 private:
  Safetensors() = default;
  void parse_header(const char *header, size_t header_size, uint64_t data_size);
  void read_bytes(uint64_t offset, size_t n, char *dst) const;

  std::string origin_;
  const char *memory_ = nullptr;  // from_memory: the whole image
  std::shared_ptr<int> fd_;       // open: the file, closed with the last copy
  uint64_t data_start_ = 0, data_size_ = 0;
  std::vector<SafetensorsEntry> tensors_;
  std::vector<std::pair<std::string, std::string>> metadata_;
};

}  // namespace sa
