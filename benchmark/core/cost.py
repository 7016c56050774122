"""What serving costs: dollars (and kWh) per million tokens, and a deployment plan for a traffic.

Pure: numbers in, numbers and sentences out; the price table is read by ``config.price_table``.

    price = resolve_price(0.80, "l4x1")                      # $/hour and where it came from
    step_cost(summary, price.usd_per_hour)                   # $ per million tokens of one step
    at = capacity_cost(capacity, price.usd_per_hour, 512)    # the same at the capacity rate
    need = traffic(daily_users=50_000, requests_per_user=20, peak_factor=2)
    plan = deployment_plan(need, at.rate_rps, headroom=0.2, price=price,
                           tokens_per_request=at.tokens_per_request)
    plan_sentence(plan)   # "At 23.1 requests/s at peak you need 3 × L4 (about $1,800 a month) ..."

How the numbers are made (and why):
- A rented machine costs its hourly price whether it is busy or not, so a step's cost per token
  is the price of the step's wall time divided by what it delivered in that time: $/hour /
  3600 / (tokens per second). Tokens are the ones the server reported for successful requests;
  failed requests deliver nothing and so make tokens dearer. Per million output tokens, per
  million tokens in all (prompt + output) and per thousand successful requests.
- At the capacity point (capacity mode) the same division uses the capacity rate and the
  tokens/s it delivers within the latency targets: the cheapest a token gets while users still
  get the service they were promised.
- Energy: where the run's telemetry measured joules per output token, kWh per million output
  tokens is ``J/token x 1e6 / 3.6e6``.
- A month is 730 hours (8,760 / 12); a machine is paid for the whole month (always on).
- Plan: the peak rate plus the headroom, divided by the capacity of one server, rounded up:
  ``ceil(peak x (1 + headroom) / capacity)``, at least one. Traffic typed as daily users x
  requests per user per day is spread over 86,400 s and multiplied by the peak factor (busiest
  hour / average); a peak rate typed directly is divided by it to estimate the month's volume.
- Hosted API comparison: the month's tokens (average rate x seconds in a month x tokens per
  request) at the API's price per million tokens, and the month's volume at which the API's
  bill equals the servers' fixed monthly cost.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from ..config import DEFAULT_HEADROOM_PCT, DEFAULT_PEAK_FACTOR, price_table
from .capacity import Capacity
from .stats import StepSummary

__all__ = ["HOURS_PER_MONTH", "SECONDS_PER_MONTH", "Price", "StepCost", "CapacityCost",
           "Traffic", "Plan", "resolve_price", "usd_per_million", "usd_per_thousand",
           "kwh_per_million", "step_cost", "capacity_cost", "traffic", "deployment_plan",
           "plan_sentence", "energy_by_step", "cost_document", "dollars", "about_dollars",
           "COST_COLUMNS"]

HOURS_PER_MONTH = 730.0
SECONDS_PER_DAY = 86_400.0
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600.0
J_PER_KWH = 3.6e6

# summary.csv's cost columns (empty where no price / no energy measurement).
COST_COLUMNS = ("usd_per_million_output_tokens", "usd_per_million_tokens",
                "usd_per_thousand_requests", "kwh_per_million_output_tokens")


# ---------------------------------------------------------------------------------------------
# The price


@dataclass(frozen=True)
class Price:
    """An hourly price and where it came from. ``hardware``: the price table's name (None when
    only a number was typed); ``label``: "1x Nvidia L4"; ``unit``: what one server is called in
    a sentence ("L4", "4x L4"); ``source``: plain words for the page and run.json."""

    usd_per_hour: float
    source: str
    hardware: str | None = None
    label: str | None = None
    unit: str | None = None
    table_price: float | None = None

    def to_dict(self) -> dict[str, Any]:
        table = price_table()
        return {**asdict(self), "table_read_on": table.get("read_on"),
                "table_sources": list(table.get("sources") or [])}


def resolve_price(usd_per_hour: float | None, hardware: str | None,
                  table: Mapping[str, Any] | None = None) -> Price | None:
    """The price to use: the typed one when given, else the table's price of ``hardware``;
    None when neither is known. The source says which, and when a typed price differs from the
    table's."""
    table = price_table() if table is None else table
    entry = (table.get("hardware") or {}).get(hardware) if hardware else None
    read_on = table.get("read_on", "an unknown date")
    label = unit = listed = None
    if entry is not None:
        label = str(entry["label"])
        gpus = int(entry.get("gpus") or 1)
        unit = str(entry["gpu"]) if gpus == 1 else f"{gpus}x {entry['gpu']}"
        listed = float(entry["usd_per_hour"])
    if usd_per_hour is None:
        if listed is None:
            return None
        return Price(listed, f"Hugging Face's price for {label} (price table read {read_on})",
                     hardware, label, unit, listed)
    typed = float(usd_per_hour)
    if listed is None:
        source = "typed by the user"
    elif math.isclose(typed, listed, rel_tol=1e-9):
        source = f"Hugging Face's price for {label} (price table read {read_on})"
    else:
        source = (f"typed by the user (Hugging Face lists {label} at {dollars(listed)}/hour, "
                  f"read {read_on})")
    return Price(typed, source, hardware, label, unit, listed)


