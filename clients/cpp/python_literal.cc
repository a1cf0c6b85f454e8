#include "clients/cpp/python_literal.h"

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "clients/cpp/value.h"

namespace pyexec {
namespace {

// A natural number in base-10^9 limbs, least significant first, with no
// zero limb at the top (zero is no limbs). Just enough arithmetic for
// non-decimal literals and INT**INT.
class BigNat {
 public:
  static constexpr uint32_t kBase = 1000000000;

  BigNat() = default;
  explicit BigNat(uint32_t v) {
    if (v >= kBase) {
      limbs_ = {v % kBase, v / kBase};
    } else if (v > 0) {
      limbs_ = {v};
    }
  }

  // REQUIRES: `digits` is all ASCII digits.
  static BigNat FromDecimal(absl::string_view digits) {
    BigNat n;
    while (!digits.empty()) {
      const size_t take = std::min<size_t>(9, digits.size());
      uint32_t chunk = 0;
      uint32_t scale = 1;
      for (size_t i = 0; i < take; ++i) {
        chunk = chunk * 10 + static_cast<uint32_t>(digits[i] - '0');
        scale *= 10;
      }
      n.MulAdd(scale, chunk);
      digits.remove_prefix(take);
    }
    return n;
  }

  bool IsZero() const { return limbs_.empty(); }
  bool IsOne() const { return limbs_.size() == 1 && limbs_[0] == 1; }

  // *this = *this * mul + add. Each limb * mul + carry stays below 2^64:
  // (10^9 - 1) * (2^32 - 1) + 2^32 < 4.3e18.
  void MulAdd(uint32_t mul, uint32_t add) {
    uint64_t carry = add;
    for (uint32_t& limb : limbs_) {
      const uint64_t cur = static_cast<uint64_t>(limb) * mul + carry;
      limb = static_cast<uint32_t>(cur % kBase);
      carry = cur / kBase;
    }
    while (carry > 0) {
      limbs_.push_back(static_cast<uint32_t>(carry % kBase));
      carry /= kBase;
    }
    Trim();
  }

  BigNat operator*(const BigNat& o) const {
    BigNat r;
    if (IsZero() || o.IsZero()) return r;
    r.limbs_.assign(limbs_.size() + o.limbs_.size(), 0);
    for (size_t i = 0; i < limbs_.size(); ++i) {
      uint64_t carry = 0;
      for (size_t j = 0; j < o.limbs_.size() || carry > 0; ++j) {
        // < 10^18 + 2 * 10^9: fits.
        uint64_t cur = r.limbs_[i + j] + carry;
        if (j < o.limbs_.size()) cur += static_cast<uint64_t>(limbs_[i]) * o.limbs_[j];
        r.limbs_[i + j] = static_cast<uint32_t>(cur % kBase);
        carry = cur / kBase;
      }
    }
    r.Trim();
    return r;
  }

  size_t DecimalDigits() const {
    if (IsZero()) return 1;
    size_t digits = 9 * (limbs_.size() - 1);
    for (uint32_t top = limbs_.back(); top > 0; top /= 10) ++digits;
    return digits;
  }

  // log10 of the number, good to about 15 digits. REQUIRES: not zero.
  double Log10() const {
    double top = limbs_.back();
    if (limbs_.size() > 1) top += limbs_[limbs_.size() - 2] / 1e9;
    return std::log10(top) + 9.0 * (limbs_.size() - 1);
  }

  std::optional<uint64_t> ToUint64() const {
    if (limbs_.size() > 3) return std::nullopt;
    unsigned __int128 v = 0;
    for (size_t i = limbs_.size(); i-- > 0;) v = v * kBase + limbs_[i];
    if (v > UINT64_MAX) return std::nullopt;
    return static_cast<uint64_t>(v);
  }

  std::string ToDecimal() const {
    if (IsZero()) return "0";
    std::string out = absl::StrCat(limbs_.back());
    for (size_t i = limbs_.size() - 1; i-- > 0;) {
      absl::StrAppendFormat(&out, "%09u", limbs_[i]);
    }
    return out;
  }

