"""Every value a user can type is checked before anything starts, with the field named."""

from __future__ import annotations

import pytest

from benchmark.config import (
    RunConfig,
    SamplingParams,
    ServerSettings,
    parse_batch_sizes,
    parse_int,
)
from benchmark.errors import ConfigError, ServerLimitError


def field_error(make) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        make()
    return info.value


def test_defaults_are_tgi_benchmark_defaults():
    config = RunConfig(tokenizer_name="org/model").validate()
    assert config.batch_sizes == (1, 2, 4, 8, 16, 32)
    assert (config.sequence_length, config.decode_length) == (10, 8)
    assert (config.runs, config.warmups) == (10, 1)
    assert config.url == "http://localhost:3000"
    assert config.api == "tgi"


@pytest.mark.parametrize(
    "text, expected",
    [("1,2,4", (1, 2, 4)), ("8 4 4 1", (1, 4, 8)), ([1, "2,16"], (1, 2, 16)), (4, (4,))],
)
def test_batch_sizes_accept_lists_and_commas(text, expected):
    assert parse_batch_sizes(text) == expected


@pytest.mark.parametrize("text", ["", "0", "-1", "two", "1,2,abc", "1.5", "100000"])
def test_bad_batch_sizes_name_the_field(text):
    err = field_error(lambda: parse_batch_sizes(text))
    assert err.field == "batch_sizes"
    assert "Batch sizes" in str(err)


def test_text_in_a_number_field_is_refused_with_its_label():
    err = field_error(lambda: parse_int("sequence_length", "five hundred"))
    assert err.field == "sequence_length"
    assert str(err) == "Sequence length must be a whole number, got 'five hundred'."


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"sequence_length": 0}, "sequence_length"),
        ({"decode_length": -3}, "decode_length"),
        ({"runs": 0}, "runs"),
        ({"warmups": -1}, "warmups"),
        ({"api": "grpc"}, "api"),
        ({"url": "localhost:3000"}, "url"),
        ({"url": "ftp://host"}, "url"),
        ({"mode": "concurrency"}, "duration_s"),
        ({"mode": "bursts"}, "mode"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"tokenizer_name": "  "}, "tokenizer_name"),
        ({"sampling": SamplingParams(temperature=0)}, "temperature"),
        ({"sampling": SamplingParams(top_p=1.0)}, "top_p"),
        ({"sampling": SamplingParams(top_n_tokens=11)}, "top_n_tokens"),
        ({"seed": 2**64}, "seed"),  # TGI's seed is a u64: every request would get a 422
    ],
)
def test_run_config_errors_name_the_field(changes, field):
    values = {"tokenizer_name": "org/model", **changes}
    err = field_error(lambda: RunConfig(**values).validate())
    assert err.field == field


def test_request_cap_counts_warmups_and_every_batch_size():
    config = RunConfig(tokenizer_name="m/m", batch_sizes=(1, 2, 4), runs=3, warmups=1)
    assert config.planned_requests() == (1 + 2 + 4) * 4
    capped = RunConfig(**{**config.__dict__, "max_total_requests": 27})
    err = field_error(capped.validate)
    assert "28 requests" in str(err) and "27" in str(err)


def test_unbounded_concurrency_run_is_refused_under_a_cap():
    config = RunConfig(tokenizer_name="m/m", mode="concurrency", duration_s=10,
                       max_total_requests=100)
    err = field_error(config.validate)
    assert "unbounded" in str(err)


def test_server_limits_refuse_too_long_inputs():
    config = RunConfig(tokenizer_name="m/m", sequence_length=512, decode_length=128)
    config.check_against_server({"max_input_tokens": 1024, "max_total_tokens": 2048})
    with pytest.raises(ServerLimitError, match="max_input_tokens = 256"):
        config.check_against_server({"max_input_tokens": 256, "max_total_tokens": 2048})
    with pytest.raises(ServerLimitError, match="640 is more than the server allows"):
        config.check_against_server({"max_input_tokens": 1024, "max_total_tokens": 600})


def test_config_round_trips_through_a_dict():
    config = RunConfig(tokenizer_name="m/m", batch_sizes=(2, 8), seed=7,
                       sampling=SamplingParams(temperature=0.7, do_sample=True))
    assert RunConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "model_id", ["astronomer/Llama-3-8B-Instruct-GPTQ-8-Bit", "gpt2-org/gpt2.v1", "a/b"]
)
def test_hub_model_ids_are_accepted(model_id):
    assert ServerSettings(model_id=model_id).validate().model_id == model_id


@pytest.mark.parametrize("model_id", ["", "llama", "../../etc/passwd", "org/name/extra",
                                      "org/na me", "-org/name", "org/..", "org--x/name"])
def test_malformed_model_ids_are_refused(model_id):
    assert field_error(lambda: ServerSettings(model_id=model_id).validate()).field == "model_id"


