// Test tool: prints the Python code that `pyexec repl` sends for the text
// on stdin: `repl_code_print statement` (ReplStatementCode) or
// `repl_code_print completion` (ReplCompletionCode).

#include <iostream>
#include <iterator>
#include <string>

#include "clients/cpp/cli_repl.h"

int main(int argc, char** argv) {
  const std::string kind = argc == 2 ? argv[1] : "";
  if (kind != "statement" && kind != "completion") {
    std::cerr << "usage: repl_code_print statement|completion < TEXT\n";
    return 64;
  }
  const std::string text((std::istreambuf_iterator<char>(std::cin)),
                         std::istreambuf_iterator<char>());
  std::cout << (kind == "statement" ? pyexec::ReplStatementCode(text)
                                    : pyexec::ReplCompletionCode(text));
  return 0;
}
