#!/bin/bash
# Runs repl_helper_test.py on Debian's python3 (the Python the workers embed).
exec /usr/bin/python3 -B "$1" "$2"
