"""`farm matrix --resume`: which targets of an earlier, interrupted run can be reused, and the key that decides it.

A target's result is reused only when everything it depends on is the same: the model and its external data, the
inputs and labels, the target's image (its content hash), and the job's settings as the spec gives them to the
container, with farm's version and the container's limits. Those go into one hash, the result's ``resume_key``,
which farm writes beside each result whose job ended on its own. A result that farm itself cut short (Ctrl-C, a
lost engine) gets no key, so it always runs again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from farm.job.codec import ContractError, decode
from farm.job.report import TargetResult
from farm.report.schema import InvalidReport, validate


@dataclass(frozen=True, kw_only=True)
class Earlier:
    """What an earlier report in the same --out folder offers to reuse."""

    created: str | None = None
    # Target name -> its entry, for the entries that carry a resume key.
    targets: Mapping[str, TargetResult] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    # Why nothing can be reused, when that is so (no report there, not a farm report).
    note: str | None = None

    def reusable(self, name: str, key: str) -> TargetResult | None:
        entry = self.targets.get(name)
        return entry if entry is not None and entry.resume_key == key else None


def resume_key(material: Mapping[str, Any]) -> str:
    """One hash over what a target's result depends on; ``material`` must be JSON (sorted here, so order is free)."""
    return hashlib.sha256(json.dumps(material, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_earlier(path: Path) -> Earlier:
    """The earlier report at ``path``; a missing or unreadable one offers nothing, and says why."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        validate(document)
        found = [decode(TargetResult, t, where="targets[].") for t in document["targets"]]
    except FileNotFoundError:
        return Earlier(note=f"no earlier report at {path}: every target runs")
    except (OSError, ValueError, InvalidReport, ContractError) as exc:
        return Earlier(note=f"the earlier report {path} cannot be read ({str(exc)[:200]}): every target runs")
    targets = {t.name: t for t in found if t.resume_key}
    return Earlier(created=document.get("created"), targets=targets, warnings=tuple(document.get("warnings", ())))
