"""The "Try the model" tab: talk to the server, see each answer stream in with its speed.

    tab = ChatTab(app, rules=app._access, server_port=server_port,
                  error_markdown=_error_markdown)        # app: env, runner, form fields
    with gr.Tab("Try the model"):
        tab.build()
    tab.wire(demo, tab=chat_tab, other_tabs=[run_tab, history_tab])   # after the form

Each turn goes through ``core.chat.stream_chat`` (``/v1/chat/completions``, else
``/generate_stream``) against the server this app launched, or the endpoint URL in the form.
Under each answer: time to first token, tokens/s and token count, measured like the engine
measures them, and SIMULATED when the simulated server answered. The rules are Run's: on a
Space only the owner and allowed users may send (the endpoint URL only for those who may
benchmark one); while a benchmark runs on the same server, sending pauses (a message would
disturb its measurement), and a benchmark that starts while an answer streams waits for it
(``Runner.begin_chat`` / ``end_chat``). With no server running the tab offers to start the form's server,
through the same queue, checks and progress as Run. Conversations live in the browser session
only; nothing is written anywhere.
"""

from __future__ import annotations

import html
import time
import uuid
from typing import Any, Callable, Iterator

import gradio as gr

from . import access
from ..config import endpoint_url, parse_float, parse_int
from ..errors import BenchmarkError, ConfigError, redact
from ..core.chat import (ROUTE_CHAT, ChatRefused, ChatResult, server_info, server_model,
                         stream_chat)
from .form import FIELDS, TARGET_ENDPOINT, build_plan
from .jobs import COMPLETE, QUEUED, STARTING
from .render import md_text, progress_html

MAX_MESSAGE_CHARS = 100_000    # longer is refused here; below, the server's own limit decides
MAX_NEW_TOKENS = 4096
DEFAULT_MAX_NEW_TOKENS = "256"
CHAT_TIMEOUT_S = 120.0
STATUS_S = 2.0                 # how often the tab re-checks the server and the queue
DRAW_S = 0.05                  # the streamed answer is redrawn at most this often
START_POLL_S = 0.5
SPEED_PREFIX = "time to first token"

BUSY = ("**A benchmark is running on this server:** sending is paused so that a chat message "
        "does not disturb its measurement. The chat works again when the run ends.")
NO_SERVER = ("**No server is running yet.** Start the one set in the *Run a benchmark* form "
             "({model}) with the button below: the same launcher, checks and progress as Run. "
             "Or choose *Benchmark an existing server* in the form and give its URL.")


def speed_line(result: ChatResult, *, simulated: bool) -> str:
    """'time to first token 16 ms · 96.2 tokens/s · 12 tokens' (+ SIMULATED, route, cut)."""
    ttft = "–" if result.ttft_ms is None else f"{result.ttft_ms:.0f} ms"
    rate = "– tokens/s" if result.tokens_per_s is None else f"{result.tokens_per_s:.1f} tokens/s"
    tokens = f"{result.tokens} token" + ("" if result.tokens == 1 else "s")
    parts = [f"{SPEED_PREFIX} {ttft}", rate, tokens]
    if simulated:
        parts.insert(0, "SIMULATED")
    if result.finish_reason == "length":
        parts.append("stopped at Max new tokens")
    if result.truncated:
        parts.append("answer cut for display")
    if result.route != ROUTE_CHAT:
        parts.append(f"via {result.route}")
    return " · ".join(parts)


