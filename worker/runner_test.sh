#!/bin/sh
# Runs runner_test.py with the system python3, the interpreter the worker
# embeds (Debian's libpython3.11).
exec /usr/bin/python3 "$(dirname "$0")/runner_test.py"
