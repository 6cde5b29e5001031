#include "io/safetensors.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/error.hpp"
#include "core/half.hpp"
#include "io/json.hpp"

namespace sa {

namespace {

// Bytes per element of every dtype the format defines; 0 for names it does not.
size_t dtype_bytes(const std::string &d) {
  static const std::pair<const char *, size_t> table[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2},
      {"U16", 2},  {"F16", 2}, {"BF16", 2}, {"I32", 4},     {"U32", 4},     {"F32", 4},
      {"I64", 8},  {"U64", 8}, {"F64", 8}};
  for (const auto &e : table)
    if (d == e.first) return e.second;
  return 0;
}

// Names from the file go into messages: cut long ones, escape control bytes.
std::string quoted(const std::string &s) {
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < 64; ++i) out += (unsigned char)s[i] < 0x20 ? '?' : s[i];
  return out + (s.size() > 64 ? "...'" : "'");
}

uint64_t read_le64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

void Safetensors::parse_header(const char *header, size_t header_size, uint64_t data_size) {
  const char *o = origin_.c_str();
  if (header_size == 0 || header[0] != '{') fail(SA_ERR_FORMAT, "%s: the header does not start with '{'", o);
  const JsonValue doc = parse_json(header, header_size, origin_ + ": header");
  if (doc.kind != JsonValue::Object) fail(SA_ERR_FORMAT, "%s: the header is not a JSON object", o);
  data_size_ = data_size;

  for (const auto &m : doc.members) {
    const std::string &name = m.first;
    const JsonValue &v = m.second;
    if (name == "__metadata__") {
      if (v.kind != JsonValue::Object)
        fail(SA_ERR_FORMAT, "%s: __metadata__ is %s, expected an object of strings", o, json_kind_name(v.kind));
      for (const auto &kv : v.members) {
        if (kv.second.kind != JsonValue::String)
          fail(SA_ERR_FORMAT, "%s: __metadata__ entry %s is %s, expected a string", o, quoted(kv.first).c_str(),
               json_kind_name(kv.second.kind));
        metadata_.emplace_back(kv.first, kv.second.text);
      }
      continue;
    }
    const std::string n = quoted(name);
    if (v.kind != JsonValue::Object) fail(SA_ERR_FORMAT, "%s: tensor %s is %s, expected an object", o, n.c_str(), json_kind_name(v.kind));
    SafetensorsEntry t;
    t.name = name;
    const JsonValue *dtype = nullptr, *shape = nullptr, *offsets = nullptr;
    for (const auto &f : v.members) {
      if (f.first == "dtype") dtype = &f.second;
      else if (f.first == "shape") shape = &f.second;
      else if (f.first == "data_offsets") offsets = &f.second;
      else fail(SA_ERR_FORMAT, "%s: tensor %s has an unknown field %s", o, n.c_str(), quoted(f.first).c_str());
    }
    if (!dtype || !shape || !offsets)
      fail(SA_ERR_FORMAT, "%s: tensor %s lacks \"%s\"", o, n.c_str(), !dtype ? "dtype" : !shape ? "shape" : "data_offsets");
    if (dtype->kind != JsonValue::String) fail(SA_ERR_FORMAT, "%s: tensor %s: dtype is not a string", o, n.c_str());
    t.dtype = dtype->text;
    const size_t elem = dtype_bytes(t.dtype);
    if (elem == 0) fail(SA_ERR_FORMAT, "%s: tensor %s has an unknown dtype %s", o, n.c_str(), quoted(t.dtype).c_str());

    if (shape->kind != JsonValue::Array) fail(SA_ERR_FORMAT, "%s: tensor %s: shape is not an array", o, n.c_str());
    uint64_t bytes = elem;
    int64_t numel = 1;
    for (const JsonValue &d : shape->items) {
      int64_t x;
      if (!d.as_int64(&x) || x < 0)
        fail(SA_ERR_FORMAT, "%s: tensor %s: shape holds %s, expected non-negative integers", o, n.c_str(),
             d.kind == JsonValue::Number ? d.text.substr(0, 32).c_str() : json_kind_name(d.kind));
      if (__builtin_mul_overflow(numel, x, &numel) || __builtin_mul_overflow(bytes, uint64_t(x), &bytes))
        fail(SA_ERR_FORMAT, "%s: tensor %s: the shape's size overflows", o, n.c_str());
      t.shape.push_back(x);
    }
    t.numel = numel;

    int64_t b = -1, e = -1;
    if (offsets->kind != JsonValue::Array || offsets->items.size() != 2 || !offsets->items[0].as_int64(&b) ||
        !offsets->items[1].as_int64(&e) || b < 0 || e < b)
      fail(SA_ERR_FORMAT, "%s: tensor %s: data_offsets must be [begin, end] with 0 <= begin <= end", o, n.c_str());
    t.begin = uint64_t(b);
    t.end = uint64_t(e);
    if (t.end > data_size)
      fail(SA_ERR_FORMAT, "%s: tensor %s: data_offsets [%llu, %llu] run past the data section (%llu bytes)", o,
           n.c_str(), (unsigned long long)t.begin, (unsigned long long)t.end, (unsigned long long)data_size);
    if (t.end - t.begin != bytes)
      fail(SA_ERR_FORMAT, "%s: tensor %s: shape and dtype %s need %llu bytes, data_offsets span %llu", o, n.c_str(),
           t.dtype.c_str(), (unsigned long long)bytes, (unsigned long long)(t.end - t.begin));
    tensors_.push_back(std::move(t));
  }

  // The spans must tile [0, data_size) in order.
  std::vector<const SafetensorsEntry *> by_offset;
  for (const auto &t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const SafetensorsEntry *a, const SafetensorsEntry *b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t covered = 0;
  const SafetensorsEntry *prev = nullptr;
  for (const SafetensorsEntry *t : by_offset) {
    if (t->begin < covered)
      fail(SA_ERR_FORMAT, "%s: tensors %s and %s overlap", o, quoted(prev->name).c_str(), quoted(t->name).c_str());
    if (t->begin > covered)
      fail(SA_ERR_FORMAT, "%s: bytes [%llu, %llu) of the data section belong to no tensor", o,
           (unsigned long long)covered, (unsigned long long)t->begin);
    covered = t->end;
    prev = t;
  }
  if (covered != data_size)
    fail(SA_ERR_FORMAT, "%s: the last %llu bytes of the data section belong to no tensor", o,
         (unsigned long long)(data_size - covered));
}

Safetensors Safetensors::from_memory(const void *data, size_t size, const std::string &origin) {
  Safetensors s;
  s.origin_ = origin;
  s.memory_ = static_cast<const char *>(data);
  if (size < 8) fail(SA_ERR_FORMAT, "%s: %zu bytes, shorter than the 8-byte header length", origin.c_str(), size);
  const uint64_t n = read_le64(reinterpret_cast<const unsigned char *>(data));
  if (n > kSafetensorsMaxHeader)
    fail(SA_ERR_FORMAT, "%s: header length %llu exceeds the %llu-byte limit", origin.c_str(), (unsigned long long)n,
         (unsigned long long)kSafetensorsMaxHeader);
  if (n > size - 8)
    fail(SA_ERR_FORMAT, "%s: header length %llu runs past the end of the file (%zu bytes)", origin.c_str(),
         (unsigned long long)n, size);
  s.data_start_ = 8 + n;
  s.parse_header(s.memory_ + 8, size_t(n), size - 8 - n);
  return s;
}

Safetensors Safetensors::open(const std::string &path) {
  Safetensors s;
  s.origin_ = path;
  const char *o = path.c_str();
  // O_NONBLOCK: opening a FIFO (or a device) must not wait for a writer before the regular-file
  // check below refuses it; reads of a regular file ignore the flag.
  const int fd = ::open(o, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail(SA_ERR_INVALID_ARGUMENT, "cannot open '%s': %s", o, std::strerror(errno));
  s.fd_ = std::shared_ptr<int>(new int(fd), [](int *p) {
    ::close(*p);
    delete p;
  });
  struct stat st;
  if (fstat(fd, &st) != 0) fail(SA_ERR_INVALID_ARGUMENT, "cannot stat '%s': %s", o, std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail(SA_ERR_INVALID_ARGUMENT, "'%s' is not a regular file", o);
  const uint64_t size = uint64_t(st.st_size);
  if (size < 8) fail(SA_ERR_FORMAT, "%s: %llu bytes, shorter than the 8-byte header length", o, (unsigned long long)size);
  unsigned char len[8];
  s.read_bytes(0, 8, reinterpret_cast<char *>(len));
  const uint64_t n = read_le64(len);
  if (n > kSafetensorsMaxHeader)
    fail(SA_ERR_FORMAT, "%s: header length %llu exceeds the %llu-byte limit", o, (unsigned long long)n,
         (unsigned long long)kSafetensorsMaxHeader);
  if (n > size - 8)
    fail(SA_ERR_FORMAT, "%s: header length %llu runs past the end of the file (%llu bytes)", o, (unsigned long long)n,
         (unsigned long long)size);
  std::vector<char> header(static_cast<size_t>(n));
  s.read_bytes(8, size_t(n), header.data());
  s.data_start_ = 8 + n;
  s.parse_header(header.data(), header.size(), size - 8 - n);
  return s;
}

void Safetensors::read_bytes(uint64_t offset, size_t n, char *dst) const {
  if (n == 0) return;  // empty tensors: dst may be NULL
  if (memory_) {
    std::memcpy(dst, memory_ + offset, n);
    return;
  }
  size_t done = 0;
  while (done < n) {
    const ssize_t r = ::pread(*fd_, dst + done, n - done, off_t(offset + done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail(SA_ERR_FORMAT, "%s: read failed: %s", origin_.c_str(), std::strerror(errno));
    if (r == 0) fail(SA_ERR_FORMAT, "%s: the file ended early (truncated while open?)", origin_.c_str());
    done += size_t(r);
  }
}

const SafetensorsEntry *Safetensors::find(const std::string &name) const {
  for (const auto &t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

std::vector<float> Safetensors::read_f32(const SafetensorsEntry &t) const {
  const size_t elem = dtype_bytes(t.dtype);
  if (t.dtype != "F32" && t.dtype != "F16" && t.dtype != "BF16")
    fail(SA_ERR_FORMAT, "%s: tensor %s has dtype %s; sparseattn reads F32, F16 or BF16", origin_.c_str(),
         quoted(t.name).c_str(), t.dtype.c_str());
  // The header check guarantees end - begin == numel * elem and end <= data_size_.
  std::vector<char> raw(size_t(t.end - t.begin));
  read_bytes(data_start_ + t.begin, raw.size(), raw.data());
  std::vector<float> out(size_t(t.numel));
  const unsigned char *p = reinterpret_cast<const unsigned char *>(raw.data());
  for (size_t i = 0; i < out.size(); ++i, p += elem) {
    if (elem == 4) out[i] = bits_to_f32(uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24);
    else if (t.dtype == "F16") out[i] = f16_to_f32(uint16_t(p[0] | p[1] << 8));
    else out[i] = bf16_to_f32(uint16_t(p[0] | p[1] << 8));
  }
  return out;
}

}  // namespace sa
