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
#include <cstring>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "clients/cpp/client.h"
#include "clients/cpp/repl_helper_py.h"
#include "clients/cpp/value.h"

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

// Asked of the server (stateless) for the buffered source `src`: True if it
// is an incomplete statement (the REPL asks for more). A SyntaxError comes
// back as a Python error; the REPL then runs the source on the session,
// which reports it.
constexpr char kIncompleteProbe[] =
    "__import__('codeop').compile_command(src, '<stdin>', 'single') is None";

// How long a Tab waits for the session's completions.
constexpr absl::Duration kCompletionDeadline = absl::Seconds(3);

// Python's completer delimiters (readline.get_completer_delims() in
// python3 -i): '.' is not one, so `math.p` is one word.
char kWordBreaks[] = " \t\n`~!@#$%^&*()-=+[{]}\\|;:'\",<>/?";

class Repl;
// The REPL that libedit's completion callbacks (plain C functions) serve.
Repl* g_repl = nullptr;

char** AttemptCompletion(const char* text, int start, int end);
char* NextCompletion(const char* text, int state);

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
              << (options_.session.empty() ? " (leased)" : " (attached)")
              << ". Ctrl-C interrupts, Tab completes, Ctrl-D exits.\n";
    int code = Loop();
    if (options_.session.empty() && !token_.empty()) {
      (void)client_.Unbind(token_, CallOptions{absl::Seconds(10)});
    }
    return code;
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
      if (Incomplete(source)) continue;
      buffer.clear();
      if (std::optional<int> exit_code = Execute(source)) return *exit_code;
    }
  }

  // Tab: the completions of `text` from the session (libedit's
  // rl_attempted_completion_function).
  char** Complete(const char* text) {
    // Never fall back to libedit's file name completion; append nothing
    // (rlcompleter has already appended "(" to callables).
    rl_attempted_completion_over = 1;
    rl_completion_append_character = '\0';
    if (std::strspn(text, " \t") == std::strlen(text)) {
      // Indentation, as python3 -i: the one "completion" is a tab.
      completions_ = {"\t"};
      return rl_completion_matches(text, NextCompletion);
    }
    absl::Duration deadline = kCompletionDeadline;
    if (options_.timeout > absl::ZeroDuration()) deadline = std::min(deadline, options_.timeout);
    absl::StatusOr<Result> r =
        client_.Eval(token_, ReplCompletionCode(text), {}, CallOptions{deadline});
    if (!r.ok() || !r->ok()) return nullptr;
    completions_ = CompletionsFromValue(r->value);
    if (completions_.empty()) return nullptr;
    next_completion_ = 0;
    return rl_completion_matches(text, NextCompletion);
  }

  // The completions of the last Complete, one per call, malloc'ed for
  // libedit; null after the last.
  char* CompletionAt(int state) {
    if (state == 0) next_completion_ = 0;
    if (next_completion_ >= completions_.size()) return nullptr;
    return strdup(completions_[next_completion_++].c_str());
  }

 private:
  // Binds a session leased to this REPL: the server unbinds it soon after
  // the REPL dies, however it dies.
  absl::Status BindNew() {
    BindOptions bind;
    bind.idle_timeout = options_.idle_timeout;
    bind.lease = true;
    absl::StatusOr<BindResult> bound = client_.Bind(bind, CallOptions{options_.timeout});
    if (!bound.ok()) return bound.status();
    token_ = bound->session;
    return absl::OkStatus();
  }

  bool Incomplete(const std::string& source) {
    absl::StatusOr<Result> r = client_.Eval("", kIncompleteProbe, {{"src", MakeStr(source)}},
                                            CallOptions{absl::Seconds(30)});
    return r.ok() && r->ok() && r->value.has_bool_() && r->value.bool_();
  }

  // Waits for the reader's done byte; an interrupt byte on the way calls
  // `cancel` (the server interrupts Python) and keeps waiting for the end.
  static void WaitUntilDone(const std::function<void()>& cancel) {
    bool done = false;
    while (!done) {
      pollfd p = {g_pipe[0], POLLIN, 0};
      if (poll(&p, 1, -1) < 0 && errno != EINTR) break;
      char bytes[64];
      ssize_t n;
      while ((n = read(g_pipe[0], bytes, sizeof bytes)) > 0) {
        for (ssize_t i = 0; i < n; ++i) {
          if (bytes[i] == kDoneByte) done = true;
          if (bytes[i] == kInterruptByte && !done) cancel();
        }
      }
    }
  }

  static void DrainPipe() {
    char bytes[64];
    while (read(g_pipe[0], bytes, sizeof bytes) > 0) {
    }
  }

  // Runs one statement, printing its output as it streams. Returns the
  // code to exit the REPL with (SystemExit, or a lost attached session),
  // else nothing.
  std::optional<int> Execute(const std::string& source) {
    std::unique_ptr<EventStream<v1::ExecEvent>> stream = client_.ExecStream(
        token_, ReplStatementCode(source), {}, CallOptions{options_.timeout});
    absl::Status status;
    std::optional<v1::PythonError> error;
    // The stream is read on its own thread so that this one can watch for
    // Ctrl-C; only that thread writes to the terminal until it is done.
    std::thread reader([&] {
      v1::ExecEvent event;
      while (stream->Next(&event)) {
        switch (event.event_case()) {
          case v1::ExecEvent::kStdout:
            std::cout << event.stdout() << std::flush;
            break;
          case v1::ExecEvent::kStderr:
            std::cerr << event.stderr() << std::flush;
            break;
          case v1::ExecEvent::kEnd:
            if (event.end().has_error()) error = event.end().error();
            break;
          default:
            break;
        }
      }
      status = stream->Finish();
      char c = kDoneByte;
      (void)!write(g_pipe[1], &c, 1);
    });
    WaitUntilDone([&stream] { stream->Cancel(); });
    reader.join();
    if (!status.ok()) return Failed(status);
    if (!error.has_value()) return std::nullopt;
    // repl_helper.py shows the statement's own exceptions; what ends the
    // stream with an error is SystemExit (with an int code) or a failure of
    // the helper itself.
    int exit_code;
    if (error->type() == "SystemExit" && absl::SimpleAtoi(error->message(), &exit_code)) {
      return exit_code;
    }
    std::cerr << (error->traceback().empty()
                      ? absl::StrCat(error->type(), ": ", error->message(), "\n")
                      : error->traceback());
    if (!error->traceback().empty() && error->traceback().back() != '\n') std::cerr << "\n";
    std::cerr << std::flush;
    return std::nullopt;
  }

  std::optional<int> Failed(const absl::Status& status) {
    if (status.code() == absl::StatusCode::kCancelled) {
      std::cerr << "KeyboardInterrupt" << std::endl;
      return std::nullopt;
    }
    std::cerr << "pyexec: " << absl::StatusCodeToString(status.code()) << ": "
              << status.message() << std::endl;
    if (status.code() == absl::StatusCode::kNotFound ||
        status.code() == absl::StatusCode::kAborted) {
      if (!options_.session.empty()) return kExitRpcError;
      token_.clear();
      if (absl::Status s = BindNew(); !s.ok()) {
        std::cerr << "pyexec: cannot bind a new session: " << s.ToString() << std::endl;
        return kExitRpcError;
      }
      std::cerr << "pyexec: session lost; new session " << token_ << " (state reset)"
                << std::endl;
    }
    return std::nullopt;
  }

  const CliOptions& options_;
  Client client_;
  std::string token_;
  std::vector<std::string> completions_;
  size_t next_completion_ = 0;
};

