"""The input and output shapes an ONNX file declares, read from its protobuf bytes. Pure.

Enough of the protobuf wire format (varints and length-delimited fields) to walk
``ModelProto.graph`` (field 7) to its ``input`` (11) and ``output`` (12) ``ValueInfoProto``s and
their tensor shapes, leaving out inputs that are initializers (5; older exporters list weights
as inputs). It needs neither the ``onnx`` package nor a model runtime, and it checks every
length, so a truncated or foreign file is an :class:`OnnxError`, never a crash or a guess.
Field numbers: onnx/onnx.proto (ModelProto, GraphProto, ValueInfoProto, TypeProto.Tensor,
TensorShapeProto.Dimension).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
_GRAPH, _INITIALIZER, _INPUT, _OUTPUT = 7, 5, 11, 12
UNKNOWN = -1  # a dimension without a fixed size (dim_param, or none given)


class OnnxError(ValueError):
    """Bytes that are not an ONNX model this reader can walk."""


@dataclass(frozen=True)
class Tensor:
    name: str
    elem_type: int  # onnx TensorProto.DataType: 1 float32, 3 int8, 2 uint8, ...
    shape: tuple[int, ...]  # UNKNOWN where the size is not fixed


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise OnnxError("truncated (a number runs past the end)")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (value - (1 << 64) if value >= 1 << 63 else value), pos
        shift += 7
        if shift > 63:
            raise OnnxError("malformed (a number longer than 10 bytes)")


def fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of one message: an int, or the bytes of a LENGTH field."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise OnnxError("malformed (field number 0)")
        if wire == VARINT:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire in (FIXED64, FIXED32):
            size = 8 if wire == FIXED64 else 4
            if pos + size > len(buf):
                raise OnnxError("truncated (a fixed-size field runs past the end)")
            yield number, wire, int.from_bytes(buf[pos : pos + size], "little")
            pos += size
        elif wire == LENGTH:
            size, pos = _varint(buf, pos)
            if size < 0 or pos + size > len(buf):
                raise OnnxError("truncated (a field runs past the end of the file)")
            yield number, wire, buf[pos : pos + size]
            pos += size
        else:
            raise OnnxError(f"malformed (wire type {wire})")


def _sub(buf: memoryview, number: int) -> Iterator[memoryview]:
    for n, wire, value in fields(buf):
        if n == number and wire == LENGTH and isinstance(value, memoryview):
            yield value


def _text(buf: memoryview, number: int) -> str:
    return next((bytes(v).decode("utf-8", "replace") for v in _sub(buf, number)), "")


def _dims(shape: memoryview) -> tuple[int, ...]:
    out = []
    for dim in _sub(shape, 1):
        size = next((v for n, w, v in fields(dim) if n == 1 and w == VARINT), UNKNOWN)
        out.append(int(size))
    return tuple(out)


def _tensor(info: memoryview) -> Tensor:
    """A ValueInfoProto: name (1), type (2) -> tensor_type (1) -> elem_type (1), shape (2)."""
    elem = 0
    shape: tuple[int, ...] = ()
    for typ in _sub(info, 2):
        for tensor in _sub(typ, 1):
            for n, wire, value in fields(tensor):
                if n == 1 and wire == VARINT:
                    elem = int(value)  # type: ignore[arg-type]
                elif n == 2 and isinstance(value, memoryview):
                    shape = _dims(value)
    return Tensor(_text(info, 1), elem, shape)


def read(data: bytes) -> tuple[list[Tensor], list[Tensor]]:
    """The graph's (inputs, outputs) of an ONNX model's bytes; OnnxError when it is none."""
    graphs = list(_sub(memoryview(data), _GRAPH))
    if len(graphs) != 1:
        raise OnnxError("no ONNX graph in it")
    graph = graphs[0]
    weights = {_text(t, 8) for t in _sub(graph, _INITIALIZER)}
    inputs = [t for t in map(_tensor, _sub(graph, _INPUT)) if t.name not in weights]
    outputs = [_tensor(v) for v in _sub(graph, _OUTPUT)]
    if not inputs or not outputs:
        raise OnnxError("its graph declares no inputs or no outputs")
    return inputs, outputs
