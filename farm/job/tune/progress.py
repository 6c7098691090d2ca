"""What the search says while it runs: the controller shows lines that start with 'farm:' as the job's stages."""

from __future__ import annotations

import logging

log = logging.getLogger("farm.job")


def say(text: str) -> None:
    """A progress line; the controller shows lines that start with 'farm:' as the job's stages."""
    print(f"farm: {text}", flush=True)
