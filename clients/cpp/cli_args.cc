#include "clients/cpp/cli_args.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "clients/cpp/python_literal.h"
#include "clients/cpp/value.h"

namespace pyexec {
namespace {

// True if `s` (leading whitespace stripped) can only be meant as a literal,
// so that a parse error must be reported rather than the text sent as a
// str: it opens a container or a string (a quote, maybe after a string
// prefix such as b or rb), or a number is followed by ** (2**-1, 1.5**2).
bool LooksLikeLiteral(absl::string_view s) {
  if (s.empty()) return false;
  if (s[0] == '[' || s[0] == '(' || s[0] == '{' || s[0] == '\'' || s[0] == '"') return true;
  size_t letters = 0;
  while (letters < s.size() && letters < 2 && absl::ascii_isalpha(s[letters])) ++letters;
  if (letters > 0 && letters < s.size() && (s[letters] == '\'' || s[letters] == '"')) {
    const std::string prefix = absl::AsciiStrToLower(s.substr(0, letters));
    for (const char* p : {"b", "r", "u", "f", "br", "rb", "fr", "rf"}) {
      if (prefix == p) return true;
    }
  }
  size_t i = 0;
  if (s[i] == '-' || s[i] == '+') ++i;
  while (i < s.size() && s[i] == ' ') ++i;
  if (i >= s.size() || !absl::ascii_isdigit(s[i])) return false;
  while (i < s.size() && (absl::ascii_isalnum(s[i]) || s[i] == '_' || s[i] == '.')) ++i;
  while (i < s.size() && s[i] == ' ') ++i;
  return s.substr(i, 2) == "**";
}

// `arg` for an error message: at most 60 bytes (cut at a character
// boundary), so that a huge argument does not flood the terminal.
std::string Excerpt(absl::string_view arg) {
  if (arg.size() <= 60) return std::string(arg);
  size_t cut = 57;
  while (cut > 0 && (static_cast<unsigned char>(arg[cut]) & 0xc0) == 0x80) --cut;
  return absl::StrCat(arg.substr(0, cut), "...");
}

}  // namespace

absl::StatusOr<v1::Value> ParseLiteralArg(absl::string_view arg) {
  absl::StatusOr<v1::Value> literal = ParsePythonLiteral(arg);
  if (literal.ok()) return literal;
  if (LooksLikeLiteral(absl::StripLeadingAsciiWhitespace(arg))) return literal.status();
  if (!IsValidUtf8(arg)) {
    return absl::InvalidArgumentError("not valid UTF-8 (use b'\\xhh' escapes for raw bytes)");
  }
  return MakeStr(arg);
}

absl::StatusOr<std::vector<v1::Value>> ParseCallArgs(const std::vector<std::string>& args) {
  std::vector<v1::Value> values;
  for (size_t i = 0; i < args.size(); ++i) {
    const size_t position = values.size() + 1;
    const std::string marker_eq = absl::StrCat(kStrMarker, "=");
    if (args[i] == kStrMarker || absl::StartsWith(args[i], marker_eq)) {
      std::string text;
      if (args[i] != kStrMarker) {
        text = args[i].substr(marker_eq.size());
      } else if (++i == args.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat(kStrMarker, " must be followed by the argument to pass as a str"));
      } else {
        text = args[i];
      }
      if (!IsValidUtf8(text)) {
        return absl::InvalidArgumentError(
            absl::StrCat("argument ", position, " is not valid UTF-8"));
      }
      values.push_back(MakeStr(text));
      continue;
    }
    absl::StatusOr<v1::Value> v = ParseLiteralArg(args[i]);
    if (!v.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "argument ", position, " (", Excerpt(args[i]), ") is not a valid Python literal: ",
          v.status().message(), "; put ", kStrMarker, " before it to pass it as a str"));
    }
    values.push_back(*std::move(v));
  }
  return values;
}

}  // namespace pyexec
