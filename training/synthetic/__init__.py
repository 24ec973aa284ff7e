"""Synthetic corpus of talking, emoting rendered faces (no licence, no download)."""

from training.synthetic.generate import SynthConfig, generate

__all__ = ["SynthConfig", "generate"]
