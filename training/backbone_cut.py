"""Cut an ImageNet MobileNetV2 ``.tflite`` at its global pool: the flatbuffer surgery that makes f.

Lab-only (``python -m training backbone --from-tflite``); the node only runs the result through
:class:`vfer.backbone.Backbone`. No TensorFlow needed: the flatbuffer schema ships with LiteRT.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vfer.backbone import BackboneError
from vfer.heads_spec import EMBEDDING_DIM

_FLOAT32, _INT8, _UINT8 = 0, 9, 3
_RESHAPE, _DEQUANTIZE, _MEAN, _AVERAGE_POOL_2D = 22, 6, 40, 1


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _read_model(data: bytes) -> Any:
    schema = _schema()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise BackboneError("not a TFLite flatbuffer (missing the TFL3 identifier)")
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))


def _write_model(model: Any) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def find_pool_tensor(data: bytes) -> int:
    """Index of the tensor produced by the global-average pool (MEAN or AVERAGE_POOL_2D, 1280 wide)."""
    model = _read_model(data)
    sg = model.subgraphs[0]
    found = []
    for op in sg.operators:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if builtin not in (_MEAN, _AVERAGE_POOL_2D):
            continue
        for t in op.outputs:
            shape = list(sg.tensors[t].shape)
            if shape and shape[-1] == EMBEDDING_DIM and int(np.prod(shape)) == EMBEDDING_DIM:
                found.append(int(t))
    if len(found) != 1:
        raise BackboneError(
            f"expected exactly one 1280-wide global-pool tensor, found {len(found)}; "
            "pass --tensor INDEX to name it"
        )
    return found[0]


def _opcode(model: Any, builtin: int) -> int:
    schema = _schema()
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = builtin
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _new_tensor(
    sg: Any, like: Any, name: str, shape: list[int], dtype: int, quantized: bool
) -> int:
    schema = _schema()
    t = schema.TensorT()
    t.name = name.encode()
    t.shape = np.array(shape, dtype=np.int32)
    t.type = dtype
    t.buffer = 0
    if quantized and like.quantization is not None:
        q = schema.QuantizationParametersT()
        q.scale = list(like.quantization.scale)
        q.zeroPoint = list(like.quantization.zeroPoint)
        t.quantization = q
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def cut_at_pool(data: bytes, tensor: int | None = None) -> bytes:
    """A new model whose only output is ``tensor`` (default: the pool) as float32 ``[1, 1280]``."""
    schema = _schema()
    model = _read_model(data)
    if len(model.subgraphs) != 1:
        raise BackboneError(f"expected one subgraph, found {len(model.subgraphs)}")
    sg = model.subgraphs[0]
    pool = find_pool_tensor(data) if tensor is None else tensor
    if not 0 <= pool < len(sg.tensors):
        raise BackboneError(f"tensor {pool} does not exist (the model has {len(sg.tensors)})")
    src = sg.tensors[pool]
    if int(np.prod(src.shape)) != EMBEDDING_DIM:
        raise BackboneError(f"tensor {pool} has shape {list(src.shape)}, not 1280 values")
    if len(sg.inputs) != 1:
        raise BackboneError(f"expected one input, found {len(sg.inputs)}")

    quantized = src.type != _FLOAT32
    flat = _new_tensor(
        sg,
        src,
        "embedding_q" if quantized else "embedding",
        [1, EMBEDDING_DIM],
        src.type,
        quantized,
    )
    reshape = schema.OperatorT()
    reshape.opcodeIndex = _opcode(model, _RESHAPE)
    reshape.inputs = np.array([pool], dtype=np.int32)
    reshape.outputs = np.array([flat], dtype=np.int32)
    reshape.builtinOptionsType = schema.BuiltinOptions.ReshapeOptions
    options = schema.ReshapeOptionsT()
    options.newShape = [1, EMBEDDING_DIM]
    reshape.builtinOptions = options
    sg.operators.append(reshape)
    out = flat
    if quantized:
        out = _new_tensor(sg, src, "embedding", [1, EMBEDDING_DIM], _FLOAT32, False)
        deq = schema.OperatorT()
        deq.opcodeIndex = _opcode(model, _DEQUANTIZE)
        deq.inputs = np.array([flat], dtype=np.int32)
        deq.outputs = np.array([out], dtype=np.int32)
        sg.operators.append(deq)
    sg.outputs = np.array([out], dtype=np.int32)
    _prune(model)
    sig = schema.SignatureDefT()
    sig.signatureKey = b"serving_default"
    sig.subgraphIndex = 0
    sig.inputs = [_tensor_map(b"image", int(sg.inputs[0]))]
    sig.outputs = [_tensor_map(b"embedding", int(sg.outputs[0]))]
    model.signatureDefs = [sig]
    model.description = b"fedvfer backbone f: MobileNetV2 cut at the global pool"
    return _write_model(model)


def _tensor_map(name: bytes, index: int) -> Any:
    tm = _schema().TensorMapT()
    tm.name = name
    tm.tensorIndex = index
    return tm


def _prune(model: Any) -> None:
    """Drop operators not needed for the outputs, then unused tensors and buffers, and reindex."""
    sg = model.subgraphs[0]
    needed = {int(t) for t in sg.outputs}
    kept = []
    for op in reversed(sg.operators):
        if needed & {int(t) for t in op.outputs}:
            kept.append(op)
            needed |= {int(t) for t in op.inputs if t >= 0}
    kept.reverse()
    used = sorted(needed | {int(t) for t in sg.inputs})
    remap = {old: new for new, old in enumerate(used)}
    for op in kept:
        op.inputs = np.array([remap[int(t)] if t >= 0 else -1 for t in op.inputs], dtype=np.int32)
        op.outputs = np.array([remap[int(t)] for t in op.outputs], dtype=np.int32)
    sg.inputs = np.array([remap[int(t)] for t in sg.inputs], dtype=np.int32)
    sg.outputs = np.array([remap[int(t)] for t in sg.outputs], dtype=np.int32)
    sg.operators = kept
    sg.tensors = [sg.tensors[old] for old in used]

    keep_buffers = sorted(
        {0} | {t.buffer for t in sg.tensors} | {m.buffer for m in model.metadata or []}
    )
    bremap = {old: new for new, old in enumerate(keep_buffers)}
    model.buffers = [model.buffers[old] for old in keep_buffers]
    for t in sg.tensors:
        t.buffer = bremap[t.buffer]
    for m in model.metadata or []:
        m.buffer = bremap[m.buffer]
    used_codes = sorted({op.opcodeIndex for op in kept})
    cremap = {old: new for new, old in enumerate(used_codes)}
    model.operatorCodes = [model.operatorCodes[old] for old in used_codes]
    for op in kept:
        op.opcodeIndex = cremap[op.opcodeIndex]
