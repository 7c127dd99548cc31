"""Automatic rollback: a promoted model that serves worse than the last value gives way to the one it replaced.

A challenger is promoted on held-out steps it never trained on, but those steps are the same
stream it learnt from: anyone who can write to the input topic can shape both. What it serves
next is the test that cannot be gamed in advance. From each promotion on, the live one-step
forecasts are judged in stretches of retraining.rollback_after_records scored forecasts; when
a stretch's skill against the naive forecast (skill.Totals.skill) falls below
retraining.rollback_below_skill, the champion the promotion replaced, kept in memory, serves
again as the next version, every series' state re-synchronised under it. Only the one model
a promotion replaced is kept, and only until the next promotion or restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from forecaster.config import Retraining
from forecaster.learning.resync import install
from forecaster.serving.engine import Engine
from forecaster.serving.model import Forecaster
from forecaster.serving.skill import Totals


@dataclass(frozen=True)
class Verdict:
    """A stretch whose live skill calls for a rollback."""

    skill: float
    scored: int  # one-step forecasts scored in the stretch
    version: int  # the version judged


class Rollback:
    """The champion the latest promotion replaced, and the live skill of its successor since."""

    def __init__(self, settings: Retraining):
        self.below, self.stretch = settings.rollback_below_skill, settings.rollback_after_records
        self.previous: Forecaster | None = None
        self.previous_version = 0
        self._since = Totals()  # the skill's totals when the stretch began

    def promoted(self, previous: Forecaster, version: int, engine: Engine) -> None:
        """`previous` (version `version`) gave way to what `engine` now serves: keep it, judge its successor."""
        self.previous, self.previous_version = previous, version
        self._since = engine.skill.totals

    def forget(self) -> None:
        """An operator chose the serving model (`forecaster models rollback`): nothing to go back to on its own."""
        self.previous = None

    def judge(self, engine: Engine) -> Verdict | None:
        """At the end of each stretch since the promotion, its verdict if the serving model fell below the skill
        threshold; None otherwise, or with nothing to roll back to."""
        if self.previous is None or self.below is None:
            return None
        stretch = engine.skill.totals.since(self._since)
        if stretch.scored < self.stretch:
            return None
        self._since = engine.skill.totals
        if stretch.skill >= self.below:
            return None
        return Verdict(stretch.skill, stretch.scored, engine.model_version)

    def revert(self, engine: Engine, resync_steps: int) -> int:
        """Serve the kept champion again, as the next version (versions only increase), states re-synchronised
        over `resync_steps`; forget it. Returns the version its weights had. Between batches."""
        model, self.previous = self.previous, None
        install(engine, model, engine.model_version + 1, resync_steps)
        return self.previous_version
