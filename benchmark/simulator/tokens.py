"""Token counting for prompts, and the synthetic vocabulary the simulator "generates".

    counter = TokenCounter.load("path/to/tokenizer")   # or None: the fallback rule
    counter.count("Hello world")                        # like TGI's input_length
    counter.count_chat([{"role": "user", "content": "Hi"}])

With a tokenizer, prompts are counted with ``add_special_tokens=True`` (what TGI's router does
for /generate); chat messages are rendered with the tokenizer's chat template (when it has one)
and the rendered text is counted without adding special tokens again, as TGI does.

Fallback rule (no tokenizer, or it failed to load): ``max(1, ceil(utf-8 bytes / 4))`` tokens;
chat messages are first rendered as ``<|role|>content`` pieces followed by ``<|assistant|>``.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable

from ..errors import redact

# Generated text cycles through these words; the start depends on the request's seed.
WORDS: tuple[str, ...] = tuple(
    " " + w for w in (
        "the quick brown fox jumps over a lazy dog while seven tired engineers measure "
        "latency and throughput of tokens in batches on one simulated graphics card so that "
        "every number in the report can be traced back to a request"
    ).split()
)
EOS = -1  # word index meaning "the end-of-sequence token"
FIRST_TOKEN_ID = 1000
EOS_TOKEN_ID = 2
EOS_TEXT = "</s>"


def word_logprob(k: int) -> float:
    """A fixed, plausible log-probability for word k (deterministic, not meaningful)."""
    return -round(0.05 + 0.37 * (k % 7), 2)


def fallback_count(text: str) -> int:
    return max(1, -(-len(text.encode("utf-8")) // 4))


def render_messages(messages: Iterable[dict[str, Any]]) -> str:
    parts = [f"<|{m.get('role', '')}|>{message_text(m)}" for m in messages]
    return "".join(parts) + "<|assistant|>"


def message_text(message: dict[str, Any]) -> str:
    """The text of a chat message whose content is a string or a list of text parts."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content)


class TokenCounter:
    """Counts prompt tokens with a Hugging Face tokenizer, or with the fallback rule."""

    def __init__(self, tokenizer: Any = None, name: str | None = None):
        self.tokenizer = tokenizer
        self.name = name

    @classmethod
    def load(cls, name: str | None) -> "TokenCounter":
        """Load ``name`` with AutoTokenizer; on failure warn on stderr and use the fallback."""
        if not name:
            return cls()
        try:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(name)
        except Exception as exc:  # any loader failure: the simulator still serves
            print(redact(f"WARNING simulator: could not load tokenizer {name!r} "
                         f"({type(exc).__name__}: {str(exc)[:300]}); counting tokens as "
                         f"ceil(utf-8 bytes / 4)."), file=sys.stderr, flush=True)
            return cls()
        return cls(tokenizer, name)

    @property
    def exact(self) -> bool:
        return self.tokenizer is not None

    def count(self, text: str, add_special_tokens: bool = True) -> int:
        if self.tokenizer is None:
            return fallback_count(text)
        return len(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        tok = self.tokenizer
        if tok is not None and getattr(tok, "chat_template", None):
            plain = [{"role": m.get("role", "user"), "content": message_text(m)} for m in messages]
            return tok.apply_chat_template(plain, tokenize=False, add_generation_prompt=True)
        return render_messages(messages)

    def count_chat(self, messages: list[dict[str, Any]]) -> int:
        tok = self.tokenizer
        if tok is None:
            return fallback_count(render_messages(messages))
        rendered = self.render_chat(messages)
        has_template = bool(getattr(tok, "chat_template", None))
        return self.count(rendered, add_special_tokens=not has_template)
