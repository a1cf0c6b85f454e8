"""Native Python values <-> pyexec.v1.Value.

| Python                   | Value kind               |
|--------------------------|--------------------------|
| None                     | none                     |
| bool                     | bool                     |
| int within int64         | int                      |
| int beyond int64         | big_int (decimal string) |
| float (nan, +-inf too)   | float                    |
| str                      | str                      |
| bytes, bytearray         | bytes (decoded: bytes)   |
| list                     | list                     |
| tuple                    | tuple                    |
| dict (keys of any kind)  | dict                     |
| set, frozenset           | set (decoded: set; frozenset where it must be hashable) |
| Opaque                   | opaque (decoded only; anything else has no kind) |
| Ref                      | ref (a live object of a bound session; only the id is sent back) |

The mapping is exact both ways: a tuple never comes back as a list, bytes never
as str, and big ints keep every digit.
"""

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional

from ._stubs import pb
from .errors import ValueConversionError

Value = pb.Value  # the protobuf message class

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class Opaque:
    """A remote object with no Value kind: its qualified type name and repr()."""
    type: str
    repr: str


@dataclass(frozen=True)
class Ref:
    """A live object held by a bound session (Value kind `ref`). Pass it back
    as an argument, keyword argument or local of the same session; only `id`
    travels."""
    id: str
    type: str = ""
    repr: str = ""


def to_value(obj: Any, out: Optional[Any] = None) -> Any:
    """Converts a native value to a pb.Value (filled into `out` if given).

    Raises ValueConversionError for an object with no Value kind.
    """
    v = Value() if out is None else out
    # bool before int: bool is a subclass of int.
    if obj is None:
        v.none.SetInParent()
    elif isinstance(obj, bool):
        v.bool = obj
    elif isinstance(obj, int):
        if _INT64_MIN <= obj <= _INT64_MAX:
            v.int = obj
        else:
            v.big_int = str(int(obj))
    elif isinstance(obj, float):
        v.float = obj
    elif isinstance(obj, str):
        v.str = obj
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        v.bytes = bytes(obj)
    elif isinstance(obj, list):
        v.list = True
        _fill_items(v, obj)
    elif isinstance(obj, tuple):
        v.tuple = True
        _fill_items(v, obj)
    elif isinstance(obj, (set, frozenset)):
        v.set = True
        _fill_items(v, obj)
    elif isinstance(obj, Mapping):
        v.dict = True
        for key, item in obj.items():
            to_value(key, v.keys.add())
            to_value(item, v.items.add())
    elif isinstance(obj, Ref):
        v.ref.id = obj.id
    elif isinstance(obj, Opaque):
        v.opaque.type = obj.type
        v.opaque.repr = obj.repr
    else:
        raise ValueConversionError(
            "pyexec_client: %s has no pyexec Value kind" % type(obj).__qualname__)
    return v


def _fill_items(v: Any, items: Iterable[Any]) -> None:
    for item in items:
        to_value(item, v.items.add())


def to_value_map(mapping: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """Converts {name: native} to {name: pb.Value} for locals and kwargs."""
    if not mapping:
        return {}
    return {name: to_value(item) for name, item in mapping.items()}


def from_value(v: Any, hashable: bool = False) -> Any:
    """Converts a pb.Value to its native value.

    With `hashable` (set elements, dict keys), a set becomes a frozenset.
    Raises ValueConversionError for a Value with no kind set, or a list or
    dict where a hashable value is required.
    """
    kind = v.WhichOneof("kind")
    if kind == "none":
        return None
    if kind == "bool":
        return v.bool
    if kind == "int":
        return v.int
    if kind == "big_int":
        return int(v.big_int)
    if kind == "float":
        return v.float
    if kind == "str":
        return v.str
    if kind == "bytes":
        return v.bytes
    if kind == "tuple":
        return tuple(from_value(item, hashable) for item in v.items)
    if kind == "set":
        elements = [from_value(item, True) for item in v.items]
        return frozenset(elements) if hashable else set(elements)
    if kind == "opaque":
        return Opaque(v.opaque.type, v.opaque.repr)
    if kind == "ref":
        return Ref(v.ref.id, v.ref.type, v.ref.repr)
    if hashable and kind in ("list", "dict"):
        raise ValueConversionError("pyexec_client: a %s cannot be a set element or dict key"
                                   % kind)
    if kind == "list":
        return [from_value(item) for item in v.items]
    if kind == "dict":
        if len(v.keys) != len(v.items):
            raise ValueConversionError("pyexec_client: dict with %d keys and %d values"
                                       % (len(v.keys), len(v.items)))
        return {from_value(k, True): from_value(item) for k, item in zip(v.keys, v.items)}
    raise ValueConversionError("pyexec_client: Value with no kind (%r)" % kind)


def from_values(values: Iterable[Any]) -> List[Any]:
    return [from_value(v) for v in values]
