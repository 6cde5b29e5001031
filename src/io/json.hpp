// A strict JSON parser (RFC 8259) for the small documents the library reads: safetensors
// headers. No extensions: no comments, trailing commas, NaN or leading zeros; strings must be
// valid UTF-8; an object may not repeat a key; nesting and the number of values are capped so
// hostile input cannot exhaust the stack or memory. Errors throw sa::Error(SA_ERR_FORMAT) with
// the byte offset of the problem.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace sa {

struct JsonValue {
  enum Kind { Null, Bool, Number, String, Array, Object };
  Kind kind = Null;
  bool boolean = false;
  std::string text;  // String: the decoded UTF-8; Number: the literal as written
  std::vector<JsonValue> items;                               // Array
  std::vector<std::pair<std::string, JsonValue>> members;     // Object, in document order

  // Number written as an integer (no fraction or exponent) that fits in int64.
  bool as_int64(int64_t *out) const;
  const JsonValue *member(const std::string &key) const;  // nullptr when absent
};

constexpr int kJsonMaxDepth = 64;
constexpr size_t kJsonMaxValues = size_t(1) << 20;  // bounds the tree's memory (~100 bytes a value)

// Parses exactly one value; only whitespace may surround it. `origin` prefixes messages
// (e.g. "weights.safetensors: header").
JsonValue parse_json(const char *text, size_t size, const std::string &origin);

const char *json_kind_name(JsonValue::Kind kind);

}  // namespace sa
