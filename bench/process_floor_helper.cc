// What the kernel charges for the process model itself, measured by a small
// process (libc only) of its own, so that the benchmark's memory and threads
// play no part. bench/process_floor.h runs it.
//
// process_floor_helper fork RESIDENT_BYTES DIRTIED_BYTES ITERATIONS
//   Holds RESIDENT_BYTES of anonymous memory, then forks ITERATIONS children
//   in turn, each of which writes DIRTIED_BYTES of it (copy-on-write) and
//   exits, and reaps each. Prints the CPU microseconds (user + system, its
//   own and its children's) per iteration.
//
// process_floor_helper hop ITERATIONS
//   A 64-byte round trip to a child process over a Unix socket, both ends
//   blocking in read() as pyexecd's I/O thread and a worker do. Prints the
//   median round trip in microseconds.

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

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

bool Exchange(int fd, char* buf, size_t n, bool write_first) {
  for (int step = 0; step < 2; ++step) {
    const bool writing = (step == 0) == write_first;
    size_t done = 0;
    while (done < n) {
      ssize_t r = writing ? write(fd, buf + done, n - done) : read(fd, buf + done, n - done);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      done += static_cast<size_t>(r);
    }
  }
  return true;
}

int Hop(long iterations) {
  int fds[2];
  if (iterations <= 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) return 2;
  char buf[64] = {};
  pid_t child = fork();
  if (child < 0) return 4;
  if (child == 0) {
    close(fds[0]);
    while (Exchange(fds[1], buf, sizeof(buf), /*write_first=*/false)) {
    }
    _exit(0);
  }
  close(fds[1]);
  std::vector<long long> trips;
  trips.reserve(static_cast<size_t>(iterations));
  for (long i = 0; i < iterations; ++i) {
    timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!Exchange(fds[0], buf, sizeof(buf), /*write_first=*/true)) return 5;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    trips.push_back((t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec));
  }
  close(fds[0]);
  int status;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  std::nth_element(trips.begin(), trips.begin() + trips.size() / 2, trips.end());
  printf("%.1f\n", trips[trips.size() / 2] / 1000.0);
  return 0;
}

int main(int argc, char** argv) {
  if (argc == 3 && strcmp(argv[1], "hop") == 0) return Hop(strtol(argv[2], nullptr, 10));
  if (argc != 5 || strcmp(argv[1], "fork") != 0) {
    fprintf(stderr,
            "usage: %s fork RESIDENT_BYTES DIRTIED_BYTES ITERATIONS\n"
            "       %s hop ITERATIONS\n",
            argv[0], argv[0]);
    return 2;
  }
  const size_t size = strtoull(argv[2], nullptr, 10);
  const size_t dirtied = strtoull(argv[3], nullptr, 10);
  const long iterations = strtol(argv[4], nullptr, 10);
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
