#!/usr/bin/env bash
# Uses the client as a rebar3 user would: a scratch project that depends on
# pyexec through git_subdir (clients/erlang/pyexec of this repository,
# fetched with git from a file:// URL, so offline) is compiled, and a
# program of its own calls a real pyexecd through it.
#
#   clients/erlang/scripts/check_rebar3_dep.sh
#
# PYEXECD: the pyexecd binary (as for run_tests.sh). The dependency is the
# repository's HEAD commit: uncommitted changes are not part of the check.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
PYEXECD="${PYEXECD:-$root/bazel-bin/server/pyexecd}"

if ! rev="$(git -C "$root" rev-parse --verify -q HEAD)"; then
  echo "check_rebar3_dep: $root is not a git checkout with a commit" >&2
  exit 1
fi
if [ -n "$(git -C "$root" status --porcelain -- clients/erlang/pyexec)" ]; then
  echo "check_rebar3_dep: note: uncommitted changes in clients/erlang/pyexec are not checked" >&2
fi

scratch="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$scratch"
}
trap cleanup EXIT

mkdir -p "$scratch/app/src"
cat > "$scratch/app/rebar.config" <<EOF
{deps, [{pyexec, {git_subdir, "file://$root", {ref, "$rev"}, "clients/erlang/pyexec"}}]}.
EOF
cat > "$scratch/app/src/scratch.app.src" <<'EOF'
{application, scratch,
 [{description, "uses pyexec as a rebar3 dependency"}, {vsn, "0.1.0"},
  {applications, [kernel, stdlib, pyexec]}, {modules, []}]}.
EOF
cat > "$scratch/app/src/scratch.erl" <<'EOF'
-module(scratch).
-export([main/1]).

main([PortArg]) ->
    application:load(pyexec),
    ok = application:set_env(pyexec, endpoints, [{"127.0.0.1", list_to_integer(PortArg)}]),
    {ok, _} = application:ensure_all_started(scratch),
    {ok, 2} = py:eval(<<"1 + 1">>),
    {ok, 4.0} = py:call(math, sqrt, [16]),
    %% A leased context, a callback into this program, snapshot and restore.
    {ok, Ctx} = py:bind(new),
    ok = py:register_function(double, fun([X]) -> 2 * X end),
    ok = py:exec(Ctx, <<"def f(x):\n    return erlang.call('double', x) + 1">>),
    {ok, 21} = py:call(Ctx, '__main__', f, [10]),
    {ok, Blob, []} = py:snapshot(Ctx),
    {ok, Ctx2, []} = py:restore(Blob, #{lease => false}),
    {ok, 41} = py:call(Ctx2, '__main__', f, [20]),
    ok = py:unbind(Ctx2),
    ok = py:unbind(Ctx),
    io:format("scratch: ok~n"),
    halt(0).
EOF

# Own rebar3 cache: nothing of the user's is read or written.
export REBAR_CACHE_DIR="$scratch/rebar3-cache"
(cd "$scratch/app" && rebar3 compile)

# The listening line gives the port (127.0.0.1:0: a free one).
"$PYEXECD" --listen=127.0.0.1:0 --workers=1 --max_workers=2 > "$scratch/server.log" 2>&1 &
server_pid=$!
port=""
for _ in $(seq 1 600); do
  port="$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$scratch/server.log" | head -1)"
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null \
    || { echo "check_rebar3_dep: $PYEXECD exited" >&2; cat "$scratch/server.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$port" ] || { echo "check_rebar3_dep: pyexecd did not start" >&2; cat "$scratch/server.log" >&2; exit 1; }

# rebar3 3.19's `path` leaves git_subdir applications out; take the ebin
# directories the build made.
ebins=$(find "$scratch/app/_build/default/lib" -type d -name ebin)
out="$(cd "$scratch/app" && timeout 60 erl -noshell $(printf -- '-pa %s ' $ebins) -run scratch main "$port")" \
  || { echo "$out" >&2; echo "check_rebar3_dep: the scratch program failed" >&2; exit 1; }
echo "$out"
[ "$out" = "scratch: ok" ]
