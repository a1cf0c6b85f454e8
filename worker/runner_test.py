"""Tests of runner.py on its own, with a plain python3 (no worker)."""

import os
import random
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runner  # noqa: E402
import snapshot  # noqa: E402


class CaptureTest(unittest.TestCase):
    def test_keeps_output_up_to_the_limit(self):
        c = runner.Capture(5)
        self.assertEqual(c.write('abc'), 3)
        self.assertEqual(c.write('defgh'), 5)
        self.assertEqual(c.getvalue(), 'abcde')
        self.assertTrue(c.truncated)

    def test_refuses_bytes(self):
        with self.assertRaises(TypeError):
            runner.Capture(10).write(b'x')


class StreamerTest(unittest.TestCase):
    def test_flushes_at_line_ends_keeps_order_and_closes(self):
        sent = []
        st = runner.Streamer(lambda kind, text: sent.append((kind, text)))
        out = runner.Capture(10, st, 1)
        err = runner.Capture(10, st, 2)
        out.write('a')
        self.assertEqual(sent, [])
        err.write('e\n')
        out.write('b\n')
        st.close()
        out.write('late\n')
        self.assertEqual(sent, [(1, 'a'), (2, 'e\n'), (1, 'b\n')])

    def test_timer_flushes_a_partial_line(self):
        import threading
        got = threading.Event()
        st = runner.Streamer(lambda kind, text: got.set())
        st.write(1, 'no newline')
        self.assertTrue(got.wait(5))
        st.close()

    def test_chunks_are_bounded_in_utf8_bytes(self):
        sent = []
        st = runner.Streamer(lambda kind, text: sent.append(text))
        st.write(1, '\u20ac' * 20000)
        st.close()
        self.assertEqual(''.join(sent), '\u20ac' * 20000)
        self.assertTrue(all(len(t.encode()) <= 16384 for t in sent))


class InterruptsDeferredTest(unittest.TestCase):
    def test_an_interrupt_inside_is_raised_at_the_end(self):
        reached_end = False
        with self.assertRaises(KeyboardInterrupt):
            with runner._InterruptsDeferred():
                runner._on_sigint(2, None)  # what Python runs on SIGINT
                reached_end = True
        self.assertTrue(reached_end)
        with self.assertRaises(KeyboardInterrupt):
            runner._on_sigint(2, None)  # outside: raised at once

    def test_a_sigint_during_a_streamer_write_never_leaks_its_lock(self):
        # The interrupt lands while the streamer holds its lock (here: in
        # emit). Before the deferral it could be raised between the lock's
        # acquisition and the `with` body, leaving the lock held for good.
        import signal
        import threading
        def emit(kind, text):
            signal.raise_signal(signal.SIGINT)
        st = runner.Streamer(emit)
        with self.assertRaises(KeyboardInterrupt):
            st.write(1, 'line\n')
        done = threading.Event()
        threading.Thread(target=lambda: (st.close(), done.set())).start()
        self.assertTrue(done.wait(5), "the streamer's lock was leaked")


class RunCallTest(unittest.TestCase):
    def test_target_method_and_attribute(self):
        self.assertEqual(runner.run_call('', 'upper', (), {}, True, 'ab'), 'AB')
        self.assertEqual(runner.run_call('', 'real', (), {}, True, 3 + 4j, True), 3.0)


class CodeCacheTest(unittest.TestCase):
    def test_same_source_compiles_once_and_registers_lines(self):
        cache = runner._CodeCache(4)
        a = cache.get('1 + 1', 'eval')
        self.assertIs(cache.get('1 + 1', 'eval'), a)
        self.assertIsNot(cache.get('1 + 1', 'exec'), a)
        import linecache
        self.assertEqual(linecache.getline(a.co_filename, 1), '1 + 1')

    def test_full_cache_is_emptied_with_its_lines(self):
        cache = runner._CodeCache(2)
        first = cache.get('1', 'eval')
        cache.get('2', 'eval')
        cache.get('3', 'eval')
        import linecache
        self.assertNotIn(first.co_filename, linecache.cache)


