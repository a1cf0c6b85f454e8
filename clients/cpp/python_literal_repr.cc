// Test tool: reads literals from stdin, each as "<byte count>\n<bytes>", and
// prints for each "OK <n>\n<repr>" or "ERR <n>\n<message>" (n = byte count
// of what follows). python_literal_differential_test.py compares the
// answers with Python's ast.literal_eval.

#include <iostream>
#include <string>

#include "absl/status/statusor.h"
#include "clients/cpp/python_literal.h"
#include "clients/cpp/value.h"

int main() {
  std::ios::sync_with_stdio(false);
  size_t size;
  while (std::cin >> size) {
    std::cin.get();  // the newline after the count
    std::string text(size, '\0');
    std::cin.read(text.data(), static_cast<std::streamsize>(size));
    absl::StatusOr<pyexec::v1::Value> v = pyexec::ParsePythonLiteral(text);
    const std::string answer =
        v.ok() ? pyexec::FormatValue(*v) : std::string(v.status().message());
    std::cout << (v.ok() ? "OK " : "ERR ") << answer.size() << "\n" << answer;
  }
  return 0;
}
