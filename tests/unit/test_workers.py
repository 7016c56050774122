"""How a step is dealt over worker processes (pure) and how --workers is typed."""

from __future__ import annotations

import pytest

from benchmark.config import RunConfig, auto_workers, parse_setting, setting
from benchmark.core.patterns import Concurrency
from benchmark.core.workers import deal, split_cap, split_quota
from benchmark.errors import ConfigError


def test_deal_is_round_robin_in_order_and_covers_everything_once():
    parts = deal(7, 3)
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(i for part in parts for i in part) == list(range(7))
    assert deal(1, 2) == [[0], []]  # batch size 1: the second worker has nothing to send


def test_quota_and_cap_add_up_to_what_was_asked():
    assert split_quota(20, [2, 1]) == [14, 6]
    assert split_quota(5, [1, 1, 1]) == [2, 2, 1]
    assert split_quota(None, [1, 1]) == [None, None]
    assert split_cap(10, 4) == [3, 3, 2, 2]
    assert split_cap(None, 2) == [None, None]
    assert split_cap(1, 2) == [1, 1]  # a worker never gets a cap of 0 (it could send nothing)


def test_a_workers_users_keep_their_global_names():
    pattern = Concurrency(2, requests=3, names=(1, 3), step=4)
    pattern.start(0)
    slots = [pattern.next_slot(0, 0), pattern.next_slot(1, 0), pattern.next_slot(0, 0)]
    assert [(s.step, s.run, s.request) for s in slots] == [(4, 2, 1), (4, 4, 1), (4, 2, 2)]
    assert pattern.next_slot(1, 0) is None  # its part of --requests is spent


def test_workers_flag_takes_a_number_or_auto():
    entry = setting("workers")
    assert parse_setting(entry, "3") == 3
    assert parse_setting(entry, "auto") == auto_workers()
    assert auto_workers(2) == 1 and auto_workers(16) == 15 and auto_workers(1) == 1
    with pytest.raises(ConfigError, match="Worker processes must be at least 1"):
        parse_setting(entry, "0")
    with pytest.raises(ConfigError, match="whole number, got 'many' \\(or type auto"):
        parse_setting(entry, "many")
    with pytest.raises(ConfigError) as err:
        RunConfig(tokenizer_name="t", workers=0).validate()
    assert err.value.field == "workers"


def test_the_capacity_search_refuses_workers_before_anything_is_sent():
    with pytest.raises(ConfigError) as err:
        RunConfig(tokenizer_name="t", mode="capacity", slo_ttft_ms=500.0, workers=2).validate()
    assert err.value.field == "workers" and "--workers 1" in err.value.message
