#ifndef PYEXEC_COMMON_UTF8_H_
#define PYEXEC_COMMON_UTF8_H_

#include <cstddef>

#include "absl/strings/string_view.h"

namespace pyexec {

// The length of the longest prefix of `text` that is at most `max_bytes`
// long and does not end inside a UTF-8 character, for cutting valid UTF-8
// to a byte budget without producing invalid UTF-8.
inline size_t Utf8PrefixLength(absl::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text.size();
  size_t cut = max_bytes;
  // Back up over continuation bytes (10xxxxxx) to a character's start.
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) {
    --cut;
  }
  return cut;
}

}  // namespace pyexec

#endif  // PYEXEC_COMMON_UTF8_H_
