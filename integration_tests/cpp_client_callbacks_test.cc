// Callbacks (Client::RegisterFunction, sent over Run) and named interrupts
// (PendingCall::Interrupt) of the C++ client against the real pyexecd:
// values and errors both ways, re-entry, concurrent callbacks, unknown
// names, per-call functions, a callback the call stops waiting for; the
// interrupt race (1000 rounds, none lost); and what callbacks cost (the
// callback round trip over a plain Eval, Run over Eval), printed.

#include <algorithm>
#include <atomic>
#include <iostream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "clients/cpp/client.h"
#include "clients/cpp/value.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "integration_tests/cpp_client_testing.h"

namespace pyexec {
namespace {

using ::testing::HasSubstr;

const CallOptions kTimeout{absl::Seconds(20)};

class CallbackTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = testing_util::StartPyexecd({"--workers=4", "--max_workers=10"},
                                         "pyexecd_callbacks.log")
                  .release();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    client_.emplace(Client::Connect(server_->address()).value());
  }

  // A Python value from an Eval that must succeed.
  v1::Value MustEval(const std::string& session, const std::string& code,
                     const CallOptions& options = kTimeout) {
    absl::StatusOr<Result> r = client_->Eval(session, code, {}, options);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return MakeNone();
    EXPECT_TRUE(r->ok()) << code << ": " << r->error->type() << ": " << r->error->message();
    return r->value;
  }

  static bench::ServerProcess* server_;
  std::optional<Client> client_;
};

bench::ServerProcess* CallbackTest::server_ = nullptr;

TEST_F(CallbackTest, ValuesBothWays) {
  absl::Mutex mu;
  std::vector<v1::Value> got_args;
  ValueMap got_kwargs;
  std::string got_session;
  client_->RegisterFunction("take", [&](CallbackContext& ctx, const std::vector<v1::Value>& args,
                                        const ValueMap& kwargs) -> absl::StatusOr<v1::Value> {
    absl::MutexLock lock(&mu);
    got_args = args;
    got_kwargs = kwargs;
    got_session = ctx.session();
    EXPECT_EQ(ctx.name(), "take");
    EXPECT_FALSE(ctx.id().empty());
    return MakeNone();
  });
  client_->RegisterFunction("give", [](CallbackContext&, const std::vector<v1::Value>&,
                                       const ValueMap&) -> absl::StatusOr<v1::Value> {
    return MakeDict({{MakeStr("n"), MakeSet({MakeInt(1)})},
                     {MakeStr("big"), MakeBigInt("1180591620717411303424").value()},
                     {MakeStr("t"), MakeTuple({MakeBytes(std::string("\0\xff", 2)),
                                               MakeFloat(2.5), MakeBool(true)})},
                     {MakeStr("s"), MakeStr("h\xc3\xa9")}});
  });

  // Python to C++: every kind, positional and keyword.
  v1::Value none = MustEval(
      "", "pyexec.call('take', 1, 'h\\u00e9', b'\\x00\\xff', [2.5, None], (True,), "
          "{'k': 2**70}, {3}, key='v', n=-7)");
  EXPECT_TRUE(none.has_none());
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(got_session, "");  // a stateless call
    ASSERT_EQ(got_args.size(), 7u);
    EXPECT_EQ(got_args[0].int_(), 1);
    EXPECT_EQ(got_args[1].str(), "h\xc3\xa9");
    EXPECT_EQ(got_args[2].bytes(), std::string("\0\xff", 2));
    EXPECT_EQ(FormatValue(got_args[3]), "[2.5, None]");
    EXPECT_EQ(FormatValue(got_args[4]), "(True,)");
    EXPECT_EQ(FormatValue(got_args[5]), "{'k': 1180591620717411303424}");
    EXPECT_EQ(FormatValue(got_args[6]), "{3}");
    ASSERT_EQ(got_kwargs.size(), 2u);
    EXPECT_EQ(got_kwargs["key"].str(), "v");
    EXPECT_EQ(got_kwargs["n"].int_(), -7);
  }

  // C++ to Python: the value arrives as Python objects, types kept.
  absl::StatusOr<Session> s = Session::Bind(*client_);
  ASSERT_TRUE(s.ok()) << s.status();
  v1::Value checked = MustEval(
      s->token(),
      "(lambda r: r == {'n': {1}, 'big': 2**70, 't': (b'\\x00\\xff', 2.5, True), "
      "'s': 'h\\u00e9'} and type(r['n']) is set and type(r['t']) is tuple)(pyexec.call('give'))");
  EXPECT_TRUE(checked.bool_()) << FormatValue(checked);
  // The session's callbacks name it.
  MustEval(s->token(), "pyexec.call('take', 0)");
  absl::MutexLock lock(&mu);
  EXPECT_EQ(got_session, s->token());
}

