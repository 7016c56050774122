"""Cost per token, the capacity point's cost, the deployment plan and its sentence, on fixed
inputs; the price table; bad plan inputs refused with the field's label."""

from __future__ import annotations

import math
import re

import pytest

from benchmark.config import (RunConfig, check_cost, check_traffic, parse_headroom,
                              price_table)
from benchmark.core.capacity import Capacity, Probe
from benchmark.core.cost import (Price, capacity_cost, cost_document, deployment_plan,
                                 energy_by_step, kwh_per_million, plan_sentence, resolve_price,
                                 step_cost, traffic, usd_per_million, usd_per_thousand)
from benchmark.core.slo import Slo
from benchmark.core.stats import StepSummary
from benchmark.errors import ConfigError

L4 = Price(0.80, "test", "l4x1", "1x Nvidia L4", "L4", 0.80)


def step(output_tokens=36_000, input_tokens=72_000, ok=120, duration_s=60.0, n=4):
    return StepSummary(step=n, mode="concurrency", sequence_length=600, decode_length=300,
                       requests=ok, ok=ok, input_tokens=input_tokens,
                       output_tokens=output_tokens, duration_s=duration_s)


def capacity(rate=12.4, tokens_per_s=12.4 * 250):
    probe = Probe(kind="rate", step=3, rate_rps=rate, attainment=0.95, passed=True,
                  mean_output_tokens=250.0, output_tokens_per_s=tokens_per_s)
    return Capacity(slo=Slo(ttft_ms=1000), rate_rps=rate, in_flight=None,
                    output_tokens_per_s=tokens_per_s, bracket=(12.0, 13.0), converged=True,
                    ended="converged", max_throughput_rps=20.0, probes=(probe,))


# -- unit costs ---------------------------------------------------------------------------------

def test_dollars_per_million_tokens_is_the_hourly_price_over_tokens_per_hour():
    # $3.60/hour = $0.001/s; 1,000 tokens/s -> a million tokens take 1,000 s -> $1.00
    assert usd_per_million(3.60, 1000.0) == pytest.approx(1.0)
    assert usd_per_thousand(3.60, 1.0) == pytest.approx(1.0)  # 1 request/s: 1000 s -> $1
    assert usd_per_million(None, 1000.0) is None
    assert usd_per_million(3.60, 0.0) is None


def test_step_cost_uses_the_steps_tokens_and_duration():
    cost = step_cost(step(), 0.80)
    # 36,000 output tokens in 60 s = 600 tokens/s; $0.80/h -> 0.80/3600/600*1e6 = $0.370
    assert cost.output_tokens_per_s == pytest.approx(600.0)
    assert cost.usd_per_million_output_tokens == pytest.approx(0.80 / 3600 / 600 * 1e6)
    assert cost.usd_per_million_output_tokens == pytest.approx(0.3704, abs=1e-4)
    # prompt + output: 108,000 tokens in 60 s = 1,800 tokens/s
    assert cost.usd_per_million_tokens == pytest.approx(0.80 / 3600 / 1800 * 1e6)
    # 120 requests in 60 s = 2/s: $0.80/h / 7200 requests/h * 1000 = $0.111
    assert cost.usd_per_thousand_requests == pytest.approx(0.1111, abs=1e-4)
    assert cost.kwh_per_million_output_tokens is None


def test_step_without_a_price_has_rates_but_no_dollars():
    cost = step_cost(step(), None, j_per_output_token=0.36)
    assert cost.output_tokens_per_s == pytest.approx(600.0)
    assert cost.usd_per_million_output_tokens is None
    # 0.36 J/token x 1e6 = 360,000 J = 0.1 kWh
    assert cost.kwh_per_million_output_tokens == pytest.approx(0.1)
    assert kwh_per_million(3.6) == pytest.approx(1.0)


def test_capacity_cost_at_the_capacity_rate():
    at = capacity_cost(capacity(), 0.80, prompt_tokens=600)
    assert at.rate_rps == 12.4
    assert at.tokens_per_request == pytest.approx(850.0)          # 600 prompt + 250 output
    assert at.usd_per_million_output_tokens == pytest.approx(0.80 / 3600 / 3100 * 1e6)
    assert at.usd_per_thousand_requests == pytest.approx(0.80 / 3600 / 12.4 * 1000)
    none_passed = Capacity(slo=Slo(ttft_ms=1), rate_rps=None, in_flight=None,
                           output_tokens_per_s=None, bracket=None, converged=False,
                           ended="too slow", max_throughput_rps=None)
    assert capacity_cost(none_passed, 0.80, 600) is None


# -- the price ------------------------------------------------------------------------------------

