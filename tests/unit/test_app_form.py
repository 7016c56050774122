"""The app's form as data: typed text in, a validated run plan (or the wrong field named) out."""

from __future__ import annotations

import pytest

from benchmark.errors import ConfigError, ServerLimitError
from benchmark.app.form import (
    DEFAULTS,
    EXAMPLE_MODEL_ID,
    TARGET_ENDPOINT,
    build_plan,
    example_values,
)


def form(**overrides):
    values = dict(DEFAULTS)
    values.update(overrides)
    return values


def field_of(excinfo) -> str:
    return excinfo.value.field


def test_launch_plan_uses_the_model_as_tokenizer_and_the_server_address():
    plan = build_plan(form(model_id="org/model", quantize="gptq", max_total_tokens="2048",
                           max_input_tokens="1024", batch_sizes="4, 1 2", runs="3"),
                      server_port=4242)
    assert plan.launches_server
    assert plan.server.model_id == "org/model" and plan.server.quantize == "gptq"
    assert plan.server.port == 4242 and plan.run.url == "http://127.0.0.1:4242"
    assert plan.run.tokenizer_name == "org/model"
    assert plan.run.batch_sizes == (1, 2, 4) and plan.run.runs == 3
    assert plan.run.max_total_requests is None        # the owner's own server: no cap


def test_example_is_the_guides_model_with_gptq():
    plan = build_plan(form(**example_values()))
    assert plan.server.model_id == EXAMPLE_MODEL_ID and plan.server.quantize == "gptq"


def test_empty_number_fields_take_the_defaults():
    plan = build_plan(form(model_id="org/model", sequence_length="", decode_length=" ",
                           runs="", warmups=""))
    assert (plan.run.sequence_length, plan.run.decode_length, plan.run.runs,
            plan.run.warmups) == (10, 8, 10, 1)
    assert plan.server.max_total_tokens is None


@pytest.mark.parametrize("overrides, field, words", [
    (dict(runs="ten"), "runs", "Runs must be a whole number"),
    (dict(warmups="-1"), "warmups", "at least 0"),
    (dict(batch_sizes="1,2,100000"), "batch_sizes", "at most 8192"),
    (dict(batch_sizes="1,two"), "batch_sizes", "whole number"),
    (dict(sequence_length="1e3"), "sequence_length", "whole number"),
    (dict(max_batch_size="big"), "max_batch_size", "Max batch size must be a whole number"),
    (dict(top_p="1.5"), "top_p", "Top-p"),
    (dict(temperature="warm"), "temperature", "Temperature must be a number"),
    (dict(model_id=""), "model_id", "Model ID is empty"),
    (dict(model_id="not a model"), "model_id", "not a Hub id"),
    (dict(quantize="gptq", dtype="float16"), "dtype", "not both"),
    (dict(max_input_tokens="4096", max_total_tokens="1024"), "max_input_tokens", "less than"),
    (dict(batch_sizes="1,256"), "batch_sizes", "max concurrent requests (128)"),
    (dict(mode="Sustained concurrency"), "duration_s", "needs a duration"),
])
def test_each_mistake_names_its_field(overrides, field, words):
    with pytest.raises(ConfigError) as excinfo:
        build_plan(form(**{"model_id": "org/model", **overrides}))
    assert field_of(excinfo) == field
    assert words in str(excinfo.value)


def test_run_longer_than_the_chosen_server_limits_is_refused_before_launch():
    with pytest.raises(ServerLimitError, match="max_total_tokens = 20"):
        build_plan(form(model_id="org/model", max_total_tokens="20", sequence_length="16",
                        decode_length="8"))


def test_raising_max_concurrent_requests_allows_bigger_batches():
    plan = build_plan(form(model_id="org/model", batch_sizes="256",
                           max_concurrent_requests="512"))
    assert plan.run.batch_sizes == (256,)


