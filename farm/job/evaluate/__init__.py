"""Stage ``evaluate``: run every variant in this target, compare it with fp32, time it, and recommend one.

The package, one job a module: ``file`` (result.json as it stands, rewritten after each variant), ``fp32`` (the
reference, its checks, and fp32's own result), ``measure`` (one variant's session, run and accuracy), ``metric`` (the
user's --metric), ``timed`` (the timing phase, the variants' rounds alternating), ``candidates`` (the int8 candidates
and their mitigations), ``extra`` (the optimized and tuned variants), ``spread`` (the variants after fp32 in order, in
worker processes where nothing is timed), ``stage`` (the stage that ties them together).
"""

from farm.job.evaluate.stage import run_evaluate

__all__ = ["run_evaluate"]
