#!/bin/bash
# Runs python_literal_differential_test.py on Debian's python3 (the Python
# that pyexec's workers embed, so ast.literal_eval is the same language).
exec /usr/bin/python3 -B "$1" "$2"