def test_endpoint_plan_needs_a_url_and_tokenizer_and_respects_the_cap():
    plan = build_plan(form(target=TARGET_ENDPOINT, url="http://10.0.0.5:8080/",
                           tokenizer_name="org/model", batch_sizes="1,2", runs="2",
                           warmups="0"), endpoint_request_cap=6)
    assert plan.server is None and plan.run.url == "http://10.0.0.5:8080"
    assert plan.run.max_total_requests == 6
    with pytest.raises(ConfigError) as excinfo:
        build_plan(form(target=TARGET_ENDPOINT, url="http://10.0.0.5:8080",
                        tokenizer_name="org/model", batch_sizes="1,2", runs="2", warmups="1"),
                   endpoint_request_cap=6)
    assert "would send 9 requests" in str(excinfo.value)
    with pytest.raises(ConfigError) as excinfo:
        build_plan(form(target=TARGET_ENDPOINT, url="http://10.0.0.5:8080"))
    assert field_of(excinfo) == "tokenizer_name"
    with pytest.raises(ConfigError) as excinfo:
        build_plan(form(target=TARGET_ENDPOINT, url="file:///etc/passwd",
                        tokenizer_name="org/model"))
    assert field_of(excinfo) == "url"


def test_concurrency_fields_only_count_in_the_concurrency_pattern():
    rounds = build_plan(form(model_id="org/model", duration_s="30", requests="100"))
    assert rounds.run.mode == "rounds" and rounds.run.duration_s is None
    assert rounds.run.requests is None
    sustained = build_plan(form(model_id="org/model", mode="Sustained concurrency",
                                duration_s="30"))
    assert sustained.run.mode == "concurrency" and sustained.run.duration_s == 30.0


@pytest.mark.parametrize("url", ["http://user:secret@10.0.0.5:8080",
                                 "http://10.0.0.5:8080/?api_key=secret"])
def test_endpoint_url_with_a_secret_is_refused_as_it_would_be_shared(url):
    with pytest.raises(ConfigError) as excinfo:
        build_plan(form(target=TARGET_ENDPOINT, url=url, tokenizer_name="org/model"))
    assert field_of(excinfo) == "url"
    assert "secret" not in str(excinfo.value)          # the message does not repeat it
    assert "share link" in str(excinfo.value)


def test_capped_endpoint_run_in_concurrency_asks_for_a_request_count():
    values = form(target=TARGET_ENDPOINT, url="http://10.0.0.5:8080", tokenizer_name="org/m",
                  mode="Sustained concurrency", duration_s="30", batch_sizes="1,2")
    with pytest.raises(ConfigError) as excinfo:
        build_plan(values, endpoint_request_cap=100)
    assert field_of(excinfo) == "requests" and "at most 100 requests" in str(excinfo.value)
    plan = build_plan({**values, "requests": "40"}, endpoint_request_cap=100)
    assert plan.run.requests == 40
    assert build_plan(values).run.requests is None          # no cap: a duration is enough


def test_find_capacity_takes_the_prefilled_chat_targets():
    plan = build_plan(form(model_id="org/model", mode="Find capacity"))
    run = plan.run
    assert run.mode == "capacity"
    assert (run.slo_ttft_ms, run.slo_tpot_ms, run.slo_attainment) == (1000.0, 50.0, 0.9)
    assert run.capacity_duration_s == 300.0
    plan = build_plan(form(model_id="org/model", mode="Find capacity", slo_attainment="95 %",
                           slo_tpot_ms="", max_duration_s="120"))
    assert plan.run.slo_attainment == pytest.approx(0.95) and plan.run.slo_tpot_ms is None
    assert plan.run.max_duration_s == 120.0


def test_latency_targets_apply_to_every_pattern_and_can_be_left_empty():
    plan = build_plan(form(model_id="org/model"))
    assert plan.run.mode == "rounds" and plan.run.slo_ttft_ms == 1000.0
    plan = build_plan(form(model_id="org/model", slo_ttft_ms="", slo_tpot_ms=""))
    assert plan.run.slo_ttft_ms is None and plan.run.slo_tpot_ms is None


