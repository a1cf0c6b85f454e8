#include "clients/cpp/cli_repl.h"

#include <editline/readline.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <clocale>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "clients/cpp/client.h"
#include "clients/cpp/value.h"
#include "grpcpp/client_context.h"

namespace pyexec {

namespace {

// SIGINT handler state: the handler only sets a flag and writes a byte to a
// self-pipe, both async-signal-safe; the main thread does the rest.
volatile sig_atomic_t g_interrupted = 0;
int g_pipe[2] = {-1, -1};
// The terminal (stdin) opened a second time, non-blocking; -1: use stdin.
int g_keys_fd = -1;

constexpr char kInterruptByte = 'i';
constexpr char kDoneByte = 'd';

void OnSigint(int) {
  g_interrupted = 1;
  const int saved = errno;
  char c = kInterruptByte;
  (void)!write(g_pipe[1], &c, 1);
  errno = saved;
}

// libedit reads each key through this (rl_getc_function) rather than a bare
// read(): it waits on the terminal and the self-pipe together, so Ctrl-C at
// the prompt ends readline() at once (EOF, with g_interrupted set). With a
// bare read() the interrupt could be lost: libedit retries a read that a
// signal interrupted, and readline() then waited for the next key. The read
// itself does not block (g_keys_fd): Ctrl-C flushes the terminal's input, so
// keys that poll() reported may be gone by the time they are read. Returns
// one character, decoded from UTF-8 (libedit takes the int as a wchar_t).
int ReadKey(FILE* in) {
  const int fd = g_keys_fd >= 0 ? g_keys_fd : fileno(in);
  unsigned char bytes[4];
  size_t have = 0, need = 1;
  while (have < need) {
    pollfd fds[2] = {{fd, POLLIN, 0}, {g_pipe[0], POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;  // the handler wrote the pipe, if SIGINT
      return EOF;
    }
    if (fds[1].revents & POLLIN) return EOF;  // Ctrl-C; Loop drains the pipe
    ssize_t n = read(fd, &bytes[have], 1);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return EOF;
    if (have == 0) {
      const unsigned char lead = bytes[0];
      need = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xe ? 3
           : (lead >> 3) == 0x1e ? 4 : 1;  // a stray continuation byte: as is
    } else if ((bytes[have] & 0xc0) != 0x80) {
      return bytes[have];  // malformed sequence: keep the byte that broke it
    }
    ++have;
  }
  if (need == 1) return bytes[0];
  int code = bytes[0] & (0x7f >> need);
  for (size_t i = 1; i < need; ++i) code = (code << 6) | (bytes[i] & 0x3f);
  return code;
}

// Asked of the server (stateless) for the buffered source `src`: "more" if
// it is an incomplete statement, "eval" if it is one expression, "exec"
// otherwise. A SyntaxError comes back as a Python error; the REPL then runs
// the source on the session, which reports it.
constexpr char kProbe[] =
    "(lambda codeop, ast: (lambda c: 'more' if c is None else "
    "('eval' if (lambda b: len(b) == 1 and isinstance(b[0], ast.Expr))"
    "(ast.parse(src).body) else 'exec'))"
    "(codeop.compile_command(src, '<stdin>', 'single')))"
    "(__import__('codeop'), __import__('ast'))";

enum class Mode { kMore, kEval, kExec };

class Repl {
 public:
  Repl(const CliOptions& options, Client client)
      : options_(options), client_(std::move(client)) {}

  int Run() {
    if (!options_.session.empty()) {
      token_ = options_.session;
    } else if (absl::Status s = BindNew(); !s.ok()) {
      std::cerr << "pyexec: " << absl::StatusCodeToString(s.code()) << ": "
                << s.message() << "\n";
      return kExitRpcError;
    }
    std::cerr << "pyexec repl on " << options_.addr << ", session " << token_
              << (options_.session.empty() ? "" : " (attached)")
              << ". Ctrl-C interrupts, Ctrl-D exits.\n";
    int code = Loop();
    if (options_.session.empty() && !token_.empty()) {
      (void)client_.Unbind(token_, CallOptions{absl::Seconds(10)});
    }
    return code;
  }

 private:
  absl::Status BindNew() {
    absl::StatusOr<BindResult> bound =
        client_.Bind(options_.idle_timeout, CallOptions{options_.timeout});
    if (!bound.ok()) return bound.status();
    token_ = bound->session;
    return absl::OkStatus();
  }

  int Loop() {
    std::vector<std::string> buffer;
    while (true) {
      // Ctrl-C bytes from before this prompt are stale; one that arrives after
      // the line was read (even during the codeop probe) cancels the call.
      DrainPipe();
      g_interrupted = 0;
      char* raw = readline(buffer.empty() ? ">>> " : "... ");
      if (raw == nullptr) {
        if (g_interrupted) {  // Ctrl-C at the prompt: drop pending input.
          std::cout << "\nKeyboardInterrupt" << std::endl;
          buffer.clear();
          continue;
        }
        std::cout << std::endl;  // Ctrl-D
        return kExitOk;
      }
      std::string line(raw);
      free(raw);
      if (g_interrupted) {
        std::cout << "KeyboardInterrupt" << std::endl;
        buffer.clear();
        continue;
      }
      if (!line.empty()) add_history(line.c_str());
      if (buffer.empty() && line.find_first_not_of(" \t") == std::string::npos) continue;
      buffer.push_back(line);
      const std::string source = absl::StrJoin(buffer, "\n");
      const Mode mode = Classify(source);
      if (mode == Mode::kMore) continue;
      buffer.clear();
      if (int code = Execute(source, mode); code != kExitOk) return code;
    }
  }

  Mode Classify(const std::string& source) {
    absl::StatusOr<Result> r =
        client_.Eval("", kProbe, {{"src", MakeStr(source)}}, CallOptions{absl::Seconds(30)});
    if (!r.ok() || !r->ok() || r->value.kind_case() != v1::Value::kStr) return Mode::kExec;
    if (r->value.str() == "more") return Mode::kMore;
    return r->value.str() == "eval" ? Mode::kEval : Mode::kExec;
  }

  // Runs one RPC through the callback API so that Ctrl-C can cancel it.
  grpc::Status Cancellable(
      const std::function<void(grpc::ClientContext*, std::function<void(grpc::Status)>)>& start) {
    grpc::ClientContext context;
    if (options_.timeout > absl::ZeroDuration() && options_.timeout != absl::InfiniteDuration()) {
      context.set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
    }
    grpc::Status status;
    start(&context, [&status](grpc::Status s) {
      status = std::move(s);
      char c = kDoneByte;
      (void)!write(g_pipe[1], &c, 1);
    });
    // Wait for the done byte; an interrupt byte on the way cancels the call
    // (the server interrupts Python) and keeps waiting for its end.
    bool done = false;
    while (!done) {
      pollfd p = {g_pipe[0], POLLIN, 0};
      if (poll(&p, 1, -1) < 0 && errno != EINTR) break;
      char bytes[64];
      ssize_t n;
      while ((n = read(g_pipe[0], bytes, sizeof bytes)) > 0) {
        for (ssize_t i = 0; i < n; ++i) {
          if (bytes[i] == kDoneByte) done = true;
          if (bytes[i] == kInterruptByte && !done) context.TryCancel();
        }
      }
    }
    return status;
  }

  static void DrainPipe() {
    char bytes[64];
    while (read(g_pipe[0], bytes, sizeof bytes) > 0) {
    }
  }

  int Execute(const std::string& source, Mode mode) {
    grpc::Status status;
    std::string out, err;
    const v1::PythonError* error = nullptr;
    v1::EvalResponse eval;
    v1::ExecResponse exec;
    if (mode == Mode::kEval) {
      v1::EvalRequest request;
      request.set_session(token_);
      request.set_code(source);
      status = Cancellable([&](grpc::ClientContext* c, std::function<void(grpc::Status)> done) {
        client_.stub().async()->Eval(c, &request, &eval, std::move(done));
      });
      out = eval.stdout();
      err = eval.stderr();
      if (eval.has_error()) error = &eval.error();
    } else {
      v1::ExecRequest request;
      request.set_session(token_);
      request.set_code(source);
      status = Cancellable([&](grpc::ClientContext* c, std::function<void(grpc::Status)> done) {
        client_.stub().async()->Exec(c, &request, &exec, std::move(done));
      });
      out = exec.stdout();
      err = exec.stderr();
      if (exec.has_error()) error = &exec.error();
    }
    if (!status.ok()) return Failed(status);
    std::cout << out << std::flush;
    std::cerr << err;
    if (error != nullptr) {
      std::cerr << (error->traceback().empty()
                        ? absl::StrCat(error->type(), ": ", error->message(), "\n")
                        : error->traceback());
      if (!error->traceback().empty() && error->traceback().back() != '\n') std::cerr << "\n";
    } else if (mode == Mode::kEval && !eval.value().has_none()) {
      std::cout << FormatValue(eval.value()) << "\n";
    }
    std::cout << std::flush;
    std::cerr << std::flush;
    return kExitOk;
  }

  int Failed(const grpc::Status& status) {
    if (status.error_code() == grpc::StatusCode::CANCELLED) {
      std::cerr << "KeyboardInterrupt" << std::endl;
      return kExitOk;
    }
    std::cerr << "pyexec: " << absl::StatusCodeToString(
                                   static_cast<absl::StatusCode>(status.error_code()))
              << ": " << status.error_message() << std::endl;
    if (status.error_code() == grpc::StatusCode::NOT_FOUND ||
        status.error_code() == grpc::StatusCode::ABORTED) {
      if (!options_.session.empty()) return kExitRpcError;
      token_.clear();
      if (absl::Status s = BindNew(); !s.ok()) {
        std::cerr << "pyexec: cannot bind a new session: " << s.ToString() << std::endl;
        return kExitRpcError;
      }
      std::cerr << "pyexec: session lost; new session " << token_ << " (state reset)"
                << std::endl;
    }
    return kExitOk;
  }

  const CliOptions& options_;
  Client client_;
  std::string token_;
};

}  // namespace

int RunRepl(const CliOptions& options, const std::string& history_file) {
  if (options.json) {
    std::cerr << "pyexec: repl does not support --json\n" << kCliUsage;
    return kExitUsage;
  }
  absl::StatusOr<Client> client = Client::Connect(options.addr, options.channel);
  if (!client.ok()) {
    std::cerr << "pyexec: " << client.status().message() << "\n";
    return kExitUsage;
  }
  // The read end is non-blocking: Cancellable polls it and drains it.
  if (pipe2(g_pipe, O_CLOEXEC) != 0 || fcntl(g_pipe[0], F_SETFL, O_NONBLOCK) != 0) {
    perror("pyexec: pipe");
    return kExitRpcError;
  }
  struct sigaction action = {};
  action.sa_handler = OnSigint;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // no SA_RESTART: Ctrl-C ends a blocking read at the prompt
  sigaction(SIGINT, &action, nullptr);
  // libedit installs its own SIGINT handler around input and chains to ours;
  // ReadKey sees the self-pipe byte either way.
  // A separate open file description of the terminal, so that O_NONBLOCK
  // does not leak to the shell that shares stdin's.
  g_keys_fd = open(absl::StrCat("/proc/self/fd/", fileno(stdin)).c_str(),
                   O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  rl_getc_function = ReadKey;
  // libedit edits and displays characters by the locale's encoding (UTF-8
  // keys show as \U+20AC escapes under the C locale).
  setlocale(LC_CTYPE, "");
  using_history();
  if (!history_file.empty()) read_history(history_file.c_str());
  int code = Repl(options, *std::move(client)).Run();
  if (!history_file.empty()) write_history(history_file.c_str());
  return code;
}

}  // namespace pyexec