 private:
  void Trim() {
    while (!limbs_.empty() && limbs_.back() == 0) limbs_.pop_back();
  }

  std::vector<uint32_t> limbs_;
};

bool IsIdentChar(char c) {
  return absl::ascii_isalnum(c) || c == '_' || static_cast<unsigned char>(c) >= 0x80;
}

bool IsIdentStart(char c) { return IsIdentChar(c) && !absl::ascii_isdigit(c); }

int DigitValue(char c) {
  if (absl::ascii_isdigit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return 99;
}

void AppendUtf8(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xc0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3f)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xe0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3f)));
  } else {
    out->push_back(static_cast<char>(0xf0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3f)));
  }
}

// "list", "dict" or "set" if Python could not hash `v` (a tuple is as
// hashable as its items), else null.
const char* UnhashableType(const v1::Value& v) {
  if (v.has_list()) return "list";
  if (v.has_dict()) return "dict";
  if (v.has_set()) return "set";
  if (v.has_tuple()) {
    for (const v1::Value& item : v.items()) {
      if (const char* type = UnhashableType(item)) return type;
    }
  }
  return nullptr;
}

// How a string literal's prefix letters read.
struct StringPrefix {
  bool raw = false;
  bool bytes = false;
  bool format = false;
};

// Parses the letters before a quote; nullopt if they are no string prefix.
std::optional<StringPrefix> ReadPrefix(absl::string_view letters) {
  const std::string p = absl::AsciiStrToLower(letters);
  if (p.empty() || p == "u") return StringPrefix{};
  if (p == "r") return StringPrefix{true, false, false};
  if (p == "b") return StringPrefix{false, true, false};
  if (p == "br" || p == "rb") return StringPrefix{true, true, false};
  if (p == "f") return StringPrefix{false, false, true};
  if (p == "fr" || p == "rf") return StringPrefix{true, false, true};
  return std::nullopt;
}

class Parser {
 public:
  // Python reads source with universal newlines: \r\n and \r are \n.
  explicit Parser(absl::string_view text)
      : s_(absl::StrReplaceAll(absl::StrReplaceAll(text, {{"\r\n", "\n"}}), {{"\r", "\n"}})) {}

  absl::StatusOr<v1::Value> ParseAll() {
    if (s_.find('\0') != s_.npos) {
      return ErrorAt(s_.find('\0'), "a literal cannot contain a NUL character");
    }
    if (!IsValidUtf8(s_)) {
      return absl::InvalidArgumentError("not valid UTF-8 (use b'\\xhh' escapes for raw bytes)");
    }
    SkipSpace(/*newlines=*/true);
    if (AtEnd()) return absl::InvalidArgumentError("empty literal");
    absl::StatusOr<v1::Value> v = ParseValue(0);
    if (!v.ok()) return v;
    SkipSpace();
    if (Peek() == ',') {
      // A tuple without parentheses, as in `1, 2` or `1,`.
      std::vector<v1::Value> items;
      items.push_back(*std::move(v));
      while (Peek() == ',') {
        ++pos_;
        SkipSpace();
        if (AtEnd() || Peek() == '\n') break;
        absl::StatusOr<v1::Value> item = ParseValue(1);
        if (!item.ok()) return item;
        items.push_back(*std::move(item));
        SkipSpace();
      }
      v = MakeTuple(std::move(items));
    }
    SkipSpace(/*newlines=*/true);
    if (!AtEnd()) return Error("unexpected text after the literal");
    return v;
  }

 private:
  bool AtEnd() const { return pos_ >= s_.size(); }
  char Peek(size_t ahead = 0) const {
    return pos_ + ahead < s_.size() ? s_[pos_ + ahead] : '\0';
  }

