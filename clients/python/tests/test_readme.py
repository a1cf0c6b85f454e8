"""Every ```python block of clients/python/README.md runs, each in its own
interpreter, against a real pyexecd (the blocks' 127.0.0.1:50051 is replaced
by its address). Output lines the README's comments promise are checked
where a block prints them."""

import os
import re
import subprocess
import unittest
from typing import List

import server

README = os.path.join(server.CLIENT_ROOT, "README.md")
EXAMPLE_ADDRESS = "127.0.0.1:50051"


def python_blocks() -> List[str]:
    with open(README, encoding="utf-8") as f:
        return re.findall(r"^```python\n(.*?)^```$", f.read(), re.MULTILINE | re.DOTALL)


class ReadmeTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = server.Pyexecd(workers=2, max_workers=4).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def run_block(self, code: str) -> str:
        self.assertIn(EXAMPLE_ADDRESS, code)
        env = dict(os.environ, PYTHONPATH=server.CLIENT_ROOT)
        proc = subprocess.run(["/usr/bin/python3", "-B", "-c",
                               code.replace(EXAMPLE_ADDRESS, self.server.address)],
                              env=env, cwd=server.HERE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=60)
        self.assertEqual(proc.returncode, 0, "block:\n%s\nstderr:\n%s" % (code, proc.stderr))
        return proc.stdout

    def test_every_block_runs(self) -> None:
        blocks = python_blocks()
        self.assertGreaterEqual(len(blocks), 6)
        outputs = {}
        for i, code in enumerate(blocks):
            with self.subTest(block=i, first_line=code.splitlines()[0]):
                outputs[i] = self.run_block(code)
        joined = "\n".join(outputs.values())
        # What the live output and connecting examples print.
        for line in ("live: step 0", "live: step 2", "epoch 1", "[0.0, 0.5]", "remote: 0",
                     "remote: side effect", "42", "ZeroDivisionError division by zero"):
            self.assertIn(line, joined)
        # Leases, callbacks, interrupts, routing and snapshots: what each
        # block's comments promise, in order.
        promised = {
            "s.leased)": ["True", "42"],
            "def lookup(": ["ada!", "5", "('PermissionError', 'no disk')", "720", "40"],
            "async def fetch(": ["42"],
            "while True: x += 1": ["True", "interrupted", "True", "45"],
            "await running.interrupt()": ["True", "interrupted"],
            "route_to_owner=True": ["None"],
            "s.snapshot()": ["['conn']", "3 False"],
        }
        for marker, lines in promised.items():
            with self.subTest(block=marker):
                (i,) = [i for i, code in enumerate(blocks) if marker in code]
                self.assertEqual(outputs[i].splitlines(), lines)


if __name__ == "__main__":
    unittest.main()
