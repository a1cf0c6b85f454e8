// `conformance` for the C++ client: runs every case of
// clients/conformance/vectors.json (or $PYEXEC_CONFORMANCE) through the public
// API of clients/cpp/client.h against a real pyexecd (the runfile, or
// $PYEXECD) started on port 0 with --lease_grace=1s, as
// clients/conformance/README.md describes. The C++ client's native value is
// v1::Value itself, so the tagged JSON is built with the Make* builders of
// value.h and results are compared kind by kind. Callback cases register
// their functions on a Client of their own (Client::RegisterFunction); the
// lease case destroys the Client that bound the session; the interrupt race
// starts each call as a PendingCall and interrupts it by name.

#include <cmath>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "bench/process.h"
#include "clients/cpp/client.h"
#include "clients/cpp/value.h"
#include "gtest/gtest.h"
#include "integration_tests/cpp_client_testing.h"
#include "nlohmann/json.hpp"

namespace pyexec {
namespace {

using json = nlohmann::json;

using testing_util::Runfile;

// The server's address, for cases that need a Client of their own.
std::string g_address;

// A failed case: the runner records the message and goes on.
struct CaseError {
  std::string message;
};

const std::pair<std::string, json>& Tag(const json& tagged, std::pair<std::string, json>* out) {
  if (!tagged.is_object() || tagged.size() != 1) {
    throw CaseError{absl::StrCat("malformed tagged value ", tagged.dump())};
  }
  *out = {tagged.begin().key(), tagged.begin().value()};
  return *out;
}

double JsonFloat(const json& x) {
  if (x.is_string()) {
    const std::string s = x.get<std::string>();
    if (s == "nan") return std::nan("");
    if (s == "inf") return INFINITY;
    if (s == "-inf") return -INFINITY;
    throw CaseError{absl::StrCat("bad float ", s)};
  }
  return x.get<double>();
}

std::string Unbase64(const json& x) {
  std::string out;
  if (!absl::Base64Unescape(x.get<std::string>(), &out)) {
    throw CaseError{absl::StrCat("bad base64 ", x.dump())};
  }
  return out;
}

v1::Value ToValue(const json& tagged) {
  std::pair<std::string, json> t;
  const auto& [tag, x] = Tag(tagged, &t);
  if (tag == "none") return MakeNone();
  if (tag == "bool") return MakeBool(x.get<bool>());
  if (tag == "int") {
    absl::StatusOr<v1::Value> v = MakeBigInt(x.get<std::string>());
    if (!v.ok()) throw CaseError{v.status().ToString()};
    return *v;
  }
  if (tag == "float") return MakeFloat(JsonFloat(x));
  if (tag == "str") return MakeStr(x.get<std::string>());
  if (tag == "bytes") return MakeBytes(Unbase64(x));
  if (tag == "list" || tag == "tuple" || tag == "set") {
    std::vector<v1::Value> items;
    for (const json& item : x) items.push_back(ToValue(item));
    if (tag == "list") return MakeList(std::move(items));
    if (tag == "tuple") return MakeTuple(std::move(items));
    return MakeSet(std::move(items));
  }
  if (tag == "dict") {
    std::vector<std::pair<v1::Value, v1::Value>> entries;
    for (const json& kv : x) entries.emplace_back(ToValue(kv.at(0)), ToValue(kv.at(1)));
    return MakeDict(std::move(entries));
  }
  if (tag == "opaque") {
    v1::Value v;
    v.mutable_opaque()->set_type(x.at("type").get<std::string>());
    v.mutable_opaque()->set_repr(x.value("repr", ""));
    return v;
  }
  throw CaseError{absl::StrCat("unknown tag ", tag)};
}

bool Matches(const v1::Value& got, const json& tagged);

// Every expected element matches a distinct element of `got` (sets, dicts).
template <typename Eq>
bool MatchUnordered(int n, const json& want, Eq eq) {
  if (static_cast<size_t>(n) != want.size()) return false;
  std::vector<bool> used(n, false);
  for (const json& w : want) {
    bool found = false;
    for (int i = 0; i < n && !found; ++i) {
      if (!used[i] && eq(i, w)) used[i] = found = true;
    }
    if (!found) return false;
  }
  return true;
}

bool Matches(const v1::Value& got, const json& tagged) {
  std::pair<std::string, json> t;
  const auto& [tag, x] = Tag(tagged, &t);
  if (tag == "none") return got.has_none();
  if (tag == "bool") return got.kind_case() == v1::Value::kBool && got.bool_() == x.get<bool>();
  if (tag == "int") {
    // The server sends int64 as `int` and only what lies beyond as `big_int`;
    // MakeBigInt makes the same choice, so comparing the two is exact.
    v1::Value want = ToValue(tagged);
    if (got.kind_case() != want.kind_case()) return false;
    return got.kind_case() == v1::Value::kInt ? got.int_() == want.int_()
                                             : got.big_int() == want.big_int();
  }
  if (tag == "float") {
    if (got.kind_case() != v1::Value::kFloat) return false;
    double want = JsonFloat(x);
    return got.float_() == want || (std::isnan(got.float_()) && std::isnan(want));
  }
  if (tag == "str") return got.kind_case() == v1::Value::kStr && got.str() == x.get<std::string>();
  if (tag == "bytes") return got.kind_case() == v1::Value::kBytes && got.bytes() == Unbase64(x);
  if (tag == "list" || tag == "tuple") {
    auto kind = tag == "list" ? v1::Value::kList : v1::Value::kTuple;
    if (got.kind_case() != kind || static_cast<size_t>(got.items_size()) != x.size()) return false;
    for (int i = 0; i < got.items_size(); ++i) {
      if (!Matches(got.items(i), x[i])) return false;
    }
    return true;
  }
  if (tag == "set") {
    return got.kind_case() == v1::Value::kSet &&
           MatchUnordered(got.items_size(), x,
                          [&](int i, const json& w) { return Matches(got.items(i), w); });
  }
  if (tag == "dict") {
    return got.kind_case() == v1::Value::kDict && got.keys_size() == got.items_size() &&
           MatchUnordered(got.items_size(), x, [&](int i, const json& w) {
             return Matches(got.keys(i), w.at(0)) && Matches(got.items(i), w.at(1));
           });
  }
  if (tag == "opaque") {
    return got.kind_case() == v1::Value::kOpaque && got.opaque().type() == x.at("type") &&
           (!x.contains("repr") || got.opaque().repr() == x.at("repr"));
  }
  throw CaseError{absl::StrCat("unknown tag ", tag)};
}

// The value of a call that must have succeeded.
const v1::Value& Ok(const absl::StatusOr<Result>& r, Result* keep) {
  if (!r.ok()) throw CaseError{absl::StrCat("status ", r.status().ToString())};
  if (!r->ok()) throw CaseError{absl::StrCat("Python error ", r->error->type(), ": ",
                                             r->error->message())};
  *keep = *r;
  return keep->value;
}

absl::StatusCode ExpectedCode(const std::string& name) {
  if (name == "session_not_found") return absl::StatusCode::kNotFound;
  if (name == "timeout") return absl::StatusCode::kDeadlineExceeded;
  if (name == "invalid_argument") return absl::StatusCode::kInvalidArgument;
  if (name == "resource_exhausted") return absl::StatusCode::kResourceExhausted;
  throw CaseError{absl::StrCat("unknown error class ", name)};
}

void ExpectStatus(const json& c, const absl::StatusOr<Result>& r) {
  absl::StatusCode want = ExpectedCode(c.at("expect").get<std::string>());
  if (r.ok()) {
    throw CaseError{absl::StrCat("expected ", absl::StatusCodeToString(want), ", got ",
                                 r->ok() ? FormatValue(r->value) : "a Python error")};
  }
  if (r.status().code() != want) {
    throw CaseError{absl::StrCat("expected ", absl::StatusCodeToString(want), ", got ",
                                 r.status().ToString())};
  }
}

Session MustBind(const Client& client) {
  absl::StatusOr<Session> s = Session::Bind(client);
  if (!s.ok()) throw CaseError{absl::StrCat("bind: ", s.status().ToString())};
  return std::move(*s);
}

void RunStatus(const Client& client, const json& c) {
  const std::string scenario = c.at("scenario").get<std::string>();
  if (scenario == "unbind_then_eval") {
    Session s = MustBind(client);
    std::string token = s.token();
    if (absl::Status st = s.Unbind(); !st.ok()) throw CaseError{st.ToString()};
    ExpectStatus(c, client.Eval(token, "1"));
  } else if (scenario == "unknown_token") {
    ExpectStatus(c, client.Eval("0000000000000000deadbeefdeadbeef", "1"));
  } else if (scenario == "deadline_interrupts") {
    Session s = MustBind(client);
    Result keep;
    Ok(s.Exec("import time\nx = 1"), &keep);
    CallOptions opts;
    opts.timeout = absl::Seconds(c.at("timeout_seconds").get<double>());
    ExpectStatus(c, s.Eval("time.sleep(30)", {}, opts));
    const v1::Value& x = Ok(s.Eval("x"), &keep);
    if (!Matches(x, json{{"int", "1"}})) {
      throw CaseError{absl::StrCat("state after the interrupt: x = ", FormatValue(x))};
    }
    if (absl::Status st = s.Unbind(); !st.ok()) throw CaseError{st.ToString()};
  } else if (scenario == "empty_code") {
    ExpectStatus(c, client.Eval("", ""));
  } else if (scenario == "too_deep") {
    v1::Value nested = MakeList({});
    for (int i = 1; i < c.at("depth").get<int>(); ++i) nested = MakeList({nested});
    ExpectStatus(c, client.Eval("", "x", {{"x", nested}}));
  } else {
    throw CaseError{absl::StrCat("unknown scenario ", scenario)};
  }
}


std::vector<v1::Value> Args(const json& c) {
  std::vector<v1::Value> args;
  for (const json& a : c.at("args")) args.push_back(ToValue(a));
  return args;
}

ValueMap Kwargs(const json& c) {
  ValueMap kwargs;
  if (c.contains("kwargs")) {
    for (const auto& [k, v] : c.at("kwargs").items()) kwargs[k] = ToValue(v);
  }
  return kwargs;
}

// Runs `setup` on the session; an empty setup runs nothing (the server
// refuses empty code).
void Setup(const Session& s, const json& c) {
  if (!c.contains("setup")) return;
  const std::string setup = c.at("setup").get<std::string>();
  if (setup.empty()) return;
  Result keep;
  Ok(s.Exec(setup), &keep);
}

// `stream`: the values CallStream yields, in order, then a clean end.
void RunStream(const Client& client, const json& c) {
  std::optional<Session> s;
  if (c.contains("setup")) {
    s.emplace(MustBind(client));
    Setup(*s, c);
  }
  auto stream = client.CallStream(s ? s->token() : "", c.at("module").get<std::string>(),
                                  c.at("function").get<std::string>(), Args(c), Kwargs(c),
                                  CallOptions{absl::Seconds(30)});
  std::vector<v1::Value> items;
  bool ended = false;
  v1::CallEvent event;
  while (stream->Next(&event)) {
    if (ended) throw CaseError{"an event after `end`"};
    if (event.has_value()) items.push_back(event.value());
    if (event.has_end()) {
      if (event.end().has_error()) {
        throw CaseError{absl::StrCat("stream ended with ", event.end().error().type(), ": ",
                                     event.end().error().message())};
      }
      ended = true;
    }
  }
  if (absl::Status st = stream->Finish(); !st.ok()) throw CaseError{st.ToString()};
  if (!ended) throw CaseError{"no `end` event"};
  const json& want = c.at("expect_items");
  std::vector<std::string> got;
  for (const v1::Value& v : items) got.push_back(FormatValue(v));
  if (items.size() != want.size()) {
    throw CaseError{absl::StrCat("items [", absl::StrJoin(got, ", "), "], want ", want.dump())};
  }
  for (size_t i = 0; i < items.size(); ++i) {
    if (!Matches(items[i], want[i])) {
      throw CaseError{absl::StrCat("item ", i, " is ", got[i], ", want ", want[i].dump())};
    }
  }
}

// `ref`: a result with no kind is a Ref that goes back as an argument and
// is released.
void RunRef(const Client& client, const json& c) {
  Session s = MustBind(client);
  Setup(s, c);
  Result keep;
  const v1::Value& made = Ok(s.Eval(c.at("code").get<std::string>()), &keep);
  std::optional<Ref> ref = Ref::From(made);
  if (!ref.has_value()) throw CaseError{absl::StrCat("not a ref: ", FormatValue(made))};
  if (ref->type != c.at("type").get<std::string>()) {
    throw CaseError{absl::StrCat("ref type ", ref->type)};
  }
  const std::string use = c.at("use").get<std::string>();
  Result keep2;
  const v1::Value& used = Ok(s.Eval(use, {{"r", ref->ToValue()}}), &keep2);
  if (!Matches(used, c.at("expect"))) {
    throw CaseError{absl::StrCat("use gave ", FormatValue(used))};
  }
  absl::StatusOr<uint32_t> released = client.ReleaseRefs(s.token(), {ref->id});
  if (!released.ok()) throw CaseError{released.status().ToString()};
  if (*released != 1) throw CaseError{absl::StrCat("released ", *released)};
  absl::StatusOr<Result> after = s.Eval(use, {{"r", ref->ToValue()}});
  absl::StatusCode want = ExpectedCode(c.at("after_release").get<std::string>());
  if (after.ok() || after.status().code() != want) {
    throw CaseError{absl::StrCat("after release: ", after.ok() ? "ok" : after.status().ToString())};
  }
  if (absl::Status st = s.Unbind(); !st.ok()) throw CaseError{st.ToString()};
}

// A callback behaviour of the vectors as a registered function. "reenter"
// calls down(n) on the case's session through `client` from the callback's
// own thread: the client names the callback (x-pyexec-callback) by itself.
CallbackFunction Behaviour(const json& b, const Client& client, const std::string* session) {
  if (b.is_string() && b.get<std::string>() == "return_args") {
    return [](CallbackContext&, const std::vector<v1::Value>& args,
              const ValueMap&) -> absl::StatusOr<v1::Value> { return MakeList(args); };
  }
  if (b.is_string() && b.get<std::string>() == "never") {
    return [](CallbackContext& ctx, const std::vector<v1::Value>&,
              const ValueMap&) -> absl::StatusOr<v1::Value> {
      ctx.WaitForCancellation(absl::Seconds(60));
      return absl::CancelledError("never answers");
    };
  }
  if (b.is_string() && b.get<std::string>() == "reenter") {
    return [&client, session](CallbackContext&, const std::vector<v1::Value>& args,
                              const ValueMap&) -> absl::StatusOr<v1::Value> {
      if (args.size() != 1 || !args[0].has_int_()) {
        return absl::InvalidArgumentError("reenter takes [n]");
      }
      absl::StatusOr<Result> down =
          client.Call(*session, "__main__", "down", {args[0]}, {}, CallOptions{absl::Seconds(30)});
      if (!down.ok()) return down.status();
      if (!down->ok()) {
        return absl::UnknownError(absl::StrCat(down->error->type(), ": ", down->error->message()));
      }
      if (!down->value.has_int_()) return absl::InternalError("down() gave no int");
      return MakeInt(down->value.int_() + 1);
    };
  }
  if (b.is_object() && b.contains("return")) {
    v1::Value value = ToValue(b.at("return"));
    return [value](CallbackContext&, const std::vector<v1::Value>&,
                   const ValueMap&) -> absl::StatusOr<v1::Value> { return value; };
  }
  if (b.is_object() && b.contains("raise")) {
    std::string message = b.at("raise").get<std::string>();
    return [message](CallbackContext&, const std::vector<v1::Value>&,
                     const ValueMap&) -> absl::StatusOr<v1::Value> {
      return absl::UnknownError(message);
    };
  }
  throw CaseError{absl::StrCat("unknown callback behaviour ", b.dump())};
}

// `callback`: functions registered on a Client of the case's own (a Client
// with registered functions sends every call over Run).
void RunCallback(const Client& base, const json& c) {
  (void)base;
  absl::StatusOr<Client> connected = Client::Connect(g_address);
  if (!connected.ok()) throw CaseError{connected.status().ToString()};
  const Client client = *std::move(connected);
  std::string session;
  for (const auto& [name, behaviour] : c.at("functions").items()) {
    client.RegisterFunction(name, Behaviour(behaviour, client, &session));
  }
  const std::string op = c.value("op", "eval");
  if (op != "eval" && op != "exec_then_eval") throw CaseError{absl::StrCat("unknown op ", op)};
  CallOptions options;
  options.timeout = absl::Seconds(c.value("timeout_seconds", 10.0));
  // With no function registered a call is a plain one (pyexec.call raises
  // RuntimeError); an empty map of per-call functions sends it as a Run.
  if (c.at("functions").empty()) options.functions.emplace();
  std::optional<Session> s;
  if (c.contains("setup") || op == "exec_then_eval") {
    s.emplace(MustBind(client));
    session = s->token();
    Setup(*s, c);
  }
  absl::StatusOr<Result> r;
  if (op == "eval") {
    r = client.Eval(session, c.at("code").get<std::string>(), {}, options);
  } else {
    Result keep;
    Ok(client.Exec(session, c.at("code").get<std::string>(), {}, options), &keep);
    r = client.Eval(session, c.at("eval").get<std::string>(), {}, options);
  }
  if (!r.ok()) throw CaseError{absl::StrCat("status ", r.status().ToString())};
  if (c.contains("error")) {
    const json& want = c.at("error");
    if (r->ok()) throw CaseError{absl::StrCat("no Python error, got ", FormatValue(r->value))};
    if (r->error->type() != want.at("type").get<std::string>()) {
      throw CaseError{absl::StrCat("error ", r->error->type(), ": ", r->error->message())};
    }
    if (r->error->message().find(want.at("message_contains").get<std::string>()) ==
        std::string::npos) {
      throw CaseError{absl::StrCat("message ", r->error->message())};
    }
    return;
  }
  if (!r->ok()) {
    throw CaseError{absl::StrCat("Python error ", r->error->type(), ": ", r->error->message())};
  }
  if (!Matches(r->value, c.at("expect"))) {
    throw CaseError{absl::StrCat("got ", FormatValue(r->value), ", want ", c.at("expect").dump())};
  }
}

// `lease`: the Client that bound the session (with its default lease) is
// destroyed without Unbind; the session must be gone within grace + 3 s.
void RunLease(const Client& client, const json& c) {
  const double grace = c.at("grace_seconds").get<double>();
  const absl::StatusCode want = ExpectedCode(c.at("expect").get<std::string>());
  std::string token;
  {
    absl::StatusOr<Client> holder = Client::Connect(g_address);
    if (!holder.ok()) throw CaseError{holder.status().ToString()};
    absl::StatusOr<BindResult> bound = holder->Bind();
    if (!bound.ok()) throw CaseError{absl::StrCat("bind: ", bound.status().ToString())};
    if (!bound->leased) throw CaseError{"Bind did not lease the session"};
    token = bound->session;
    Result keep;
    Ok(holder->Eval(token, "1"), &keep);
  }  // the holder goes: its lease ends
  const absl::Time ended = absl::Now();
  const absl::Time limit = ended + absl::Seconds(grace + 3);
  while (true) {
    absl::StatusOr<Result> r = client.Eval(token, "1", {}, CallOptions{absl::Seconds(5)});
    if (!r.ok() && r.status().code() == want) break;
    if (absl::Now() > limit) {
      throw CaseError{absl::StrCat("session still there ", absl::FormatDuration(absl::Now() - ended),
                                   " after its client went: ",
                                   r.ok() ? "ok" : r.status().ToString())};
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  std::cout << "conformance lease: session gone " << absl::FormatDuration(absl::Now() - ended)
            << " after its client was destroyed (grace " << grace << " s)" << std::endl;
}

// `interrupt_race`: start a spinning call and interrupt that very call at
// once, `rounds` times; none may be lost.
void RunInterruptRace(const Client& client, const json& c) {
  const int rounds = c.at("rounds").get<int>();
  Session s = MustBind(client);
  int lost = 0;
  std::string first_loss;
  const absl::Time start = absl::Now();
  for (int i = 0; i < rounds; ++i) {
    PendingCall call = s.StartExec("while True: pass", {}, CallOptions{absl::Seconds(10)});
    absl::StatusOr<bool> interrupted = call.Interrupt(CallOptions{absl::Seconds(10)});
    absl::StatusOr<Result> outcome = call.Wait();
    const bool ok = interrupted.ok() && *interrupted && !outcome.ok() &&
                    outcome.status().code() == absl::StatusCode::kCancelled;
    if (!ok) {
      ++lost;
      if (first_loss.empty()) {
        first_loss = absl::StrCat(
            "round ", i, ": interrupt ",
            interrupted.ok() ? (*interrupted ? "true" : "false") : interrupted.status().ToString(),
            ", call ", outcome.ok() ? "ran to its end" : outcome.status().ToString());
      }
    }
  }
  std::cout << "conformance interrupt_race: " << rounds << " rounds, " << lost << " lost, "
            << absl::FormatDuration(absl::Now() - start) << std::endl;
  if (lost > 0) throw CaseError{absl::StrCat(lost, " of ", rounds, " lost; first: ", first_loss)};
  Result keep;
  Ok(s.Eval("1"), &keep);  // the session is fine
}

void RunCase(const Client& client, const json& c) {
  const std::string kind = c.at("kind").get<std::string>();
  Result keep;
  if (kind == "roundtrip") {
    v1::Value v = ToValue(c.at("value"));
    const v1::Value& got = Ok(client.Eval("", "x", {{"x", v}}), &keep);
    if (!Matches(got, c.at("value"))) {
      throw CaseError{absl::StrCat("round trip gave ", FormatValue(got))};
    }
    if (c.contains("python_type")) {
      Result keep2;
      const v1::Value& t = Ok(client.Eval("", "type(x).__name__", {{"x", v}}), &keep2);
      if (t.str() != c.at("python_type").get<std::string>()) {
        throw CaseError{absl::StrCat("server saw type ", FormatValue(t))};
      }
    }
  } else if (kind == "eval" || kind == "call") {
    auto op = [&](const std::string& session) {
      if (kind == "eval") return client.Eval(session, c.at("code").get<std::string>());
      std::vector<v1::Value> args;
      for (const json& a : c.at("args")) args.push_back(ToValue(a));
      ValueMap kwargs;
      if (c.contains("kwargs")) {
        for (const auto& [k, v] : c.at("kwargs").items()) kwargs[k] = ToValue(v);
      }
      return client.Call(session, c.at("module").get<std::string>(),
                         c.at("function").get<std::string>(), args, kwargs);
    };
    std::optional<Session> s;
    if (c.contains("setup")) {
      s.emplace(MustBind(client));
      Ok(s->Exec(c.at("setup").get<std::string>()), &keep);
    }
    const v1::Value& got = Ok(op(s ? s->token() : ""), &keep);
    if (!Matches(got, c.at("expect"))) {
      throw CaseError{absl::StrCat("got ", FormatValue(got), ", want ", c.at("expect").dump())};
    }
  } else if (kind == "python_error") {
    const std::string op = c.at("op").get<std::string>();
    if (op != "eval" && op != "exec") throw CaseError{absl::StrCat("unknown op ", op)};
    const std::string code = c.at("code").get<std::string>();
    absl::StatusOr<Result> r = op == "eval" ? client.Eval("", code) : client.Exec("", code);
    if (!r.ok()) throw CaseError{absl::StrCat("status ", r.status().ToString())};
    if (r->ok()) throw CaseError{"no Python error"};
    const json& want = c.at("error");
    if (r->error->type() != want.at("type").get<std::string>()) {
      throw CaseError{absl::StrCat("type ", r->error->type())};
    }
    if (r->error->message().find(want.at("message_contains").get<std::string>()) ==
        std::string::npos) {
      throw CaseError{absl::StrCat("message ", r->error->message())};
    }
    if (r->error->traceback().find(want.at("traceback_contains").get<std::string>()) ==
        std::string::npos) {
      throw CaseError{absl::StrCat("traceback ", r->error->traceback())};
    }
  } else if (kind == "status") {
    RunStatus(client, c);
  } else if (kind == "stream") {
    RunStream(client, c);
  } else if (kind == "ref") {
    RunRef(client, c);
  } else if (kind == "callback") {
    RunCallback(client, c);
  } else if (kind == "lease") {
    RunLease(client, c);
  } else if (kind == "interrupt_race") {
    RunInterruptRace(client, c);
  } else {
    throw CaseError{absl::StrCat("unknown kind ", kind)};
  }
}

// Runs every case of `cases` and returns the failures ("name: why").
std::vector<std::string> RunAll(const Client& client, const json& cases, int* passed) {
  std::vector<std::string> failures;
  *passed = 0;
  for (const json& c : cases) {
    std::string name = c.value("name", "?");
    try {
      RunCase(client, c);
      ++*passed;
    } catch (const CaseError& e) {
      failures.push_back(absl::StrCat(name, ": ", e.message));
    } catch (const json::exception& e) {
      failures.push_back(absl::StrCat(name, ": malformed case: ", e.what()));
    }
  }
  for (const std::string& f : failures) std::cout << "conformance FAIL " << f << "\n";
  std::cout << "conformance: " << *passed << " passed, " << failures.size() << " failed"
            << std::endl;
  return failures;
}

class ConformanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = testing_util::StartPyexecd({"--workers=2", "--max_workers=4", "--lease_grace=1s"},
                                         "pyexecd.log");
    ASSERT_NE(server_, nullptr);
    g_address = server_->address();
    auto client = Client::Connect(server_->address());
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::make_unique<Client>(std::move(*client));
  }

  std::unique_ptr<bench::ServerProcess> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(ConformanceTest, AllVectorsPass) {
  const char* override_path = std::getenv("PYEXEC_CONFORMANCE");
  std::string path = override_path != nullptr ? override_path
                                              : Runfile("clients/conformance/vectors.json");
  std::ifstream in(path);
  ASSERT_TRUE(in) << "cannot read " << path;
  json vectors = json::parse(in);
  int passed = 0;
  std::vector<std::string> failures = RunAll(*client_, vectors.at("cases"), &passed);
  EXPECT_GT(passed, 0);
  EXPECT_TRUE(failures.empty()) << absl::StrJoin(failures, "\n");
}

// The runner itself can fail: wrong kinds, wrong errors and unknown case
// kinds or scenarios are failures, never skips.
TEST_F(ConformanceTest, RunnerReportsFailures) {
  json cases = json::parse(R"json([
    {"name": "ok", "kind": "eval", "code": "1", "expect": {"int": "1"}},
    {"name": "tuple_is_not_list", "kind": "eval", "code": "(1,)", "expect": {"list": [{"int": "1"}]}},
    {"name": "float_is_not_int", "kind": "eval", "code": "3.0", "expect": {"int": "3"}},
    {"name": "bytes_is_not_str", "kind": "eval", "code": "b'a'", "expect": {"str": "a"}},
    {"name": "wrong_error", "kind": "status", "scenario": "empty_code", "expect": "timeout"},
    {"name": "new_kind", "kind": "telepathy", "code": "1"},
    {"name": "new_scenario", "kind": "status", "scenario": "interrupt", "expect": "timeout"},
    {"name": "stream_out_of_order", "kind": "stream", "module": "builtins", "function": "range",
     "args": [{"int": "2"}], "expect_items": [{"int": "1"}, {"int": "0"}]},
    {"name": "stream_one_missing", "kind": "stream", "module": "builtins", "function": "range",
     "args": [{"int": "2"}], "expect_items": [{"int": "0"}]},
    {"name": "callback_wrong_value", "kind": "callback", "functions": {"f": {"return": {"int": "1"}}},
     "code": "pyexec.call('f')", "expect": {"int": "2"}},
    {"name": "callback_error_expected", "kind": "callback", "functions": {"f": "return_args"},
     "code": "pyexec.call('f')", "error": {"type": "CallbackError", "message_contains": "x"}},
    {"name": "unknown_behaviour", "kind": "callback", "functions": {"f": "dance"},
     "code": "pyexec.call('f')", "expect": {"none": null}}
  ])json");
  int passed = 0;
  std::vector<std::string> failures = RunAll(*client_, cases, &passed);
  EXPECT_EQ(passed, 1);
  ASSERT_EQ(failures.size(), 11u) << absl::StrJoin(failures, "\n");
  EXPECT_EQ(failures[0].substr(0, failures[0].find(':')), "tuple_is_not_list");
  EXPECT_EQ(failures[5].substr(0, failures[5].find(':')), "new_scenario");
  EXPECT_EQ(failures[10].substr(0, failures[10].find(':')), "unknown_behaviour");
}

}  // namespace
}  // namespace pyexec