def test_every_hardware_in_the_price_table_parses_and_has_a_positive_price():
    table = price_table()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", table["read_on"])
    assert all(s.startswith("https://huggingface.co/") for s in table["sources"])
    assert len(table["hardware"]) >= 10
    for name, entry in table["hardware"].items():
        config = RunConfig(tokenizer_name="gpt2", hardware=name).validate()
        price = resolve_price(None, config.hardware)
        assert price.usd_per_hour > 0 and math.isfinite(price.usd_per_hour), name
        assert price.usd_per_hour == entry["usd_per_hour"]
        assert entry["gpus"] >= 1 and entry["gpu"] in price.unit


def test_price_source_says_where_the_number_came_from():
    listed = resolve_price(None, "l4x1")
    assert listed.usd_per_hour == 0.80 and listed.unit == "L4"
    assert "Hugging Face's price for 1x Nvidia L4" in listed.source
    assert price_table()["read_on"] in listed.source
    same = resolve_price(0.80, "l4x1")
    assert "Hugging Face's price" in same.source
    typed = resolve_price(0.65, "l4x1")
    assert typed.usd_per_hour == 0.65
    assert typed.source.startswith("typed by the user") and "$0.80" in typed.source
    assert resolve_price(2.0, None).source == "typed by the user"
    assert resolve_price(None, None) is None
    assert resolve_price(None, "l4x4").unit == "4x L4"


# -- the plan -------------------------------------------------------------------------------------

def test_plan_from_the_issues_example():
    need = traffic(peak_rps=40)
    plan = deployment_plan(need, 12.4, headroom=0.2, price=L4)
    # 40 x 1.2 / 12.4 = 3.87 -> 4 servers; 4 x $0.80 x 730 h = $2,336
    assert plan.replicas == 4
    assert plan.usd_per_hour == pytest.approx(3.20)
    assert plan.usd_per_month == pytest.approx(2336.0)
    assert plan_sentence(plan).startswith(
        "At 40 requests/s at peak you need 4 × L4 (about $2,300 a month), with 20% headroom; "
        "each L4 handles 12.4 requests/s within your targets.")


def test_headroom_changes_the_count_and_no_headroom_rounds_up_only():
    need = traffic(peak_rps=40)
    assert deployment_plan(need, 12.4, headroom=0.0).replicas == 4      # 3.23 -> 4
    assert deployment_plan(need, 10.0, headroom=0.0).replicas == 4      # exactly 4
    assert deployment_plan(need, 10.0, headroom=0.5).replicas == 6      # 60 / 10
    assert deployment_plan(traffic(peak_rps=0.1), 10.0).replicas == 1   # never 0


def test_daily_users_become_a_peak_rate():
    need = traffic(daily_users=86_400, requests_per_user=10, peak_factor=3)
    assert need.average_rps == pytest.approx(10.0)
    assert need.peak_rps == pytest.approx(30.0)
    plan = deployment_plan(need, 12.4, headroom=0.2, price=L4, tokens_per_request=850)
    assert plan.replicas == 3                                    # 36 / 12.4 = 2.9
    assert plan.monthly_requests == pytest.approx(10.0 * 730 * 3600)
    assert plan.monthly_tokens == pytest.approx(10.0 * 730 * 3600 * 850)
    assert plan_sentence(plan).startswith("At 86,400 daily users × 10 requests a day "
                                          "(30 requests/s at peak, peak factor 3)")


def test_hosted_api_comparison_and_break_even():
    need = traffic(peak_rps=20, peak_factor=2)        # 10 requests/s on average
    plan = deployment_plan(need, 12.4, headroom=0.2, price=L4, tokens_per_request=1000,
                           api_usd_per_million=0.60)
    assert plan.replicas == 2
    monthly = 2 * 0.80 * 730                            # $1,168
    tokens = 10 * 730 * 3600 * 1000                     # 26.28 billion
    assert plan.monthly_tokens == pytest.approx(tokens)
    assert plan.api_usd_per_month == pytest.approx(tokens / 1e6 * 0.60)   # $15,768
    assert plan.break_even_tokens == pytest.approx(monthly / 0.60 * 1e6)  # 1.95 billion
    words = plan_sentence(plan)
    assert "about $16,000 a month" in words and "26.3 billion tokens" in words
    assert "the servers are cheaper" in words
    assert "cost the same at about 1.95 billion tokens a month" in words


def test_plan_without_a_price_counts_servers_only():
    plan = deployment_plan(traffic(peak_rps=40), 12.4, headroom=0.2)
    assert plan.usd_per_month is None
    assert plan_sentence(plan).startswith("At 40 requests/s at peak you need 4 servers like "
                                          "this one, with 20% headroom; each one handles 12.4")


# -- bad input, refused with the field's label before anything is computed ----------------------

