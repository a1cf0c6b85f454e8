"""pyexec_fuzz_test: a libFuzzer target that is also a regression test.

Under --config=fuzz (which sets --define=fuzzing=true) the binary links
libFuzzer's main (-fsanitize=fuzzer) and is run by scripts/fuzz.sh. In every
other build it links //common:fuzz_driver and runs as a cc_test over
`corpus` (if any) or a fixed pseudo-random input set.
"""

def pyexec_fuzz_test(name, srcs, deps = [], corpus = None, **kwargs):
    native.cc_test(
        name = name,
        srcs = srcs,
        deps = deps + select({
            "//common:fuzzing": [],
            "//conditions:default": ["//common:fuzz_driver"],
        }),
        linkopts = select({
            "//common:fuzzing": ["-fsanitize=fuzzer"],
            "//conditions:default": [],
        }),
        args = ["$(location %s)" % corpus] if corpus else [],
        data = [corpus] if corpus else [],
        **kwargs
    )
