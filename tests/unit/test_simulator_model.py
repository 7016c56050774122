"""The simulator's pure parts against hand-computed values: timing model, admission rules,
byte templates, metrics text, token counting fallback."""

from __future__ import annotations

import asyncio
import json

from benchmark.simulator import SimulatorConfig, TimingModel, TokenCounter
from benchmark.simulator.formats import ChatStreamFormat, TgiStreamFormat
from benchmark.simulator.metrics import Metrics
from benchmark.simulator.scheduler import Scheduler, Sequence


def test_timing_model_costs_by_hand():
    model = TimingModel.from_config(SimulatorConfig(
        prefill_base_ms=12, prefill_per_token_ms=0.12, decode_base_ms=10,
        decode_per_seq_ms=0.25, decode_per_context_token_us=0.06))
    assert model.prefill_ns(1000) == 12_000_000 + 120_000_000          # 132 ms
    assert model.decode_ns(1, 100) == 10_000_000 + 250_000 + 6_000     # 10.256 ms
    assert model.decode_ns(32, 32_000) == 10_000_000 + 8_000_000 + 1_920_000


def _seq(input_length: int, max_new: int = 10) -> Sequence:
    return Sequence(request_id="r", route="/generate", arrived_ns=0, input_length=input_length,
                    max_new_tokens=max_new, seed=1, reported_seed=1, eos_probability=0.0,
                    stops=None, model="m", created=0)


def test_admission_follows_tgi_queue_rules():
    async def main():
        config = SimulatorConfig(max_input_tokens=100, max_total_tokens=200,
                                 max_batch_prefill_tokens=150, max_batch_total_tokens=400,
                                 max_batch_size=3)
        sched = Scheduler(config)
        for n in (60, 60, 60, 10):
            sched.submit(_seq(n))
        first = sched._admit(None)           # 60 + 60 fit the prefill budget, +60 does not
        assert [s.input_length for s in first] == [60, 60]
        sched.running.extend(first)
        # head of line: the third (60) fits; the batch then holds 3 = max_batch_size
        second = sched._admit(None)
        assert [s.input_length for s in second] == [60]
        sched.running.extend(second)
        assert sched._admit(None) == []      # batch full
        assert sched.reserved == 3 * 70

        sched2 = Scheduler(config.replace(max_batch_size=None))
        running = [_seq(10, 90) for _ in range(2)]
        sched2.running.extend(running)
        sched2.reserved = 200
        sched2.submit(_seq(10, 90))
        assert sched2._admit(min_size=2) == []   # 1 waiting < floor(2 running x 1.2)
        assert len(sched2.queue) == 1
        assert len(sched2._admit(min_size=None)) == 1  # after max_waiting_tokens steps
        sched2.submit(_seq(100, 100))
        assert sched2._admit(None) == []         # 300 + 200 > the KV budget of 400
    asyncio.run(main())


def test_stream_templates_are_exact_tgi_events():
    async def main():
        seq = _seq(5, 3)
        seq.fmt = TgiStreamFormat()
        seq.details = True
        token = TgiStreamFormat.token(seq, 1, 0)
        assert token.startswith(b"data:{") and token.endswith(b"}\n\n")
        assert json.loads(token[5:]) == {
            "index": 1, "token": {"id": 1000, "text": " the", "logprob": -0.05,
                                  "special": False},
            "generated_text": None, "details": None}
        seq.words = [0, 1]
        seq.generated = 2
        seq.finish_reason = "length"
        final = json.loads(TgiStreamFormat.final(seq, 2, 1)[5:])
        assert final["generated_text"] == " the quick"
        assert final["details"] == {"finish_reason": "length", "generated_tokens": 2,
                                    "seed": 1, "input_length": 5}
        chat = ChatStreamFormat()
        seq.head = chat.head(seq)
        chunk = json.loads(ChatStreamFormat.token(seq, 1, 2)[5:])
        assert chunk["choices"][0]["delta"]["content"] == " brown"
        assert chunk["object"] == "chat.completion.chunk" and chunk["usage"] is None
    asyncio.run(main())


def test_metrics_text_format():
    metrics = Metrics()
    metrics.inc("tgi_request_count")
    metrics.inc("tgi_request_failure", err="overloaded")
    metrics.observe("tgi_request_duration", 0.3)
    text = metrics.render()
    lines = text.splitlines()
    assert "tgi_request_count 1" in lines
    assert 'tgi_request_failure{err="overloaded"} 1' in lines
    assert 'tgi_request_duration_bucket{le="0.25"} 0' in lines
    assert 'tgi_request_duration_bucket{le="0.5"} 1' in lines
    assert 'tgi_request_duration_bucket{le="+Inf"} 1' in lines
    assert "tgi_request_duration_sum 0.3" in lines
    assert "# TYPE tgi_request_duration histogram" in lines


def test_fallback_counting_rule():
    counter = TokenCounter()
    assert counter.count("") == 1
    assert counter.count("abcd") == 1 and counter.count("abcde") == 2
    assert counter.count("日本") == 2                       # 6 utf-8 bytes
    messages = [{"role": "user", "content": "hello there"}]
    # "<|user|>hello there<|assistant|>" is 32 bytes
    assert counter.count_chat(messages) == 8


def test_finish_reasons_follow_tgi_stopping_order():
    async def main():
        always_eos = _seq(5, 2)
        always_eos.eos_p = 1.0
        assert always_eos.emit(decode=False) is False      # the prefill token is never EOS
        assert always_eos.emit(decode=True) is True
        assert always_eos.finish_reason == "length"         # length wins over EOS
        early = _seq(5, 10)
        early.eos_p = 1.0
        early.emit(decode=False)
        early.emit(decode=True)
        assert early.finish_reason == "eos_token" and early.generated == 2
        assert early.generated_text() == " quick"           # the EOS token has no text
        stop = Sequence(request_id="r", route="/generate", arrived_ns=0, input_length=1,
                        max_new_tokens=10, seed=0, reported_seed=None, eos_probability=0.0,
                        stops=["quick bro"], model="m", created=0)
        while not stop.emit(decode=True):
            pass
        # " the quick" does not end with "quick bro"; " the quick brown" does not either:
        # TGI stops only when the text ends with the stop sequence, so generation goes on.
        assert stop.finish_reason == "length"
        ends = Sequence(request_id="r", route="/generate", arrived_ns=0, input_length=1,
                        max_new_tokens=10, seed=0, reported_seed=None, eos_probability=0.0,
                        stops=["quick brown"], model="m", created=0)
        while not ends.emit(decode=True):
            pass
        assert ends.finish_reason == "stop_sequence"
        assert ends.generated_text() == " the quick brown"
    asyncio.run(main())