def test_existing_local_folder_is_a_model_id(tmp_path):
    assert ServerSettings(model_id=str(tmp_path)).validate().model_id == str(tmp_path)


@pytest.mark.parametrize(
    "changes, field, words",
    [
        ({"max_input_tokens": 2048, "max_total_tokens": 2048}, "max_input_tokens", "less than"),
        ({"quantize": "gptq", "dtype": "float16"}, "dtype", "not both"),
        ({"quantize": "int3"}, "quantize", "gptq"),
        ({"max_batch_size": 0}, "max_batch_size", "at least 1"),
        ({"trust_remote_code": True}, "trust_remote_code", "ALLOW_TRUST_REMOTE_CODE"),
        ({"port": 70000}, "port", "at most 65535"),
        ({"max_batch_prefill_tokens": 100, "max_input_tokens": 512}, "max_batch_prefill_tokens",
         "at least max input tokens"),
    ],
)
def test_server_settings_cross_checks(changes, field, words):
    err = field_error(lambda: ServerSettings(model_id="org/model", **changes).validate())
    assert err.field == field
    assert words in str(err)


def test_trust_remote_code_only_when_the_owner_allows_it():
    settings = ServerSettings(model_id="org/model", trust_remote_code=True)
    assert settings.validate(allow_trust_remote_code=True) is settings


def test_server_url_for_a_wildcard_host_is_loopback():
    assert ServerSettings(model_id="o/m", hostname="0.0.0.0", port=1337).url == \
        "http://127.0.0.1:1337"


@pytest.mark.parametrize("changes, field", [
    ({"revision": "--trust-remote-code"}, "revision"),
    ({"revision": "-h"}, "revision"),
    ({"revision": "main\n--trust-remote-code"}, "revision"),
    ({"revision": "../../etc"}, "revision"),
    ({"hostname": "--trust-remote-code"}, "hostname"),
    ({"hostname": "-0"}, "hostname"),
])
def test_values_that_would_read_as_launcher_flags_are_refused(changes, field):
    with pytest.raises(ConfigError) as err:
        ServerSettings(model_id="org/model", **changes).validate()
    assert err.value.field == field


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/12", "5f3a9c0d" * 5, "gptq-4bit"])
def test_real_revisions_are_accepted(revision):
    assert ServerSettings(model_id="org/model", revision=revision).validate().revision == revision


def test_a_local_folder_named_like_a_flag_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "--trust-remote-code").mkdir()
    with pytest.raises(ConfigError) as err:
        ServerSettings(model_id="--trust-remote-code").validate()
    assert err.value.field == "model_id"


# ---------------------------------------------------------------------------------------------
# The request-rate pattern


def rate_config(**changes) -> RunConfig:
    values = dict(tokenizer_name="org/model", mode="rate", rates=(10,), duration_s=30)
    values.update(changes)
    return RunConfig(**values)


def test_rates_accept_lists_keep_whole_rates_as_ints_and_sort():
    from benchmark.config import parse_rates

    assert parse_rates("20, 0.5 10") == (0.5, 10, 20)
    assert parse_rates(["5", 2.0]) == (2, 5)
    assert all(type(r) is int for r in parse_rates("1,2"))


@pytest.mark.parametrize("changes, field, words", [
    ({"rates": ("0",)}, "rates", "Rates (requests/s) must be greater than 0"),
    ({"rates": ("-3",)}, "rates", "greater than 0"),
    ({"rates": ("fast",)}, "rates", "must be a number"),
    ({"rates": ("nan",)}, "rates", "finite"),
    ({"rates": ()}, "rates", "for example 10,20,40"),
    ({"burstiness": 0.5}, "burstiness", "choose gamma arrivals"),
    ({"arrivals": "gamma", "burstiness": 0}, "burstiness", "Burstiness must be at least"),
    ({"arrivals": "bursty"}, "arrivals", "poisson, constant, gamma"),
    ({"duration_s": None}, "duration_s", "needs a duration"),
    ({"ramp_up_s": 40}, "ramp_up_s", "at most 30 s"),
    ({"max_concurrency": 0}, "max_concurrency", "Max concurrency must be at least 1"),
    ({"rates": (100_000,), "duration_s": 3600}, "duration_s", "bound the step with --requests"),
])
def test_bad_rate_settings_are_refused_with_the_field_and_a_fix(changes, field, words):
    err = field_error(lambda: rate_config(**changes).validate())
    assert err.field == field
    assert words in err.message


def test_a_rate_run_validates_and_its_steps_are_its_rates():
    config = rate_config(rates=(5, 20.5), arrivals="gamma", burstiness=0.5, ramp_up_s=10,
                         max_concurrency=8, requests=100, schedule_seed=3).validate()
    assert config.steps == (5, 20.5)
    assert config.planned_requests() == 200
    assert RunConfig.from_dict(config.to_dict()) == config
