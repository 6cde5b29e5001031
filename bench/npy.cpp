#include "npy.hpp"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>

namespace npy {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;

[[noreturn]] void bad(const std::string &name, const std::string &why) {
  throw FormatError(name + ": " + why);
}

bool host_is_little_endian() {
  const uint16_t probe = 1;
  unsigned char first;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

// The header dict, read strictly: the three keys NumPy writes, each once, nothing else.
class HeaderParser {
 public:
  HeaderParser(const std::string &text, const std::string &name) : s_(text), name_(name) {}

  void parse(Array &out) {
    bool have_descr = false, have_order = false, have_shape = false;
    skip_space();
    expect('{');
    for (;;) {
      skip_space();
      if (peek() == '}') break;
      const std::string key = string_literal();
      skip_space();
      expect(':');
      skip_space();
      if (key == "descr") {
        once(have_descr, key);
        const std::string descr = string_literal();
        if (descr == "<f2") out.dtype = Dtype::F16;
        else if (descr == "<f4") out.dtype = Dtype::F32;
        else bad(name_, "dtype '" + descr + "' is not supported (expected '<f2' or '<f4')");
      } else if (key == "fortran_order") {
        once(have_order, key);
        if (!word("False")) {
          if (word("True")) bad(name_, "fortran_order is True; only C-order arrays are read");
          bad(name_, "fortran_order is neither True nor False in the header");
        }
      } else if (key == "shape") {
        once(have_shape, key);
        out.shape = shape_tuple();
      } else {
        bad(name_, "unexpected key '" + key + "' in the header");
      }
      skip_space();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      if (peek() != '}') bad(name_, "expected ',' or '}' in the header at byte " + std::to_string(i_));
    }
    ++i_;  // '}'
    if (!have_descr) bad(name_, "the header has no 'descr'");
    if (!have_order) bad(name_, "the header has no 'fortran_order'");
    if (!have_shape) bad(name_, "the header has no 'shape'");
    // Padding: spaces only, then the final newline.
    if (s_.empty() || s_.back() != '\n') bad(name_, "the header does not end with a newline");
    for (; i_ + 1 < s_.size(); ++i_)
      if (s_[i_] != ' ') bad(name_, "unexpected text after the header dict");
  }

 private:
  char peek() const {
    if (i_ >= s_.size()) bad(name_, "the header ends early");
    return s_[i_];
  }
  void expect(char c) {
    if (peek() != c) bad(name_, std::string("expected '") + c + "' in the header at byte " + std::to_string(i_));
    ++i_;
  }
  void skip_space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n')) ++i_;
  }
  void once(bool &seen, const std::string &key) {
    if (seen) bad(name_, "key '" + key + "' appears twice in the header");
    seen = true;
  }
  bool word(const char *w) {
    const size_t n = std::strlen(w);
    if (s_.compare(i_, n, w) != 0) return false;
    i_ += n;
    return true;
  }
  std::string string_literal() {
    const char quote = peek();
    if (quote != '\'' && quote != '"') bad(name_, "expected a quoted string in the header at byte " + std::to_string(i_));
    const size_t end = s_.find(quote, i_ + 1);
    if (end == std::string::npos) bad(name_, "unterminated string in the header");
    std::string v = s_.substr(i_ + 1, end - i_ - 1);
    i_ = end + 1;
    return v;
  }
  std::vector<int64_t> shape_tuple() {
    std::vector<int64_t> dims;
    expect('(');
    skip_space();
    while (peek() != ')') {
      if (peek() < '0' || peek() > '9') bad(name_, "the shape holds something other than non-negative integers");
      int64_t v = 0;
      while (peek() >= '0' && peek() <= '9') {
        const int digit = peek() - '0';
        if (v > (std::numeric_limits<int64_t>::max() - digit) / 10) bad(name_, "a shape dimension overflows int64");
        v = v * 10 + digit;
        ++i_;
      }
      dims.push_back(v);
      skip_space();
      if (peek() == ',') {
        ++i_;
        skip_space();
      } else if (peek() != ')') {
        bad(name_, "expected ',' or ')' in the shape");
      }
    }
    ++i_;
    return dims;
  }

  const std::string &s_;
  const std::string &name_;
  size_t i_ = 0;
};

uint32_t read_le(const unsigned char *p, int bytes) {
  uint32_t v = 0;
  for (int b = bytes - 1; b >= 0; --b) v = (v << 8) | p[b];
  return v;
}

}  // namespace

