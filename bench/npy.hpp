// A strict reader and a writer for NumPy .npy files holding little-endian f16 or f32
// arrays in C order: what realistic Q/K/V tensors (a tinylm-qkv-style data set, not in the
// repository) and the test fixture cut from them (tests/data) are stored as. Anything else is refused with a
// message naming the file and what is wrong, never read half-way.
//
// Format: "\x93NUMPY", version major 1, 2 or 3 (minor 0), header length (uint16 LE for
// version 1, uint32 LE after), an ASCII (version 3: UTF-8) Python dict literal with the keys
// 'descr', 'fortran_order' and 'shape', padded with spaces and ended by '\n', then the data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace npy {

enum class Dtype { F16, F32 };

// Bytes per element.
size_t itemsize(Dtype dtype);

struct Array {
  Dtype dtype = Dtype::F32;
  std::vector<int64_t> shape;
  std::vector<unsigned char> data;  // little-endian elements, C order

  int64_t numel() const;
  const uint16_t *f16() const { return reinterpret_cast<const uint16_t *>(data.data()); }
  const float *f32() const { return reinterpret_cast<const float *>(data.data()); }
  // Element i (flat, C order) as a double, whatever the dtype.
  double at(int64_t i) const;
};

// A malformed or unsupported file; what() names the file and the reason.
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Parses the bytes of a whole .npy file; `name` is used in error messages.
Array parse(const unsigned char *bytes, size_t size, const std::string &name);
// Reads and parses a file. Throws FormatError (also when the file cannot be read).
Array read(const std::string &path);
// Writes a version 1.0 file (header padded to 64 bytes, as NumPy does). Throws
// std::runtime_error when the file cannot be written.
void write(const std::string &path, const Array &array);

// Exact IEEE binary16 -> float conversion (every f16 value is a float).
float f16_to_float(uint16_t h);

}  // namespace npy
