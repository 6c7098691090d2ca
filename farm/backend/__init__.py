"""Execution backends: where a target's jobs run (farm/backend/base.py has the protocol).

- ``engine.py``: a Docker engine (the Docker SDK), the local one or a remote one, and a hardened run; with its parts,
  the only modules that import the Docker SDK: ``runspec.py`` (what a run is), ``imageops.py`` (images),
  ``volumes.py`` (a remote engine's files), ``watch.py`` (logs, memory), ``cleanup.py`` (what farm left);
- ``runner.py``: how a target's container starts in each mode (native, masked, emulated);
- ``docker.py``: a Docker engine as a backend; ``kubernetes/``: a cluster's Jobs;
- ``registry.py``: which backend a target uses, from its ``engine`` in targets.toml.
"""
