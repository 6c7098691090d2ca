"""The in-container job: ``python -m farm.job SPEC.json OUTDIR`` (docs/contracts.md section 1).

Shipped into every target image on its own: it imports only the standard library, numpy, onnx and onnxruntime,
never another ``farm.*`` module.
"""

import time

# When the job's process began, before numpy and onnxruntime were imported (on a small model that import is much of
# the evaluation): the share the divergences may take is counted against it (farm.job.evaluate.drift), as the
# report's duration_s counts the target's whole evaluation.
BEGAN = time.monotonic()