size_t itemsize(Dtype dtype) { return dtype == Dtype::F16 ? 2 : 4; }

int64_t Array::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

double Array::at(int64_t i) const {
  if (dtype == Dtype::F16) {
    uint16_t h;
    std::memcpy(&h, data.data() + size_t(i) * 2, 2);
    return f16_to_float(h);
  }
  float f;
  std::memcpy(&f, data.data() + size_t(i) * 4, 4);
  return f;
}

float f16_to_float(uint16_t h) {
  const int exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  float v;
  if (exp == 0x1f) v = man ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  else if (exp == 0) v = std::ldexp(float(man), -24);
  else v = std::ldexp(float(1024 + man), exp - 25);
  return (h & 0x8000) ? -v : v;
}

Array parse(const unsigned char *bytes, size_t size, const std::string &name) {
  if (!host_is_little_endian()) bad(name, "this reader needs a little-endian host");
  if (size < kMagicSize + 2 || std::memcmp(bytes, kMagic, kMagicSize) != 0) bad(name, "not a .npy file (no \\x93NUMPY magic)");
  const int major = bytes[6], minor = bytes[7];
  if (major < 1 || major > 3 || minor != 0)
    bad(name, "unsupported .npy version " + std::to_string(major) + "." + std::to_string(minor) +
                  " (1.0, 2.0 and 3.0 are read)");
  const int len_bytes = major == 1 ? 2 : 4;
  const size_t prefix = kMagicSize + 2 + size_t(len_bytes);
  if (size < prefix) bad(name, "the file ends inside the header length");
  const size_t header_len = read_le(bytes + kMagicSize + 2, len_bytes);
  if (header_len > size - prefix) bad(name, "the header length " + std::to_string(header_len) + " runs past the end of the file");
  const std::string header(reinterpret_cast<const char *>(bytes + prefix), header_len);

  Array out;
  HeaderParser(header, name).parse(out);

  const size_t item = itemsize(out.dtype);
  uint64_t numel = 1;
  for (int64_t d : out.shape) {
    if (d != 0 && numel > std::numeric_limits<uint64_t>::max() / item / uint64_t(d)) bad(name, "the shape's size overflows");
    numel *= uint64_t(d);
  }
  const size_t data_size = size - prefix - header_len;
  if (numel * item != data_size)
    bad(name, "the shape holds " + std::to_string(numel * item) + " bytes of data but the file has " +
                  std::to_string(data_size));
  out.data.assign(bytes + prefix + header_len, bytes + size);
  return out;
}

Array read(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) bad(path, std::string("cannot open: ") + std::strerror(errno));
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) bad(path, "read error");
  return parse(bytes.data(), bytes.size(), path);
}

void write(const std::string &path, const Array &array) {
  if (int64_t(array.data.size()) != array.numel() * int64_t(itemsize(array.dtype)))
    throw std::runtime_error(path + ": the array's data does not match its shape");
  std::string header = std::string("{'descr': '") + (array.dtype == Dtype::F16 ? "<f2" : "<f4") +
                       "', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < array.shape.size(); ++i) {
    header += std::to_string(array.shape[i]);
    if (array.shape.size() == 1 || i + 1 < array.shape.size()) header += ", ";
  }
  if (array.shape.size() == 1) header.pop_back();  // "(5,)"
  header += "), }";
  const size_t prefix = kMagicSize + 4;
  while ((prefix + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  if (header.size() > 0xffff) throw std::runtime_error(path + ": the header is too long for version 1.0");

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error(path + ": cannot create: " + std::strerror(errno));
  const unsigned char version_and_len[4] = {1, 0, (unsigned char)(header.size() & 0xff), (unsigned char)(header.size() >> 8)};
  out.write(kMagic, kMagicSize);
  out.write(reinterpret_cast<const char *>(version_and_len), 4);
  out.write(header.data(), std::streamsize(header.size()));
  out.write(reinterpret_cast<const char *>(array.data.data()), std::streamsize(array.data.size()));
  if (!out.flush()) throw std::runtime_error(path + ": write error");
}

}  // namespace npy
