// process_floor_helper RESIDENT_BYTES DIRTIED_BYTES ITERATIONS
//
// A process of minimal size (libc only) that holds RESIDENT_BYTES of
// anonymous memory, then forks ITERATIONS children in turn, each of which
// writes DIRTIED_BYTES of it (copy-on-write) and exits, and reaps each. Prints
// the CPU microseconds (user + system, its own and its children's) per
// iteration. bench/process_floor.h runs it; it is a process of its own so
// that the benchmark's own memory is not part of what each fork copies.

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

long long Micros(const timeval& t) { return t.tv_sec * 1000000LL + t.tv_usec; }

long long CpuMicros() {
  rusage self{}, children{};
  getrusage(RUSAGE_SELF, &self);
  getrusage(RUSAGE_CHILDREN, &children);
  return Micros(self.ru_utime) + Micros(self.ru_stime) + Micros(children.ru_utime) +
         Micros(children.ru_stime);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s RESIDENT_BYTES DIRTIED_BYTES ITERATIONS\n", argv[0]);
    return 2;
  }
  const size_t size = strtoull(argv[1], nullptr, 10);
  const size_t dirtied = strtoull(argv[2], nullptr, 10);
  const long iterations = strtol(argv[3], nullptr, 10);
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  if (size < page || iterations <= 0) {
    fprintf(stderr, "process_floor_helper: bad sizes\n");
    return 2;
  }
  char* memory = static_cast<char*>(
      mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (memory == MAP_FAILED) return 3;
  for (size_t at = 0; at < size; at += page) memory[at] = 1;
  const size_t pages = size / page;
  const size_t dirty_pages = dirtied / page < pages ? dirtied / page : pages;
  const size_t stride = dirty_pages == 0 ? 1 : pages / dirty_pages;
  const long long before = CpuMicros();
  for (long i = 0; i < iterations; ++i) {
    pid_t child = fork();
    if (child < 0) return 4;
    if (child == 0) {
      for (size_t p = 0; p < dirty_pages; ++p) memory[p * stride * page] = 2;
      _exit(0);
    }
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
  }
  printf("%lld\n", (CpuMicros() - before) / iterations);
  return 0;
}
