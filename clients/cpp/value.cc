#include "clients/cpp/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace pyexec {
namespace {

// Inclusive code point ranges that Python 3.11's str.isprintable() rejects
// besides the ASCII controls: other controls (Cc), separators other than
// space (Zs, Zl, Zp), format characters (Cf), surrogates (Cs), private use
// (Co) and non-characters plus the large unassigned blocks (Cn) of Unicode 14.
struct Range {
  char32_t lo;
  char32_t hi;
};
constexpr Range kNonPrintable[] = {
    {0x7f, 0xa0},       {0xad, 0xad},       {0x600, 0x605},
    {0x61c, 0x61c},     {0x6dd, 0x6dd},     {0x70f, 0x70f},
    {0x890, 0x891},     {0x8e2, 0x8e2},     {0x1680, 0x1680},
    {0x180e, 0x180e},   {0x2000, 0x200f},   {0x2028, 0x202f},
    {0x205f, 0x2064},   {0x2066, 0x206f},   {0x3000, 0x3000},
    {0xd800, 0xf8ff},   {0xfdd0, 0xfdef},   {0xfeff, 0xfeff},
    {0xfff0, 0xfffb},   {0x110bd, 0x110bd}, {0x110cd, 0x110cd},
    {0x13430, 0x13438}, {0x1bca0, 0x1bca3}, {0x1d173, 0x1d17a},
    {0x3134b, 0xe00ff}, {0xe01f0, 0x10ffff},
};

bool IsPrintable(char32_t c) {
  if (c < 0x20) return false;
  // U+xxFFFE and U+xxFFFF are non-characters in every plane.
  if ((c & 0xfffe) == 0xfffe) return false;
  for (const Range& r : kNonPrintable) {
    if (c < r.lo) return true;  // kNonPrintable is sorted.
    if (c <= r.hi) return false;
  }
  return true;
}

// Decodes one UTF-8 sequence at the start of `s`. Returns its length, or 0
// if the sequence is invalid (overlong, surrogate, truncated, out of range).
size_t DecodeUtf8(absl::string_view s, char32_t* out) {
  const auto b0 = static_cast<unsigned char>(s[0]);
  size_t len;
  char32_t c;
  if (b0 < 0x80) {
    *out = b0;
    return 1;
  } else if ((b0 & 0xe0) == 0xc0) {
    len = 2;
    c = b0 & 0x1f;
  } else if ((b0 & 0xf0) == 0xe0) {
    len = 3;
    c = b0 & 0x0f;
  } else if ((b0 & 0xf8) == 0xf0) {
    len = 4;
    c = b0 & 0x07;
  } else {
    return 0;
  }
  if (s.size() < len) return 0;
  for (size_t i = 1; i < len; ++i) {
    const auto b = static_cast<unsigned char>(s[i]);
    if ((b & 0xc0) != 0x80) return 0;
    c = (c << 6) | (b & 0x3f);
  }
  static constexpr char32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (c < kMin[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
  *out = c;
  return len;
}

// Python picks single quotes unless the text contains ' and no ".
char ChooseQuote(absl::string_view s) {
  return (s.find('\'') != s.npos && s.find('"') == s.npos) ? '"' : '\'';
}

// Appends the escape for a character that both str and bytes reprs share,
// returning false if `c` needs no such escape.
bool AppendCommonEscape(char32_t c, char quote, std::string* out) {
  switch (c) {
    case '\\':
      out->append("\\\\");
      return true;
    case '\t':
      out->append("\\t");
      return true;
    case '\n':
      out->append("\\n");
      return true;
    case '\r':
      out->append("\\r");
      return true;
    default:
      if (c == static_cast<char32_t>(quote)) {
        out->push_back('\\');
        out->push_back(quote);
        return true;
      }
      return false;
  }
}

std::string FormatItems(
    const google::protobuf::RepeatedPtrField<v1::Value>& items) {
  return absl::StrJoin(items, ", ",
                       [](std::string* out, const v1::Value& v) {
                         out->append(FormatValue(v));
                       });
}

}  // namespace

bool IsValidUtf8(absl::string_view s) {
  while (!s.empty()) {
    char32_t c;
    const size_t len = DecodeUtf8(s, &c);
    if (len == 0) return false;
    s.remove_prefix(len);
  }
  return true;
}

v1::Value MakeNone() {
  v1::Value v;
  v.mutable_none();
  return v;
}

v1::Value MakeBool(bool b) {
  v1::Value v;
  v.set_bool_(b);
  return v;
}

v1::Value MakeInt(int64_t i) {
  v1::Value v;
  v.set_int_(i);
  return v;
}

absl::StatusOr<v1::Value> MakeBigInt(absl::string_view decimal) {
  absl::string_view digits = decimal;
  bool negative = false;
  if (!digits.empty() && (digits[0] == '-' || digits[0] == '+')) {
    negative = digits[0] == '-';
    digits.remove_prefix(1);
  }
  if (digits.empty() ||
      !std::all_of(digits.begin(), digits.end(), absl::ascii_isdigit)) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a decimal integer: \"", absl::CHexEscape(decimal),
                     "\""));
  }
  int64_t i;
  if (absl::SimpleAtoi(decimal, &i)) return MakeInt(i);
  // Canonical form, as Python's str(int) would print it.
  const size_t nonzero = digits.find_first_not_of('0');
  digits.remove_prefix(std::min(nonzero, digits.size() - 1));
  v1::Value v;
  v.set_big_int(absl::StrCat(negative ? "-" : "", digits));
  return v;
}

