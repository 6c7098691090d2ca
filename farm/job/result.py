"""How the job writes its files (result.json, prepare.json, tune.json): atomically, so a crash leaves the previous
file whole; and how it words an exception. What result.json holds is farm.job.report.TargetResult."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as JSON, written atomically (see write_text_atomic)."""
    # allow_nan=False: NaN is not JSON, and a reader should fail here rather than far away.
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temp file beside ``path`` and rename it, so a crash leaves the previous file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # mkstemp makes the file 0600; the controller may read it as another user (rootless or remapped engines).
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def error_text(exc: BaseException) -> str:
    """The exception's own words (verbatim, as ORT and the quantizer wrote them), or its type when it has none."""
    return str(exc) or type(exc).__name__