class RunTest(unittest.TestCase):
    def test_eval_in_a_fresh_namespace_sees_only_its_locals(self):
        self.assertEqual(runner.run_eval('x * 2', True, {'x': 21}), 42)
        with self.assertRaises(NameError):
            runner.run_eval('x', True, {})

    def test_locals_are_restored_unless_rebound(self):
        ns = runner._main
        ns.pop('pyexec_t1', None)
        runner.run_exec('pyexec_t2 = pyexec_t1 + 1', False, {'pyexec_t1': 1})
        self.assertNotIn('pyexec_t1', ns)
        self.assertEqual(ns.pop('pyexec_t2'), 2)
        runner.run_exec('pyexec_t1 = 5', False, {'pyexec_t1': 1})
        self.assertEqual(ns.pop('pyexec_t1'), 5)

    def test_call_resolves_modules_builtins_and_dotted_names(self):
        self.assertEqual(runner.run_call('math', 'floor', (2.5,), {}, True), 2)
        self.assertEqual(runner.run_call('__main__', 'len', ([1, 2],), {}, True), 2)
        self.assertEqual(
            runner.run_call('os', 'path.join', ('a', 'b'), {}, True), 'a/b')
        with self.assertRaises(NameError):
            runner.run_call('__main__', 'no_such_name', (), {}, True)

    def test_format_exception_drops_runner_frames(self):
        try:
            runner.run_exec('def f():\n    raise ValueError("boom")\nf()',
                            True, {})
        except ValueError as e:
            # The worker calls run_exec from C: drop this test's own frame.
            e.__traceback__ = e.__traceback__.tb_next
            name, message, tb = runner.format_exception(e)
        self.assertEqual((name, message), ('ValueError', 'boom'))
        self.assertNotIn('runner.py', tb)
        self.assertIn('raise ValueError("boom")', tb)

    def test_syntax_error_has_no_traceback_frames(self):
        try:
            runner.run_eval('1 +', True, {})
        except SyntaxError as e:
            name, _, tb = runner.format_exception(e)
        self.assertEqual(name, 'SyntaxError')
        self.assertNotIn('Traceback', tb)


class AfterForkTest(unittest.TestCase):
    def setUp(self):
        saved = {k: os.environ.get(k) for k in ('HOME', 'TMPDIR')}
        saved_tempdir = tempfile.tempdir

        def restore():
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            tempfile.tempdir = saved_tempdir
        self.addCleanup(restore)

    def test_reseeds_random(self):
        random.seed(1234)
        a = random.random()
        random.seed(1234)
        runner.after_fork(None)
        self.assertNotEqual(random.random(), a)

    def test_points_environ_and_tempfile_at_the_private_directory(self):
        d = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, d)
        tempfile.tempdir = '/somewhere/else'
        runner.after_fork(d)
        self.assertEqual((os.environ['HOME'], os.environ['TMPDIR']), (d, d))
        self.assertIsNone(tempfile.tempdir)
        self.assertEqual(tempfile.gettempdir(), d)

    def test_without_a_private_directory_the_environment_stays(self):
        os.environ['HOME'] = '/home/kept'
        tempfile.tempdir = '/kept'
        runner.after_fork(None)
        self.assertEqual(os.environ['HOME'], '/home/kept')
        self.assertEqual(tempfile.tempdir, '/kept')

    def test_threading_hook_is_disarmed_before_forks_and_rearmed_after(self):
        hook = threading._after_fork
        code = hook.__code__
        self.addCleanup(setattr, runner, '_disarmed_threading_hook', None)
        self.addCleanup(setattr, hook, '__code__', code)
        runner.before_forks()
        self.assertIsNot(hook.__code__, code)
        hook()  # what the zygote's workers run: nothing
        runner.before_forks()  # once only: the original code is kept
        runner.after_fork(None)
        self.assertIs(hook.__code__, code)
        # Re-armed: a process forked with another thread running sees only
        # its own thread.
        done = threading.Event()
        t = threading.Thread(target=done.wait)
        t.start()
        self.addCleanup(t.join)
        self.addCleanup(done.set)
        pid = os.fork()
        if pid == 0:
            os._exit(0 if len(threading.enumerate()) == 1 else 3)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)


def _session(code=''):
    """A namespace as a session's __main__, after running `code`."""
    import builtins
    ns = {'__name__': '__main__', '__builtins__': builtins}
    exec(code, ns)
    return ns


def _round_trip(ns, refs=None, max_bytes=0):
    state, lost, modules, carried = snapshot.snapshot(ns, refs or {}, max_bytes)
    fresh = _session()
    restored_refs, restore_lost = snapshot.restore(fresh, state)
    return fresh, restored_refs, lost, restore_lost, modules, carried


SESSION = """
import socket, threading
def add(a, b=2):
    return a + b
def make_counter():
    n = 0
    def inc():
        nonlocal n
        n += 1
        return n
    return inc
counter = make_counter(); counter()
class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y
    def norm2(self):
        return self.x * self.x + self.y * self.y
p = Point(3, 4)
square = lambda x: x * x
total = 0
def bump():
    global total
    total += 1
    return total
table = {i: i for i in range(1000)}
alias = table
def gen_fn():
    yield 1
gen = gen_fn()
sock = socket.socket()
thread = threading.Thread(target=print)
def uses_sock():
    return sock
"""