char** AttemptCompletion(const char* text, int, int) { return g_repl->Complete(text); }

char* NextCompletion(const char*, int state) { return g_repl->CompletionAt(state); }

}  // namespace

std::string ReplStatementCode(absl::string_view source) {
  return absl::StrCat("exec(compile(", FormatStr(kReplHelperSource),
                      ", '<pyexec-repl>', 'exec'), {'__builtins__': __builtins__, "
                      "'namespace': globals(), 'source': ",
                      FormatStr(source), "})");
}

std::string ReplCompletionCode(absl::string_view text) {
  // complete(text, 0), (text, 1)... until None, as readline calls it.
  return absl::StrCat(
      "(lambda c, t: list(iter(lambda n=__import__('itertools').count(): "
      "c.complete(t, next(n)), None)))(__import__('rlcompleter').Completer(globals()), ",
      FormatStr(text), ")");
}

std::vector<std::string> CompletionsFromValue(const v1::Value& value) {
  std::vector<std::string> completions;
  if (!value.has_list()) return completions;
  for (const v1::Value& item : value.items()) {
    if (!item.has_str()) return {};
    completions.push_back(item.str());
  }
  return completions;
}

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
  // The read end is non-blocking: WaitUntilDone polls it and drains it.
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
  rl_attempted_completion_function = AttemptCompletion;
  rl_basic_word_break_characters = kWordBreaks;
  rl_completer_word_break_characters = kWordBreaks;
  using_history();
  if (!history_file.empty()) read_history(history_file.c_str());
  Repl repl(options, *std::move(client));
  g_repl = &repl;
  int code = repl.Run();
  g_repl = nullptr;
  if (!history_file.empty()) write_history(history_file.c_str());
  return code;
}

}  // namespace pyexec
