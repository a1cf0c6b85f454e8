// main() for fuzz targets built without libFuzzer (the default and ASan
// builds): runs LLVMFuzzerTestOneInput on every file named on the command
// line (directories: every file in them), or, with no arguments, on a fixed
// pseudo-random set of inputs. So each target is also a cheap, deterministic
// regression test in `bazel test //...`; real fuzzing is --config=fuzz
// (scripts/fuzz.sh).

#include <dirent.h>
#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) __attribute__((weak));

namespace {

void RunFile(const std::string& path, int* runs) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    std::fprintf(stderr, "fuzz_driver: cannot stat %s\n", path.c_str());
    std::exit(2);
  }
  if (S_ISDIR(st.st_mode)) {
    DIR* dir = opendir(path.c_str());
    while (dirent* e = readdir(dir)) {
      if (e->d_name[0] != '.') RunFile(path + "/" + e->d_name, runs);
    }
    closedir(dir);
    return;
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string data = buffer.str();
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(data.data()), data.size());
  ++*runs;
}

}  // namespace

int main(int argc, char** argv) {
  if (LLVMFuzzerInitialize != nullptr) LLVMFuzzerInitialize(&argc, &argv);
  int runs = 0;
  if (argc > 1) {
    for (int i = 1; i < argc; ++i) RunFile(argv[i], &runs);
  } else {
    // xorshift64: the same inputs on every run. Lengths favour short inputs,
    // where protobuf tags and frame headers are most likely to line up.
    uint64_t state = 0x9e3779b97f4a7c15u;
    auto next = [&state] {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      return state;
    };
    std::vector<uint8_t> data;
    for (; runs < 3000; ++runs) {
      data.resize(next() % (runs % 10 == 0 ? 4096 : 64));
      for (uint8_t& b : data) b = static_cast<uint8_t>(next());
      LLVMFuzzerTestOneInput(data.data(), data.size());
    }
  }
  std::fprintf(stderr, "fuzz_driver: %d inputs, no failure\n", runs);
  return 0;
}
