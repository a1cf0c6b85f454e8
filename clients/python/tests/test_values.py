"""Value mapping without a server: native -> pb.Value -> native is exact."""

import math
import unittest

import server  # noqa: F401  (puts the client package on sys.path)
from pyexec_client import Opaque, Ref, ValueConversionError, from_value, to_value
from pyexec_client._stubs import pb


class ValuesTest(unittest.TestCase):

    def roundtrip(self, x):
        return from_value(pb.Value.FromString(to_value(x).SerializeToString()))

    def test_kinds_on_the_wire(self) -> None:
        self.assertEqual(to_value(None).WhichOneof("kind"), "none")
        self.assertEqual(to_value(True).WhichOneof("kind"), "bool")
        self.assertEqual(to_value(2**63 - 1).WhichOneof("kind"), "int")
        self.assertEqual(to_value(-2**63).WhichOneof("kind"), "int")
        self.assertEqual(to_value(2**63).big_int, "9223372036854775808")
        self.assertEqual(to_value(-2**63 - 1).big_int, "-9223372036854775809")
        self.assertEqual(to_value(b"a").WhichOneof("kind"), "bytes")
        self.assertEqual(to_value(bytearray(b"a")).bytes, b"a")
        self.assertEqual(to_value("a").WhichOneof("kind"), "str")
        self.assertEqual(to_value(()).WhichOneof("kind"), "tuple")
        self.assertEqual(to_value([]).WhichOneof("kind"), "list")
        self.assertEqual(to_value(set()).WhichOneof("kind"), "set")
        self.assertEqual(to_value(frozenset()).WhichOneof("kind"), "set")
        d = to_value({1: "a", (2,): "b"})
        self.assertTrue(d.dict)
        self.assertEqual([k.WhichOneof("kind") for k in d.keys], ["int", "tuple"])

    def test_exact_round_trips(self) -> None:
        for x in [None, True, False, 0, -1, 2**63 - 1, -2**63, 2**200, -3**99, 1.5, -0.0,
                  float("inf"), "", "héllo\x00", b"", b"\x00\xff", [], (), {}, set(),
                  [1, (2, [3, {4: b"5"}]), {6, (7,)}], {(1, 2): {frozenset({3}): None}}]:
            got = self.roundtrip(x)
            self.assertEqual(got, x)
            self.assertIs(type(got), type(x))
        self.assertTrue(math.isnan(self.roundtrip(float("nan"))))
        self.assertIs(type(self.roundtrip(1)), int)
        self.assertIs(type(self.roundtrip(1.0)), float)

    def test_sets_become_frozensets_only_where_hashable(self) -> None:
        got = self.roundtrip({frozenset({1}): {2}})
        key, = got
        self.assertIs(type(key), frozenset)
        self.assertIs(type(got[key]), set)

    def test_ref_decodes_and_only_its_id_goes_back(self) -> None:
        v = pb.Value()
        v.ref.id, v.ref.type, v.ref.repr = "ab" * 12, "Model", "<Model>"
        got = from_value(v)
        self.assertEqual(got, Ref("ab" * 12, "Model", "<Model>"))
        back = to_value([got])
        self.assertEqual(back.items[0].WhichOneof("kind"), "ref")
        self.assertEqual(back.items[0].ref.id, "ab" * 12)
        self.assertEqual(back.items[0].ref.type, "")

    def test_opaque_and_errors(self) -> None:
        v = pb.Value(opaque=pb.Opaque(type="datetime.date", repr="datetime.date(2024, 1, 2)"))
        self.assertEqual(from_value(v), Opaque("datetime.date", "datetime.date(2024, 1, 2)"))
        with self.assertRaises(ValueConversionError):
            to_value(object())
        with self.assertRaises(ValueConversionError):
            from_value(pb.Value())
        bad = pb.Value(dict=True)
        bad.keys.add().int = 1
        with self.assertRaises(ValueConversionError):
            from_value(bad)


if __name__ == "__main__":
    unittest.main()
