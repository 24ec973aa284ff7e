"""Heads to TFLite, straight from their named weights (needs TensorFlow; the runtime does not).

* ``ifer_head.tflite``: signature ``serving_default``, input ``embedding`` [1, 1280] float32,
  output ``probs`` [1, K].
* ``vfer_step.tflite``: v as a streaming step, so the kiosk updates its video prediction every
  frame at constant cost: inputs ``embedding`` [1, 1280], ``h`` [1, 64], ``c`` [1, 64]; outputs
  ``probs`` [1, K], ``h_out``, ``c_out``. Start a clip with zero state. Feeding a clip's frames one
  by one gives what Keras v gives on the whole zero-pre-padded clip (tests hold it to 1e-5).

Both are written from the same weight names as :mod:`vfer.heads_spec`, in inference mode
(BatchNorm uses its moving statistics, dropout is off). Read them with signature runners
(:mod:`vfer.runtime`): ``get_output_details()`` order is not the model's output order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vfer.heads import num_classes_of
from vfer.heads_spec import EMBEDDING_DIM, V_LSTM, ifer_spec, vfer_spec
from vfer.weights import check

BN_EPSILON = 1e-3  # Keras' BatchNormalization default


def _bn(tf: Any, x: Any, w: Mapping[str, np.ndarray], name: str) -> Any:
    scale = w[f"{name}.gamma"] / np.sqrt(w[f"{name}.moving_variance"] + BN_EPSILON)
    shift = w[f"{name}.beta"] - w[f"{name}.moving_mean"] * scale
    return x * tf.constant(scale.astype(np.float32)) + tf.constant(shift.astype(np.float32))


def _dense(tf: Any, x: Any, w: Mapping[str, np.ndarray], name: str) -> Any:
    return tf.matmul(x, tf.constant(w[f"{name}.kernel"])) + tf.constant(w[f"{name}.bias"])


def _convert(tf: Any, module: Any, fn: Any) -> bytes:
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [fn.get_concrete_function()], module
    )
    converter.optimizations = []
    return bytes(converter.convert())


def ifer_tflite(weights: Mapping[str, np.ndarray]) -> bytes:
    """g's inference graph as a TFLite flatbuffer."""
    import tensorflow as tf

    k = num_classes_of(weights, "g")
    check(weights, ifer_spec(k))
    w = {n: np.asarray(a, dtype=np.float32) for n, a in weights.items()}

    class IferHead(tf.Module):  # type: ignore[misc]
        @tf.function(
            input_signature=[tf.TensorSpec([1, EMBEDDING_DIM], tf.float32, name="embedding")]
        )
        def serve(self, embedding: Any) -> dict[str, Any]:
            x = _bn(tf, embedding, w, "g_bn0")
            x = tf.nn.relu(_dense(tf, x, w, "g_fc512"))
            x = _bn(tf, x, w, "g_bn1")
            return {"probs": tf.nn.softmax(_dense(tf, x, w, "g_out"))}

    module = IferHead()
    return _convert(tf, module, module.serve)


def vfer_step_tflite(weights: Mapping[str, np.ndarray]) -> bytes:
    """v's one-frame step (embedding, h, c) -> (probs, h_out, c_out) as a TFLite flatbuffer."""
    import tensorflow as tf

    k = num_classes_of(weights, "v")
    check(weights, vfer_spec(k))
    w = {n: np.asarray(a, dtype=np.float32) for n, a in weights.items()}
    state = tf.TensorSpec([1, V_LSTM], tf.float32)

    class VferStep(tf.Module):  # type: ignore[misc]
        @tf.function(
            input_signature=[
                tf.TensorSpec([1, EMBEDDING_DIM], tf.float32, name="embedding"),
                tf.TensorSpec.from_spec(state, name="h"),
                tf.TensorSpec.from_spec(state, name="c"),
            ]
        )
        def serve(self, embedding: Any, h: Any, c: Any) -> dict[str, Any]:
            x = _bn(tf, embedding, w, "v_bn0")
            x = _bn(tf, tf.nn.relu(_dense(tf, x, w, "v_fc128")), w, "v_bn1")
            x = _bn(tf, tf.nn.relu(_dense(tf, x, w, "v_fc64")), w, "v_bn2")
            z = (
                tf.matmul(x, tf.constant(w["v_lstm.kernel"]))
                + tf.matmul(h, tf.constant(w["v_lstm.recurrent_kernel"]))
                + tf.constant(w["v_lstm.bias"])
            )
            i, f, g, o = tf.split(z, 4, axis=1)
            c_new = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            h_new = tf.sigmoid(o) * tf.tanh(c_new)
            # Keras' Masking skips all-zero frames (the padding): keep the state for those too.
            real = tf.reduce_any(tf.not_equal(embedding, 0.0), axis=1, keepdims=True)
            h_new = tf.where(real, h_new, h)
            c_new = tf.where(real, c_new, c)
            probs = tf.nn.softmax(_dense(tf, h_new, w, "v_out"))
            return {"probs": probs, "h_out": h_new, "c_out": c_new}

    module = VferStep()
    return _convert(tf, module, module.serve)
