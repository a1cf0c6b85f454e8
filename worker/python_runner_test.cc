#include "worker/python_runner.h"

#include <signal.h>
#include <unistd.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

using ::testing::HasSubstr;

class PythonRunnerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    RunnerLimits limits;
    limits.max_output_bytes = 1000;
    limits.max_value_depth = 64;
    sent_ = new std::vector<internal::WorkerResponse>();
    runner_ = new PythonRunner(limits);
    runner_->SetFrameSender([](const internal::WorkerResponse& r) {
      // The flusher thread may send too.
      absl::MutexLock lock(&sent_mu_);
      sent_->push_back(r);
      return true;
    });
    ASSERT_TRUE(runner_->Initialize().ok());
  }

  static internal::WorkerResponse Eval(const std::string& code,
                                       bool fresh = false) {
    internal::WorkerRequest request;
    request.set_fresh_namespace(fresh);
    request.set_max_refs(100);
    request.mutable_eval()->set_code(code);
    return Handle(request);
  }
  static internal::WorkerResponse Exec(const std::string& code,
                                       bool fresh = false) {
    internal::WorkerRequest request;
    request.set_fresh_namespace(fresh);
    request.mutable_exec()->set_code(code);
    return Handle(request);
  }
  static internal::WorkerResponse Handle(const internal::WorkerRequest& r) {
    internal::WorkerResponse response;
    runner_->Handle(r, &response);
    return response;
  }

  static std::vector<internal::WorkerResponse> TakeSent() {
    absl::MutexLock lock(&sent_mu_);
    std::vector<internal::WorkerResponse> out;
    out.swap(*sent_);
    return out;
  }

  static PythonRunner* runner_;
  static absl::Mutex sent_mu_;
  static std::vector<internal::WorkerResponse>* sent_;
};

PythonRunner* PythonRunnerTest::runner_ = nullptr;
absl::Mutex PythonRunnerTest::sent_mu_;
std::vector<internal::WorkerResponse>* PythonRunnerTest::sent_ = nullptr;

