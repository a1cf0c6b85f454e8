"""The code `pyexec repl` sends, run in plain python3 as a pyexec worker
runs it (exec in a __main__-like namespace): statements behave as at the
python3 -i prompt, and completions are rlcompleter's.

Usage: repl_helper_test.py PATH/TO/repl_code_print
"""
import builtins
import contextlib
import io
import subprocess
import sys
import unittest

TOOL = sys.argv.pop(1)


def code_for(kind, text):
    return subprocess.run([TOOL, kind], input=text.encode(), stdout=subprocess.PIPE,
                          check=True, timeout=30).stdout.decode()


class Session:
    """A namespace standing in for a session's __main__."""

    def __init__(self):
        self.ns = {'__name__': '__main__', '__builtins__': builtins}

    def run(self, source):
        """Runs `source` as the REPL would: (stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            exec(code_for('statement', source), self.ns)
        return out.getvalue(), err.getvalue()

    def complete(self, text):
        return eval(code_for('completion', text), self.ns)


class StatementTest(unittest.TestCase):

    def setUp(self):
        self.s = Session()

    def test_expression_statements_print_their_repr(self):
        self.assertEqual(self.s.run('x = 1; x'), ('1\n', ''))
        self.assertEqual(self.s.run('1; 2'), ('1\n2\n', ''))
        self.assertEqual(self.s.run('None'), ('', ''))
        self.assertEqual(self.s.run("'a' + 'b'"), ("'ab'\n", ''))
        self.assertEqual(self.s.run('print("p"); [x]'), ('p\n[1]\n', ''))
        self.assertEqual(self.s.run('for i in range(2): i\n'), ('0\n1\n', ''))

    def test_underscore_holds_the_last_value(self):
        self.s.run('40 + 2')
        self.assertEqual(self.s.run('_'), ('42\n', ''))
        self.s.run('None')  # None leaves _ alone
        self.assertEqual(self.s.run('_ + 1'), ('43\n', ''))

    def test_blocks_and_comments(self):
        self.assertEqual(self.s.run('def f(n):\n    return n * 2\n'), ('', ''))
        self.assertEqual(self.s.run('f(21)'), ('42\n', ''))
        self.assertEqual(self.s.run('# only a comment'), ('', ''))
        self.assertEqual(self.s.run("s = '''a\nb'''"), ('', ''))
        self.assertEqual(self.s.run('s'), ("'a\\nb'\n", ''))

    def test_the_session_gains_only_the_statements_names(self):
        before = set(self.s.ns)
        self.s.run('y = 2')
        self.assertEqual(set(self.s.ns) - before, {'y'})
        self.assertEqual(self.s.run('sorted(k for k in globals() if not k.startswith("__"))'),
                         ("['y']\n", ''))

    def test_exceptions_show_the_statements_frames_only(self):
        out, err = self.s.run('def g():\n    1/0\n')
        out, err = self.s.run('g()')
        self.assertEqual(out, '')
        self.assertEqual(err, 'Traceback (most recent call last):\n'
                              '  File "<stdin>", line 1, in <module>\n'
                              '  File "<stdin>", line 2, in g\n'
                              'ZeroDivisionError: division by zero\n')
        self.assertIs(sys.last_type, ZeroDivisionError)
        self.assertEqual(self.s.run('x = 5'), ('', ''))  # the session goes on

    def test_syntax_errors_show_the_line(self):
        out, err = self.s.run('1 +* 2')
        self.assertEqual(out, '')
        self.assertNotIn('Traceback', err)
        self.assertIn('  File "<stdin>", line 1\n    1 +* 2\n', err)
        self.assertTrue(err.endswith('SyntaxError: invalid syntax\n'), err)

    def test_input_says_why_it_cannot_read(self):
        real_input = builtins.input
        out, err = self.s.run('input("name? ")')
        self.assertEqual(out, '')
        self.assertTrue(err.startswith('Traceback (most recent call last):\n'
                                       '  File "<stdin>", line 1, in <module>\n'
                                       'EOFError: input() is not available in pyexec repl: '
                                       'the code runs in a remote interpreter whose stdin is '
                                       'not connected to this terminal.'), err)
        self.assertIs(builtins.input, real_input)  # restored for other callers
        out, err = self.s.run('try:\n    input()\nexcept EOFError:\n    print("eof")\n')
        self.assertEqual((out, err), ('eof\n', ''))
        # A statement that replaces input() itself keeps its replacement.
        try:
            self.s.run('import builtins; builtins.input = lambda p="": "typed"')
            self.assertEqual(self.s.run('input()'), ("'typed'\n", ''))
        finally:
            builtins.input = real_input

    def test_system_exit_ends_the_repl_with_an_int_code(self):
        for source, code, err in [('raise SystemExit', 0, ''), ('raise SystemExit(3)', 3, ''),
                                  ('import sys; sys.exit("bye")', 1, 'bye\n')]:
            with self.subTest(source=source):
                errors = io.StringIO()
                with self.assertRaises(SystemExit) as cm, contextlib.redirect_stderr(errors):
                    exec(code_for('statement', source), self.s.ns)
                self.assertEqual(cm.exception.code, code)
                self.assertEqual(str(cm.exception), str(code))
                self.assertEqual(errors.getvalue(), err)

    def test_source_with_quotes_escapes_and_unicode_arrives_intact(self):
        source = 'r"\\n" + \'"\' + "caf\u00e9 \U0001f600\\t"'
        self.assertEqual(self.s.run(source), (repr(eval(source)) + '\n', ''))


class CompletionTest(unittest.TestCase):

    def test_names_attributes_and_keywords(self):
        s = Session()
        s.run('import math; value = 1')
        self.assertIn('math.pi', s.complete('math.p'))
        self.assertIn('math.pow(', s.complete('math.p'))
        self.assertEqual(s.complete('math.factor'), ['math.factorial('])
        self.assertIn('value', s.complete('val'))
        self.assertIn('import ', s.complete('impo'))  # keywords come with their space
        self.assertEqual(s.complete('no_such_name.x'), [])
        self.assertEqual(s.complete("o'quote"), [])  # text is a literal, never code


if __name__ == '__main__':
    unittest.main()