class ChatTab:
    """The tab's components and handlers; ``app`` is the page's ``App`` (duck-typed: ``env``,
    ``runner``, ``fields``)."""

    def __init__(self, app: Any, *, rules: Callable[[Any], access.Access],
                 server_port: Callable[[Any], int],
                 error_markdown: Callable[[BenchmarkError], str]):
        self.app = app
        self.rules = rules                      # the signed-in visitor -> Run's access rules
        self.server_port = server_port          # page.server_port: where TGI is launched
        self.error_markdown = error_markdown    # page's "**Field:** what to type" sentences

    # -- layout -------------------------------------------------------------------------------
    def build(self) -> None:
        gr.Markdown("Talk to the model before paying for a long benchmark. Each answer streams "
                    "in as the server writes it; under it, its time to first token, tokens/s "
                    "and token count, measured like the benchmark measures. Nothing is saved.")
        self.status = gr.Markdown(label="Chat status", elem_id="chat-status")
        self.start_btn = gr.Button("Start the server in the form", visible=False, size="sm",
                                   elem_id="chat-start-button")
        self.start_html = gr.HTML(label="Chat server start", elem_id="chat-start-status")
        self.chatbot = gr.Chatbot(label="Conversation", elem_id="chat-log", height=420,
                                  render_markdown=False, sanitize_html=True, allow_tags=False,
                                  feedback_options=None, buttons=["copy"])
        with gr.Row():
            self.message = gr.Textbox(label="Message", elem_id="chat-message", scale=5,
                                      placeholder="Ask the model something, then Enter",
                                      lines=1, max_lines=8)
            self.send_btn = gr.Button("Send", variant="primary", scale=0, min_width=100,
                                      elem_id="chat-send")
            self.clear_btn = gr.Button("Clear", scale=0, min_width=80, elem_id="chat-clear")
        self.error = gr.Markdown(label="Chat message", visible=False, elem_id="chat-error",
                                 elem_classes=["bench-error"])
        with gr.Accordion("Chat settings", open=False, elem_id="chat-settings"):
            with gr.Row():
                self.system = gr.Textbox(label="System prompt", lines=2, scale=3,
                                         elem_id="chat-system",
                                         info="Sent first in every turn; empty: none.")
                self.max_new = gr.Textbox(DEFAULT_MAX_NEW_TOKENS, label="Max new tokens",
                                          elem_id="chat-max-new-tokens",
                                          info=f"1 to {MAX_NEW_TOKENS} per answer.")
                self.temperature = gr.Textbox("", label="Temperature",
                                              elem_id="chat-temperature",
                                              info="Empty: the server's default. 0: greedy.")
        self.conversation = gr.State([])     # the turns as sent to the server (no speed lines)
        self.timer = gr.Timer(STATUS_S, active=False)   # ticks only while the tab is shown

    def wire(self, demo: gr.Blocks, *, tab: Any, other_tabs: list[Any]) -> None:
        """Events; ``tab`` is this tab (its status refreshes while it is shown), ``other_tabs``
        the page's others (leaving for one stops the refreshing)."""
        form = [self.app.fields[name] for name in FIELDS]
        status_out = [self.status, self.send_btn, self.start_btn]
        demo.load(self.refresh, form, status_out, api_name="chat_status")
        self.timer.tick(self.refresh, form, status_out, api_name=False, show_progress="hidden")
        tab.select(lambda: gr.Timer(active=True), None, self.timer, api_name=False).then(
            self.refresh, form, status_out, api_name=False, show_progress="hidden")
        for other in other_tabs:
            other.select(lambda: gr.Timer(active=False), None, self.timer, api_name=False)
        send_inputs = [self.message, self.chatbot, self.conversation, self.system, self.max_new,
                       self.temperature, *form]
        send_outputs = [self.chatbot, self.conversation, self.message, self.error]
        self.send_btn.click(self.send, send_inputs, send_outputs, api_name="chat",
                            show_progress="hidden", concurrency_limit=None)
        self.message.submit(self.send, send_inputs, send_outputs, api_name=False,
                            show_progress="hidden", concurrency_limit=None)
        self.clear_btn.click(lambda: ([], [], gr.update(value="", visible=False)), None,
                             [self.chatbot, self.conversation, self.error], api_name=False)
        self.chatbot.clear(lambda: ([], gr.update(value="", visible=False)), None,
                           [self.conversation, self.error], api_name=False)
        self.start_btn.click(self.start_server, form,
                             [self.start_html, self.start_btn, *status_out[:2]],
                             api_name="chat_start", show_progress="hidden",
                             concurrency_limit=None)

    # -- decisions ----------------------------------------------------------------------------
    def _target(self, form: dict[str, Any], rules: access.Access
                ) -> tuple[str | None, str | None, str]:
        """(url, tokenizer for the fallback, sentence); url None when there is nothing to chat
        with, or the visitor may not: the sentence then says why."""
        if str(form.get("target") or "") == TARGET_ENDPOINT:
            if not rules.can_use_endpoint:
                return None, None, f"**Not allowed to chat here.** {md_text(rules.reason)}"
            try:
                url, _ = endpoint_url(str(form.get("url") or ""), credentials=False)
            except ConfigError as exc:
                return None, None, f"**Endpoint URL:** {md_text(exc)}"
            tokenizer = str(form.get("tokenizer_name") or "").strip() or None
            return url, tokenizer, f"Chatting with the endpoint **{md_text(url)}**."
        handle = self.app.runner.launched_server()
        if handle is None:
            model = str(form.get("model_id") or "").strip() or "no model chosen yet"
            return None, None, NO_SERVER.format(model=md_text(model))
        model_id = getattr(handle.settings, "model_id", "")
        sentence = f"Chatting with the server this app launched: **{md_text(model_id)}**."
        if handle.simulated:
            sentence += (" **SIMULATED:** no GPU and no model here; its answers are filler "
                         "text and its speed is the simulator's.")
        return handle.url, model_id or None, sentence

    def _state(self, profile: Any, values: tuple[Any, ...]
               ) -> tuple[str | None, str | None, str, bool]:
        """(url, tokenizer, status sentence, may send now)."""
        form = dict(zip(FIELDS, values))
        rules = self.rules(profile)
        if not rules.can_run:
            return None, None, f"**Not allowed to chat here.** {md_text(rules.reason)}", False
        url, tokenizer, sentence = self._target(form, rules)
        if url is None:
            return None, tokenizer, sentence, False
        busy = self.app.runner.benchmark_url()
        if busy is not None and busy.rstrip("/") == url.rstrip("/"):
            return url, tokenizer, f"{sentence}\n\n{BUSY}", False
        return url, tokenizer, sentence, True

    # -- handlers -----------------------------------------------------------------------------
    def refresh(self, profile: gr.OAuthProfile | None, *values: Any) -> tuple[Any, Any, Any]:
        """Timer tick: which server, whether sending is possible now, the start offer."""
        url, _, sentence, ok = self._state(profile, values)
        form = dict(zip(FIELDS, values))
        offer = (url is None and str(form.get("target") or "") != TARGET_ENDPOINT
                 and self.rules(profile).can_run)
        return sentence, gr.update(interactive=ok), gr.update(visible=offer)

    def send(self, message: str, shown: list[Any] | None, conversation: list[Any] | None,
             system: str, max_new: str, temperature: str, request: gr.Request,
             profile: gr.OAuthProfile | None, *values: Any) -> Iterator[dict[Any, Any]]:
        """One turn: checks, then the answer as it streams, then its speed line."""
        text = str(message or "")
        if not text.strip():
            yield {self.error: gr.update()}     # an empty message does nothing
            return
        shown = list(shown or [])
        conversation = list(conversation or [])
        url, tokenizer, sentence, ok = self._state(profile, values)
        if not ok:
            yield {self.error: _error(sentence)}
            return
        try:
            settings = _settings(text, max_new, temperature)
        except ConfigError as exc:
            yield {self.error: _error(md_text(exc))}
            return
        assert url is not None
        try:
            info = server_info(url)
        except BenchmarkError as exc:
            yield {self.error: _error(f"**The server did not answer.** {md_text(exc)}")}
            return
        simulated = info.get("simulated") is True
        turn = {"role": "user", "content": text}
        messages = ([{"role": "system", "content": system}] if str(system or "").strip()
                    else []) + conversation + [turn]
        answer, drawn_ns = "", 0
        result: ChatResult | None = None
        runner = self.app.runner
        if not runner.begin_chat(url):         # a benchmark started since the check above
            yield {self.error: _error(BUSY)}
            return
        try:
            shown = shown + [_bubble("user", text), _bubble("assistant", "")]
            yield {self.chatbot: shown, self.message: "", self.error: _error("")}
            for item in stream_chat(url, messages, max_new_tokens=settings[0],
                                    temperature=settings[1], tokenizer_name=tokenizer,
                                    model=server_model(url, info),
                                    timeout_s=CHAT_TIMEOUT_S):
                if isinstance(item, ChatResult):
                    result = item
                    continue
                answer += item
                now = time.perf_counter_ns()       # redraw pace only, not a measurement
                if now - drawn_ns >= DRAW_S * 1e9:
                    drawn_ns = now
                    shown[-1] = _bubble("assistant", answer)
                    yield {self.chatbot: shown}
        except ChatRefused as exc:
            shown[-1] = _bubble("assistant", f"The server refused this message: {exc}")
            yield {self.chatbot: shown, self.message: text,
                   self.error: _error(f"**The server refused this message:** {md_text(exc)}")}
            return
        except BenchmarkError as exc:
            shown[-1] = _bubble("assistant", answer or "(no answer)")
            yield {self.chatbot: shown,
                   self.error: _error(f"**The answer stopped:** {md_text(exc)}")}
            return
        finally:
            runner.end_chat(url)   # a benchmark waiting for this answer may start
        assert result is not None
        shown[-1] = _bubble("assistant", answer)
        shown.append(_bubble("assistant", speed_line(result, simulated=simulated)))
        yield {self.chatbot: shown,
               self.conversation: conversation + [turn, {"role": "assistant",
                                                         "content": answer}]}

    def start_server(self, request: gr.Request, profile: gr.OAuthProfile | None,
                     *values: Any) -> Iterator[tuple[Any, Any, Any, Any]]:
        """Start the form's server through the run queue (Run's checks), showing its progress."""
        form = dict(zip(FIELDS, values))
        rules = self.rules(profile)
        keep = gr.update()
        if not rules.can_run:
            yield (f"<p><b>Not allowed to start a server here.</b> {_html(rules.reason)}</p>",
                   keep, keep, keep)
            return
        if str(form.get("target") or "") == TARGET_ENDPOINT:
            yield ("<p>The form points at an endpoint URL: there is no server to start.</p>",
                   keep, keep, keep)
            return
        try:
            plan = build_plan(form, allow_trust_remote_code=access.allow_trust_remote_code(
                self.app.env), server_port=self.server_port(self.app.env))
            job = self.app.runner.submit(plan, f"chat-server-{uuid.uuid4().hex[:12]}",
                                         server_only=True)
        except BenchmarkError as exc:
            yield (f"<p class='bench-error'>{_html(self.error_markdown(exc).replace('**', ''))}</p>",
                   keep, keep, keep)
            return
        yield ("<p><b>Starting…</b></p>", gr.update(interactive=False), keep, keep)
        while True:
            view = self.app.runner.view(job.run_id)
            if view is None:
                return
            if view.finished:
                break
            if view.state in (QUEUED, STARTING):
                yield progress_html(view), keep, keep, keep
            time.sleep(START_POLL_S)
        status, send, _ = self.refresh(profile, *values)
        if view.state == COMPLETE:
            done = "<p><b>The server is ready.</b> Type a message below.</p>"
        else:
            log = "<br>".join(_html(line) for line in view.server_log[-8:])
            done = (f"<p class='bench-error'><b>The server did not start:</b> "
                    f"{_html(view.message or view.state)}</p>"
                    + (f"<pre>{log}</pre>" if log else ""))
        yield done, gr.update(interactive=True, visible=view.state != COMPLETE), status, send


