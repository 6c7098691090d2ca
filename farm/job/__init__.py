"""The in-container job: ``python -m farm.job SPEC.json OUTDIR`` (docs/contracts.md section 1).

Shipped into every target image on its own: it imports only the standard library, numpy, onnx and onnxruntime,
never another ``farm.*`` module.
"""