v1::Value MakeFloat(double d) {
  v1::Value v;
  v.set_float_(d);
  return v;
}

v1::Value MakeStr(absl::string_view utf8) {
  v1::Value v;
  v.set_str(std::string(utf8));
  return v;
}

v1::Value MakeBytes(absl::string_view data) {
  v1::Value v;
  v.set_bytes(std::string(data));
  return v;
}

v1::Value MakeList(std::vector<v1::Value> items) {
  v1::Value v;
  v.set_list(true);
  for (v1::Value& item : items) *v.add_items() = std::move(item);
  return v;
}

v1::Value MakeTuple(std::vector<v1::Value> items) {
  v1::Value v;
  v.set_tuple(true);
  for (v1::Value& item : items) *v.add_items() = std::move(item);
  return v;
}

v1::Value MakeDict(std::vector<std::pair<v1::Value, v1::Value>> entries) {
  v1::Value v;
  v.set_dict(true);
  for (auto& [key, value] : entries) {
    *v.add_keys() = std::move(key);
    *v.add_items() = std::move(value);
  }
  return v;
}

v1::Value MakeSet(std::vector<v1::Value> items) {
  v1::Value v;
  v.set_set(true);
  for (v1::Value& item : items) *v.add_items() = std::move(item);
  return v;
}

v1::Value Ref::ToValue() const {
  v1::Value value;
  value.mutable_ref()->set_id(id);
  return value;
}

std::optional<Ref> Ref::From(const v1::Value& value) {
  if (value.kind_case() != v1::Value::kRef) return std::nullopt;
  return Ref{value.ref().id(), value.ref().type(), value.ref().repr()};
}

std::string FormatStr(absl::string_view utf8) {
  const char quote = ChooseQuote(utf8);
  std::string out(1, quote);
  out.reserve(utf8.size() + 2);
  while (!utf8.empty()) {
    char32_t c;
    size_t len = DecodeUtf8(utf8, &c);
    if (len == 0) {
      // Not valid UTF-8; the server never sends this, but show the byte.
      absl::StrAppendFormat(&out, "\\x%02x",
                            static_cast<unsigned char>(utf8[0]));
      utf8.remove_prefix(1);
      continue;
    }
    if (!AppendCommonEscape(c, quote, &out)) {
      if (IsPrintable(c)) {
        out.append(utf8.data(), len);
      } else if (c < 0x100) {
        absl::StrAppendFormat(&out, "\\x%02x", static_cast<uint32_t>(c));
      } else if (c < 0x10000) {
        absl::StrAppendFormat(&out, "\\u%04x", static_cast<uint32_t>(c));
      } else {
        absl::StrAppendFormat(&out, "\\U%08x", static_cast<uint32_t>(c));
      }
    }
    utf8.remove_prefix(len);
  }
  out.push_back(quote);
  return out;
}