TEST_F(CallbackTest, ErrorsBothWays) {
  client_->RegisterFunction("not_found", [](CallbackContext&, const std::vector<v1::Value>& args,
                                            const ValueMap&) -> absl::StatusOr<v1::Value> {
    return absl::NotFoundError(absl::StrCat("no such user: ", args.at(0).str()));
  });
  client_->RegisterFunction("throws", [](CallbackContext&, const std::vector<v1::Value>&,
                                         const ValueMap&) -> absl::StatusOr<v1::Value> {
    throw std::runtime_error("thrown in C++");
  });
  // A Python error reaches the function as a Result with `error`.
  client_->RegisterFunction("python_fails", [](CallbackContext& ctx,
                                               const std::vector<v1::Value>&,
                                               const ValueMap&) -> absl::StatusOr<v1::Value> {
    absl::StatusOr<Result> r = ctx.client().Eval(ctx.session(), "1 / 0");
    if (!r.ok()) return r.status();
    if (r->ok()) return absl::InternalError("1 / 0 did not raise");
    return MakeStr(absl::StrCat(r->error->type(), ": ", r->error->message()));
  });
  absl::StatusOr<Session> s = Session::Bind(*client_);
  ASSERT_TRUE(s.ok()) << s.status();

  // C++ to Python: a CallbackError with the status code's name and message,
  // that Python can catch.
  ASSERT_TRUE(s->Exec("def catch(name, *args):\n"
                      "    try:\n"
                      "        pyexec.call(name, *args)\n"
                      "    except pyexec.CallbackError as e:\n"
                      "        return (type(e).__name__, e.type, e.message)\n")
                  .ok());
  EXPECT_EQ(FormatValue(MustEval(s->token(), "catch('not_found', 'bob')")),
            "('CallbackError', 'NOT_FOUND', 'no such user: bob')");
  v1::Value thrown = MustEval(s->token(), "catch('throws')");
  ASSERT_EQ(thrown.items_size(), 3);
  EXPECT_THAT(thrown.items(1).str(), HasSubstr("runtime_error"));
  EXPECT_EQ(thrown.items(2).str(), "thrown in C++");

  // Uncaught, it is the call's Python error.
  absl::StatusOr<Result> r = s->Eval("pyexec.call('not_found', 'eve')", {}, kTimeout);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_FALSE(r->ok());
  EXPECT_EQ(r->error->type(), "CallbackError");
  EXPECT_THAT(r->error->message(), HasSubstr("no such user: eve"));

  // Python to C++: an error in the Python the function calls...
  EXPECT_EQ(MustEval(s->token(), "pyexec.call('python_fails')").str(),
            "ZeroDivisionError: division by zero");
  // ...and in the Python after the callback.
  r = s->Eval("pyexec.call('python_fails') + 1", {}, kTimeout);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_FALSE(r->ok());
  EXPECT_EQ(r->error->type(), "TypeError");
  // The session is fine afterwards.
  EXPECT_EQ(MustEval(s->token(), "2 + 2").int_(), 4);
}

