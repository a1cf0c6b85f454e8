"""Runs one statement of `pyexec repl` in a pyexec session, as python3 -i
runs what is typed at its prompt.

The REPL (cli_repl.cc) embeds this file at build time and, for each
statement, sends an ExecStream whose code executes it in a namespace of its
own, with two names set:
    namespace  the session's globals (its __main__), where the statement runs
    source     the statement, complete by codeop's rules
So the session gains no names from the REPL's machinery.

What python3 -i does, done here:
- the statement is compiled in 'single' mode: every expression statement
  calls sys.displayhook, which prints the repr of a value that is not None
  and sets builtins._ (`x = 1; x` prints 1; `1; 2` prints 1 then 2);
- an exception is printed on stderr, with the statement's own frames
  (this file's frames are dropped), as code.InteractiveInterpreter does
  (a replaced sys.excepthook gets it instead), and kept in sys.last_type,
  sys.last_value and sys.last_traceback for pdb.pm(); a SyntaxError shows
  the offending line and a caret;
- SystemExit ends the REPL: it is raised again with an int code (None is 0;
  anything else is printed on stderr and is 1), and the REPL exits with it.
Output goes to the session's sys.stdout and sys.stderr, which the server
streams to the REPL as it is written.

The one difference: input() cannot read the user's terminal (the code runs
in another process, maybe on another machine, and the session's stdin is not
connected to anything), so while a REPL statement runs, Python's
builtins.input raises EOFError with a message that says so, instead of the
bare "EOF when reading a line". Other clients of the same session see the
real input() again once the statement ends; an input() that user code
installed is left alone.
"""
import builtins
import codeop
import sys
import traceback

INPUT_UNAVAILABLE = (
    'input() is not available in pyexec repl: the code runs in a remote '
    'interpreter whose stdin is not connected to this terminal. Assign the '
    'value instead (name = "Ada"), or use `pyexec exec -` to run a script '
    'that needs no input.')


def input(prompt=''):
    raise EOFError(INPUT_UNAVAILABLE)


def _show_exception(compiling):
    """Shows the exception being handled as python3 -i does (code.py's
    showtraceback and showsyntaxerror): the statement's frames without this
    file's (so input() above shows no frame of its own, like the real one);
    a compile error without any."""
    exc_type, exc, tb = sys.exc_info()
    sys.last_type, sys.last_value, sys.last_traceback = exc_type, exc, tb
    if sys.excepthook is not sys.__excepthook__:
        sys.excepthook(exc_type, exc, tb)  # the user's hook sees it all
        return
    if compiling:
        lines = traceback.format_exception_only(exc_type, exc)
    else:
        shown = traceback.TracebackException(exc_type, exc, tb)
        shown.stack = traceback.StackSummary.from_list(
            [f for f in shown.stack if f.filename != _run.__code__.co_filename])
        lines = shown.format()
    sys.stderr.write(''.join(lines))


def _exit_code(exc):
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _run(namespace, source):
    try:
        # codeop treats a comment-only line as `pass`, as the prompt does;
        # compile() reports the SyntaxError of what codeop calls incomplete.
        code = codeop.compile_command(source, '<stdin>', 'single') \
            or compile(source, '<stdin>', 'single')
    except (SyntaxError, OverflowError, ValueError):
        _show_exception(compiling=True)
        return
    real_input = builtins.input
    # Only Python's own input() is replaced: one that user code installed
    # may well work.
    replace = getattr(real_input, '__self__', None) is builtins
    if replace:
        builtins.input = input
    try:
        exec(code, namespace)
    except SystemExit as e:
        raise SystemExit(_exit_code(e)) from None
    except BaseException:
        _show_exception(compiling=False)
    finally:
        if replace and builtins.input is input:
            builtins.input = real_input


_run(namespace, source)
