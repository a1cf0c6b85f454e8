#include "clients/cpp/cli_args.h"

#include <cmath>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "clients/cpp/value.h"

namespace pyexec {
namespace {

bool IsInteger(absl::string_view s) {
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) s.remove_prefix(1);
  return !s.empty() && std::all_of(s.begin(), s.end(), absl::ascii_isdigit);
}

// Digits with at most one '.', an optional exponent, and at least one digit
// in the mantissa: 1.5, .5, 1., 2e3, -1.5E-3.
bool IsFloat(absl::string_view s) {
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) s.remove_prefix(1);
  size_t i = 0, digits = 0;
  bool dot = false;
  for (; i < s.size(); ++i) {
    if (absl::ascii_isdigit(s[i])) {
      ++digits;
    } else if (s[i] == '.' && !dot) {
      dot = true;
    } else {
      break;
    }
  }
  if (digits == 0) return false;
  if (i == s.size()) return dot;
  if (s[i] != 'e' && s[i] != 'E') return false;
  absl::string_view exp = s.substr(i + 1);
  return IsInteger(exp);
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

// Unquotes the body of a quoted literal (quotes already removed).
absl::StatusOr<std::string> Unescape(absl::string_view body, bool bytes) {
  std::string out;
  for (size_t i = 0; i < body.size(); ++i) {
    if (body[i] != '\\') {
      out.push_back(body[i]);
      continue;
    }
    if (++i == body.size()) {
      return absl::InvalidArgumentError("trailing backslash");
    }
    const char e = body[i];
    size_t hex_len = 0;
    switch (e) {
      case '\\':
      case '\'':
      case '"':
        out.push_back(e);
        continue;
      case 'n':
        out.push_back('\n');
        continue;
      case 'r':
        out.push_back('\r');
        continue;
      case 't':
        out.push_back('\t');
        continue;
      case '0':
        out.push_back('\0');
        continue;
      case 'x':
        hex_len = 2;
        break;
      case 'u':
        hex_len = bytes ? 0 : 4;
        break;
      case 'U':
        hex_len = bytes ? 0 : 8;
        break;
      default:
        break;
    }
    if (hex_len == 0) {
      return absl::InvalidArgumentError(absl::StrCat("bad escape \\", std::string(1, e)));
    }
    absl::string_view hex = body.substr(i + 1, hex_len);
    uint32_t c = 0;
    if (hex.size() != hex_len ||
        !std::all_of(hex.begin(), hex.end(), absl::ascii_isxdigit) ||
        !absl::SimpleHexAtoi(hex, &c)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad escape \\", std::string(1, e), hex));
    }
    i += hex_len;
    if (bytes) {
      out.push_back(static_cast<char>(c));
    } else {
      if (c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
        return absl::InvalidArgumentError(
            absl::StrCat("bad code point \\", std::string(1, e), hex));
      }
      AppendUtf8(c, &out);
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<v1::Value> ParseLiteralArg(absl::string_view arg) {
  if (arg == "None") return MakeNone();
  if (arg == "True") return MakeBool(true);
  if (arg == "False") return MakeBool(false);
  if (IsInteger(arg)) return MakeBigInt(arg);
  if (arg == "nan") return MakeFloat(std::nan(""));
  if (arg == "inf" || arg == "+inf") return MakeFloat(HUGE_VAL);
  if (arg == "-inf") return MakeFloat(-HUGE_VAL);
  if (IsFloat(arg)) {
    double d;
    if (absl::SimpleAtod(arg, &d)) return MakeFloat(d);
  }
  const bool bytes = arg.size() >= 2 && arg[0] == 'b' &&
                     (arg[1] == '\'' || arg[1] == '"');
  absl::string_view quoted = bytes ? arg.substr(1) : arg;
  if (!quoted.empty() && (quoted[0] == '\'' || quoted[0] == '"')) {
    // Find the closing quote, skipping escaped characters.
    size_t end = 1;
    while (end < quoted.size() && quoted[end] != quoted[0]) {
      end += quoted[end] == '\\' ? 2 : 1;
    }
    if (end >= quoted.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unterminated string literal: ", arg));
    }
    if (end != quoted.size() - 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("text after the closing quote: ", arg));
    }
    absl::StatusOr<std::string> text =
        Unescape(quoted.substr(1, quoted.size() - 2), bytes);
    if (!text.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("in ", arg, ": ", text.status().message()));
    }
    return bytes ? MakeBytes(*text) : MakeStr(*text);
  }
  return MakeStr(arg);
}

}  // namespace pyexec