# ---------------------------------------------------------------------------------------------
# Unit costs


def usd_per_million(usd_per_hour: float | None, per_second: float | None) -> float | None:
    """Dollars per million of something delivered at ``per_second`` by a machine costing
    ``usd_per_hour``; None without a price or when nothing was delivered."""
    if usd_per_hour is None or not per_second or per_second <= 0:
        return None
    return usd_per_hour / 3600.0 / per_second * 1e6


def usd_per_thousand(usd_per_hour: float | None, per_second: float | None) -> float | None:
    """Dollars per thousand (requests) delivered at ``per_second``."""
    value = usd_per_million(usd_per_hour, per_second)
    return None if value is None else value / 1000.0


def kwh_per_million(j_per_token: float | None) -> float | None:
    """kWh per million tokens from joules per token."""
    if j_per_token is None or j_per_token < 0:
        return None
    return j_per_token * 1e6 / J_PER_KWH


@dataclass(frozen=True)
class StepCost:
    """One step's delivery rates (over its duration) and what they cost."""

    step: float
    output_tokens_per_s: float | None
    tokens_per_s: float | None
    requests_per_s: float | None
    usd_per_million_output_tokens: float | None
    usd_per_million_tokens: float | None
    usd_per_thousand_requests: float | None
    kwh_per_million_output_tokens: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def cells(self) -> tuple[float | None, ...]:
        """The COST_COLUMNS values."""
        return (self.usd_per_million_output_tokens, self.usd_per_million_tokens,
                self.usd_per_thousand_requests, self.kwh_per_million_output_tokens)


def step_cost(summary: StepSummary, usd_per_hour: float | None,
              j_per_output_token: float | None = None) -> StepCost:
    """Cost of ``summary``'s step: its successful requests' tokens over its duration."""
    seconds = summary.duration_s if summary.duration_s and summary.duration_s > 0 else None
    out = None if seconds is None else summary.output_tokens / seconds
    total = None if seconds is None else (summary.output_tokens + summary.input_tokens) / seconds
    done = None if seconds is None else summary.ok / seconds
    return StepCost(step=summary.step, output_tokens_per_s=out, tokens_per_s=total,
                    requests_per_s=done,
                    usd_per_million_output_tokens=usd_per_million(usd_per_hour, out),
                    usd_per_million_tokens=usd_per_million(usd_per_hour, total),
                    usd_per_thousand_requests=usd_per_thousand(usd_per_hour, done),
                    kwh_per_million_output_tokens=kwh_per_million(j_per_output_token))


