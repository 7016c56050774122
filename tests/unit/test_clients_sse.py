"""SSE bytes -> events -> tokens on a record: the edge cases real servers produce, fed as bytes."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from benchmark.core.clients.base import error_message
from benchmark.core.clients.openai import OpenAIDecoder
from benchmark.core.clients.sse import SSEParser
from benchmark.core.clients.tgi import TGIDecoder
from benchmark.core.records import RequestRecord


def feed_all(chunks: list[bytes]) -> list[str]:
    parser = SSEParser()
    out: list[str] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    return out + parser.close()


def test_one_event_per_chunk():
    assert feed_all([b'data:{"a":1}\n\n', b'data: {"a":2}\n\n']) == ['{"a":1}', '{"a":2}']


def test_several_events_in_one_chunk():
    assert feed_all([b"data: 1\n\ndata: 2\n\ndata: 3\n\n"]) == ["1", "2", "3"]


def test_event_split_across_chunks_anywhere():
    payload = b'data: {"token":{"id":1,"text":"hi"}}\n\ndata: {"x":2}\n\n'
    expected = ['{"token":{"id":1,"text":"hi"}}', '{"x":2}']
    for cut in range(1, len(payload)):
        assert feed_all([payload[:cut], payload[cut:]]) == expected, cut
    assert feed_all([bytes([b]) for b in payload]) == expected


def test_crlf_line_endings_even_when_cut_inside_crlf():
    payload = b"data: 1\r\n\r\ndata: 2\r\n\r\n"
    for cut in range(1, len(payload)):
        assert feed_all([payload[:cut], payload[cut:]]) == ["1", "2"], cut


def test_data_with_and_without_space_and_comments_ignored():
    chunks = [b": keep-alive\n\n", b"data:[DONE]\n\n", b": ping\ndata: x\n\n", b"event: e\nid: 3\n\n"]
    assert feed_all(chunks) == ["[DONE]", "x"]


def test_multiline_data_joined_and_unterminated_last_event_kept():
    assert feed_all([b"data: a\ndata: b\n\n", b"data: tail"]) == ["a\nb", "tail"]


def test_nothing_returned_before_the_blank_line():
    parser = SSEParser()
    assert parser.feed(b"data: 1\n") == []
    assert parser.feed(b"\n") == ["1"]


def tgi_event(index: int, *, final: bool = False, generated: int = 3, input_length: int = 7,
              reason: str = "length") -> bytes:
    event = {"index": index, "token": {"id": index, "text": "x", "logprob": -0.1,
                                       "special": False},
             "generated_text": None, "details": None}
    if final:
        event["generated_text"] = "xxx"
        event["details"] = {"finish_reason": reason, "generated_tokens": generated,
                            "seed": None, "input_length": input_length}
    return b"data:" + json.dumps(event).encode() + b"\n\n"


def decode(decoder, chunks: list[tuple[int, bytes]]) -> bool:
    parser = SSEParser()
    for stamp, chunk in chunks:
        for data in parser.feed(chunk):
            if decoder.on_event(data, stamp):
                return True
    decoder.on_end()
    return False


def test_tgi_tokens_stamped_per_event_and_counts_from_final_details():
    record = RequestRecord(step=1, run=1, request=1)
    decoder = TGIDecoder(record)
    two_in_one = tgi_event(2) + tgi_event(3, final=True, generated=3, input_length=7)
    done = decode(decoder, [(100, tgi_event(1)), (250, two_in_one)])
    assert done
    assert record.token_ns == [100, 250, 250]
    assert record.output_tokens == 3 and record.input_tokens == 7
    assert record.finish_reason == "length" and record.ok


def test_tgi_early_eos_counts_what_came():
    record = RequestRecord(step=1, run=1, request=1, requested_output_tokens=10)
    decode(TGIDecoder(record), [(1, tgi_event(1)), (2, tgi_event(2, final=True, generated=2,
                                                                  reason="eos_token"))])
    assert record.output_tokens == 2 and record.finish_reason == "eos_token"


def test_tgi_error_event_is_an_error():
    record = RequestRecord(step=1, run=1, request=1)
    body = tgi_event(1) + b'data:{"error":"Request failed during generation: boom",' \
                          b'"error_type":"generation"}\n\n'
    assert decode(TGIDecoder(record), [(5, body)])
    assert not record.ok and record.error_kind == "stream"
    assert "boom" in record.error and "generation" in record.error


def test_tgi_stream_cut_before_final_event_is_an_error():
    record = RequestRecord(step=1, run=1, request=1)
    decode(TGIDecoder(record), [(1, tgi_event(1)), (2, tgi_event(2))])
    assert record.error_kind == "stream" and "2 tokens" in record.error
    assert record.token_ns == [1, 2]


def test_tgi_non_json_event_is_an_error():
    record = RequestRecord(step=1, run=1, request=1)
    decode(TGIDecoder(record), [(1, b"data: <html>\n\n")])
    assert record.error_kind == "stream" and "not JSON" in record.error


def chat_chunk(content: str | None, reason: str | None = None, usage: dict | None = None) -> bytes:
    choices = [] if content is None else [
        {"index": 0, "delta": {"role": "assistant", "content": content}, "finish_reason": reason}]
    return b"data: " + json.dumps({"choices": choices, "usage": usage}).encode() + b"\r\n\r\n"


def test_openai_chat_counts_from_usage_and_done_ends():
    record = RequestRecord(step=1, run=1, request=1)
    decoder = OpenAIDecoder(record, chat=True)
    chunks = [(1, chat_chunk("")),                 # role-only chunk: no token
              (2, chat_chunk("Hello there")),      # several tokens in one chunk
              (3, chat_chunk("!", reason="length")),
              (4, chat_chunk(None, usage={"prompt_tokens": 12, "completion_tokens": 5})),
              (5, b"data: [DONE]\r\n\r\n"),
              (6, chat_chunk("after done"))]
    assert decode(decoder, chunks)
    assert record.token_ns == [2, 3]
    assert record.output_tokens == 5 and record.input_tokens == 12
    assert record.finish_reason == "length" and record.ok
    assert record.token_latency_ms == pytest.approx((3 - 2) / 1e6 / 4)


def test_openai_end_of_sequence_chunk_without_text_is_the_last_tokens_arrival():
    """An EOS token has no text: its chunk carries only the finish reason, and the server counts
    it in ``completion_tokens`` (TGI's and vLLM's OpenAI routes). Its arrival is the last token's,
    as on TGI's own stream; without it the time per token came out too low (2 gaps / 3)."""
    record = RequestRecord(step=1, run=1, request=1)
    chunks = [(1, chat_chunk("")), (10, chat_chunk("a")), (20, chat_chunk("b")),
              (30, chat_chunk("c")), (40, chat_chunk("", reason="stop")),
              (41, chat_chunk(None, usage={"prompt_tokens": 3, "completion_tokens": 4})),
              (42, b"data: [DONE]\r\n\r\n")]
    decode(OpenAIDecoder(record, chat=True), chunks)
    assert record.ok and record.output_tokens == 4
    assert record.token_ns == [10, 20, 30, 40]
    assert record.token_latency_ms == pytest.approx(30 / 1e6 / 3)