TEST_F(CallbackTest, ReentryRunsOnTheWaitingInterpreter) {
  const Client& outer = *client_;
  std::atomic<int> depth_seen{0};
  // Through the CallbackContext's client.
  client_->RegisterFunction("down", [&](CallbackContext& ctx, const std::vector<v1::Value>& args,
                                        const ValueMap&) -> absl::StatusOr<v1::Value> {
    absl::StatusOr<Result> r =
        ctx.client().Call(ctx.session(), "__main__", "down", {args.at(0)}, {}, kTimeout);
    if (!r.ok()) return r.status();
    if (!r->ok()) return absl::UnknownError(r->error->message());
    depth_seen = std::max<int>(depth_seen, static_cast<int>(args.at(0).int_()));
    return MakeInt(r->value.int_() + 1);
  });
  // Through the registering Client itself, on the function's thread.
  client_->RegisterFunction("state", [&outer](CallbackContext& ctx, const std::vector<v1::Value>&,
                                              const ValueMap&) -> absl::StatusOr<v1::Value> {
    if (!outer.Exec(ctx.session(), "x += 1", {}, kTimeout).ok()) {
      return absl::InternalError("exec failed");
    }
    absl::StatusOr<Result> r = outer.Eval(ctx.session(), "x", {}, kTimeout);
    if (!r.ok()) return r.status();
    return r->value;
  });
  absl::StatusOr<Session> s = Session::Bind(*client_);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE(s->Exec("x = 40\n"
                      "def down(n):\n"
                      "    return 0 if n == 0 else pyexec.call('down', n - 1) + 1\n")
                  .ok());
  const absl::Time start = absl::Now();
  EXPECT_EQ(MustEval(s->token(), "down(5)").int_(), 10);
  std::cout << "re-entry 5 deep (10 hops Python<->C++): "
            << absl::FormatDuration(absl::Now() - start) << std::endl;
  EXPECT_EQ(depth_seen.load(), 4);
  // The callback sees and changes the session's state while it waits.
  EXPECT_EQ(MustEval(s->token(), "(pyexec.call('state'), x)").items(0).int_(), 41);
  EXPECT_EQ(MustEval(s->token(), "x").int_(), 41);
}

TEST_F(CallbackTest, ConcurrentCallbacks) {
  std::atomic<int> running{0}, most{0};
  client_->RegisterFunction("slow", [&](CallbackContext&, const std::vector<v1::Value>& args,
                                        const ValueMap&) -> absl::StatusOr<v1::Value> {
    const int now = ++running;
    int seen = most.load();
    while (now > seen && !most.compare_exchange_weak(seen, now)) {
    }
    absl::SleepFor(absl::Milliseconds(300));
    --running;
    return MakeInt(args.at(0).int_() * 10);
  });
  // Python threads of one call wait for their callbacks together.
  absl::StatusOr<Session> s = Session::Bind(*client_);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE(s->Exec("import threading\n"
                      "def fan(n):\n"
                      "    out = [None] * n\n"
                      "    def one(i):\n"
                      "        out[i] = pyexec.call('slow', i)\n"
                      "    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]\n"
                      "    for t in ts: t.start()\n"
                      "    for t in ts: t.join()\n"
                      "    return out\n")
                  .ok());
  absl::Time fan_start = absl::Now();
  EXPECT_EQ(FormatValue(MustEval(s->token(), "fan(4)")), "[0, 10, 20, 30]");
  const absl::Duration fan = absl::Now() - fan_start;
  EXPECT_GE(most.load(), 2) << "the callbacks of one call ran one at a time";
  EXPECT_LT(fan, absl::Milliseconds(1150)) << "4 callbacks of 300 ms ran one after another";
  std::cout << "4 Python threads of one call, each with a 300 ms callback: "
            << absl::FormatDuration(fan) << ", at most " << most.load() << " at once"
            << std::endl;

  // Calls of several sessions (and stateless ones) from several threads:
  // their callbacks run at once in the client.
  most = 0;
  std::vector<Session> sessions;
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<Session> bound = Session::Bind(*client_);
    ASSERT_TRUE(bound.ok()) << bound.status();
    sessions.push_back(*std::move(bound));
  }
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  const absl::Time start = absl::Now();
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&, i] {
      const std::string session = i % 2 == 0 ? sessions[i / 2].token() : "";
      absl::StatusOr<Result> r =
          client_->Eval(session, absl::StrCat("pyexec.call('slow', ", i, ")"), {}, kTimeout);
      if (r.ok() && r->ok() && r->value.int_() == i * 10) ++good;
    });
  }
  for (std::thread& t : threads) t.join();
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(good.load(), 6);
  EXPECT_GE(most.load(), 3) << "the callbacks ran one at a time";
  EXPECT_LT(took, absl::Milliseconds(1500)) << "6 callbacks of 300 ms ran one after another";
  std::cout << "6 calls from 6 threads, each with a 300 ms callback: "
            << absl::FormatDuration(took) << ", at most " << most.load()
            << " callbacks at once" << std::endl;
}