@dataclass(frozen=True)
class CapacityCost:
    """Cost at the capacity rate (the highest kept within the latency targets)."""

    rate_rps: float
    output_tokens_per_s: float
    tokens_per_request: float
    tokens_per_s: float
    usd_per_million_output_tokens: float | None
    usd_per_million_tokens: float | None
    usd_per_thousand_requests: float | None
    kwh_per_million_output_tokens: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def capacity_cost(capacity: Capacity | None, usd_per_hour: float | None,
                  prompt_tokens: float, j_per_output_token: float | None = None
                  ) -> CapacityCost | None:
    """Cost per token and per request at ``capacity``'s rate; None when no rate passed.
    ``prompt_tokens``: tokens per prompt (the run's sequence length)."""
    if capacity is None or not capacity.rate_rps or not capacity.output_tokens_per_s:
        return None
    rate = float(capacity.rate_rps)
    out = float(capacity.output_tokens_per_s)
    per_request = out / rate + float(prompt_tokens)
    total = rate * per_request
    return CapacityCost(rate_rps=rate, output_tokens_per_s=out, tokens_per_request=per_request,
                        tokens_per_s=total,
                        usd_per_million_output_tokens=usd_per_million(usd_per_hour, out),
                        usd_per_million_tokens=usd_per_million(usd_per_hour, total),
                        usd_per_thousand_requests=usd_per_thousand(usd_per_hour, rate),
                        kwh_per_million_output_tokens=kwh_per_million(j_per_output_token))


# ---------------------------------------------------------------------------------------------
# Deployment plan


@dataclass(frozen=True)
class Traffic:
    """The user's traffic: its peak and average rates (requests/s), and how it was given."""

    peak_rps: float
    average_rps: float
    peak_factor: float
    daily_users: int | None = None
    requests_per_user: float | None = None

    def words(self) -> str:
        if self.daily_users is not None and self.requests_per_user is not None:
            return (f"{self.daily_users:,} daily users × {self.requests_per_user:g} requests "
                    f"a day ({number(self.peak_rps)} requests/s at peak, "
                    f"peak factor {self.peak_factor:g})")
        return f"{number(self.peak_rps)} requests/s at peak"


def traffic(peak_rps: float | None = None, daily_users: int | None = None,
            requests_per_user: float | None = None,
            peak_factor: float = DEFAULT_PEAK_FACTOR) -> Traffic:
    """The traffic from a peak rate, or from daily users x requests per user per day spread
    over the day and multiplied by ``peak_factor``. Inputs are checked by
    ``config.check_traffic`` first; a ValueError here means a caller skipped it."""
    if peak_rps is not None:
        if peak_rps <= 0:
            raise ValueError("peak_rps must be positive")
        return Traffic(float(peak_rps), float(peak_rps) / peak_factor, float(peak_factor))
    if not daily_users or not requests_per_user:
        raise ValueError("give peak_rps, or daily_users and requests_per_user")
    average = daily_users * requests_per_user / SECONDS_PER_DAY
    return Traffic(average * peak_factor, average, float(peak_factor), int(daily_users),
                   float(requests_per_user))


@dataclass(frozen=True)
class Plan:
    """How many servers the traffic needs and what they cost (None where no price is known).

    replicas: servers (machines at ``price``) needed for the peak plus the headroom;
    usd_per_hour / usd_per_month: all of them, always on; monthly_tokens: the traffic's tokens
    in a month (average rate); usd_per_million_tokens: the servers' monthly cost over those
    tokens; api_*: the hosted API's monthly bill at its price, and break_even_tokens: the
    monthly tokens at which the API costs the same as the servers."""

    traffic: Traffic
    capacity_rps: float
    headroom: float
    replicas: int
    unit: str | None
    usd_per_hour: float | None
    usd_per_month: float | None
    tokens_per_request: float | None
    monthly_requests: float
    monthly_tokens: float | None
    usd_per_million_tokens: float | None
    api_usd_per_million: float | None = None
    api_usd_per_month: float | None = None
    break_even_tokens: float | None = None

    @property
    def utilisation(self) -> float:
        """Share of the servers' capacity the peak uses."""
        return self.traffic.peak_rps / (self.replicas * self.capacity_rps)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["utilisation_at_peak"] = self.utilisation
        data["sentence"] = plan_sentence(self)
        return data