std::string FormatBytes(absl::string_view data) {
  const char quote = ChooseQuote(data);
  std::string out = {'b', quote};
  out.reserve(data.size() + 3);
  for (char ch : data) {
    const auto c = static_cast<unsigned char>(ch);
    if (AppendCommonEscape(c, quote, &out)) continue;
    if (c < 0x20 || c >= 0x7f) {
      absl::StrAppendFormat(&out, "\\x%02x", c);
    } else {
      out.push_back(ch);
    }
  }
  out.push_back(quote);
  return out;
}

std::string FormatFloat(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  const std::string sign = std::signbit(d) ? "-" : "";
  if (d == 0) return sign + "0.0";
  // Shortest round-trip digits in scientific form, e.g. "1.2345e+03".
  char buf[64];
  const auto [end, ec] =
      std::to_chars(buf, buf + sizeof(buf), std::fabs(d),
                    std::chars_format::scientific);
  if (ec != std::errc()) return absl::StrFormat("%.17g", d);
  const absl::string_view sci(buf, end - buf);
  const size_t e_pos = sci.find('e');
  std::string digits(sci.substr(0, e_pos));
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  int exponent = 0;
  (void)absl::SimpleAtoi(sci.substr(e_pos + 1), &exponent);
  // Like CPython's float_repr_style 'short': positional notation when the
  // decimal point falls within [-4, 16), scientific otherwise.
  const int decpt = exponent + 1;
  if (decpt <= -4 || decpt > 16) {
    std::string mantissa = digits.substr(0, 1);
    if (digits.size() > 1) absl::StrAppend(&mantissa, ".", digits.substr(1));
    return absl::StrFormat("%s%se%c%02d", sign, mantissa,
                           exponent < 0 ? '-' : '+', std::abs(exponent));
  }
  const int n = static_cast<int>(digits.size());
  if (decpt <= 0) {
    return absl::StrCat(sign, "0.", std::string(-decpt, '0'), digits);
  }
  if (decpt >= n) {
    return absl::StrCat(sign, digits, std::string(decpt - n, '0'), ".0");
  }
  return absl::StrCat(sign, digits.substr(0, decpt), ".",
                      digits.substr(decpt));
}

std::string FormatValue(const v1::Value& value) {
  switch (value.kind_case()) {
    case v1::Value::kNone:
      return "None";
    case v1::Value::kBool:
      return value.bool_() ? "True" : "False";
    case v1::Value::kInt:
      return absl::StrCat(value.int_());
    case v1::Value::kBigInt:
      return value.big_int();
    case v1::Value::kFloat:
      return FormatFloat(value.float_());
    case v1::Value::kStr:
      return FormatStr(value.str());
    case v1::Value::kBytes:
      return FormatBytes(value.bytes());
    case v1::Value::kList:
      return absl::StrCat("[", FormatItems(value.items()), "]");
    case v1::Value::kTuple:
      if (value.items_size() == 1) {
        return absl::StrCat("(", FormatValue(value.items(0)), ",)");
      }
      return absl::StrCat("(", FormatItems(value.items()), ")");
    case v1::Value::kDict: {
      // keys[i] maps to items[i]; a malformed dict with unequal lengths
      // prints its complete pairs only.
      std::string out = "{";
      const int n = std::min(value.keys_size(), value.items_size());
      for (int i = 0; i < n; ++i) {
        absl::StrAppend(&out, i ? ", " : "", FormatValue(value.keys(i)), ": ",
                        FormatValue(value.items(i)));
      }
      out.push_back('}');
      return out;
    }
    case v1::Value::kSet:
      if (value.items_size() == 0) return "set()";
      return absl::StrCat("{", FormatItems(value.items()), "}");
    case v1::Value::kOpaque:
      return value.opaque().repr();
    case v1::Value::kRef:
      return value.ref().repr();
    default:
      return "<unset>";
  }
}

}  // namespace pyexec
