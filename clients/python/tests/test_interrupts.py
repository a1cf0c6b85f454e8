"""Named interrupts (issue 19): the race of starting a call and interrupting
it at once is never lost, against a real pyexecd.

start_exec names the call (x-pyexec-call-id) before it leaves, and
RunningCall.interrupt() / session.interrupt(running) name it in the
InterruptRequest, so an interrupt that reaches the server before its call is
kept for it. Each round: start_exec('while True: pass'), interrupt() at once;
a round is lost when interrupt() says False or the call does not end with
Cancelled (it would run until its 10 s deadline). The count and time print.
"""

import asyncio
import time
import unittest
from typing import Any, Callable, Tuple

import server
import pyexec_client.aio
from pyexec_client import Cancelled, Client, PyExecError

SYNC_ROUNDS = 1000
SESSION_FORM_ROUNDS = 200
ASYNC_ROUNDS = 1000


def one_round(running: Any, interrupted: bool) -> bool:
    """True when the round was lost."""
    try:
        running.result(15)
    except Cancelled:
        return not interrupted
    except PyExecError:
        return True
    return True


class InterruptRaceTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = server.Pyexecd(workers=2, max_workers=4).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def race(self, label: str, rounds: int, interrupt: Callable[[Any, Any], bool]) -> None:
        with Client(self.server.address, timeout=30) as c, c.session() as s:
            lost = 0
            start = time.monotonic()
            for _ in range(rounds):
                running = s.start_exec("while True: pass", timeout=10)
                lost += one_round(running, interrupt(s, running))
            took = time.monotonic() - start
            print("interrupt race (sync, %s): %d rounds, %d lost, %.2f s (%.1f ms a round)"
                  % (label, rounds, lost, took, took / rounds * 1e3))
            self.assertEqual(lost, 0)
            # The session kept working and nothing is left running on it.
            self.assertEqual(s.eval("40 + 2"), 42)
            self.assertFalse(s.interrupt())

    def test_handle_interrupt_1000_rounds(self) -> None:
        self.race("running.interrupt()", SYNC_ROUNDS, lambda s, running: running.interrupt())

    def test_session_interrupt_naming_the_call(self) -> None:
        self.race("s.interrupt(running)", SESSION_FORM_ROUNDS,
                  lambda s, running: s.interrupt(running))

    def test_an_ended_call_is_not_interrupted(self) -> None:
        with Client(self.server.address, timeout=30) as c, c.session() as s:
            running = s.start_eval("1 + 1")
            self.assertEqual(running.result(10), 2)
            self.assertFalse(running.interrupt())
            # An interrupt aimed at a call that ended does not hit the next.
            self.assertEqual(s.eval("'next'"), "next")
            # The call id alone names it as well.
            running = s.start_exec("while True: pass", timeout=10)
            self.assertTrue(s.interrupt(running.call_id))
            with self.assertRaises(Cancelled):
                running.result(15)


class AsyncInterruptRaceTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = server.Pyexecd(workers=2, max_workers=4).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def test_handle_interrupt_rounds(self) -> None:
        async def main() -> Tuple[int, float]:
            async with pyexec_client.aio.Client(self.server.address, timeout=30) as c:
                async with c.session() as s:
                    lost = 0
                    start = time.monotonic()
                    for _ in range(ASYNC_ROUNDS):
                        running = await s.start_exec("while True: pass", timeout=10)
                        interrupted = await running.interrupt()
                        try:
                            await asyncio.wait_for(running, 15)
                            lost += 1
                        except Cancelled:
                            lost += 0 if interrupted else 1
                        except PyExecError:
                            lost += 1
                    took = time.monotonic() - start
                    self.assertEqual(await s.eval("40 + 2"), 42)
                    self.assertFalse(await s.interrupt())
                    return lost, took
        lost, took = asyncio.run(main())
        print("interrupt race (asyncio, running.interrupt()): %d rounds, %d lost, %.2f s "
              "(%.1f ms a round)" % (ASYNC_ROUNDS, lost, took, took / ASYNC_ROUNDS * 1e3))
        self.assertEqual(lost, 0)


if __name__ == "__main__":
    unittest.main()