def deployment_plan(need: Traffic, capacity_rps: float, *,
                    headroom: float = DEFAULT_HEADROOM_PCT / 100.0,
                    price: Price | None = None, tokens_per_request: float | None = None,
                    api_usd_per_million: float | None = None) -> Plan:
    """Servers for ``need`` when one keeps ``capacity_rps`` within the targets; ``headroom``
    is a fraction (0.2 = 20% spare)."""
    if capacity_rps <= 0:
        raise ValueError("capacity_rps must be positive")
    wanted = need.peak_rps * (1.0 + headroom) / capacity_rps
    replicas = max(1, math.ceil(wanted - 1e-9))
    hourly = None if price is None else replicas * price.usd_per_hour
    monthly = None if hourly is None else hourly * HOURS_PER_MONTH
    requests = need.average_rps * SECONDS_PER_MONTH
    tokens = None if tokens_per_request is None else requests * tokens_per_request
    api_month = (None if api_usd_per_million is None or tokens is None
                 else tokens / 1e6 * api_usd_per_million)
    even = (None if api_usd_per_million is None or monthly is None
            else monthly / api_usd_per_million * 1e6)
    return Plan(traffic=need, capacity_rps=float(capacity_rps), headroom=float(headroom),
                replicas=replicas, unit=None if price is None else price.unit,
                usd_per_hour=hourly, usd_per_month=monthly,
                tokens_per_request=tokens_per_request, monthly_requests=requests,
                monthly_tokens=tokens,
                usd_per_million_tokens=(None if monthly is None or not tokens
                                        else monthly / tokens * 1e6),
                api_usd_per_million=api_usd_per_million, api_usd_per_month=api_month,
                break_even_tokens=even)


def plan_sentence(plan: Plan) -> str:
    """The plan in plain words, e.g. "At 40 requests/s at peak you need 4 × L4 (about $2,300 a
    month); each L4 handles 12.4 requests/s within your targets." """
    unit = plan.unit or "server"
    units = unit if plan.unit or plan.replicas == 1 else "servers"
    need = f"{plan.replicas} × {unit}" if plan.unit else f"{plan.replicas} {units} like this one"
    cost = ("" if plan.usd_per_month is None
            else f" (about {about_dollars(plan.usd_per_month)} a month)")
    spare = (f", with {plan.headroom * 100:g}% headroom" if plan.headroom > 0 else "")
    each = f"each {unit}" if plan.unit else "each one"
    text = (f"At {plan.traffic.words()} you need {need}{cost}{spare}; {each} handles "
            f"{number(plan.capacity_rps)} requests/s within your targets.")
    if plan.api_usd_per_million is not None and plan.break_even_tokens is not None:
        api = f"{dollars(plan.api_usd_per_million)} per million tokens"
        if plan.api_usd_per_month is not None and plan.monthly_tokens is not None:
            cheaper = ("the servers are cheaper" if plan.api_usd_per_month > plan.usd_per_month
                       else "the API is cheaper")
            text += (f" A hosted API at {api} would cost about "
                     f"{about_dollars(plan.api_usd_per_month)} a month for this traffic "
                     f"({tokens_words(plan.monthly_tokens)} tokens); {cheaper}.")
        else:
            text += f" Against a hosted API at {api}:"
        text += (f" The two cost the same at about {tokens_words(plan.break_even_tokens)} "
                 f"tokens a month.")
    return text


# ---------------------------------------------------------------------------------------------
# A run's cost, as run.json holds it


