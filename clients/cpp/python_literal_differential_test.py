"""ParsePythonLiteral against Python's own ast.literal_eval, on hand-picked
and generated inputs: both must accept an input and agree on its value, or
both refuse it, except for the documented differences (DIFFERENCES below).

Usage: python_literal_differential_test.py PATH/TO/python_literal_repr
"""
import ast
import math
import random
import re
import subprocess
import sys
import warnings

warnings.simplefilter('ignore')  # invalid escapes, as the parser accepts them

TOOL = sys.argv[1]
COUNT = 6000

HAND_PICKED = [
    "None", "True", "False", "0", "00", "0_0", "-0", "+5", "- 5", "1_000", "1__0", "1_",
    "01", "0x1f", "0X_F", "0x", "0o17", "0o8", "0b101", "0b2", "0x1g", "1abc", "1j",
    "1.5", ".5", "1.", "1.e3", "1e", "1e+", "1e-5", "1E5", "09.5", "1_0.2_5", "1e1_0",
    "1e400", "-1e400", "1e-400", "5e-324", "1.7976931348623157e308", "0.1", "1..2",
    "'a'", '"a"', "'''a\nb'''", '"""a"b"""', "'a\nb'", "'a\\\nb'", "r'\\n'", "R'\\''",
    "r'\\'", "'\\q'", "'\\x41'", "'\\x4'", "'\\u00e9'", "'\\u12'", "'\\U0001F600'",
    "'\\U00110000'", "'\\0'", "'\\101'", "'\\1010'", "'\\777'", "'\\a\\b\\f\\v'",
    "b'\\x00\\xff'", "b'\\u0041'", "rb'\\x00'", "BR'a'", "b'caf\u00e9'", "'caf\u00e9'",
    "u'x'", "U'x'", "ur'x'", "f'x'", "'a' 'b'", "'a' b'b'", "b'a' b'b'", "('a'\n'b')",
    "[]", "[1,]", "[,]", "[1,,2]", "[1 2]", "[1, 2", "(1)", "(1,)", "()", "(,)",
    "{}", "{1: 2}", "{1, 2}", "{1,}", "{1: 2, 3}", "{1, 2: 3}", "{[1]: 2}", "{{}}",
    "{(1, [2]): 3}", "{**a}", "set()", "set( )", "set(1)", "frozenset()", "[1, # c\n 2]",
    "[1, \\\n 2]", " 1", "1 ", "\t[1]", "x", "true", "-True", "--1", "-(1)", "...",
    "Ellipsis", "1 + 2", "1 if 2 else 3", "'a' * 2", "[*a]", "(1 for x in y)", "@",
    "1, 2", "1,", "1 ,2,", ",", "1,,", "1\n", "\n1", "1\n,2", "'a'\n'b'", "- \\\n1",
    "2\n**3", "(2\n**3)", "1 # c\n", "[1]\n# c\n",
]

# Where the parser differs from ast.literal_eval on purpose (see
# python_literal.h). Each gets the input and returns True if the difference
# is one of these.
def documented_difference(text, ours_ok, py_ok):
    if ours_ok and not py_ok:
        # Extensions: nan and inf, INT**INT.
        return bool(re.search(r'\b(nan|inf)\b', text)) or '**' in text
    if py_ok and not ours_ok:
        # Refusals: complex numbers (no Value kind), \N{...}, lone surrogates
        # (not UTF-8), octal escapes past 0o377 in bytes (Python 3.11 keeps
        # the low byte and warns), ints computed past kMaxComputedIntDigits,
        # a str with U+0000 is fine but a source NUL is not (Python agrees).
        # Also Ellipsis (no Value kind) and a sign before parentheses, -(1).
        return (bool(re.search(r'[0-9.][jJ]', text)) or '\\N' in text or '...' in text
                or bool(re.search(r'[-+]\s*\(', text))
                or bool(re.search(r'\\(u[dD][89abAB]|u[dD][c-fC-F]|U0000[dD][89a-fA-F])', text))
                or bool(re.search(r'[bB][rR]?[\'"].*\\[4-7]', text)))
    return False