@pytest.mark.parametrize("overrides, field, words", [
    (dict(slo_ttft_ms="0"), "slo_ttft_ms", "TTFT target (ms) must be a positive number"),
    (dict(slo_tpot_ms="fast"), "slo_tpot_ms", "Time per token target (ms) must be a number"),
    (dict(slo_attainment="0"), "slo_attainment", "Requests within target (%) must be above 0"),
    (dict(slo_attainment="120"), "slo_attainment", "at most 100%"),
    (dict(mode="Find capacity", slo_ttft_ms="", slo_tpot_ms=""), "slo_ttft_ms",
     "needs at least one latency target"),
    (dict(mode="Find capacity", max_duration_s="10"), "max_duration_s",
     "Max duration (s) must be at least 30"),
])
def test_bad_targets_name_their_field(overrides, field, words):
    with pytest.raises(ConfigError) as excinfo:
        build_plan(form(model_id="org/model", **overrides))
    assert field_of(excinfo) == field and words in str(excinfo.value)


def test_find_capacity_against_a_capped_endpoint_is_refused_plainly():
    with pytest.raises(ConfigError) as excinfo:
        build_plan(form(target=TARGET_ENDPOINT, url="http://10.0.0.5:8080",
                        tokenizer_name="org/model", mode="Find capacity"),
                   endpoint_request_cap=500)
    assert field_of(excinfo) == "mode" and "Launch the model here" in str(excinfo.value)


def test_request_rate_pattern_reads_its_own_fields():
    plan = build_plan(form(model_id="org/model", mode="Request rate", rates="20, 5",
                           arrivals="constant", duration_s="60", max_concurrency="32"))
    run = plan.run
    assert (run.mode, run.rates, run.arrivals, run.duration_s, run.max_concurrency) == \
        ("rate", (5, 20), "constant", 60.0, 32)
    rounds = build_plan(form(model_id="org/model", rates="20", max_concurrency="4"))
    assert rounds.run.rates == () and rounds.run.max_concurrency is None


@pytest.mark.parametrize("overrides, field, words", [
    ({"rates": ""}, "rates", "Rates (requests/s) is empty"),
    ({"rates": "0"}, "rates", "Rates (requests/s) must be greater than 0"),
    ({"rates": "fast"}, "rates", "Rates (requests/s) must be a number"),
    ({"duration_s": ""}, "duration_s", "needs a duration"),
    ({"max_concurrency": "0"}, "max_concurrency", "Max concurrency must be at least 1"),
    ({"max_concurrency": "500"}, "max_concurrency", "max concurrent requests (128)"),
    ({"arrivals": "bursty"}, "arrivals", "Arrivals must be one of"),
])
def test_request_rate_mistakes_name_their_field(overrides, field, words):
    values = form(model_id="org/model", mode="Request rate", rates="10", duration_s="30")
    values.update(overrides)
    with pytest.raises(ConfigError) as excinfo:
        build_plan(values)
    assert field_of(excinfo) == field
    assert words in str(excinfo.value)


def test_capped_endpoint_run_at_a_rate_asks_for_a_request_count():
    values = form(target=TARGET_ENDPOINT, url="http://10.0.0.5:8080", tokenizer_name="org/m",
                  mode="Request rate", rates="5", duration_s="30")
    with pytest.raises(ConfigError) as excinfo:
        build_plan(values, endpoint_request_cap=100)
    assert field_of(excinfo) == "requests"
    assert build_plan({**values, "requests": "50"}, endpoint_request_cap=100).run.requests == 50


def test_worker_processes_are_one_by_default_and_an_advanced_setting_offers_more():
    assert DEFAULTS["workers"] == "1"
    assert build_plan(form(model_id="org/model")).run.workers == 1
    assert build_plan(form(model_id="org/model", workers="2")).run.workers == 2
    with pytest.raises(ConfigError) as err:
        build_plan(form(model_id="org/model", workers="0"))
    assert field_of(err) == "workers" and "Worker processes must be at least 1" in str(err.value)

    # On a Space (max_workers: its cores are shared with TGI) more than its share is refused.
    with pytest.raises(ConfigError) as err:
        build_plan(form(model_id="org/model", workers="4"), max_workers=1)
    assert field_of(err) == "workers" and "at most 1 here" in str(err.value)
