#include "io/json.hpp"

#include <unordered_set>

#include "core/error.hpp"

namespace sa {

namespace {

class Parser {
 public:
  Parser(const char *text, size_t size, const std::string &origin) : p_(text), n_(size), origin_(origin) {}

  JsonValue document() {
    skip_space();
    JsonValue v = value(0);
    skip_space();
    if (i_ != n_) error("unexpected bytes after the JSON value");
    return v;
  }

 private:
  [[noreturn]] void error(const char *what) const {
    fail(SA_ERR_FORMAT, "%s: malformed JSON at byte %zu: %s", origin_.c_str(), i_, what);
  }
  bool at_end() const { return i_ >= n_; }
  unsigned char peek() const { return at_end() ? 0 : static_cast<unsigned char>(p_[i_]); }
  void skip_space() {
    while (!at_end() && (p_[i_] == ' ' || p_[i_] == '\t' || p_[i_] == '\n' || p_[i_] == '\r')) ++i_;
  }
  void expect_word(const char *word) {
    for (const char *w = word; *w; ++w, ++i_)
      if (at_end() || p_[i_] != *w) error("invalid literal");
  }

  JsonValue value(int depth) {
    if (at_end()) error("unexpected end of input");
    if (++values_ > kJsonMaxValues) error("more than 2^20 values");
    JsonValue v;
    switch (peek()) {
      case '{': v.kind = JsonValue::Object; object(v, depth + 1); break;
      case '[': v.kind = JsonValue::Array; array(v, depth + 1); break;
      case '"': v.kind = JsonValue::String; v.text = string(); break;
      case 't': expect_word("true"); v.kind = JsonValue::Bool; v.boolean = true; break;
      case 'f': expect_word("false"); v.kind = JsonValue::Bool; break;
      case 'n': expect_word("null"); break;
      default: v.kind = JsonValue::Number; v.text = number(); break;
    }
    return v;
  }

  void enter(int depth) const {
    if (depth > kJsonMaxDepth) error("nesting deeper than 64 levels");
  }

  void object(JsonValue &v, int depth) {
    enter(depth);
    std::unordered_set<std::string> keys;  // a set: a hostile header may hold millions of keys
    ++i_;  // '{'
    skip_space();
    if (peek() == '}') { ++i_; return; }
    for (;;) {
      skip_space();
      if (peek() != '"') error("expected a string key");
      std::string key = string();
      if (!keys.insert(key).second) error(("duplicate key \"" + key.substr(0, 64) + "\"").c_str());
      skip_space();
      if (peek() != ':') error("expected ':'");
      ++i_;
      skip_space();
      v.members.emplace_back(std::move(key), value(depth));
      skip_space();
      if (peek() == ',') { ++i_; continue; }
      if (peek() == '}') { ++i_; return; }
      error("expected ',' or '}'");
    }
  }

  void array(JsonValue &v, int depth) {
    enter(depth);
    ++i_;  // '['
    skip_space();
    if (peek() == ']') { ++i_; return; }
    for (;;) {
      skip_space();
      v.items.push_back(value(depth));
      skip_space();
      if (peek() == ',') { ++i_; continue; }
      if (peek() == ']') { ++i_; return; }
      error("expected ',' or ']'");
    }
  }

  unsigned hex4() {
    unsigned u = 0;
    for (int k = 0; k < 4; ++k, ++i_) {
      const unsigned char c = peek();
      if (at_end()) error("unexpected end of input in \\u escape");
      unsigned d;
      if (c >= '0' && c <= '9') d = c - '0';
      else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
      else error("invalid hex digit in \\u escape");
      u = u * 16 + d;
    }
    return u;
  }

  static void put_utf8(std::string &s, unsigned cp) {
    if (cp < 0x80) {
      s += char(cp);
    } else if (cp < 0x800) {
      s += char(0xC0 | (cp >> 6));
      s += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      s += char(0xE0 | (cp >> 12));
      s += char(0x80 | ((cp >> 6) & 0x3F));
      s += char(0x80 | (cp & 0x3F));
    } else {
      s += char(0xF0 | (cp >> 18));
      s += char(0x80 | ((cp >> 12) & 0x3F));
      s += char(0x80 | ((cp >> 6) & 0x3F));
      s += char(0x80 | (cp & 0x3F));
    }
  }

