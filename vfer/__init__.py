"""What two or more fedvfer roles share: models f, g, v, the bundle, selection, metrics, codec, topics."""

__version__ = "0.1.0"
