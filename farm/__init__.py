"""farm: how an ONNX model behaves on every hardware target, before it ships.

This file is shipped into every target image next to ``farm/job``, so it must import nothing.
"""

__version__ = "0.1.0"