  // One UTF-8 sequence starting at i_ (lead byte >= 0x80), validated and copied.
  void utf8_sequence(std::string &s) {
    const unsigned char c = peek();
    int extra;
    unsigned cp, min;
    if (c >= 0xC2 && c <= 0xDF) extra = 1, cp = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) extra = 2, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) extra = 3, cp = c & 0x07, min = 0x10000;
    else error("invalid UTF-8 in a string");
    if (n_ - i_ <= size_t(extra)) error("truncated UTF-8 sequence in a string");
    for (int k = 1; k <= extra; ++k) {
      const unsigned char t = static_cast<unsigned char>(p_[i_ + size_t(k)]);
      if ((t & 0xC0) != 0x80) error("invalid UTF-8 in a string");
      cp = (cp << 6) | (t & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) error("invalid UTF-8 in a string");
    s.append(p_ + i_, size_t(extra) + 1);
    i_ += size_t(extra) + 1;
  }

  std::string string() {
    ++i_;  // '"'
    std::string s;
    for (;;) {
      if (at_end()) error("unterminated string");
      const unsigned char c = peek();
      if (c == '"') { ++i_; return s; }
      if (c < 0x20) error("control character in a string");
      if (c >= 0x80) { utf8_sequence(s); continue; }
      if (c != '\\') { s += char(c); ++i_; continue; }
      ++i_;
      if (at_end()) error("unterminated escape");
      const char e = p_[i_++];
      switch (e) {
        case '"': s += '"'; break;
        case '\\': s += '\\'; break;
        case '/': s += '/'; break;
        case 'b': s += '\b'; break;
        case 'f': s += '\f'; break;
        case 'n': s += '\n'; break;
        case 'r': s += '\r'; break;
        case 't': s += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) error("unpaired low surrogate");
          if (cp >= 0xD800 && cp <= 0xDBFF) {  // a high surrogate needs its low half
            if (n_ - i_ < 6 || p_[i_] != '\\' || p_[i_ + 1] != 'u') error("unpaired high surrogate");
            i_ += 2;
            const unsigned lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) error("unpaired high surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          put_utf8(s, cp);
          break;
        }
        default: --i_; error("invalid escape");
      }
    }
  }

  static bool digit(unsigned char c) { return c >= '0' && c <= '9'; }

  std::string number() {
    const size_t start = i_;
    if (peek() == '-') ++i_;
    if (peek() == '0') {
      ++i_;
    } else if (digit(peek())) {
      while (digit(peek())) ++i_;
    } else {
      error("expected a value");
    }
    if (peek() == '.') {
      ++i_;
      if (!digit(peek())) error("expected a digit after '.'");
      while (digit(peek())) ++i_;
    }
    if (peek() == 'e' || peek() == 'E') {
      ++i_;
      if (peek() == '+' || peek() == '-') ++i_;
      if (!digit(peek())) error("expected a digit in the exponent");
      while (digit(peek())) ++i_;
    }
    return std::string(p_ + start, i_ - start);
  }

  const char *p_;
  size_t n_, i_ = 0, values_ = 0;
  const std::string &origin_;
};

}  // namespace

bool JsonValue::as_int64(int64_t *out) const {
  if (kind != Number || text.empty()) return false;
  size_t k = 0;
  const bool neg = text[0] == '-';
  if (neg) ++k;
  if (k == text.size()) return false;
  // Accumulate as a negative number so INT64_MIN fits.
  int64_t v = 0;
  for (; k < text.size(); ++k) {
    const char c = text[k];
    if (c < '0' || c > '9') return false;  // fraction or exponent
    const int d = c - '0';
    if (v < (INT64_MIN + d) / 10) return false;
    v = v * 10 - d;
  }
  if (!neg) {
    if (v == INT64_MIN) return false;
    v = -v;
  }
  *out = v;
  return true;
}

const JsonValue *JsonValue::member(const std::string &key) const {
  for (const auto &m : members)
    if (m.first == key) return &m.second;
  return nullptr;
}

JsonValue parse_json(const char *text, size_t size, const std::string &origin) {
  return Parser(text, size, origin).document();
}

const char *json_kind_name(JsonValue::Kind kind) {
  switch (kind) {
    case JsonValue::Null: return "null";
    case JsonValue::Bool: return "a boolean";
    case JsonValue::Number: return "a number";
    case JsonValue::String: return "a string";
    case JsonValue::Array: return "an array";
    case JsonValue::Object: return "an object";
  }
  return "a value";
}

}  // namespace sa