TEST_F(PythonRunnerTest, BoundResultWithNoKindIsARefThatResolves) {
  internal::WorkerRequest request;
  request.set_max_refs(2);
  request.mutable_eval()->set_code("[object(), 1]");
  internal::WorkerResponse r = Handle(request);
  ASSERT_EQ(r.value().items(0).kind_case(), v1::Value::kRef) << r.DebugString();
  const std::string id = r.value().items(0).ref().id();
  EXPECT_EQ(id.size(), 24u);
  EXPECT_EQ(r.value().items(0).ref().type(), "object");

  internal::WorkerRequest call;
  call.set_max_refs(2);
  call.mutable_call()->set_module("builtins");
  call.mutable_call()->set_function("type");
  call.mutable_call()->add_args()->mutable_ref()->set_id(id);
  r = Handle(call);
  ASSERT_EQ(r.value().kind_case(), v1::Value::kRef) << r.DebugString();

  // Two refs are live; a third is past the limit and leaves none behind.
  request.mutable_eval()->set_code("object()");
  r = Handle(request);
  EXPECT_EQ(r.failure().code(),
            static_cast<int>(absl::StatusCode::kResourceExhausted));
  internal::WorkerRequest release;
  release.mutable_release()->add_ref_ids(id);
  release.mutable_release()->add_ref_ids("not-a-ref");
  EXPECT_EQ(Handle(release).released(), 1u);
  r = Handle(call);
  EXPECT_EQ(r.failure().code(),
            static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(r.failure().message(), HasSubstr("unknown ref"));
  // Stateless calls keep opaque values and refuse refs.
  request.set_fresh_namespace(true);
  EXPECT_EQ(Handle(request).value().kind_case(), v1::Value::kOpaque);
}

TEST_F(PythonRunnerTest, StreamSendsOutputAndItemsBeforeTheEnd) {
  TakeSent();
  Exec("def gen(n):\n    for i in range(n):\n        print('item', i)\n        yield i\n");
  internal::WorkerRequest request;
  request.set_id(7);
  request.set_stream(true);
  request.mutable_call()->set_module("__main__");
  request.mutable_call()->set_function("gen");
  request.mutable_call()->add_args()->set_int_(2);
  internal::WorkerResponse r = Handle(request);
  EXPECT_FALSE(r.has_error());
  EXPECT_FALSE(r.partial());
  std::vector<internal::WorkerResponse> sent = TakeSent();
  ASSERT_EQ(sent.size(), 4u);
  EXPECT_EQ(sent[0].stdout(), "item 0\n");
  EXPECT_EQ(sent[1].value().int_(), 0);
  EXPECT_EQ(sent[2].stdout(), "item 1\n");
  EXPECT_EQ(sent[3].value().int_(), 1);
  for (const auto& s : sent) {
    EXPECT_TRUE(s.partial());
    EXPECT_EQ(s.id(), 7u);
  }
}

TEST_F(PythonRunnerTest, StatePersistsInTheMainNamespace) {
  EXPECT_FALSE(Exec("counter = 1").has_error());
  EXPECT_FALSE(Exec("counter += 1").has_error());
  EXPECT_EQ(Eval("counter").value().int_(), 2);
}

TEST_F(PythonRunnerTest, FreshNamespaceSeesNoState) {
  Exec("secret = 1");
  internal::WorkerResponse r = Eval("secret", /*fresh=*/true);
  EXPECT_EQ(r.error().type(), "NameError");
  EXPECT_FALSE(Exec("leak = 2", /*fresh=*/true).has_error());
  EXPECT_EQ(Eval("leak").error().type(), "NameError");
}

TEST_F(PythonRunnerTest, ExceptionsCarryTypeMessageAndTraceback) {
  Exec("def inner():\n    raise KeyError('k')\n");
  internal::WorkerResponse r = Eval("inner()");
  EXPECT_EQ(r.error().type(), "KeyError");
  EXPECT_EQ(r.error().message(), "'k'");
  EXPECT_THAT(r.error().traceback(), HasSubstr("in inner"));
  EXPECT_THAT(r.error().traceback(), HasSubstr("raise KeyError('k')"));
  // The runner's own frames are not shown.
  EXPECT_THAT(r.error().traceback(), ::testing::Not(HasSubstr("pyexec-runner")));
}

TEST_F(PythonRunnerTest, SyntaxErrorIsReported) {
  internal::WorkerResponse r = Exec("def f(:\n");
  EXPECT_EQ(r.error().type(), "SyntaxError");
  EXPECT_THAT(r.error().traceback(), HasSubstr("def f(:"));
}

TEST_F(PythonRunnerTest, OutputIsCapturedPerCallAndBounded) {
  internal::WorkerResponse r =
      Exec("import sys\nprint('out')\nprint('err', file=sys.stderr)");
  EXPECT_EQ(r.stdout(), "out\n");
  EXPECT_EQ(r.stderr(), "err\n");
  EXPECT_EQ(Exec("pass").stdout(), "");
  internal::WorkerResponse flood = Exec("print('x' * 5000)");
  EXPECT_THAT(flood.stdout(), HasSubstr("truncated at 1000 bytes"));
  EXPECT_LT(flood.stdout().size(), 1100u);
  // Multi-byte characters are never cut in half.
  internal::WorkerResponse wide = Exec("print('é' * 5000)");
  EXPECT_THAT(wide.stdout(), HasSubstr("truncated"));
}

TEST_F(PythonRunnerTest, LocalsAreVisibleForOneCallOnly) {
  internal::WorkerRequest request;
  request.mutable_eval()->set_code("[i * k for i in range(3)]");
  (*request.mutable_eval()->mutable_locals())["k"].set_int_(2);
  internal::WorkerResponse r = Handle(request);
  ASSERT_FALSE(r.has_error()) << r.error().message();
  EXPECT_EQ(r.value().items(2).int_(), 4);
  EXPECT_EQ(Eval("k").error().type(), "NameError");

  // A name the code binds while using a local persists.
  internal::WorkerRequest exec;
  exec.mutable_exec()->set_code("doubled = item * 2");
  (*exec.mutable_exec()->mutable_locals())["item"].set_int_(21);
  EXPECT_FALSE(Handle(exec).has_error());
  EXPECT_EQ(Eval("doubled").value().int_(), 42);
  EXPECT_EQ(Eval("item").error().type(), "NameError");
}

TEST_F(PythonRunnerTest, CallResolvesModulesMainAndDottedNames) {
  internal::WorkerRequest call;
  call.mutable_call()->set_module("os.path");
  call.mutable_call()->set_function("join");
  call.mutable_call()->add_args()->set_str("a");
  call.mutable_call()->add_args()->set_str("b");
  EXPECT_EQ(Handle(call).value().str(), "a/b");

  Exec("def add(a, b=0):\n    return a + b\n");
  internal::WorkerRequest main;
  main.mutable_call()->set_module("__main__");
  main.mutable_call()->set_function("add");
  main.mutable_call()->add_args()->set_int_(1);
  (*main.mutable_call()->mutable_kwargs())["b"].set_int_(41);
  EXPECT_EQ(Handle(main).value().int_(), 42);

  internal::WorkerRequest dotted;
  dotted.mutable_call()->set_module("builtins");
  dotted.mutable_call()->set_function("str.upper");
  dotted.mutable_call()->add_args()->set_str("x");
  EXPECT_EQ(Handle(dotted).value().str(), "X");

  internal::WorkerRequest missing;
  missing.mutable_call()->set_module("no_such_module_here");
  missing.mutable_call()->set_function("f");
  EXPECT_EQ(Handle(missing).error().type(), "ModuleNotFoundError");
}

TEST_F(PythonRunnerTest, BadInputValuesAreFailuresNotExceptions) {
  internal::WorkerRequest request;
  request.mutable_eval()->set_code("x");
  v1::Value& x = (*request.mutable_eval()->mutable_locals())["x"];
  x.set_big_int("not a number");
  internal::WorkerResponse r = Handle(request);
  EXPECT_EQ(r.failure().code(),
            static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(r.failure().message(), HasSubstr("'x'"));
}

TEST_F(PythonRunnerTest, UnconvertibleResultIsAPythonError) {
  Exec("class Bad:\n    def __repr__(self): raise RuntimeError('boom')\n");
  internal::WorkerResponse r = Eval("Bad()");
  EXPECT_EQ(r.error().type(), "RuntimeError");
  EXPECT_THAT(r.error().message(), HasSubstr("while converting the result"));
  EXPECT_FALSE(r.has_value());
}

TEST_F(PythonRunnerTest, SystemExitDoesNotEndTheWorker) {
  EXPECT_EQ(Exec("raise SystemExit(3)").error().type(), "SystemExit");
  EXPECT_EQ(Eval("1 + 1").value().int_(), 2);
}

TEST_F(PythonRunnerTest, PendingInterruptDoesNotLeakIntoTheNextCall) {
  // A SIGINT that lands between calls must not interrupt the next call.
  Exec("import signal, os");
  Exec("os.kill(os.getpid(), signal.SIGINT) if False else None");
  raise(SIGINT);
  EXPECT_EQ(Eval("1 + 1").value().int_(), 2);
}

TEST_F(PythonRunnerTest, InterruptRaisesKeyboardInterrupt) {
  internal::WorkerResponse r =
      Exec("import os, signal\nos.kill(os.getpid(), signal.SIGINT)\n"
           "while True: pass\n");
  EXPECT_EQ(r.error().type(), "KeyboardInterrupt");
  EXPECT_EQ(Eval("2").value().int_(), 2);
}

// pyexecd tags each interrupt with the id of the call it is meant for
// (sigqueue). One that lands after the call's frame arrived but before the
// call started must still stop that call; one tagged for an earlier call
// must not.
void SendInterrupt(uint64_t request_id) {
  sigval value{};
  value.sival_ptr = reinterpret_cast<void*>(static_cast<uintptr_t>(request_id));
  ASSERT_EQ(sigqueue(getpid(), SIGINT, value), 0);
}

TEST_F(PythonRunnerTest, InterruptForTheCallAboutToStartIsKept) {
  SendInterrupt(41);
  internal::WorkerRequest request;
  request.set_id(41);
  request.mutable_exec()->set_code("import time\ntime.sleep(5)\n");
  absl::Time start = absl::Now();
  internal::WorkerResponse r = Handle(request);
  EXPECT_EQ(r.error().type(), "KeyboardInterrupt");
  EXPECT_LT(absl::Now() - start, absl::Seconds(4));
}

TEST_F(PythonRunnerTest, InterruptForAnEarlierCallIsDropped) {
  SendInterrupt(50);
  internal::WorkerRequest request;
  request.set_id(51);
  request.mutable_eval()->set_code("1 + 1");
  EXPECT_EQ(Handle(request).value().int_(), 2);
}

// The frames a client's side sends back during a callback: answers and
// nested calls, scripted per test. As a real client does, it sends a
// callback's answer only once the nested calls it made were answered.
class ScriptedReceiver {
 public:
  // When a callback asks, `answer` makes the frames pyexecd would send: the
  // nested calls first, the answer last.
  void Script(std::function<std::vector<internal::WorkerRequest>(
                  const internal::WorkerCallback&)> answer) {
    answer_ = std::move(answer);
  }
  // The receiver to give the runner.
  FrameReceiver Receiver(std::function<std::vector<internal::WorkerResponse>()> take_sent) {
    return [this, take_sent](absl::Time deadline) -> absl::StatusOr<std::string> {
      for (const internal::WorkerResponse& r : take_sent()) {
        if (r.has_callback()) {
          std::vector<internal::WorkerRequest> frames = answer_(r.callback());
          uint64_t last_nested = 0;
          for (internal::WorkerRequest& frame : frames) {
            if (frame.has_callback_answer() && last_nested != 0) {
              held_.emplace_back(last_nested, frame.SerializeAsString());
            } else {
              if (!frame.has_callback_answer()) last_nested = frame.id();
              queue_.push_back(frame.SerializeAsString());
            }
          }
        } else if (!r.partial()) {
          responses.push_back(r);
          for (auto it = held_.begin(); it != held_.end();) {
            if (it->first == r.id()) {
              queue_.push_back(std::move(it->second));
              it = held_.erase(it);
            } else {
              ++it;
            }
          }
        }
      }
      if (queue_.empty()) {
        if (deadline == absl::InfiniteFuture()) return absl::UnavailableError("no frame scripted");
        absl::SleepFor(std::max(absl::ZeroDuration(), deadline - absl::Now()));
        return absl::DeadlineExceededError("deadline");
      }
      std::string next = std::move(queue_.front());
      queue_.pop_front();
      return next;
    };
  }
  // Final responses of nested calls, as the runner sent them.
  std::vector<internal::WorkerResponse> responses;

 private:
  std::function<std::vector<internal::WorkerRequest>(const internal::WorkerCallback&)> answer_;
  std::deque<std::string> queue_;
  // Answers waiting for the response of the nested call with this id.
  std::vector<std::pair<uint64_t, std::string>> held_;
};

internal::WorkerRequest Answer(uint32_t seq, int64_t value) {
  internal::WorkerRequest r;
  r.mutable_callback_answer()->set_seq(seq);
  r.mutable_callback_answer()->mutable_value()->set_int_(value);
  return r;
}

TEST_F(PythonRunnerTest, PyexecCallAsksTheClientAndReturnsItsAnswer) {
  ScriptedReceiver script;
  script.Script([](const internal::WorkerCallback& cb) {
    // add(a, b=...): the client's function.
    int64_t sum = cb.args(0).int_() + cb.kwargs().at("b").int_();
    EXPECT_EQ(cb.name(), "add");
    return std::vector<internal::WorkerRequest>{Answer(cb.seq(), sum)};
  });
  runner_->SetFrameReceiver(script.Receiver(TakeSent));
  internal::WorkerRequest request;
  request.set_callbacks(true);
  request.mutable_eval()->set_code("__import__('pyexec').call('add', 2, b=40) + 0");
  internal::WorkerResponse r = Handle(request);
  EXPECT_EQ(r.value().int_(), 42) << r.DebugString();
  // erlang_python's spelling works too.
  request.mutable_eval()->set_code("__import__('erlang').call('add', 1, b=1)");
  EXPECT_EQ(Handle(request).value().int_(), 2);
}

TEST_F(PythonRunnerTest, AClientErrorRaisesCallbackErrorAndNoClientIsARuntimeError) {
  ScriptedReceiver script;
  script.Script([](const internal::WorkerCallback& cb) {
    internal::WorkerRequest r;
    r.mutable_callback_answer()->set_seq(cb.seq());
    r.mutable_callback_answer()->mutable_error()->set_type("badarg");
    r.mutable_callback_answer()->mutable_error()->set_message("no such function");
    return std::vector<internal::WorkerRequest>{r};
  });
  runner_->SetFrameReceiver(script.Receiver(TakeSent));
  internal::WorkerRequest request;
  request.set_callbacks(true);
  request.mutable_eval()->set_code(
      "(lambda p: (lambda: p.call('nope'))())(__import__('pyexec'))");
  internal::WorkerResponse r = Handle(request);
  EXPECT_EQ(r.error().type(), "CallbackError");
  EXPECT_THAT(r.error().message(), HasSubstr("badarg: no such function"));
  request.set_callbacks(false);
  r = Handle(request);
  EXPECT_EQ(r.error().type(), "RuntimeError");
  EXPECT_THAT(r.error().message(), HasSubstr("registered no functions"));
}

TEST_F(PythonRunnerTest, ACallbackGivesUpAtTheCallsDeadline) {
  ScriptedReceiver script;
  script.Script([](const internal::WorkerCallback&) {
    return std::vector<internal::WorkerRequest>{};  // the client never answers
  });
  runner_->SetFrameReceiver(script.Receiver(TakeSent));
  internal::WorkerRequest request;
  request.set_callbacks(true);
  request.set_timeout_ms(300);
  request.mutable_exec()->set_code(
      "try:\n    __import__('pyexec').call('slow')\nexcept TimeoutError as e:\n"
      "    timed_out = str(e)\n");
  const absl::Time start = absl::Now();
  internal::WorkerResponse r = Handle(request);
  EXPECT_FALSE(r.has_error()) << r.DebugString();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_THAT(Eval("timed_out").value().str(), HasSubstr("did not answer"));
}

// Re-entry: Python -> client -> Eval -> Python -> client, five levels.
TEST_F(PythonRunnerTest, TheClientsCallsDuringACallbackRunNested) {
  ScriptedReceiver script;
  script.Script([](const internal::WorkerCallback& cb) {
    const int64_t level = cb.args(0).int_();
    std::vector<internal::WorkerRequest> frames;
    if (level < 5) {
      internal::WorkerRequest nested;
      nested.set_id(1000 + level);
      nested.set_callbacks(true);
      nested.mutable_eval()->set_code(absl::StrCat("__import__('pyexec').call('down', ", level + 1,
                                                   ") + 1"));
      frames.push_back(nested);
    }
    // The answer itself comes once the nested call was answered: the
    // receiver queues them in order, and the runner answers the nested call
    // before it reads on.
    frames.push_back(Answer(cb.seq(), level * 100));
    return frames;
  });
  runner_->SetFrameReceiver(script.Receiver(TakeSent));
  internal::WorkerRequest request;
  request.set_callbacks(true);
  request.mutable_eval()->set_code("__import__('pyexec').call('down', 1)");
  internal::WorkerResponse r = Handle(request);
  EXPECT_EQ(r.value().int_(), 100) << r.DebugString();
  // Four nested calls answered, innermost first, each with its own id.
  ASSERT_EQ(script.responses.size(), 4u);
  EXPECT_EQ(script.responses[0].id(), 1004u);
  EXPECT_EQ(script.responses[0].value().int_(), 501);
  EXPECT_EQ(script.responses[3].id(), 1001u);
}

TEST_F(PythonRunnerTest, AwaitablesAreAwaitedOnTheSessionsLoop) {
  ASSERT_FALSE(Exec("import asyncio\n"
                    "async def twice(x):\n"
                    "    await asyncio.sleep(0.01)\n"
                    "    return 2 * x\n")
                   .has_error());
  EXPECT_EQ(Eval("twice(21)").value().int_(), 42);
  // Top-level await in Exec, and three sleeps gathered concurrently.
  const absl::Time start = absl::Now();
  ASSERT_FALSE(Exec("r = await asyncio.gather(*(asyncio.sleep(0.3, i) for i in range(3)))")
                   .has_error());
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(800));
  EXPECT_EQ(Eval("r").value().items_size(), 3);
  // The loop is kept: a task made in one call is still there in the next,
  // and runs whenever a call awaits.
  ASSERT_FALSE(Exec("t = asyncio.get_event_loop().create_task(twice(5))").has_error());
  EXPECT_FALSE(Eval("t.done()").value().bool_());
  EXPECT_EQ(Eval("await t").value().int_(), 10);
  EXPECT_EQ(Eval("t.result()").value().int_(), 10);
}

TEST_F(PythonRunnerTest, StreamsIterateIterablesAndSendMappingsWhole) {
  auto stream_call = [](const std::string& expr) {
    TakeSent();
    internal::WorkerRequest request;
    request.set_stream(true);
    request.set_max_refs(100);
    request.mutable_call()->set_module("__main__");
    request.mutable_call()->set_function("evaluate");
    request.mutable_call()->add_args()->set_str(expr);
    internal::WorkerResponse end = Handle(request);
    std::vector<v1::Value> values;
    for (const internal::WorkerResponse& r : TakeSent()) {
      if (r.has_value()) values.push_back(r.value());
    }
    EXPECT_FALSE(end.has_error()) << end.DebugString();
    return values;
  };
  ASSERT_FALSE(Exec("def evaluate(expr):\n    return eval(expr)\n").has_error());
  EXPECT_EQ(stream_call("range(5)").size(), 5u);
  EXPECT_EQ(stream_call("[1, 2, 3]").size(), 3u);
  EXPECT_EQ(stream_call("{1, 2}").size(), 2u);
  EXPECT_EQ(stream_call("'abc'").size(), 1u);
  EXPECT_EQ(stream_call("b'abc'").size(), 1u);
  EXPECT_EQ(stream_call("{'a': 1, 'b': 2}").size(), 1u);
  EXPECT_EQ(stream_call("42").size(), 1u);
  ASSERT_FALSE(Exec("async def agen(n):\n"
                    "    for i in range(n):\n"
                    "        yield i\n").has_error());
  std::vector<v1::Value> items = stream_call("agen(4)");
  ASSERT_EQ(items.size(), 4u);
  EXPECT_EQ(items[3].int_(), 3);
}

TEST_F(PythonRunnerTest, SnapshotReadsTheSessionAndChangesNothing) {
  ASSERT_FALSE(Exec("snap_items = [1, 2]\n"
                    "snap_gen = (i for i in range(3))\n"
                    "def snap_fn():\n"
                    "    return snap_items\n").has_error());
  internal::WorkerRequest make_ref;
  make_ref.set_max_refs(100);
  make_ref.mutable_eval()->set_code("snap_items");
  make_ref.mutable_eval()->set_result_as_ref(true);
  const std::string ref = Handle(make_ref).value().ref().id();
  ASSERT_FALSE(ref.empty());
  // Every name and the identity of its value.
  const std::string fingerprint = "sorted((k, id(v)) for k, v in globals().items())";
  const std::string before = Eval(fingerprint).value().SerializeAsString();

  internal::WorkerRequest request;
  request.set_max_refs(100);
  request.mutable_snapshot()->set_max_bytes(64 << 20);
  internal::WorkerResponse r = Handle(request);
  ASSERT_TRUE(r.has_snapshot()) << r.DebugString();
  EXPECT_GE(r.snapshot().refs(), 1u);
  bool listed = false;
  for (const v1::LostName& lost : r.snapshot().lost()) {
    listed = listed || lost.name() == "snap_gen";
  }
  EXPECT_TRUE(listed) << r.snapshot().DebugString();

  EXPECT_EQ(Eval(fingerprint).value().SerializeAsString(), before);
  EXPECT_EQ(Eval("next(snap_gen)").value().int_(), 0);  // not advanced
  EXPECT_TRUE(Eval("snap_fn() is snap_items and snap_items == [1, 2]").value().bool_());
  internal::WorkerRequest use_ref;
  use_ref.mutable_eval()->set_code("ref is snap_items");
  (*use_ref.mutable_eval()->mutable_locals())["ref"].mutable_ref()->set_id(ref);
  EXPECT_TRUE(Handle(use_ref).value().bool_());
}

TEST_F(PythonRunnerTest, SnapshotAndRestoreNeedABoundSession) {
  internal::WorkerRequest snapshot;
  snapshot.set_fresh_namespace(true);
  snapshot.mutable_snapshot()->set_max_bytes(1 << 20);
  internal::WorkerResponse r = Handle(snapshot);
  EXPECT_EQ(r.failure().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(r.failure().message(), HasSubstr("bound session"));
  internal::WorkerRequest restore;
  restore.set_fresh_namespace(true);
  restore.mutable_restore()->set_state("x");
  EXPECT_EQ(Handle(restore).failure().code(),
            static_cast<int>(absl::StatusCode::kInvalidArgument));
}

TEST_F(PythonRunnerTest, SnapshotPastMaxBytesIsResourceExhausted) {
  ASSERT_FALSE(Exec("snap_big = bytes(100_000)").has_error());
  internal::WorkerRequest request;
  request.mutable_snapshot()->set_max_bytes(50'000);
  internal::WorkerResponse r = Handle(request);
  EXPECT_EQ(r.failure().code(), static_cast<int>(absl::StatusCode::kResourceExhausted));
  EXPECT_FALSE(r.has_snapshot());
  EXPECT_EQ(Eval("len(snap_big)").value().int_(), 100'000);
  Exec("del snap_big");
}

}  // namespace
}  // namespace pyexec