@pytest.mark.parametrize("fields, field, words", [
    ({"gpu_price_per_hour": -1}, "gpu_price_per_hour", "GPU price ($/hour) must be greater than 0"),
    ({"gpu_price_per_hour": 0}, "gpu_price_per_hour", "GPU price ($/hour) must be greater than 0"),
    ({"hardware": "h100x9"}, "hardware", "Hardware must be one of t4-small, t4-medium, l4x1"),
    ({"plan_peak_rps": 0, "mode": "capacity", "slo_ttft_ms": 1000}, "plan_peak_rps",
     "Peak traffic (requests/s) must be greater than 0"),
    ({"plan_daily_users": 0, "plan_requests_per_user": 5, "mode": "capacity", "slo_ttft_ms": 1000},
     "plan_daily_users", "Daily users must be at least 1"),
    ({"plan_daily_users": 100, "mode": "capacity", "slo_ttft_ms": 1000}, "plan_requests_per_user",
     "Requests per user per day is needed too"),
    ({"plan_headroom": 150}, "plan_headroom", "Headroom (%) must be between 0 and 100%"),
    ({"plan_headroom": -10}, "plan_headroom", "Headroom (%) must be between 0 and 100%"),
    ({"plan_peak_factor": 0.5}, "plan_peak_factor", "Peak factor must be at least 1"),
    ({"api_price_per_million": -0.6, "mode": "capacity", "slo_ttft_ms": 1000},
     "api_price_per_million",
     "Hosted API price ($ per million tokens) must be greater than 0"),
    ({"plan_peak_rps": 40}, "plan_peak_rps", "choose Find capacity"),
])
def test_bad_cost_and_plan_input_is_refused_with_the_fields_label(fields, field, words):
    with pytest.raises(ConfigError) as err:
        RunConfig(tokenizer_name="gpt2", **fields).validate()
    assert err.value.field == field
    assert words in err.value.message


def test_headroom_is_typed_as_a_percentage():
    assert parse_headroom("20") == 20.0
    assert parse_headroom("20%") == 20.0
    assert parse_headroom("0") == 0.0
    assert parse_headroom("100") == 100.0
    with pytest.raises(ConfigError, match=r"Headroom \(%\) must be between 0 and 100%.*150%"):
        parse_headroom("150")
    with pytest.raises(ConfigError, match="Peak traffic"):
        check_traffic(40, 100, 5, 2, 20)             # two ways at once


# -- run.json's cost block ---------------------------------------------------------------------

def test_cost_document_holds_price_steps_capacity_and_plan():
    config = RunConfig(tokenizer_name="gpt2", mode="capacity", slo_ttft_ms=1000,
                       sequence_length=600, hardware="l4x1", plan_peak_rps=40)
    doc = cost_document(config, [step(n=3)], capacity(),
                        telemetry={"steps": [{"step": 3, "j_per_output_token": 0.72}]})
    assert doc["price"]["usd_per_hour"] == 0.80
    assert doc["price"]["table_read_on"] == price_table()["read_on"]
    assert doc["steps"][0]["usd_per_million_output_tokens"] == pytest.approx(0.3704, abs=1e-4)
    assert doc["steps"][0]["kwh_per_million_output_tokens"] == pytest.approx(0.2)
    assert doc["capacity"]["kwh_per_million_output_tokens"] == pytest.approx(0.2)
    assert doc["plan"]["replicas"] == 4
    assert doc["plan"]["sentence"].startswith("At 40 requests/s at peak you need 4 × L4")
    assert cost_document(RunConfig(tokenizer_name="gpt2"), [step()], None) is None


def test_energy_is_read_defensively_from_the_telemetry_block():
    assert energy_by_step(None) == {}
    assert energy_by_step({"steps": "nonsense"}) == {}
    assert energy_by_step({"steps": [{"step": 1, "j_per_output_token": None},
                                     {"step": 2, "j_per_output_token": 0.5}, 7]}) == {2.0: 0.5}
    assert check_cost(RunConfig(tokenizer_name="gpt2")) is None


def test_a_runs_telemetry_gives_kwh_beside_the_dollars():
    """The telemetry branch's RunResult.telemetry.to_dict(records, calibration) block (steps
    with j_per_output_token) feeds the energy column; a run without it has none."""
    from benchmark.core.records import RequestRecord
    from benchmark.core.results import RunResult

    records = [RequestRecord(step=1, run=1, request=i, scheduled_ns=0, sent_ns=0,
                             token_ns=[10**8, 2 * 10**8], end_ns=2 * 10**8, input_tokens=5,
                             output_tokens=2) for i in range(4)]
    run = RunResult(run_id="r", config=RunConfig(tokenizer_name="t", batch_sizes=(1,),
                                                 gpu_price_per_hour=1.0),
                    records=records, status="complete")
    assert run.cost()["steps"][0]["kwh_per_million_output_tokens"] is None

    class FakeTelemetry:
        def to_dict(self, records, calibration=None):
            return {"steps": [{"step": 1, "j_per_output_token": 1.8}]}

    run.telemetry = FakeTelemetry()
    assert run.cost()["steps"][0]["kwh_per_million_output_tokens"] == pytest.approx(0.5)