def test_tgi_chat_stream_recorded_by_tgi_itself_counts_its_end_of_sequence_chunk():
    """The chunks of TGI 3.1's own test snapshot (test_chat_hfhub_usage): "OK", "!", then the
    EOS token as empty content with finish_reason "stop", then usage with 3 completion tokens."""
    head = ('{"created":1741266005,"id":"","model":"meta-llama/Llama-3.1-8B-Instruct",'
            '"object":"chat.completion.chunk","system_fingerprint":"3.1.2-dev0-native",')

    def chunk(content, reason):
        return ("data:" + head + '"choices":[{"delta":{"content":' + json.dumps(content)
                + ',"role":"assistant","tool_calls":null},"finish_reason":'
                + json.dumps(reason) + ',"index":0,"logprobs":null}],"usage":null}\n\n').encode()

    usage = ("data:" + head + '"choices":[],"usage":{"completion_tokens":3,"prompt_tokens":39,'
             '"total_tokens":42}}\n\n').encode()
    record = RequestRecord(step=1, run=1, request=1)
    decode(OpenAIDecoder(record, chat=True),
           [(100, chunk("OK", None)), (110, chunk("!", None)), (120, chunk("", "stop")),
            (121, usage), (122, b"data: [DONE]\n\n")])
    assert record.ok and record.output_tokens == 3 and record.input_tokens == 39
    assert record.token_ns == [100, 110, 120] and record.finish_reason == "stop"


def test_openai_finish_chunk_without_text_is_not_a_token_when_usage_says_so():
    """A finish reason sent apart from the last token (usage counts only the text chunks) adds
    no token; nor does it without usage, where nothing says it was a token."""
    record = RequestRecord(step=1, run=1, request=1)
    decode(OpenAIDecoder(record, chat=True),
           [(10, chat_chunk("a")), (20, chat_chunk("b")), (25, chat_chunk("", reason="length")),
            (26, chat_chunk(None, usage={"prompt_tokens": 3, "completion_tokens": 2})),
            (27, b"data: [DONE]\n\n")])
    assert record.token_ns == [10, 20]
    bare = RequestRecord(step=1, run=1, request=1)
    decode(OpenAIDecoder(bare, chat=True),
           [(10, chat_chunk("a")), (25, chat_chunk("", reason="stop")), (27, b"data: [DONE]\n\n")])
    assert bare.token_ns == [10] and bare.output_tokens is None
    # the usage chunk after a finish chunk with text is not a token either
    late = RequestRecord(step=1, run=1, request=1)
    decode(OpenAIDecoder(late, chat=True),
           [(10, chat_chunk("a b")), (20, chat_chunk("c", reason="length")),
            (26, chat_chunk(None, usage={"prompt_tokens": 3, "completion_tokens": 3})),
            (27, b"data: [DONE]\n\n")])
    assert late.token_ns == [10, 20]


