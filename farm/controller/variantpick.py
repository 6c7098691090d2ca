"""`farm matrix --variant NAME`: evaluate only the named variants, for a quick answer on a known choice.

fp32 always runs: it is every figure's reference. A named int8 variant runs on the targets whose candidates
(targets.toml) hold it, and is prepared only when one of them does; a target whose list lacks it does not evaluate it
(its candidates say what its runtime supports, e.g. S8S8 alone on a GPU), and the report says so. ``optimized`` runs
only when named; ``tuned`` is what ``--tuned DIR`` asks for, so it runs whenever that is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from farm.errors import BadInput
from farm.job.variants import CANDIDATES, FP32, OPTIMIZED, TUNED
from farm.targets.config import nearest

# Every name --variant takes: the baselines, the int8 recipes and farm tune's model.
VARIANT_NAMES = (FP32, OPTIMIZED, *CANDIDATES, TUNED)


def check_variants(names: Sequence[str], *, tuned: bool) -> tuple[str, ...]:
    """The variants a run evaluates, fp32 first, from --variant's ``names`` (empty: every variant, so ``()``);
    ``tuned``: --tuned was given. Raises BadInput naming the flag, the bad name and the valid ones."""
    if not names:
        return ()
    for name in names:
        if name not in VARIANT_NAMES:
            close = nearest(name, VARIANT_NAMES)
            valid = "" if close.startswith("valid:") else f" valid: {', '.join(VARIANT_NAMES)}"
            raise BadInput(f"--variant {name} is not a variant farm knows", fix=close + valid)
    if TUNED in names and not tuned:
        raise BadInput("--variant tuned needs the tuned models", fix="add --tuned DIR (a farm tune --out folder)")
    return tuple(dict.fromkeys((FP32, *names, *((TUNED,) if tuned else ()))))


def picked(candidates: Sequence[str], variants: Sequence[str]) -> list[str]:
    """The candidates a target evaluates: all of them, or with --variant only the named ones, in their order."""
    return [c for c in candidates if not variants or c in variants]


def skipped_baselines(variants: Sequence[str]) -> tuple[str, ...]:
    """The spec's ``skip``: ``optimized`` when --variant was given without naming it."""
    return (OPTIMIZED,) if variants and OPTIMIZED not in variants else ()


def missing_picks(candidates: Mapping[str, Sequence[str]], variants: Sequence[str]) -> list[str]:
    """One report warning per named int8 variant that some targets do not evaluate, their candidates (by target
    name, before --variant narrowed them) lacking it."""
    warnings = []
    for name in variants:
        if name not in CANDIDATES:
            continue
        lacking = [target for target, listed in candidates.items() if name not in listed]
        if lacking:
            warnings.append(
                f"--variant {name} is not among the candidates of {', '.join(lacking)} (targets.toml), "
                "so it was not evaluated there"
            )
    return warnings
