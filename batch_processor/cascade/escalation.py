"""Which documents go to the LLM: the least sure share, and a small random audit.

By default the threshold follows a target share of LLM calls (``cascade_llm_share``, the
audit included): a document goes to the LLM when its calibrated confidence is below that of
that share of the documents seen so far (a sliding window of the last ``WINDOW``; for the
first ``WARM_UP``, the calibration's reference messages), and a shortfall so far raises the
share taken. Ranking, not comparing with a fixed number, is what keeps the share on target on
data unlike the calibration set (tweets, e-mails, chats).
A fixed ``cascade_confidence`` replaces the share: a document goes to the LLM when its
calibrated confidence is below it.

The audit (``cascade_audit_share``) samples sure documents by a hash of their text, so a
repeated text is sampled alike and the sample is the same in every run.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass
from typing import Literal

from batch_processor.cascade.calibration import Calibration

#: Sureness values the share's threshold is taken from.
WINDOW = 1000
#: The threshold is recomputed after this many documents (sorting the window: tens of µs).
RECOMPUTE_EVERY = 10
#: Until this many documents are seen, the calibration's reference messages set the threshold.
WARM_UP = 50
#: Each document the LLM share is behind its target raises the quantile taken by 1/this.
CATCH_UP = 50


@dataclass(frozen=True)
class Decision:
    """Where one document goes, with its calibrated confidence and the threshold applied."""

    route: Literal["offline", "llm", "audit"]
    confidence: float
    threshold: float


class Escalation:
    """Decides per document (see the module docstring); one per worker process."""

    def __init__(
        self,
        *,
        share: float,
        audit_share: float,
        calibration: Calibration,
        confidence: float | None = None,
    ) -> None:
        if not 0.0 <= share <= 1.0 or not 0.0 <= audit_share <= 1.0:
            raise ValueError("shares are between 0 and 1")
        self.share = share
        # The share is the ceiling of LLM calls: the audit too stays within it.
        self.audit_share = min(audit_share, share)
        self.fixed = confidence
        self.calibration = calibration
        self._window: deque[float] = deque(maxlen=WINDOW)
        self._seen = 0
        self.routes = {"offline": 0, "llm": 0, "audit": 0}
        self._threshold = self._quantile()

    @property
    def threshold(self) -> float:
        """The calibrated confidence below which a document goes to the LLM now."""
        if self.fixed is not None:
            return self.fixed
        return round(min(1.0, self._threshold), 4)

    def use(self, calibration: Calibration) -> None:
        """Calibrate with a new model version's fit (its sureness means something else).

        The window keeps the documents seen so far: the user's data says more about where the
        threshold lies than the new fit's reference, taken on the LLM's (hard) documents.
        """
        self.calibration = calibration

    def decide(self, sureness: float, label: str, text_key: str) -> Decision:
        """Where a document goes whose offline verdict is ``label`` with ``sureness``."""
        confidence = self.calibration(sureness, label)
        if self.fixed is not None:
            unsure = confidence < self.fixed
        else:
            rank = _rank(confidence, sureness, text_key)
            self._window.append(rank)
            self._seen += 1
            if self._seen % RECOMPUTE_EVERY == 0:
                self._threshold = self._quantile()
            unsure = rank < self._threshold
        if unsure:
            route: Literal["offline", "llm", "audit"] = "llm"
        elif audited(text_key, self.audit_share):
            route = "audit"
        else:
            route = "offline"
        self.routes[route] += 1
        return Decision(route=route, confidence=confidence, threshold=self.threshold)

    def judge(self, sureness: float, label: str, text_key: str) -> tuple[float, float, bool]:
        """(calibrated confidence, threshold, whether it is below) now, without counting it.

        For a document already counted by :meth:`decide` whose LLM answer came later: ranked
        as :meth:`decide` ranks it.
        """
        confidence = self.calibration(sureness, label)
        if self.fixed is not None:
            return confidence, self.fixed, confidence < self.fixed
        return confidence, self.threshold, _rank(confidence, sureness, text_key) < self._threshold

    def _quantile(self) -> float:
        """The rank below which the escalated share of the window lies.

        The share counts the audit too: escalation takes what is left of it.
        """
        escalated = (self.share - self.audit_share) / (1.0 - self.audit_share)
        if escalated <= 0.0:
            return 0.0
        if escalated >= 1.0:
            return 2.0  # above any confidence: everything goes
        # What the past fell short of (or went over) the share moves the level: data that gets
        # easier as it goes would otherwise be under-escalated by a threshold from harder days.
        behind = escalated * self._seen - self.routes["llm"]
        level = min(1.0, max(0.0, escalated + behind / CATCH_UP))
        seen = self._window if len(self._window) >= WARM_UP else self.calibration.reference
        ordered = sorted(seen)
        index = min(len(ordered) - 1, int(level * len(ordered)))
        return ordered[index]


def audited(text_key: str, share: float) -> bool:
    """Whether a sure document is in the audit sample (by a hash of its text)."""
    if share <= 0.0:
        return False
    return _unit(f"audit\x00{text_key}") < share


def _rank(confidence: float, sureness: float, text_key: str) -> float:
    """Where a document stands among others: its calibrated confidence, ties broken.

    Calibrated values come in steps: the raw sureness orders documents within one, and a hash
    of the text orders equally sure ones (a share of them must still go to the LLM).
    """
    return confidence + sureness * 1e-6 + _unit(f"rank\x00{text_key}") * 1e-9


def _unit(text: str) -> float:
    """A number in [0, 1) fixed by ``text`` (the same on every worker and in every run)."""
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