def canonical(v):
    """A form of v that equality compares the way the wire does: 1, 1.0 and
    True differ, nan equals nan, -0.0 differs from 0.0, sets ignore order."""
    if isinstance(v, bool) or v is None:
        return (type(v).__name__, v)
    if isinstance(v, int):
        return ('int', v)
    if isinstance(v, float):
        if math.isnan(v):
            return ('float', 'nan')
        return ('float', v, math.copysign(1, v))
    if isinstance(v, (str, bytes)):
        return (type(v).__name__, v)
    if isinstance(v, (list, tuple)):
        return (type(v).__name__, tuple(canonical(x) for x in v))
    if isinstance(v, (set, frozenset)):
        return ('set', frozenset(canonical(x) for x in v))
    if isinstance(v, dict):
        return ('dict', tuple((canonical(k), canonical(x)) for k, x in v.items()))
    return ('other', repr(v))


def py_eval(text):
    try:
        return True, ast.literal_eval(text)
    except Exception:  # SyntaxError, ValueError, TypeError, MemoryError...
        return False, None


def load_repr(text):
    """Our repr (or an input we accept) as a Python value; nan and inf are
    names there. Only for text the parser accepted, so never huge."""
    return eval(text, {'__builtins__': {'set': set}, 'nan': math.nan, 'inf': math.inf})