class SnapshotTest(unittest.TestCase):
    def setUp(self):
        self.ns = _session(SESSION)
        self.addCleanup(self.ns['sock'].close)

    def test_functions_classes_and_values_survive(self):
        fresh, _, lost, _, _, _ = _round_trip(self.ns)
        self.assertEqual(fresh['add'](1), 3)
        self.assertEqual(fresh['counter'](), 2)
        self.assertEqual(fresh['p'].norm2(), 25)
        self.assertIs(type(fresh['p']), fresh['Point'])
        self.assertEqual(fresh['square'](7), 49)
        self.assertEqual(fresh['table'], {i: i for i in range(1000)})
        self.assertIs(fresh['alias'], fresh['table'])

    def test_restored_functions_use_the_restored_namespace(self):
        fresh, *_ = _round_trip(self.ns)
        self.assertIs(fresh['bump'].__globals__, fresh)
        self.assertEqual(fresh['bump'](), 1)
        self.assertEqual(fresh['total'], 1)
        fresh['total'] = 41
        self.assertEqual(fresh['bump'](), 42)
        self.assertEqual(self.ns['total'], 0)

    def test_unpicklable_names_are_listed_and_the_rest_kept(self):
        fresh, _, lost, _, _, _ = _round_trip(self.ns)
        by_name = {name: (type_name, reason) for name, type_name, reason in lost}
        self.assertEqual(sorted(by_name), ['gen', 'sock', 'thread'])
        self.assertEqual(by_name['gen'][0], 'generator')
        self.assertEqual(by_name['sock'][0], 'socket.socket')
        self.assertEqual(by_name['thread'][0], 'threading.Thread')
        self.assertIn("cannot pickle 'socket' object", by_name['sock'][1])
        for name in by_name:
            self.assertNotIn(name, fresh)
        # A function that reads a lost global is kept; the global is not.
        with self.assertRaises(NameError):
            fresh['uses_sock']()

    def test_refs_keep_their_ids_and_share_objects_with_names(self):
        ref_id = 'ab' * 12
        _, refs, lost, _, _, carried = _round_trip(
            self.ns, {ref_id: self.ns['p'], 'cd' * 12: self.ns['gen']})
        self.assertEqual(carried, 1)
        self.assertIn(('ref ' + 'cd' * 12, 'generator'), [(n, t) for n, t, _ in lost])
        self.assertEqual(list(refs), [ref_id])

    def test_a_ref_is_the_same_object_as_a_name(self):
        ref_id = 'ab' * 12
        state, *_ = snapshot.snapshot(self.ns, {ref_id: self.ns['p']}, 0)
        fresh = _session()
        refs, _ = snapshot.restore(fresh, state)
        self.assertIs(refs[ref_id], fresh['p'])

    def test_the_snapshot_leaves_the_session_unchanged(self):
        before = dict(self.ns)
        snapshot.snapshot(self.ns, {}, 0)
        self.assertEqual(self.ns.keys(), before.keys())
        for k, v in before.items():
            self.assertIs(self.ns[k], v, k)
        self.assertEqual(self.ns['counter'](), 2)

    def test_max_bytes(self):
        state, *_ = snapshot.snapshot(self.ns, {}, 0)
        with self.assertRaises(snapshot.StateError) as cm:
            snapshot.snapshot(self.ns, {}, len(state) - 1)
        self.assertEqual(cm.exception.code, snapshot.RESOURCE_EXHAUSTED)
        self.assertIn('more than %d bytes' % (len(state) - 1), cm.exception.message)
        self.assertEqual(snapshot.snapshot(self.ns, {}, len(state))[0], state)

    def test_open_files_are_lost_and_in_memory_files_kept(self):
        ns = _session('import io\n'
                      'text = open(%r)\n'
                      'binary = open(%r, "rb")\n'
                      'memory = io.StringIO("kept")\n' % (__file__, __file__))
        self.addCleanup(ns['text'].close)
        self.addCleanup(ns['binary'].close)
        fresh, _, lost, _, _, _ = _round_trip(ns)
        self.assertEqual(sorted((n, t) for n, t, _ in lost),
                         [('binary', '_io.BufferedReader'), ('text', '_io.TextIOWrapper')])
        self.assertIn('an open file does not survive', dict((n, r) for n, _, r in lost)['text'])
        self.assertEqual(fresh['memory'].getvalue(), 'kept')

    def test_running_out_of_memory_is_not_a_lost_name(self):
        ns = _session('class Huge:\n'
                      '    def __reduce__(self):\n'
                      '        raise MemoryError()\n'
                      'h = Huge()\n')
        with self.assertRaises(snapshot.StateError) as cm:
            snapshot.snapshot(ns, {}, 0)
        self.assertEqual(cm.exception.code, snapshot.RESOURCE_EXHAUSTED)
        self.assertIn('out of memory', cm.exception.message)

    def test_a_name_that_is_not_a_str_is_lost(self):
        ns = _session('x = 1')
        ns[3] = 'three'
        fresh, _, lost, _, _, _ = _round_trip(ns)
        self.assertEqual(lost, [('3', 'str', 'the name is not a str')])
        self.assertEqual(fresh['x'], 1)

    def test_modules_are_listed_and_bound_again(self):
        ns = _session('import colorsys as cs\nimport json\nimport types\n'
                      'dyn = types.ModuleType("dyn")\ndyn.x = 5\n')
        fresh, _, lost, restore_lost, modules, _ = _round_trip(ns)
        self.assertIn('colorsys', modules)
        self.assertNotIn('sys', modules)  # built in
        self.assertNotIn('snapshot', modules)
        self.assertIs(fresh['cs'], sys.modules['colorsys'])
        self.assertIs(fresh['json'], sys.modules['json'])
        self.assertEqual(fresh['dyn'].x, 5)  # not importable: by value
        self.assertEqual((lost, restore_lost), ([], []))

    def test_a_module_that_no_longer_imports_is_lost_on_restore(self):
        d = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__('shutil').rmtree(d))
        with open(os.path.join(d, 'pyexec_gone_mod.py'), 'w') as f:
            f.write('VALUE = 7\n')
        sys.path.insert(0, d)
        ns = _session('import pyexec_gone_mod as g\nkept = 1\n')
        state, lost, modules, _ = snapshot.snapshot(ns, {}, 0)
        self.assertIn('pyexec_gone_mod', modules)
        sys.path.remove(d)
        del sys.modules['pyexec_gone_mod']
        fresh = _session()
        _, restore_lost = snapshot.restore(fresh, state)
        self.assertEqual([(n, t) for n, t, _ in restore_lost],
                         [('pyexec_gone_mod', 'module'), ('g', 'module')])
        self.assertIn('ModuleNotFoundError', restore_lost[0][2])
        self.assertNotIn('g', fresh)
        self.assertEqual(fresh['kept'], 1)

    def test_the_runners_modules_are_left_out_while_bound(self):
        import types
        mod = types.ModuleType('pyexec_test_installed')
        sys.modules['pyexec_test_installed'] = mod
        self.addCleanup(sys.modules.pop, 'pyexec_test_installed')
        snapshot.mark_installed(['pyexec_test_installed'])
        self.addCleanup(snapshot._installed.pop, 'pyexec_test_installed')
        ns = _session()
        ns['pyexec_test_installed'] = mod
        ns['other'] = mod
        state, lost, modules, _ = snapshot.snapshot(ns, {}, 0)
        self.assertNotIn('pyexec_test_installed', modules)
        fresh = _session()
        snapshot.restore(fresh, state)
        self.assertNotIn('pyexec_test_installed', fresh)
        self.assertIs(fresh['other'], mod)  # by name: the worker's own

    def test_bad_states_are_refused_and_leave_the_namespace_alone(self):
        state, *_ = snapshot.snapshot(self.ns, {}, 0)
        header = snapshot._HEADER
        cases = {
            b'': snapshot.INVALID_ARGUMENT,
            b'garbage': snapshot.INVALID_ARGUMENT,
            header + b'\x80\x05garbage': snapshot.INVALID_ARGUMENT,
            state[:-10]: snapshot.INVALID_ARGUMENT,
            state + b'x': snapshot.INVALID_ARGUMENT,
            snapshot._HEADER_PREFIX + b'2.7\n' + state[len(header):]:
                snapshot.FAILED_PRECONDITION,
        }
        for blob, code in cases.items():
            fresh = _session('x = 1')
            before = dict(fresh)
            with self.assertRaises(snapshot.StateError, msg=blob[:40]) as cm:
                snapshot.restore(fresh, blob)
            self.assertEqual(cm.exception.code, code, cm.exception.message)
            self.assertEqual(fresh, before)


if __name__ == '__main__':
    unittest.main()
