"""`conformance`: clients/conformance/vectors.json (or $PYEXEC_CONFORMANCE)
through the sync and the asyncio client, against a real pyexecd started here
with --lease_grace=1s (the lease cases wait for it to pass)."""

import asyncio
import unittest

import conformance
import server
import pyexec_client
import pyexec_client.aio


class ConformanceTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = server.Pyexecd("--lease_grace=1s", workers=2, max_workers=4).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def check(self, passed: int, failures: list) -> None:
        self.assertGreater(passed, 0)
        self.assertEqual(failures, [], "\n" + "\n".join(failures) + "\nserver log:\n"
                         + self.server.log())

    def test_sync(self) -> None:
        with pyexec_client.Client(self.server.address, timeout=30) as client:
            self.check(*asyncio.run(conformance.run_all(conformance.SyncApi(client))))

    def test_async(self) -> None:
        async def main() -> tuple:
            async with pyexec_client.aio.Client(self.server.address, timeout=30) as client:
                return await conformance.run_all(conformance.AsyncApi(client))
        self.check(*asyncio.run(main()))


if __name__ == "__main__":
    unittest.main()