TEST_F(CallbackTest, UnknownNamesAndPerCallFunctions) {
  // No function registered: a plain Eval, and pyexec.call has no client.
  absl::StatusOr<Result> r = client_->Eval("", "pyexec.call('nope')", {}, kTimeout);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_FALSE(r->ok());
  EXPECT_EQ(r->error->type(), "RuntimeError");

  // Per-call functions (even none) send it as a Run: an unknown name is a
  // CallbackError that says LookupError and the name.
  CallOptions run = kTimeout;
  run.functions.emplace();
  r = client_->Eval("", "pyexec.call('nope')", {}, run);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_FALSE(r->ok());
  EXPECT_EQ(r->error->type(), "CallbackError");
  EXPECT_THAT(r->error->message(), HasSubstr("LookupError"));
  EXPECT_THAT(r->error->message(), HasSubstr("nope"));

  client_->RegisterFunction("who", [](CallbackContext&, const std::vector<v1::Value>&,
                                      const ValueMap&) -> absl::StatusOr<v1::Value> {
    return MakeStr("registered");
  });
  (*run.functions)["who"] = [](CallbackContext&, const std::vector<v1::Value>&,
                               const ValueMap&) -> absl::StatusOr<v1::Value> {
    return MakeStr("per call");
  };
  EXPECT_EQ(MustEval("", "pyexec.call('who')").str(), "registered");
  EXPECT_EQ(MustEval("", "pyexec.call('who')", run).str(), "per call");
  EXPECT_EQ(MustEval("", "erlang.call('who')").str(), "registered");  // the alias
  r = client_->Eval("", "pyexec.call('whom')", {}, kTimeout);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->error->type(), "CallbackError");
  EXPECT_THAT(r->error->message(), HasSubstr("whom"));
  EXPECT_TRUE(client_->UnregisterFunction("who"));
  EXPECT_FALSE(client_->UnregisterFunction("who"));
  r = client_->Eval("", "pyexec.call('who')", {}, kTimeout);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->error->type(), "RuntimeError");  // no function left: a plain Eval again
}

