"""The app's cost parts (no gradio): the Space's hardware and price to prefill, and the
deployment plan recomputed from a saved capacity run and the fields of the results page.

    hw = space_hardware(os.environ)            # on a Space: its hardware, via the Hub's API
    hw.name, hw.price_text, hw.note            # "l4x1", "0.8", "This Space runs on ..."
    plan_markdown(result, {"plan_peak_rps": "40", "plan_headroom": "20", ...})

How the app knows its hardware: a Space gets ``SPACE_ID`` (``owner/name``) from the platform,
which sets no variable naming the hardware; ``HfApi().get_space_runtime(SPACE_ID)`` answers
``hardware.current`` (a ``SpaceHardware`` value such as ``l4x1``). For a private Space the call
needs a token that can read it (the ``HF_TOKEN`` secret). The call runs once, in a thread given
``LOOKUP_TIMEOUT_S``; when it fails the page says so and the user types the price.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import (DEFAULT_HEADROOM_PCT, DEFAULT_PEAK_FACTOR, MAX_API_PRICE_PER_MILLION,
                      MAX_GPU_PRICE_PER_HOUR, check_traffic, field_label, parse_headroom,
                      parse_positive, price_table)
from ..core.cost import (capacity_cost, deployment_plan, dollars, plan_sentence, resolve_price,
                         tokens_words, traffic)
from ..errors import ConfigError, redact

__all__ = ["SpaceHardware", "space_hardware", "hardware_choices", "PLAN_FIELDS",
           "PLAN_DEFAULTS", "plan_defaults", "plan_markdown", "LOOKUP_TIMEOUT_S"]

LOOKUP_TIMEOUT_S = 5.0
NO_HARDWARE = "none"

# The results page's plan fields, in display order, with their defaults (text).
PLAN_DEFAULTS: dict[str, str] = {
    "plan_peak_rps": "",
    "plan_daily_users": "",
    "plan_requests_per_user": "",
    "plan_peak_factor": f"{DEFAULT_PEAK_FACTOR:g}",
    "plan_headroom": f"{DEFAULT_HEADROOM_PCT:g}",
    "gpu_price_per_hour": "",
    "api_price_per_million": "",
}
PLAN_FIELDS: tuple[str, ...] = tuple(PLAN_DEFAULTS)


@dataclass(frozen=True)
class SpaceHardware:
    """What the form's price fields start with: a price table name (None: unknown), the price
    as text ("" when unknown) and a sentence saying where it came from."""

    name: str | None
    price_text: str
    note: str


def hardware_choices() -> list[tuple[str, str]]:
    """(label, value) of the form's hardware dropdown: none, then the price table's rows."""
    table = price_table()
    return [("none (type the price)", NO_HARDWARE)] + [
        (f"{entry['label']} ({dollars(entry['usd_per_hour'])}/hour)", name)
        for name, entry in table["hardware"].items()]


def _runtime_hardware(env: Mapping[str, str]) -> str | None:
    """``hardware.current`` of this Space from the Hub (raises on any failure)."""
    from huggingface_hub import HfApi   # heavy; only on a Space

    token = (env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN") or "").strip() or None
    api = HfApi(endpoint=env.get("HF_ENDPOINT") or None, token=token)
    runtime = api.get_space_runtime(env["SPACE_ID"].strip())
    value = runtime.hardware
    return None if value is None else str(getattr(value, "value", value))


def space_hardware(env: Mapping[str, str],
                   lookup: Callable[[Mapping[str, str]], str | None] | None = None,
                   timeout_s: float = LOOKUP_TIMEOUT_S) -> SpaceHardware:
    """The Space's hardware and its table price, or a sentence saying why not (off a Space,
    lookup failed, hardware without a price)."""
    table = price_table()
    if not env.get("SPACE_ID", "").strip():
        return SpaceHardware(None, "", "Type what the server's machine costs per hour, or pick "
                                       "its Hugging Face hardware. Empty: no cost figures.")
    found: dict[str, Any] = {}

    def ask() -> None:
        try:
            found["name"] = (lookup or _runtime_hardware)(env)
        except Exception as exc:  # noqa: BLE001 - any failure: the user types the price
            found["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=ask, daemon=True, name="space-hardware")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return SpaceHardware(None, "", f"This Space's hardware could not be read (no answer "
                                       f"within {timeout_s:g} s): type the price per hour.")
    if "error" in found:
        return SpaceHardware(None, "", "This Space's hardware could not be read ("
                             + redact(found["error"])[:160] + "): type the price per hour.")
    name = found.get("name")
    entry = table["hardware"].get(name) if name else None
    if entry is None:
        shown = str(name)[:40] if name else "no hardware yet"
        return SpaceHardware(None, "", f"This Space runs on {shown}, which has no hourly price "
                                       f"in the table: type the price per hour.")
    return SpaceHardware(name, f"{entry['usd_per_hour']:g}",
                         f"This Space runs on {entry['label']}: Hugging Face lists it at "
                         f"{dollars(entry['usd_per_hour'])}/hour (price table read "
                         f"{table['read_on']}). Change it if the server runs elsewhere.")


# ---------------------------------------------------------------------------------------------
# The deployment plan on the results page


def plan_defaults(result: Any) -> dict[str, str] | None:
    """The plan fields for ``result``: None when it is not a capacity run with an answer
    (the section stays hidden); the run's own traffic and price when it had them."""
    capacity = getattr(result, "capacity", None)
    if capacity is None or not capacity.rate_rps:
        return None
    config = result.config
    values = dict(PLAN_DEFAULTS)
    price = resolve_price(config.gpu_price_per_hour, config.hardware)
    if price is not None:
        values["gpu_price_per_hour"] = f"{price.usd_per_hour:g}"
    for name in ("plan_peak_rps", "plan_daily_users", "plan_requests_per_user",
                 "api_price_per_million"):
        value = getattr(config, name, None)
        if value is not None:
            values[name] = f"{value:g}"
    values["plan_peak_factor"] = f"{config.plan_peak_factor:g}"
    values["plan_headroom"] = f"{config.plan_headroom:g}"
    return values


