"""Execution backends: where a target's jobs run (farm/backend/base.py has the protocol).

- ``engine.py``: the only module that talks to Docker (the Docker SDK), for the local engine and remote ones;
- ``runner.py``: how a target's container starts in each mode (native, masked, emulated);
- ``docker.py``: a Docker engine as a backend; ``kubernetes.py``: a cluster's Jobs;
- ``registry.py``: which backend a target uses, from its ``engine`` in targets.toml.
"""