def test_openai_reasoning_deltas_are_tokens_under_either_name():
    """Reasoning models stream their thinking before the answer: as ``reasoning_content``
    (DeepSeek, older vLLM) or ``reasoning`` (vLLM >= 0.9). Those tokens are generated like any
    other: the first token is the first reasoning chunk, not the first answer chunk."""
    for name in ("reasoning_content", "reasoning"):
        record = RequestRecord(step=1, run=1, request=1)
        think = lambda text, n=name: b"data: " + json.dumps(  # noqa: E731
            {"choices": [{"index": 0, "delta": {n: text, "content": None},
                          "finish_reason": None}]}).encode() + b"\n\n"
        decode(OpenAIDecoder(record, chat=True),
               [(10, think("Let")), (20, think(" me")), (30, chat_chunk("Hi", reason="length")),
                (31, chat_chunk(None, usage={"prompt_tokens": 3, "completion_tokens": 3})),
                (32, b"data: [DONE]\n\n")])
        assert record.token_ns == [10, 20, 30], name
        assert record.token_latency_ms == pytest.approx(20 / 1e6 / 2)


def test_openai_completions_without_usage_leaves_counts_unknown():
    record = RequestRecord(step=1, run=1, request=1)
    text = lambda t, r=None: b"data:" + json.dumps(  # noqa: E731
        {"choices": [{"index": 0, "text": t, "finish_reason": r}]}).encode() + b"\n\n"
    assert decode(OpenAIDecoder(record, chat=False),
                  [(1, text(" a")), (2, text(" b", "length")), (3, b"data: [DONE]\n\n")])
    assert record.token_ns == [1, 2]
    assert record.output_tokens is None and record.input_tokens is None and record.ok


def test_openai_error_event_and_missing_done():
    record = RequestRecord(step=1, run=1, request=1)
    decode(OpenAIDecoder(record, chat=True),
           [(1, b'data: {"error": {"message": "out of memory"}}\n\n')])
    assert record.error_kind == "stream" and "out of memory" in record.error
    cut = RequestRecord(step=1, run=1, request=1)
    decode(OpenAIDecoder(cut, chat=True), [(1, chat_chunk("a"))])
    assert cut.error_kind == "stream" and "[DONE]" in cut.error


def test_error_message_takes_the_servers_sentence():
    assert error_message(b'{"error":"Input validation error: bad","error_type":"validation"}') \
        == "Input validation error: bad"
    assert error_message(b'{"error":{"message":"model not found"}}') == "model not found"
    assert error_message(b"plain\n text") == "plain text"
    assert error_message(b"", "Bad Gateway") == "Bad Gateway"
    assert "hf_***" in error_message(b'{"error":"token hf_abcdefghijklmnop refused"}')


def test_extra_blank_lines_between_events():
    assert feed_all([b"data: a\n\n\n\ndata: b\n\n", b"\n\ndata: c\n\n"]) == ["a", "b", "c"]
    assert feed_all([b"data: a\n", b"\n\ndata: b\n\n"]) == ["a", "b"]


def test_utf8_cut_inside_a_character_is_decoded_once_complete():
    payload = 'data: {"text":"h\u00e9 \u2014 \U0001f600"}\n\n'.encode()
    for cut in range(1, len(payload)):
        assert feed_all([payload[:cut], payload[cut:]]) == [payload[6:-2].decode()], cut


def test_tgi_token_events_formatted_differently_still_count():
    record = RequestRecord(step=1, run=1, request=1)
    spaced = (b'data: {"index": 1, "token": {"id": 5, "text": "a", "logprob": 0.0, '
              b'"special": false}, "generated_text": null, "details": null}\n\n')
    final = tgi_event(2, final=True, generated=2)
    assert decode(TGIDecoder(record), [(10, spaced), (20, final)])
    assert record.token_ns == [10, 20] and record.output_tokens == 2


