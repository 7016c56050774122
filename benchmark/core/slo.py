"""Latency targets (SLOs), which requests met them, attainment and goodput: pure functions.

    slo = Slo(ttft_ms=1000, tpot_ms=50, attainment=0.9)
    slo.misses(record)                     # ["ttft"] when its first token came after 1 s
    outcome = evaluate(records, slo, duration_s=60)
    outcome.attainment                     # good / sent, e.g. 0.93
    outcome.passed                         # attainment >= 0.9

A request is *good* when it finished without error and met every target given: time to first
token (``ttft_ms``), time per output token after the first (``tpot_ms``, the record's
``token_latency_ms``; a request of fewer than two tokens has no decode and cannot miss it) and
end-to-end latency (``e2e_ms``). *Attainment* is good requests divided by the requests sent:
errors and timeouts count as sent and not good, so a server that refuses work cannot look
better than one that serves it slowly. Requests the user cancelled are left out of both (they
were stopped by us, not by the server). *Goodput* is good requests per second of the step, and
*good output tokens/s* the output tokens of good requests per second: the throughput that
users who got their answer in time actually saw (the "goodput" of DistServe and vLLM's bench).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from .records import RequestRecord

__all__ = ["Slo", "SloOutcome", "evaluate", "slo_of", "SLO_NAMES", "DEFAULT_ATTAINMENT"]

DEFAULT_ATTAINMENT = 0.9
# Each target: (attribute of Slo, words for it in sentences).
SLO_NAMES = {
    "ttft": "time to first token",
    "tpot": "time per output token",
    "e2e": "end-to-end latency",
}


@dataclass(frozen=True)
class Slo:
    """The latency targets of a run (None: no target on that measure) and the share of
    requests that must meet them (``attainment``, a fraction in (0, 1])."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None
    attainment: float = DEFAULT_ATTAINMENT

    @property
    def given(self) -> bool:
        """True when at least one latency target is set."""
        return any(v is not None for v in (self.ttft_ms, self.tpot_ms, self.e2e_ms))

    def targets(self) -> dict[str, float]:
        """The targets that are set, by short name ("ttft", "tpot", "e2e"), in ms."""
        values = {"ttft": self.ttft_ms, "tpot": self.tpot_ms, "e2e": self.e2e_ms}
        return {k: float(v) for k, v in values.items() if v is not None}

    def misses(self, record: RequestRecord) -> list[str]:
        """The targets ``record`` missed ("error" first when it did not finish)."""
        missed: list[str] = [] if record.ok else ["error"]
        measured = {"ttft": record.ttft_ms, "tpot": record.token_latency_ms,
                    "e2e": record.e2e_ms}
        for name, limit in self.targets().items():
            value = measured[name]
            if value is None:
                # A failed request already missed ("error"). A finished one with a single
                # token has no decode, so no time per token to miss; with no token at all it
                # has no time to first token either, and misses that target.
                if record.ok and name != "tpot":
                    missed.append(name)
                continue
            if value > limit:
                missed.append(name)
        return missed

    def is_good(self, record: RequestRecord) -> bool:
        return not self.misses(record)

    def words(self) -> str:
        """The targets in plain words: "1 s to the first token and 50 ms per token"."""
        parts = []
        if self.ttft_ms is not None:
            parts.append(f"{duration_words(self.ttft_ms)} to the first token")
        if self.tpot_ms is not None:
            parts.append(f"{duration_words(self.tpot_ms)} per token")
        if self.e2e_ms is not None:
            parts.append(f"{duration_words(self.e2e_ms)} for the whole answer")
        if len(parts) <= 1:
            return "".join(parts)
        return ", ".join(parts[:-1]) + " and " + parts[-1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Slo":
        return cls(**{k: data.get(k) for k in ("ttft_ms", "tpot_ms", "e2e_ms")},
                   attainment=float(data.get("attainment", DEFAULT_ATTAINMENT)))


def slo_of(config: Any) -> Slo | None:
    """The ``Slo`` of a ``RunConfig`` (its ``slo_*`` fields), or None when it sets no target."""
    slo = Slo(ttft_ms=getattr(config, "slo_ttft_ms", None),
              tpot_ms=getattr(config, "slo_tpot_ms", None),
              e2e_ms=getattr(config, "slo_e2e_ms", None),
              attainment=float(getattr(config, "slo_attainment", None) or DEFAULT_ATTAINMENT))
    return slo if slo.given else None


@dataclass(frozen=True)
class SloOutcome:
    """How one step did against the SLO.

    sent: requests counted (cancelled ones left out); good: those that met every target;
    missed: how many missed each target ("error", "ttft", "tpot", "e2e"; a request can miss
    several); attainment: good / sent (None when nothing was sent); goodput_rps and
    good_output_tokens_per_s: per second of ``duration_s`` (None without a duration).
    """

    sent: int
    good: int
    missed: dict[str, int]
    attainment: float | None
    target: float
    goodput_rps: float | None
    good_output_tokens_per_s: float | None

    @property
    def passed(self) -> bool:
        """True when the share of good requests reached the target."""
        return self.attainment is not None and self.attainment >= self.target - 1e-12

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SloOutcome":
        return cls(sent=int(data["sent"]), good=int(data["good"]),
                   missed={str(k): int(v) for k, v in (data.get("missed") or {}).items()},
                   attainment=data.get("attainment"), target=float(data["target"]),
                   goodput_rps=data.get("goodput_rps"),
                   good_output_tokens_per_s=data.get("good_output_tokens_per_s"))


def evaluate(records: Iterable[RequestRecord], slo: Slo,
             duration_s: float | None) -> SloOutcome:
    """Attainment, goodput and good output tokens/s of ``records`` (one step's measured
    requests) against ``slo``; ``duration_s`` is the step's length (goodput's denominator)."""
    counted = [r for r in records if not (r.error is not None and r.error_kind == "cancelled")]
    missed: dict[str, int] = {}
    good: list[RequestRecord] = []
    for record in counted:
        misses = slo.misses(record)
        for name in misses:
            missed[name] = missed.get(name, 0) + 1
        if not misses:
            good.append(record)
    seconds = duration_s if duration_s and duration_s > 0 else None
    return SloOutcome(
        sent=len(counted),
        good=len(good),
        missed=missed,
        attainment=(len(good) / len(counted)) if counted else None,
        target=slo.attainment,
        goodput_rps=None if seconds is None else len(good) / seconds,
        good_output_tokens_per_s=(None if seconds is None else
                                  sum(r.output_token_count for r in good) / seconds),
    )


def duration_words(ms: float) -> str:
    """``1000`` -> "1 s", ``1500`` -> "1.5 s", ``50`` -> "50 ms", ``0.5`` -> "0.5 ms"."""
    if ms >= 1000:
        return f"{ms / 1000:.3g} s"
    return f"{ms:.3g} ms"
