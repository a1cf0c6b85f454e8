#!/bin/bash
# The pyexec binary exits 64 on usage errors, including the ones that
# absl::ParseCommandLine would otherwise turn into exit status 1.
set -u
bin="${TEST_SRCDIR}/pyexec/clients/cpp/pyexec"
fail=0

expect() {  # expect CODE ARGS...
  local want=$1; shift
  "$bin" "$@" >/dev/null 2>"${TEST_TMPDIR}/err"
  local got=$?
  if [[ $got != "$want" ]]; then
    echo "FAIL: pyexec $* exited $got, want $want"; cat "${TEST_TMPDIR}/err"; fail=1
  fi
}

expect 64
expect 64 --bogus=1 stats
expect 64 --timeout=soon stats
expect 64 --timeout
expect 64 call math fabs -3        # a negative number without --
expect 64 nonsense
# Unreachable server with a short deadline: an RPC error.
expect 2 --addr=127.0.0.1:1 --timeout=2s stats
expect 2 --addr=127.0.0.1:1 --timeout 2s call math fabs -- -3
"$bin" --addr=127.0.0.1:1 --timeout=2s stats 2>&1 | grep -q '^pyexec: UNAVAILABLE: ' \
  || { echo "FAIL: no 'pyexec: UNAVAILABLE:' line"; fail=1; }
# --str passes the next argument through flag parsing untouched, even one
# that starts with '-', so these reach the (unreachable) server.
expect 2 --addr=127.0.0.1:1 --timeout=2s call math fabs --str -3
expect 2 --addr=127.0.0.1:1 --timeout=2s call builtins len --str --str
expect 2 --addr=127.0.0.1:1 --timeout=2s call builtins len --str=-3
expect 2 --addr=127.0.0.1:1 --timeout=2s call builtins len -- --str -x
expect 64 --addr=127.0.0.1:1 call builtins len --str
expect 64 --addr=127.0.0.1:1 call re match '[a-z]+' abc   # not a literal: use --str
expect 64 --addr=127.0.0.1:1 exec @"${TEST_TMPDIR}/missing.py"
expect 64 --addr=127.0.0.1:1 interrupt
expect 64 --addr=127.0.0.1:1 release TOKEN
echo 'x = 1' > "${TEST_TMPDIR}/code.py"
expect 2 --addr=127.0.0.1:1 --timeout=2s exec @"${TEST_TMPDIR}/code.py"
# Token and TLS flags: bad combinations are usage errors that never show the
# token.
expect 64 --token=sekrit-1 --token_file="${TEST_TMPDIR}/none" stats
expect 64 --token_file="${TEST_TMPDIR}/none" stats
expect 64 --tls_ca_file="${TEST_TMPDIR}/none.pem" stats
expect 64 --tls_cert_file="${TEST_TMPDIR}/none.pem" stats   # no key
expect 64 --tokn=sekrit-2 stats
for args in "--token=sekrit-1 --token_file=${TEST_TMPDIR}/none" "--tokn=sekrit-2"; do
  if "$bin" $args stats 2>&1 | grep -q sekrit; then
    echo "FAIL: pyexec $args printed the token"; fail=1
  fi
done
# $PYEXEC_TOKEN is read, and an RPC error does not print it.
if PYEXEC_TOKEN=sekrit-3 "$bin" --addr=127.0.0.1:1 --timeout=2s stats 2>&1 | grep -q sekrit; then
  echo "FAIL: the RPC error printed the token"; fail=1
fi
exit $fail
