"""The deployment profile (docs/contracts.md section 2, ``profile``): each variant's start-up times and peak memory
in a process of its own, and its p50 at the target's other thread counts.

One job a module: ``wire`` (length-framed messages on pipes), ``server`` (the process forked at the start of the
evaluate stage, and the fresh child it forks per variant), ``child`` (what that child reads and runs), ``answer``
(the child's answer made a ``Profile``), ``threads`` (the thread counts' latencies and oversubscription). The evaluate
stage's hook is ``farm.job.evaluate.profiled``.
"""