TEST_F(CallbackTest, ACallbackTheCallStopsWaitingForIsCancelled) {
  std::atomic<bool> saw_cancel{false};
  client_->RegisterFunction("never", [&](CallbackContext& ctx, const std::vector<v1::Value>&,
                                         const ValueMap&) -> absl::StatusOr<v1::Value> {
    saw_cancel = ctx.WaitForCancellation(absl::Seconds(20));
    return MakeNone();
  });
  absl::StatusOr<Session> s = Session::Bind(*client_);
  ASSERT_TRUE(s.ok()) << s.status();
  // Python's pyexec.call gives up before the call's deadline...
  ASSERT_TRUE(s->Exec("r = None\n"
                      "try:\n"
                      "    pyexec.call('never')\n"
                      "except TimeoutError:\n"
                      "    r = 'timed out'\n",
                      {}, CallOptions{absl::Milliseconds(1500)})
                  .ok());
  EXPECT_EQ(MustEval(s->token(), "r").str(), "timed out");
  EXPECT_TRUE(saw_cancel.load());
  // ...and an interrupted call cancels its callback too.
  saw_cancel = false;
  PendingCall call = s->StartEval("pyexec.call('never')", {}, kTimeout);
  absl::SleepFor(absl::Milliseconds(300));
  absl::StatusOr<bool> interrupted = call.Interrupt();
  ASSERT_TRUE(interrupted.ok()) << interrupted.status();
  EXPECT_TRUE(*interrupted);
  EXPECT_EQ(call.Wait().status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(saw_cancel.load());
  EXPECT_EQ(MustEval(s->token(), "r").str(), "timed out");
}

// What a callback costs: the round trip of an Eval that makes one callback
// over a plain Eval, and an Eval sent as Run (a function registered, none
// called) over a plain Eval. Medians of 200, on one session.
TEST_F(CallbackTest, CostsArePrinted) {
  constexpr int kRounds = 200;
  Client plain = Client::Connect(server_->address()).value();
  client_->RegisterFunction("id", [](CallbackContext&, const std::vector<v1::Value>& args,
                                     const ValueMap&) -> absl::StatusOr<v1::Value> {
    return args.at(0);
  });
  absl::StatusOr<Session> s = Session::Bind(plain);
  ASSERT_TRUE(s.ok()) << s.status();
  const std::string token = s->token();
  auto median = [&](const Client& c, const std::string& code) {
    std::vector<absl::Duration> times;
    for (int i = 0; i < kRounds; ++i) {
      const absl::Time start = absl::Now();
      absl::StatusOr<Result> r = c.Eval(token, code, {}, kTimeout);
      times.push_back(absl::Now() - start);
      EXPECT_TRUE(r.ok() && r->ok()) << (r.ok() ? r->error->message() : r.status().ToString());
      if (!r.ok()) break;
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
  };
  median(plain, "1");  // warm both channels
  median(*client_, "1");
  const absl::Duration eval = median(plain, "1");
  const absl::Duration run = median(*client_, "1");
  const absl::Duration callback = median(*client_, "pyexec.call('id', 1)");
  std::cout << "plain Eval median " << absl::FormatDuration(eval) << "; as Run "
            << absl::FormatDuration(run) << " (Run/Eval " << absl::FDivDuration(run, eval)
            << "x); with one callback " << absl::FormatDuration(callback)
            << " (callback round trip/Eval " << absl::FDivDuration(callback, eval) << "x, the callback itself "
            << absl::FormatDuration(callback - run) << ")" << std::endl;
  // Loose bounds: a loaded machine moves these, a broken one does not
  // come near them.
  EXPECT_LT(absl::FDivDuration(run, eval), 10.0);
  EXPECT_LT(absl::FDivDuration(callback, eval), 20.0);
  EXPECT_GT(callback, run) << "a callback cost nothing: was it made?";
}

// The README race: start a call and interrupt that very call at once. The
// Interrupt names the call, so it is never lost, even when it reaches the
// server first.
TEST_F(CallbackTest, InterruptRaceLosesNone) {
  constexpr int kRounds = 1000;
  absl::StatusOr<Session> s = Session::Bind(*client_);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE(s->Exec("kept = 7").ok());
  int lost = 0;
  std::string first_loss;
  const absl::Time start = absl::Now();
  for (int i = 0; i < kRounds; ++i) {
    PendingCall call = s->StartExec("while True: pass", {}, CallOptions{absl::Seconds(10)});
    absl::StatusOr<bool> interrupted = call.Interrupt(CallOptions{absl::Seconds(10)});
    absl::StatusOr<Result> outcome = call.Wait();
    if (!(interrupted.ok() && *interrupted && !outcome.ok() &&
          outcome.status().code() == absl::StatusCode::kCancelled)) {
      if (lost++ == 0) {
        first_loss = absl::StrCat(
            "round ", i, ": Interrupt ",
            interrupted.ok() ? (*interrupted ? "true" : "false") : interrupted.status().ToString(),
            ", call ", outcome.ok() ? "ran to its end" : outcome.status().ToString());
      }
    }
  }
  const absl::Duration took = absl::Now() - start;
  std::cout << "interrupt race: " << kRounds << " rounds, " << lost << " lost, "
            << absl::FormatDuration(took) << std::endl;
  EXPECT_EQ(lost, 0) << first_loss;
  EXPECT_EQ(MustEval(s->token(), "kept").int_(), 7);

  // An Interrupt sent before its call is sent at all is kept for it.
  CallOptions named = kTimeout;
  named.call_id = "cpp-callbacks-test-early";
  absl::StatusOr<bool> early = client_->InterruptCall(s->token(), named.call_id);
  ASSERT_TRUE(early.ok()) << early.status();
  EXPECT_TRUE(*early);
  PendingCall late = s->StartExec("while True: pass", {}, named);
  EXPECT_EQ(late.call_id(), named.call_id);
  EXPECT_EQ(late.Wait().status().code(), absl::StatusCode::kCancelled);
  // A call that has ended is not interrupted.
  PendingCall quick = s->StartEval("1", {}, kTimeout);
  ASSERT_TRUE(quick.Wait().ok());
  EXPECT_FALSE(*quick.Interrupt());
  // A stateless call has no session to interrupt on: Cancel it instead.
  PendingCall stateless = client_->StartExec("", "while True: pass", {}, kTimeout);
  EXPECT_EQ(stateless.Interrupt().status().code(), absl::StatusCode::kFailedPrecondition);
  stateless.Cancel();
  EXPECT_EQ(stateless.Wait().status().code(), absl::StatusCode::kCancelled);
}

}  // namespace
}  // namespace pyexec
