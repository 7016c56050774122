"""What the chat tab writes under an answer, and how it reads its settings (app/chat.py)."""

from __future__ import annotations

import pytest

from benchmark.app.chat import MAX_MESSAGE_CHARS, _settings, speed_line
from benchmark.core.chat import ROUTE_CHAT, ROUTE_PLAIN, ChatResult
from benchmark.errors import ConfigError


def result(**changes) -> ChatResult:
    values = dict(route=ROUTE_CHAT, ttft_ms=31.4, tokens_per_s=97.44, tokens=64,
                  finish_reason="stop")
    values.update(changes)
    return ChatResult(**values)


def test_speed_line_reads_like_the_issue_asks():
    assert speed_line(result(), simulated=False) == (
        "time to first token 31 ms · 97.4 tokens/s · 64 tokens")


def test_speed_line_says_simulated_cut_and_fallback_route():
    line = speed_line(result(route=ROUTE_PLAIN, finish_reason="length", tokens=1,
                             tokens_per_s=None), simulated=True)
    assert line.startswith("SIMULATED · time to first token 31 ms · – tokens/s · 1 token · ")
    assert "stopped at Max new tokens" in line
    assert line.endswith("via " + ROUTE_PLAIN)


def test_settings_empty_temperature_is_the_servers_default():
    assert _settings("hi", "", "") == (256, None)
    assert _settings("hi", " 32 ", "0") == (32, 0.0)


@pytest.mark.parametrize("max_new, temperature, label", [
    ("lots", "", "Max new tokens"), ("0", "", "Max new tokens"), ("99999", "", "Max new tokens"),
    ("16", "hot", "Temperature"), ("16", "-1", "Temperature")])
def test_bad_settings_name_their_field(max_new, temperature, label):
    with pytest.raises(ConfigError) as err:
        _settings("hi", max_new, temperature)
    assert str(err.value).startswith(label)


def test_a_huge_message_is_refused_before_sending():
    with pytest.raises(ConfigError) as err:
        _settings("x" * (MAX_MESSAGE_CHARS + 1), "16", "")
    assert "Message is" in str(err.value)