  absl::Status ErrorAt(size_t pos, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(what, " (column ", pos + 1, ")"));
  }
  absl::Status Error(absl::string_view what) const { return ErrorAt(pos_, what); }

  // Whitespace, backslash-newline continuations and # comments. A newline
  // is whitespace only inside brackets (or when `newlines`, before and after
  // the literal): elsewhere it ends the expression, as in Python.
  void SkipSpace(bool newlines = false) {
    while (!AtEnd()) {
      const char c = s_[pos_];
      if (c == ' ' || c == '\t' || c == '\f' || (c == '\n' && (newlines || brackets_ > 0))) {
        ++pos_;
      } else if (c == '\\' && Peek(1) == '\n') {
        pos_ += 2;
      } else if (c == '#') {
        while (!AtEnd() && s_[pos_] != '\n') ++pos_;
      } else {
        return;
      }
    }
  }

  absl::string_view ReadIdentifier() {
    const size_t start = pos_;
    while (!AtEnd() && IsIdentChar(s_[pos_])) ++pos_;
    return absl::string_view(s_).substr(start, pos_ - start);
  }

  // Prefix letters (possibly none) followed by a quote, at pos_?
  bool AtStringStart() const {
    size_t i = pos_;
    while (i < s_.size() && i - pos_ < 3 && absl::ascii_isalpha(s_[i])) ++i;
    if (i >= s_.size() || (s_[i] != '\'' && s_[i] != '"')) return false;
    return ReadPrefix(absl::string_view(s_).substr(pos_, i - pos_)).has_value();
  }

  absl::StatusOr<v1::Value> ParseValue(int depth) {
    if (depth > kMaxLiteralDepth) {
      return Error(absl::StrCat("nested deeper than ", kMaxLiteralDepth, " levels"));
    }
    SkipSpace();
    if (AtEnd()) return Error("expected a value");
    const char c = s_[pos_];
    if (c == '[') return ParseList(depth);
    if (c == '(') return ParseParens(depth);
    if (c == '{') return ParseBraces(depth);
    if (AtStringStart()) return ParseStrings();
    if (c == '-' || c == '+') {
      const size_t sign_pos = pos_++;
      SkipSpace();
      if (absl::ascii_isdigit(Peek()) || (Peek() == '.' && absl::ascii_isdigit(Peek(1)))) {
        return ParseNumber(c == '-');
      }
      if (IsIdentStart(Peek())) {
        const size_t name_pos = pos_;
        absl::string_view name = ReadIdentifier();
        if (name == "inf") return MakeFloat(c == '-' ? -HUGE_VAL : HUGE_VAL);
        if (name == "nan") return MakeFloat(c == '-' ? -std::nan("") : std::nan(""));
        return ErrorAt(name_pos, absl::StrCat("a sign needs a number, not '", name, "'"));
      }
      return ErrorAt(sign_pos, absl::StrCat("expected a number after '", std::string(1, c), "'"));
    }
    if (absl::ascii_isdigit(c) || (c == '.' && absl::ascii_isdigit(Peek(1)))) {
      return ParseNumber(false);
    }
    if (IsIdentStart(c)) return ParseName();
    if (c == '*' && Peek(1) == '*') return Error("'**' unpacking is not a literal");
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return Error(absl::StrFormat("unexpected character \\x%02x", c));
    }
    return Error(absl::StrCat("unexpected '", std::string(1, c), "'"));
  }

  absl::StatusOr<v1::Value> ParseName() {
    const size_t start = pos_;
    absl::string_view name = ReadIdentifier();
    if (name == "None") return MakeNone();
    if (name == "True") return MakeBool(true);
    if (name == "False") return MakeBool(false);
    if (name == "inf") return MakeFloat(HUGE_VAL);
    if (name == "nan") return MakeFloat(std::nan(""));
    if (name == "set") {
      SkipSpace();
      if (Peek() == '(') {
        ++pos_;
        SkipSpace();
        if (Peek() == ')') {
          ++pos_;
          return MakeSet({});
        }
      }
      return ErrorAt(start, "only set() is a literal call (write a set as {1, 2})");
    }
    std::string hint;
    if (name == "true" || name == "false" || name == "none" || name == "null") {
      hint = absl::StrCat(" (Python spells it ",
                          name == "true" ? "True" : name == "false" ? "False" : "None", ")");
    }
    return ErrorAt(start, absl::StrCat("name '", name, "' is not a literal", hint));
  }

  // [items], with an optional trailing comma.
  absl::StatusOr<v1::Value> ParseList(int depth) {
    const size_t open = pos_++;
    InBrackets in(&brackets_);
    std::vector<v1::Value> items;
    absl::Status s = ParseItems(depth, open, ']', &items);
    if (!s.ok()) return s;
    return MakeList(std::move(items));
  }

  // Parses `item, item, ... close` (pos_ is just past the opening bracket
  // at `open`, or past a comma), with an optional trailing comma.
  absl::Status ParseItems(int depth, size_t open, char close, std::vector<v1::Value>* items) {
    while (true) {
      SkipSpace();
      if (AtEnd()) return Unclosed(open);
      if (s_[pos_] == close) {
        ++pos_;
        return absl::OkStatus();
      }
      absl::StatusOr<v1::Value> v = ParseValue(depth + 1);
      if (!v.ok()) return v.status();
      items->push_back(*std::move(v));
      SkipSpace();
      if (AtEnd()) return Unclosed(open);
      if (s_[pos_] == ',') {
        ++pos_;
      } else if (s_[pos_] != close) {
        return Error(absl::StrCat("expected ',' or '", std::string(1, close), "'"));
      }
    }
  }

  absl::Status Unclosed(size_t open) const {
    return ErrorAt(open, absl::StrCat("'", std::string(1, s_[open]), "' was never closed"));
  }

  // (), (x) which is x, (x,) and (x, y...).
  absl::StatusOr<v1::Value> ParseParens(int depth) {
    const size_t open = pos_++;
    InBrackets in(&brackets_);
    SkipSpace();
    if (Peek() == ')') {
      ++pos_;
      return MakeTuple({});
    }
    absl::StatusOr<v1::Value> first = ParseValue(depth + 1);
    if (!first.ok()) return first;
    SkipSpace();
    if (AtEnd()) return Unclosed(open);
    if (s_[pos_] == ')') {
      ++pos_;
      return first;
    }
    if (s_[pos_] != ',') return Error("expected ',' or ')'");
    std::vector<v1::Value> items;
    items.push_back(*std::move(first));
    ++pos_;
    absl::Status s = ParseItems(depth, open, ')', &items);
    if (!s.ok()) return s;
    return MakeTuple(std::move(items));
  }

  // {} (a dict), {k: v, ...} or {a, ...} (a set).
  absl::StatusOr<v1::Value> ParseBraces(int depth) {
    const size_t open = pos_++;
    InBrackets in(&brackets_);
    SkipSpace();
    if (Peek() == '}') {
      ++pos_;
      return MakeDict({});
    }
    if (Peek() == '*') return Error("unpacking is not a literal");
    size_t key_pos = pos_;
    absl::StatusOr<v1::Value> first = ParseValue(depth + 1);
    if (!first.ok()) return first;
    SkipSpace();
    const bool is_dict = Peek() == ':';
    std::vector<std::pair<v1::Value, v1::Value>> entries;
    std::vector<v1::Value> items;
    std::optional<v1::Value> key = *std::move(first);
    while (true) {
      if (const char* type = UnhashableType(*key)) {
        return ErrorAt(key_pos, absl::StrCat("unhashable type: '", type, "' as a ",
                                             is_dict ? "dict key" : "set element"));
      }
      if (is_dict) {
        SkipSpace();
        if (Peek() != ':') return AtEnd() ? Unclosed(open) : Error("expected ':'");
        ++pos_;
        absl::StatusOr<v1::Value> value = ParseValue(depth + 1);
        if (!value.ok()) return value.status();
        entries.emplace_back(*std::move(key), *std::move(value));
      } else {
        items.push_back(*std::move(key));
      }
      SkipSpace();
      if (AtEnd()) return Unclosed(open);
      if (s_[pos_] == '}') {
        ++pos_;
        break;
      }
      if (s_[pos_] != ',') {
        return Error(is_dict ? "expected ',' or '}'" : "expected ',' or '}' (or ':' in a dict)");
      }
      ++pos_;
      SkipSpace();
      if (Peek() == '}') {
        ++pos_;
        break;
      }
      if (Peek() == '*') return Error("unpacking is not a literal");
      key_pos = pos_;
      absl::StatusOr<v1::Value> next = ParseValue(depth + 1);
      if (!next.ok()) return next.status();
      key = *std::move(next);
    }
    return is_dict ? MakeDict(std::move(entries)) : MakeSet(std::move(items));
  }

  // One or more adjacent string literals of the same kind, concatenated.
  absl::StatusOr<v1::Value> ParseStrings() {
    std::string text;
    bool bytes = false;
    for (bool first = true;; first = false) {
      const size_t start = pos_;
      absl::string_view letters = ReadIdentifier();
      const StringPrefix prefix = *ReadPrefix(letters);
      if (prefix.format) return ErrorAt(start, "f-strings are not literals");
      if (first) {
        bytes = prefix.bytes;
      } else if (bytes != prefix.bytes) {
        return ErrorAt(start, "cannot mix bytes and nonbytes literals");
      }
      absl::Status s = ReadStringBody(start, prefix, &text);
      if (!s.ok()) return s;
      const size_t after = pos_;
      SkipSpace();
      if (!AtStringStart()) {
        pos_ = after;
        break;
      }
    }
    return bytes ? MakeBytes(text) : MakeStr(text);
  }

  // Reads from the opening quote at pos_ to past the closing one, appending
  // the decoded characters to `out`.
  absl::Status ReadStringBody(size_t start, const StringPrefix& prefix, std::string* out) {
    const char quote = s_[pos_];
    const bool triple = Peek(1) == quote && Peek(2) == quote;
    pos_ += triple ? 3 : 1;
    while (true) {
      if (AtEnd()) {
        return ErrorAt(start, triple ? "unterminated triple-quoted string literal"
                                     : "unterminated string literal");
      }
      const char c = s_[pos_];
      if (c == quote && (!triple || (Peek(1) == quote && Peek(2) == quote))) {
        pos_ += triple ? 3 : 1;
        return absl::OkStatus();
      }
      if (c == '\n' && !triple) return ErrorAt(start, "unterminated string literal");
      if (prefix.bytes && static_cast<unsigned char>(c) >= 0x80) {
        return Error("bytes can only contain ASCII literal characters");
      }
      if (c != '\\') {
        out->push_back(c);
        ++pos_;
        continue;
      }
      if (pos_ + 1 >= s_.size()) {
        return ErrorAt(start, "unterminated string literal");
      }
      if (prefix.raw) {
        // A backslash escapes nothing but still keeps the next character
        // (a quote included) from ending the literal.
        const char next = s_[pos_ + 1];
        if (prefix.bytes && static_cast<unsigned char>(next) >= 0x80) {
          return ErrorAt(pos_ + 1, "bytes can only contain ASCII literal characters");
        }
        out->push_back('\\');
        out->push_back(next);
        pos_ += 2;
        continue;
      }
      absl::Status s = ReadEscape(prefix.bytes, out);
      if (!s.ok()) return s;
    }
  }

  // One escape sequence at pos_ (a backslash), in a non-raw literal.
  absl::Status ReadEscape(bool bytes, std::string* out) {
    const size_t at = pos_;
    const char e = s_[pos_ + 1];
    pos_ += 2;
    switch (e) {
      case '\n':
        return absl::OkStatus();
      case '\\':
      case '\'':
      case '"':
        out->push_back(e);
        return absl::OkStatus();
      case 'a':
        out->push_back('\a');
        return absl::OkStatus();
      case 'b':
        out->push_back('\b');
        return absl::OkStatus();
      case 'f':
        out->push_back('\f');
        return absl::OkStatus();
      case 'n':
        out->push_back('\n');
        return absl::OkStatus();
      case 'r':
        out->push_back('\r');
        return absl::OkStatus();
      case 't':
        out->push_back('\t');
        return absl::OkStatus();
      case 'v':
        out->push_back('\v');
        return absl::OkStatus();
      default:
        break;
    }
    if (e >= '0' && e <= '7') {
      uint32_t v = static_cast<uint32_t>(e - '0');
      for (int i = 0; i < 2 && Peek() >= '0' && Peek() <= '7'; ++i) {
        v = v * 8 + static_cast<uint32_t>(s_[pos_++] - '0');
      }
      if (bytes) {
        if (v > 0xff) {
          return ErrorAt(at, absl::StrFormat("octal escape \\%o is out of range for bytes", v));
        }
        out->push_back(static_cast<char>(v));
      } else {
        AppendUtf8(v, out);
      }
      return absl::OkStatus();
    }
    size_t hex_len = 0;
    if (e == 'x') hex_len = 2;
    if (!bytes && e == 'u') hex_len = 4;
    if (!bytes && e == 'U') hex_len = 8;
    if (hex_len > 0) {
      uint32_t v = 0;
      for (size_t i = 0; i < hex_len; ++i) {
        const int d = DigitValue(Peek());
        if (d > 15) {
          return ErrorAt(at, absl::StrFormat("truncated \\%c escape: it takes %d hex digits", e,
                                             hex_len));
        }
        v = v * 16 + static_cast<uint32_t>(d);
        ++pos_;
      }
      if (bytes) {
        out->push_back(static_cast<char>(v));
      } else if (v > 0x10ffff) {
        return ErrorAt(at, absl::StrFormat("illegal Unicode character \\U%08x", v));
      } else if (v >= 0xd800 && v <= 0xdfff) {
        return ErrorAt(at, absl::StrFormat(
                               "lone surrogate \\u%04x: a str is sent as UTF-8, which cannot "
                               "hold it",
                               v));
      } else {
        AppendUtf8(v, out);
      }
      return absl::OkStatus();
    }
    if (!bytes && e == 'N') {
      return ErrorAt(at, "\\N{...} escapes are not supported here; write \\uXXXX instead");
    }
    // Python keeps an unknown escape as it is (and warns).
    out->push_back('\\');
    pos_ = at + 1;
    return absl::OkStatus();
  }

  // Digits in `base` with single underscores between them (or, after a
  // base prefix, before the first one): Python's digitpart. Returns the
  // digits without underscores; empty if there are none.
  absl::StatusOr<std::string> ReadDigits(int base, bool after_prefix) {
    std::string digits;
    while (!AtEnd()) {
      const char c = s_[pos_];
      if (c == '_') {
        if ((digits.empty() && !after_prefix) || DigitValue(Peek(1)) >= base) {
          return Error(absl::StrCat("invalid ", BaseName(base), " literal"));
        }
        ++pos_;
        continue;
      }
      if (DigitValue(c) >= base) break;
      digits.push_back(c);
      ++pos_;
    }
    return digits;
  }

  static const char* BaseName(int base) {
    switch (base) {
      case 2:
        return "binary";
      case 8:
        return "octal";
      case 16:
        return "hexadecimal";
      default:
        return "decimal";
    }
  }

  // An int or float at pos_ (its sign already read), and INT**INT.
  absl::StatusOr<v1::Value> ParseNumber(bool negative) {
    const size_t start = pos_;
    std::optional<BigNat> big;   // a computed int
    std::string decimal;         // a decimal int as written
    std::string float_text;      // a float, for SimpleAtod
    const char x = absl::ascii_tolower(Peek(1));
    if (Peek() == '0' && (x == 'x' || x == 'o' || x == 'b')) {
      const int base = x == 'x' ? 16 : x == 'o' ? 8 : 2;
      pos_ += 2;
      absl::StatusOr<std::string> digits = ReadDigits(base, true);
      if (!digits.ok()) return digits.status();
      if (digits->empty() || IsIdentChar(Peek())) {
        if (absl::ascii_isdigit(Peek())) {
          return Error(absl::StrCat("invalid digit '", std::string(1, Peek()), "' in ",
                                    BaseName(base), " literal"));
        }
        return Error(absl::StrCat("invalid ", BaseName(base), " literal"));
      }
      absl::StatusOr<BigNat> n = FromBase(*digits, base, start);
      if (!n.ok()) return n.status();
      big = *std::move(n);
    } else {
      absl::StatusOr<std::string> int_part = ReadDigits(10, false);
      if (!int_part.ok()) return int_part.status();
      bool is_float = false;
      // Spelled out in full (1. is 1.0, .5 is 0.5) for SimpleAtod.
      float_text = int_part->empty() ? "0" : *int_part;
      if (Peek() == '.') {
        ++pos_;
        is_float = true;
        absl::StatusOr<std::string> fraction = ReadDigits(10, false);
        if (!fraction.ok()) return fraction.status();
        absl::StrAppend(&float_text, ".", fraction->empty() ? "0" : *fraction);
      }
      if (absl::ascii_tolower(Peek()) == 'e') {
        const size_t e_pos = pos_++;
        std::string sign;
        if (Peek() == '+' || Peek() == '-') sign = std::string(1, s_[pos_++]);
        absl::StatusOr<std::string> exponent = ReadDigits(10, false);
        if (!exponent.ok()) return exponent.status();
        if (exponent->empty()) return ErrorAt(e_pos, "invalid decimal literal");
        is_float = true;
        absl::StrAppend(&float_text, "e", sign, *exponent);
      }
      if (absl::ascii_tolower(Peek()) == 'j') {
        return ErrorAt(start, "complex numbers have no Value kind: pass two floats or a str");
      }
      if (IsIdentChar(Peek())) return Error("invalid decimal literal");
      if (is_float) {
        if (HasPower()) return ErrorAt(start, "'**' takes integer operands only");
        double d;
        if (!absl::SimpleAtod(float_text, &d)) return ErrorAt(start, "invalid float literal");
        return MakeFloat(negative ? -d : d);
      }
      decimal = *int_part;
      if (decimal.size() > 1 && decimal[0] == '0' &&
          decimal.find_first_not_of('0') != decimal.npos) {
        return ErrorAt(start,
                       "leading zeros in decimal integer literals are not permitted; use an "
                       "0o prefix for octal integers");
      }
    }
    if (HasPower()) {
      SkipSpace();
      const size_t op = pos_;
      pos_ += 2;
      if (!big.has_value()) big = BigNat::FromDecimal(decimal);
      absl::StatusOr<BigNat> result = ParsePower(*big, start, op);
      if (!result.ok()) return result.status();
      big = *std::move(result);
    }
    if (big.has_value()) decimal = big->ToDecimal();
    return MakeBigInt(absl::StrCat(negative ? "-" : "", decimal));
  }

  // Is the next token (after spaces) '**'? Leaves pos_ where it was.
  bool HasPower() {
    const size_t saved = pos_;
    SkipSpace();
    const bool power = Peek() == '*' && Peek(1) == '*';
    pos_ = saved;
    return power;
  }

  // The exponent after '**' (at pos_), and base**exponent.
  absl::StatusOr<BigNat> ParsePower(const BigNat& base, size_t start, size_t op) {
    SkipSpace();
    if (Peek() == '-' || Peek() == '+' || Peek() == '(') {
      return Error("the exponent of '**' must be a non-negative integer literal");
    }
    if (!absl::ascii_isdigit(Peek())) {
      return Error("the exponent of '**' must be a non-negative integer literal");
    }
    const size_t exp_start = pos_;
    absl::StatusOr<v1::Value> exp_value = ParseNumber(false);
    if (!exp_value.ok()) return exp_value.status();
    if (!exp_value->has_int_() && !exp_value->has_big_int()) {
      return ErrorAt(exp_start, "the exponent of '**' must be a non-negative integer literal");
    }
    if (std::string rest = s_.substr(exp_start, pos_ - exp_start);
        rest.find("**") != rest.npos) {
      return ErrorAt(op, "only one '**' is folded (INT**INT); write the integer itself");
    }
    const std::string exp_text = exp_value->has_int_() ? absl::StrCat(exp_value->int_())
                                                        : exp_value->big_int();
    const BigNat exponent = BigNat::FromDecimal(exp_text);
    if (exponent.IsZero()) return BigNat(1);
    if (base.IsZero() || base.IsOne()) return base;
    const std::optional<uint64_t> e = exponent.ToUint64();
    // Checked before computing anything: the estimate is good to 1 digit.
    const double digits = e.has_value() ? static_cast<double>(*e) * base.Log10() : HUGE_VAL;
    if (digits > kMaxComputedIntDigits + 1) {
      return ErrorAt(start, absl::StrCat("the power has ",
                                         std::isfinite(digits)
                                             ? absl::StrFormat("about %.0f", std::ceil(digits))
                                             : std::string("far more than"),
                                         " digits; a computed integer may have at most ",
                                         kMaxComputedIntDigits));
    }
    BigNat result(1);
    BigNat square = base;
    for (uint64_t rest = *e; rest > 0; rest >>= 1) {
      if (rest & 1) result = result * square;
      if (rest > 1) square = square * square;
    }
    if (result.DecimalDigits() > kMaxComputedIntDigits) {
      return ErrorAt(start, absl::StrCat("the power has ", result.DecimalDigits(),
                                         " digits; a computed integer may have at most ",
                                         kMaxComputedIntDigits));
    }
    return result;
  }

  // `digits` (no underscores) in base 2, 8 or 16 as a number.
  absl::StatusOr<BigNat> FromBase(absl::string_view digits, int base, size_t start) {
    const std::string too_long =
        absl::StrCat("the literal has more than ", kMaxComputedIntDigits,
                     " decimal digits; a computed integer may have at most ",
                     kMaxComputedIntDigits, " (write it in decimal)");
    if (digits.size() * std::log10(static_cast<double>(base)) > kMaxComputedIntDigits + 1) {
      return ErrorAt(start, too_long);
    }
    BigNat n;
    // As many digits per MulAdd as keep the multiplier below 2^32.
    const size_t per_step = base == 16 ? 7 : base == 8 ? 10 : 31;
    while (!digits.empty()) {
      const size_t take = std::min(per_step, digits.size());
      uint32_t chunk = 0;
      uint32_t scale = 1;
      for (size_t i = 0; i < take; ++i) {
        chunk = chunk * base + static_cast<uint32_t>(DigitValue(digits[i]));
        scale *= base;
      }
      n.MulAdd(scale, chunk);
      digits.remove_prefix(take);
    }
    if (n.DecimalDigits() > kMaxComputedIntDigits) return ErrorAt(start, too_long);
    return n;
  }

  // Counts the brackets open around the code that holds it.
  class InBrackets {
   public:
    explicit InBrackets(int* count) : count_(count) { ++*count_; }
    ~InBrackets() { --*count_; }
    InBrackets(const InBrackets&) = delete;
    InBrackets& operator=(const InBrackets&) = delete;

   private:
    int* count_;
  };

  const std::string s_;
  size_t pos_ = 0;
  int brackets_ = 0;  // open brackets around pos_
};

}  // namespace

absl::StatusOr<v1::Value> ParsePythonLiteral(absl::string_view text) {
  return Parser(text).ParseAll();
}

}  // namespace pyexec