async def send_to_local_server(handler, *, timeout_s: float, stop_after_last_event: bool = False
                               ) -> RequestRecord:
    """Serve ``handler`` on /generate_stream of a local aiohttp app and send one TGI request.

    With ``stop_after_last_event``, the request is cancelled (Stop) once its final event came.
    """
    from benchmark.core.clients import TGIClient, open_session
    from benchmark.config import SamplingParams

    app = web.Application()
    app.router.add_post("/generate_stream", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    client = TGIClient(f"http://127.0.0.1:{port}", sampling=SamplingParams(),
                       decode_length=3, sequence_length=7)
    record = RequestRecord(step=1, run=1, request=1)
    try:
        async with open_session() as session:
            sending = client.send(session, client.body("hi"), record, timeout_s=timeout_s)
            if not stop_after_last_event:
                await sending
                return record
            task = asyncio.create_task(sending)
            while record.end_ns is None:  # the final event has come
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        await runner.cleanup()
    return record


def test_a_response_held_open_after_its_last_event_is_not_a_timeout():
    """The final event came (all tokens, details): a server or proxy that keeps the stream open
    afterwards must not turn that success into a timeout while the client drains the rest."""

    async def generate(request):
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(tgi_event(1) + tgi_event(2) + tgi_event(3, final=True))
        await asyncio.sleep(0.8)  # held open past the client's timeout
        return response

    record = asyncio.run(send_to_local_server(generate, timeout_s=0.3))
    assert record.ok, record.error
    assert len(record.token_ns) == 3 and record.output_tokens == 3
    assert record.end_ns == record.token_ns[-1]


def test_a_stop_while_draining_a_finished_response_keeps_it_a_success():
    """Stop pressed after the last event came, while the client reads the end of the body: the
    request was measured in full and stays a success (not "cancelled")."""

    async def generate(request):
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(tgi_event(1) + tgi_event(2) + tgi_event(3, final=True))
        await asyncio.sleep(0.8)
        return response

    record = asyncio.run(send_to_local_server(generate, timeout_s=30,
                                              stop_after_last_event=True))
    assert record.ok, record.error
    assert len(record.token_ns) == 3 and record.end_ns == record.token_ns[-1]


def test_a_connect_timeout_is_a_connection_error_not_the_request_timeout():
    """aiohttp's own connect timeout (30 s) is a TimeoutError too: it must not be reported as
    the request timeout ("timeout after 120 s") that never happened."""
    import aiohttp

    from benchmark.core.clients import TGIClient
    from benchmark.config import SamplingParams

    class NoConnection:
        def post(self, *args, **kwargs):
            raise aiohttp.ConnectionTimeoutError("Connection timeout to host http://10.0.0.9:80")

    client = TGIClient("http://10.0.0.9:80", sampling=SamplingParams(), decode_length=3,
                       sequence_length=7)
    record = RequestRecord(step=1, run=1, request=1)
    asyncio.run(client.send(NoConnection(), b"{}", record, timeout_s=120))
    assert record.error_kind == "connection"
    assert "Connection timeout to host" in record.error and "120" not in record.error


def test_a_200_that_is_not_an_event_stream_says_what_came_instead():
    """A server that ignores ``stream`` (or a proxy page) answers 200 with JSON or HTML: the
    request is an error that says so, not a puzzling "stream ended after 0 tokens"."""

    async def whole_answer(request):
        await request.read()
        return web.json_response({"generated_text": "a whole answer at once"})

    record = asyncio.run(send_to_local_server(whole_answer, timeout_s=5))
    assert record.status == 200 and record.error_kind == "stream"
    assert "not an event stream" in record.error and "application/json" in record.error
    assert "a whole answer at once" in record.error


def test_an_event_that_never_ends_is_refused_past_the_cap():
    """One event without a boundary must not be buffered without limit (a server once sent
    400 MB that were held until the timeout)."""
    from benchmark.core.clients.sse import EventTooLarge

    parser = SSEParser(max_event_bytes=1024)
    parser.feed(b"data: " + b"x" * 1000)
    with pytest.raises(EventTooLarge) as info:
        parser.feed(b"x" * 100)
    assert "1024 bytes" in str(info.value)
    crlf = SSEParser(max_event_bytes=1024)
    with pytest.raises(EventTooLarge):
        crlf.feed(b"data: a\r\n" * 200)
    # events within the cap pass, however many arrive at once
    many = SSEParser(max_event_bytes=1024)
    assert len(many.feed(b"data: " + b"y" * 1000 + b"\n\n" * 1 + b"data: z\n\n" * 500)) == 501


def test_a_server_sending_one_endless_event_fails_the_request_at_the_cap():
    """The request ends as a stream error once one event passes the cap, long before the
    timeout, and the bytes beyond it are not held."""
    from benchmark.core.clients.sse import MAX_EVENT_BYTES

    async def endless(request):
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        piece = b"x" * 65536
        await response.write(b"data: ")
        for _ in range(2 * MAX_EVENT_BYTES // len(piece) + 2):
            await response.write(piece)
        return response

    record = asyncio.run(send_to_local_server(endless, timeout_s=20))
    assert record.error_kind == "stream", record.error
    assert "without ending it" in record.error
