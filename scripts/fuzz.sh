#!/usr/bin/env bash
# Builds the libFuzzer targets with --config=fuzz (clang-14, ASan + UBSan)
# and runs each one, from an empty corpus, for a bounded time or number of
# inputs. A crash, sanitizer report or timeout fails the run and leaves the
# reproducer (crash-*, timeout-*) in the corpus directory it prints.
#
#   scripts/fuzz.sh                      # CI smoke: 20 s per target
#   FUZZ_SECONDS=60 scripts/fuzz.sh
#   FUZZ_RUNS=1000000 scripts/fuzz.sh    # the long run (>= 10^6 inputs each)
#   scripts/fuzz.sh //server:request_fuzzer
#
# Ends with one "target: N inputs in S s, cov C, ft F, corpus K" line per target.
set -uo pipefail
cd "$(dirname "$0")/.."

targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(//server:request_fuzzer //common:frame_fuzzer //worker:python_value_fuzzer
           //clients/cpp:python_literal_fuzzer)
fi
bazel=(bazel)
bazel_flags=(--config=fuzz)
if [[ -d /work/.bazel-disk ]]; then bazel_flags+=(--disk_cache=/work/.bazel-disk); fi

"${bazel[@]}" build "${bazel_flags[@]}" "${targets[@]}" || exit 1
bin="$("${bazel[@]}" info "${bazel_flags[@]}" bazel-bin 2>/dev/null)"

if [[ -n "${FUZZ_RUNS:-}" ]]; then
  budget=(-runs="$FUZZ_RUNS")
else
  budget=(-max_total_time="${FUZZ_SECONDS:-20}")
fi

failed=0
summary=()
for target in "${targets[@]}"; do
  path="${target#//}"; path="${path/://}"
  name="${path##*/}"
  work="$(mktemp -d -t "pyexec_${name}.XXXXXX")"
  echo "=== $target (corpus and reproducers in $work)"
  log="$work/fuzz.log"
  start=$SECONDS
  # Embedded CPython keeps its objects until exit: leak checking is
  # meaningful for the C++-only targets alone.
  leaks=1
  [[ "$name" == python_value_fuzzer ]] && leaks=0
  (cd "$work" && ASAN_OPTIONS="detect_leaks=$leaks" \
    "$bin/$path" "$work" "${budget[@]}" -max_len=4096 -timeout=25 \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/") >"$log" 2>&1
  rc=$?
  secs=$((SECONDS - start))
  tail -n 3 "$log" | sed 's/^/  /'
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
  last="$(grep -E '^#[0-9]+' "$log" | tail -n 1)"
  cov="$(sed -E -n 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")"
  ft="$(sed -E -n 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")"
  corp="$(sed -E -n 's/.* corp: ([0-9]+).*/\1/p' <<<"$last")"
  if ((rc != 0)); then
    failed=1
    echo "FAILED: $target (exit $rc); log and reproducer in $work"
    grep -E 'ERROR|SUMMARY|runtime error|deadly signal' "$log" | head -n 20
    summary+=("$target: FAILED after ${runs:-?} inputs in ${secs}s (see $work)")
  else
    summary+=("$target: ${runs:-?} inputs in ${secs}s, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}")
    rm -rf "$work"
  fi
done
echo
printf '%s\n' "${summary[@]}"
exit "$failed"