def generate(rng, depth=0):
    pick = rng.randrange(14 if depth < 3 else 9)
    if pick == 0:
        return rng.choice(['None', 'True', 'False'])
    if pick == 1:
        digits = str(rng.randrange(10 ** rng.randrange(1, 40)))
        if rng.random() < 0.3 and len(digits) > 2:
            i = rng.randrange(1, len(digits))
            digits = digits[:i] + '_' + digits[i:]
        return rng.choice(['', '-', '+', '- ']) + digits
    if pick == 2:
        prefix = rng.choice(['0x', '0o', '0b', '0X', '0O', '0B'])
        alphabet = {'x': '0123456789abcdefABCDEF', 'o': '01234567', 'b': '01'}[prefix[1].lower()]
        digits = ''.join(rng.choice(alphabet) for _ in range(rng.randrange(1, 30)))
        return rng.choice(['', '-']) + prefix + rng.choice(['', '_']) + digits
    if pick == 3:
        mantissa = rng.choice(['1.5', '.25', '3.', '10', '0.1', '123_456.7_8', '9' * 20])
        exp = rng.choice(['', 'e5', 'E-3', 'e+308', 'e-320', 'e400', 'e0'])
        if '.' not in mantissa and not exp:
            exp = 'e1'
        return rng.choice(['', '-']) + mantissa + exp
    if pick == 4:
        return string_literal(rng)
    if pick == 5:
        return str(rng.randrange(12)) + rng.choice(['**', ' ** ']) + str(rng.randrange(70))
    if pick == 6:
        return rng.choice(['nan', 'inf', '-inf', 'set()'])
    if pick == 7:
        return ' '.join(string_literal(rng, bytes_=False) for _ in range(rng.randrange(1, 4)))
    if pick == 8:
        return rng.choice(['0', '-0.0', '"\\x00"', "b''", "''"])
    items = [generate(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    sep = rng.choice([', ', ',', ' , ', ',\n '])
    trailing = rng.choice(['', ','])
    if pick == 9:
        return '[' + sep.join(items) + (trailing if items else '') + ']'
    if pick == 10:
        if len(items) == 1:
            return '(' + items[0] + ',)'
        return '(' + sep.join(items) + ')'
    if pick == 11:
        keys = [rng.choice([str(rng.randrange(50)), repr(chr(97 + rng.randrange(5))),
                            '(1, 2)', 'None', '2.5', "b'k'"]) for _ in items]
        return '{' + sep.join('%s: %s' % kv for kv in zip(keys, items)) + '}'
    if pick == 12:
        elems = [rng.choice([str(rng.randrange(9)), "'s'", '(1,)', '1.0', 'True'])
                 for _ in range(rng.randrange(1, 4))]
        return '{' + sep.join(elems) + '}'
    return '(' + generate(rng, depth + 1) + ')'


def string_literal(rng, bytes_=None):
    if bytes_ is None:
        bytes_ = rng.random() < 0.3
    raw = rng.random() < 0.2
    prefix = ('b' if bytes_ else rng.choice(['', '', 'u'])) + ('r' if raw else '')
    if rng.random() < 0.3:
        prefix = prefix.upper()
    quote = rng.choice(["'", '"', "'''", '"""'])
    pieces = []
    for _ in range(rng.randrange(0, 6)):
        pieces.append(rng.choice(
            ['a', ' ', 'xyz', '\\n', '\\t', '\\\\', "\\'", '\\"', '\\x41', '\\x7f', '\\0',
             '\\12', '\\377', '\\q', '\\d', '#', '\\\n'] +
            ([] if bytes_ else ['\u00e9', '\u20ac', '\U0001f600', '\\u00e9', '\\U0001F600',
                                '\\u200b'])))
    body = ''.join(pieces)
    if quote in ("'", '"'):
        body = body.replace(quote, '')
        if raw:
            body = body.rstrip('\\')
    return prefix + quote + body + quote


def damage(rng, text):
    for _ in range(rng.randrange(1, 3)):
        if not text:
            break
        i = rng.randrange(len(text))
        op = rng.randrange(3)
        if op == 0:
            text = text[:i] + text[i + 1:]
        elif op == 1:
            text = text[:i] + rng.choice(list("[](){}:,'\"\\*_.ejxb0 \n#-")) + text[i:]
        else:
            j = rng.randrange(len(text))
            text = text[:i] + text[j] + text[i + 1:]
    return text


def main():
    rng = random.Random(15)
    cases = list(HAND_PICKED)
    while len(cases) < COUNT:
        text = generate(rng)
        if rng.random() < 0.05:  # a tuple without parentheses
            text += rng.choice([',', ', ' + generate(rng), ',\n' + generate(rng)])
        cases.append(damage(rng, text) if rng.random() < 0.4 else text)
    data = b''.join(b'%d\n%s' % (len(c.encode()), c.encode()) for c in cases)
    out = subprocess.run([TOOL], input=data, stdout=subprocess.PIPE, check=True,
                         timeout=120).stdout
    answers, pos = [], 0
    while pos < len(out):
        nl = out.index(b'\n', pos)
        kind, size = out[pos:nl].split()
        size = int(size)
        answers.append((kind == b'OK', out[nl + 1:nl + 1 + size].decode()))
        pos = nl + 1 + size
    assert len(answers) == len(cases), (len(answers), len(cases))

    failures, agreed_ok, agreed_err, documented = [], 0, 0, 0
    for text, (ours_ok, answer) in zip(cases, answers):
        py_ok, value = py_eval(text)
        if ours_ok and py_ok:
            if canonical(load_repr(answer)) != canonical(value):
                failures.append('%r: ours %s, Python %r' % (text, answer, value))
            else:
                agreed_ok += 1
        elif ours_ok != py_ok:
            if documented_difference(text, ours_ok, py_ok):
                documented += 1
                # An extension must still mean what Python evaluates it to.
                if ours_ok and canonical(load_repr(answer)) != canonical(load_repr(text)):
                    failures.append('%r: ours %s, Python evaluates %r' % (
                        text, answer, load_repr(text)))
            else:
                failures.append('%r: ours %s, Python %s' % (
                    text, answer if ours_ok else 'error: ' + answer,
                    repr(value) if py_ok else 'error'))
        else:
            agreed_err += 1
    print('%d inputs: %d agree on a value, %d both refuse, %d documented differences'
          % (len(cases), agreed_ok, agreed_err, documented))
    for f in failures[:40]:
        print('MISMATCH', f)
    if failures:
        print('%d mismatches' % len(failures))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