def _text(values: Mapping[str, Any], name: str) -> str:
    value = values.get(name)
    return "" if value is None else str(value).strip()


def _plain(text: str) -> str:
    """Typed text echoed in a message, as plain markdown (no links, HTML or formatting)."""
    text = redact(text).replace("\\", "\\\\")
    for char in "`*_[]()#|!~":
        text = text.replace(char, "\\" + char)
    return " ".join(text.replace("<", "&lt;").replace(">", "&gt;").split())


def plan_markdown(result: Any, values: Mapping[str, Any]) -> str:
    """The plan for the typed traffic, from ``result``'s capacity (markdown). Every field is
    checked before anything is computed; a bad one gives "**Label:** what to type"."""
    capacity = getattr(result, "capacity", None)
    if capacity is None or not capacity.rate_rps:
        return ("A deployment plan needs a capacity run that found a rate within the targets "
                "(load pattern: Find capacity).")
    try:
        peak, users, each, factor, spare = check_traffic(
            _text(values, "plan_peak_rps"), _text(values, "plan_daily_users"),
            _text(values, "plan_requests_per_user"),
            _text(values, "plan_peak_factor") or PLAN_DEFAULTS["plan_peak_factor"],
            parse_headroom(_text(values, "plan_headroom") or PLAN_DEFAULTS["plan_headroom"]))
        typed_price = _text(values, "gpu_price_per_hour")
        usd = (None if typed_price == "" else
               parse_positive("gpu_price_per_hour", typed_price, MAX_GPU_PRICE_PER_HOUR, "0.80"))
        api_text = _text(values, "api_price_per_million")
        api = (None if api_text == "" else
               parse_positive("api_price_per_million", api_text, MAX_API_PRICE_PER_MILLION,
                              "0.60"))
        if peak is None and users is None:
            raise ConfigError("plan_peak_rps", f"{field_label('plan_peak_rps')} is empty: type "
                                               f"your traffic at its busiest (for example 40), "
                                               f"or daily users and requests per user per day.")
    except ConfigError as err:
        label = field_label(err.field)
        message = err.message[len(label) + 1:] if err.message.startswith(label + " ") \
            else err.message
        return f"**{label}:** {_plain(message[:300])}"
    config = result.config
    hardware = config.hardware
    if usd is None and hardware is None:
        price = None
    else:
        price = resolve_price(usd, hardware)
    at = capacity_cost(capacity, None if price is None else price.usd_per_hour,
                       config.sequence_length)
    need = traffic(peak, users, each, factor)
    plan = deployment_plan(need, float(capacity.rate_rps), headroom=spare / 100.0, price=price,
                           tokens_per_request=None if at is None else at.tokens_per_request,
                           api_usd_per_million=api)
    rows = [("Servers needed", f"{plan.replicas}"),
            ("Peak traffic", f"{need.peak_rps:.3g} requests/s"),
            ("Capacity of one server within the targets", f"{plan.capacity_rps:.3g} requests/s"),
            ("Headroom", f"{spare:g}%"),
            ("Busiest-hour use of the servers", f"{plan.utilisation:.0%}")]
    if plan.usd_per_hour is not None:
        rows += [("Cost per hour", dollars(plan.usd_per_hour)),
                 ("Cost per month (730 h, always on)", dollars(plan.usd_per_month))]
    if plan.monthly_tokens is not None:
        rows.append(("Tokens a month (prompt + output, average rate)",
                     tokens_words(plan.monthly_tokens)))
    if plan.usd_per_million_tokens is not None:
        rows.append(("Your cost per million tokens at this traffic",
                     dollars(plan.usd_per_million_tokens)))
    if plan.api_usd_per_month is not None:
        rows.append(("Hosted API, per month", dollars(plan.api_usd_per_month)))
    if plan.break_even_tokens is not None:
        rows.append(("Same cost as the API at", f"{tokens_words(plan.break_even_tokens)} "
                                                f"tokens a month"))
    table = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    source = "" if price is None else f"\n\nPrice: {dollars(price.usd_per_hour)}/hour, " \
                                      f"{price.source}."
    return f"**{plan_sentence(plan)}**\n\n{table}{source}"
