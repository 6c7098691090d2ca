"""Which trial is best: the tuned model when one is acceptable (within tolerance and, when timed, at least the floor
times as fast as fp32), else the best trade-off found."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from farm.job.tune.measure import Measure
from farm.job.tune.record import Trial


@dataclass(frozen=True, kw_only=True, slots=True)
class Judge:
    measure: Measure
    floor: float

    @property
    def timed(self) -> bool:
        return self.measure.timed

    def acceptable(self, trial: Trial) -> bool:
        if trial.accuracy is None or not trial.within:
            return False
        return not self.timed or (trial.speedup is not None and trial.speedup >= self.floor)

    def best_acceptable(self, trials: Sequence[Trial]) -> Trial | None:
        best = self.best(trials)
        return best if best is not None and self.acceptable(best) else None

    def best(self, trials: Sequence[Trial]) -> Trial | None:
        """The tuned model when one is acceptable (the fastest, or untimed the one keeping least out of int8);
        else the best trade-off: the fastest within tolerance, else the most accurate that beats the floor, else
        the most accurate."""
        measured = [t for t in trials if t.accuracy is not None and t.int8]
        if not measured:
            return None
        # Kept trials only: an acceptable trial is undone only when the model was within tolerance already and it
        # was no faster beyond noise (a fusion tried for speed), and then its own figure must not decide.
        good = [t for t in measured if self.acceptable(t) and t.kept]
        if good:
            if self.timed:
                return max(good, key=lambda t: t.speedup or 0.0)
            # Untimed, the fewest nodes out of int8, then the fewest quantization points, then accuracy.
            return min(
                good,
                key=lambda t: (
                    len(t.config.exclude),
                    len(t.config.seven_bit),
                    not t.config.fused,
                    -_cosine(t),
                    t.index,
                ),
            )
        within = [t for t in measured if t.within and t.speedup is not None]
        if within:
            return max(within, key=lambda t: t.speedup or 0.0)
        fast = [t for t in measured if not self.timed or (t.speedup or 0.0) >= self.floor]
        return min(fast or measured, key=lambda t: (self._rank_key(t), t.index))

    def _rank_key(self, trial: Trial) -> tuple[bool, float, float]:
        assert trial.accuracy is not None
        return (not trial.within, self.measure.gap(trial.accuracy), -trial.accuracy.cosine)


def _cosine(trial: Trial) -> float:
    return trial.accuracy.cosine if trial.accuracy is not None else -2.0
