"""The app's cost parts: the Space's hardware prefill (lookup stubbed, no network) and the
deployment plan recomputed from a saved capacity run's numbers."""

from __future__ import annotations

import pytest

from benchmark.app.costs import PLAN_DEFAULTS, plan_defaults, plan_markdown, space_hardware
from benchmark.config import RunConfig
from benchmark.core.capacity import Capacity, Probe
from benchmark.core.results import RunResult
from benchmark.core.slo import Slo

SPACE = {"SPACE_ID": "owner/bench", "SYSTEM": "spaces"}


def test_on_a_space_the_price_comes_from_its_hardware_and_says_so():
    hw = space_hardware(SPACE, lookup=lambda env: "l4x1")
    assert (hw.name, hw.price_text) == ("l4x1", "0.8")
    assert hw.note.startswith("This Space runs on 1x Nvidia L4: Hugging Face lists it at "
                              "$0.80/hour (price table read 20")


def test_hardware_that_cannot_be_read_or_priced_leaves_the_price_to_the_user():
    def fail(env):
        raise RuntimeError("401 Unauthorized for token hf_abcdefghijklmnopqrstuvwxyz123456")

    failed = space_hardware(SPACE, lookup=fail)
    assert failed.name is None and failed.price_text == ""
    assert "could not be read" in failed.note and "type the price per hour" in failed.note
    assert "hf_abcdefghijklmnop" not in failed.note          # a token never reaches the page
    free = space_hardware(SPACE, lookup=lambda env: "cpu-basic")
    assert free.price_text == "" and "cpu-basic, which has no hourly price" in free.note
    off = space_hardware({}, lookup=lambda env: pytest.fail("no lookup off a Space"))
    assert off.name is None and "Type what the server's machine costs" in off.note


def capacity_run(**config) -> RunResult:
    probe = Probe(kind="rate", step=3, rate_rps=12.4, attainment=0.95, passed=True,
                  mean_output_tokens=250.0, output_tokens_per_s=3100.0)
    capacity = Capacity(slo=Slo(ttft_ms=1000), rate_rps=12.4, in_flight=None,
                        output_tokens_per_s=3100.0, bracket=(12.4, 13.0), converged=True,
                        ended="converged", max_throughput_rps=20.0, probes=(probe,))
    return RunResult(run_id="20261203-120000-tiny-abcd", status="complete", capacity=capacity,
                     config=RunConfig(tokenizer_name="gpt2", mode="capacity",
                                      slo_ttft_ms=1000, sequence_length=600, **config))


def test_plan_recomputed_from_typed_fields():
    run = capacity_run(hardware="l4x1")
    values = plan_defaults(run)
    assert values["gpu_price_per_hour"] == "0.8" and values["plan_headroom"] == "20"
    text = plan_markdown(run, {**values, "plan_peak_rps": "40"})
    assert text.startswith("**At 40 requests/s at peak you need 4 × L4 (about $2,300 a month), "
                           "with 20% headroom; each L4 handles 12.4 requests/s")
    assert "| Cost per month (730 h, always on) | $2,336 |" in text
    assert "| Busiest-hour use of the servers | 81% |" in text            # 40 / (4 x 12.4)
    # no headroom, another price: 40 / 12.4 = 3.2 -> 4 servers at $1.00
    cheaper = plan_markdown(run, {**values, "plan_peak_rps": "40", "plan_headroom": "0",
                                  "gpu_price_per_hour": "1"})
    assert "| Cost per month (730 h, always on) | $2,920 |" in cheaper
    assert "typed by the user (Hugging Face lists 1x Nvidia L4 at $0.80/hour" in cheaper
    users = plan_markdown(run, {**values, "plan_daily_users": "86400",
                                "plan_requests_per_user": "10", "plan_peak_factor": "3",
                                "api_price_per_million": "0.6"})
    assert "30 requests/s at peak" in users and "3 × L4" in users       # 36 / 12.4 -> 3
    assert "| Hosted API, per month |" in users


@pytest.mark.parametrize("typed, words", [
    ({"plan_peak_rps": "0"}, "**Peak traffic (requests/s):** must be greater than 0"),
    ({"plan_peak_rps": ""}, "**Peak traffic (requests/s):** is empty"),
    ({"plan_peak_rps": "40", "plan_headroom": "150"},
     "**Headroom (%):** must be between 0 and 100%"),
    ({"plan_peak_rps": "40", "gpu_price_per_hour": "-2"},
     "**GPU price ($/hour):** must be greater than 0"),
    ({"plan_peak_rps": "<b>x</b>"}, "**Peak traffic (requests/s):** must be a number"),
])
def test_bad_plan_fields_are_named_and_nothing_is_computed(typed, words):
    text = plan_markdown(capacity_run(), {**PLAN_DEFAULTS, **typed})
    assert text.startswith(words)
    assert "you need" not in text and "<b>" not in text


def test_no_plan_section_without_a_capacity_answer():
    run = capacity_run()
    assert plan_defaults(RunResult(run_id=run.run_id, config=run.config)) is None