def _settings(text: str, max_new: str, temperature: str) -> tuple[int, float | None]:
    """(max new tokens, temperature or None) from the settings; ``ConfigError`` names the field."""
    if len(text) > MAX_MESSAGE_CHARS:
        raise ConfigError("message", f"Message is {len(text)} characters long; the chat takes at "
                                     f"most {MAX_MESSAGE_CHARS}. Shorten it.")
    max_new_tokens = parse_int("max_new_tokens", str(max_new or "").strip()
                               or DEFAULT_MAX_NEW_TOKENS, minimum=1, maximum=MAX_NEW_TOKENS)
    temp_text = str(temperature or "").strip()
    value = None if not temp_text else parse_float("temperature", temp_text, minimum=0.0)
    return max_new_tokens, value


def _bubble(role: str, text: str) -> dict[str, str]:
    """A Conversation message showing ``text`` as text: the Chatbot renders HTML even without
    markdown, so a model's (or a server's) ``<img onerror=...>`` is escaped here."""
    return {"role": role, "content": html.escape(redact(text), quote=False)}


def _html(text: Any) -> str:
    return html.escape(redact(str(text))[:1000])


def _error(markdown: str) -> Any:
    return gr.update(value=markdown, visible=bool(markdown))


__all__ = ["ChatTab", "speed_line", "SPEED_PREFIX", "BUSY"]
