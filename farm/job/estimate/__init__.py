"""Speed estimates for targets farm can only emulate (docs/contracts.md section 2, timing "estimated").

QEMU's wall time inverts the int8/fp32 ranking (TCG emulates floating point far more slowly than integer SIMD), so an
emulated target is not timed. Under farm's counting QEMU (farm/host/counting.py builds it, with the plugin
farm/host/native/insncount.c) the job instead runs each variant a few times between marks the plugin watches
(``marks``), and a per-CPU cost model turns the counted instructions by class into a latency (``costs``). Whether
that estimate may carry a speed claim is recorded per architecture and cost model in trust.json, which
scripts/bench-estimate writes from its validation against real timings.
"""