def energy_by_step(telemetry: Any) -> dict[float, float]:
    """Joules per output token of each step, from run.json's ``telemetry`` block (written by the
    telemetry sampler where GPUs count energy); empty when absent or unreadable."""
    steps = telemetry.get("steps") if isinstance(telemetry, Mapping) else None
    out: dict[float, float] = {}
    for entry in steps or ():
        if not isinstance(entry, Mapping):
            continue
        value, step = entry.get("j_per_output_token"), entry.get("step")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 \
                and isinstance(step, (int, float)):
            out[float(step)] = float(value)
    return out


def cost_document(config: Any, steps: list[StepSummary], capacity: Capacity | None,
                  telemetry: Any = None) -> dict[str, Any] | None:
    """run.json's ``cost`` block: the price and its source, each step's cost (and energy), the
    cost at the capacity point and the deployment plan; None when there is neither a price
    nor an energy measurement."""
    price = resolve_price(getattr(config, "gpu_price_per_hour", None),
                          getattr(config, "hardware", None))
    energy = energy_by_step(telemetry)
    if price is None and not energy:
        return None
    hourly = None if price is None else price.usd_per_hour
    step_costs = [step_cost(s, hourly, energy.get(float(s.step))) for s in steps]
    at_probe = None
    if capacity is not None and capacity.rate_rps is not None:
        at_probe = next((p.step for p in capacity.probes
                         if p.passed and p.rate_rps == capacity.rate_rps), None)
    at = capacity_cost(capacity, hourly, getattr(config, "sequence_length", 0),
                       None if at_probe is None else energy.get(float(at_probe)))
    plan = None
    if at is not None and _has_traffic(config):
        need = traffic(config.plan_peak_rps, config.plan_daily_users,
                       config.plan_requests_per_user, config.plan_peak_factor)
        plan = deployment_plan(need, at.rate_rps, headroom=config.plan_headroom / 100.0,
                               price=price,
                               tokens_per_request=at.tokens_per_request,
                               api_usd_per_million=config.api_price_per_million)
    return {
        "price": None if price is None else price.to_dict(),
        "hours_per_month": HOURS_PER_MONTH,
        "steps": [c.to_dict() for c in step_costs],
        "capacity": None if at is None else at.to_dict(),
        "plan": None if plan is None else plan.to_dict(),
    }


def _has_traffic(config: Any) -> bool:
    return (getattr(config, "plan_peak_rps", None) is not None
            or getattr(config, "plan_daily_users", None) is not None)


# ---------------------------------------------------------------------------------------------
# Words for numbers


def number(value: float) -> str:
    """A rate for a sentence: 3 significant figures, thousands separated (12.4, 1,250)."""
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def dollars(value: float) -> str:
    """``$2,336``, ``$12.40``, ``$0.80``; below a dollar 3 significant figures ($0.538,
    $0.0345), so that small unit costs keep their digits."""
    if value >= 100:
        return f"${value:,.0f}"
    if value >= 1 or value == 0:
        return f"${value:,.2f}"
    text = f"{value:.3g}"
    if "e" in text:
        return f"${value:.2e}"
    if len(text.split(".")[-1]) < 2:
        text = f"{value:.2f}"
    return f"${text}"


def about_dollars(value: float) -> str:
    """A rounded amount for a sentence: 2 significant figures from $100 up ($2,336 ->
    "$2,300"), else ``dollars``."""
    if value >= 100:
        digits = int(math.floor(math.log10(value))) - 1
        return f"${round(value, -digits):,.0f}"
    return dollars(value)


def tokens_words(value: float) -> str:
    """``3.2 billion``, ``410 million``, ``52,000``."""
    if value >= 1e9:
        return f"{value / 1e9:.3g} billion"
    if value >= 1e6:
        return f"{value / 1e6:.3g} million"
    return f"{value:,.0f}"
