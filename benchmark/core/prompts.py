"""Prompts of exactly ``sequence_length`` tokens, built with the model's own tokenizer.

    tokenizer = load_tokenizer("meta-llama/Llama-3.1-8B-Instruct")      # TokenizerError if not
    prompts = build_prompts(tokenizer, length=512, count=40, api="tgi", seed=0)
    prompts.texts[3], prompts.token_counts[3]                            # text, 512

How the length is counted, so it matches what the server counts:
- ``tgi`` and ``openai-completions``: the text encoded *with* the tokenizer's special tokens
  (a BOS token is part of the 512, as in TGI's ``details.input_length``);
- ``openai-chat``: the token ids of the rendered chat template for one user message with the
  generation prompt (when the tokenizer has a chat template; else as above without specials).

Every prompt is different (seeded random words, a different first word per prompt) so that a
server's prefix cache cannot make prefill look faster than it is for fresh prompts. Each prompt
is decoded and encoded again to check its length; when a tokenizer does not round-trip, the
closest prompt is kept and ``token_counts`` says its true length (the engine warns).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TokenizerError, redact

__all__ = ["PromptSet", "load_tokenizer", "build_prompts", "count_tokens", "build_tiny_tokenizer"]

_WORDS = (
    "time year people way day man thing woman life child world school state family student "
    "group country problem hand part place case week company system program question work "
    "government number night point home water room mother area money story fact month lot "
    "right study book eye job word business issue side kind head house service friend father "
    "power hour game line end member law car city community name president team minute idea "
    "kid body information back parent face others level office door health person art war "
    "history party result change morning reason research girl guy moment air teacher force "
    "education foot boy age policy process music market sense nation plan college interest "
    "death experience effect use class control care field development role effort rate heart "
    "drug show leader light voice wife police mind price report decision son view relationship "
    "town road arm difference value building action model season society tax director position "
    "player record paper space ground form event official matter center couple site project "
    "activity star table need court oil situation cost industry figure street image phone data "
    "picture practice piece land product doctor wall patient worker news test movie north love "
    "support technology step baby computer type attention film tree source organization hair "
    "window evidence population truth garden river bridge engine signal summer winter autumn "
    "spring mountain ocean island forest desert valley stone silver golden quiet rapid gentle"
).split()

_MAX_ADJUSTMENTS = 12


@dataclass(frozen=True)
class PromptSet:
    """Prompts for one run: ``texts[i]`` is ``token_counts[i]`` tokens long (as counted above)."""

    texts: tuple[str, ...]
    token_counts: tuple[int, ...]
    length: int

    @property
    def exact(self) -> bool:
        return all(count == self.length for count in self.token_counts)


def load_tokenizer(name: str, revision: str | None = None) -> Any:
    """``AutoTokenizer.from_pretrained(name)``, or a ``TokenizerError`` saying what to do."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        kwargs: dict[str, Any] = {}
        if revision:
            kwargs["revision"] = revision
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors, ...
        reason = redact(" ".join(str(exc).split()))[:300] or type(exc).__name__
        raise TokenizerError(
            f"Could not load the tokenizer {name!r}: {reason.rstrip('.')}. Give a Hub id (org/model) or a "
            f"local folder; for a gated or private model, accept its license on the Hub and "
            f"set HF_TOKEN."
        ) from exc
    if tokenizer is None or not callable(getattr(tokenizer, "encode", None)):
        raise TokenizerError(f"{name!r} did not give a usable tokenizer. Give the Hub id or "
                             f"folder of the model the server runs.")
    return tokenizer


def _has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _chat_ids(tokenizer: Any, content: str) -> list[int]:
    out = tokenizer.apply_chat_template([{"role": "user", "content": content}],
                                        add_generation_prompt=True, tokenize=True)
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    if out and isinstance(out[0], list):
        out = out[0]
    return list(out)


def count_tokens(tokenizer: Any, text: str, api: str) -> int:
    """How many tokens the server will count for ``text`` sent on ``api``."""
    if api == "openai-chat":
        if _has_chat_template(tokenizer):
            return len(_chat_ids(tokenizer, text))
        return len(tokenizer.encode(text, add_special_tokens=False))
    return len(tokenizer.encode(text, add_special_tokens=True))


def _words(rng: random.Random, first: str, count: int) -> str:
    return first + " " + " ".join(rng.choice(_WORDS) for _ in range(count))


def _tokens_per_word(tokenizer: Any) -> float:
    sample = " ".join(_WORDS)
    return max(0.25, len(tokenizer.encode(sample, add_special_tokens=False)) / len(_WORDS))


def _source_ids(tokenizer: Any, rng: random.Random, first: str, need: int,
                words: int) -> list[int]:
    """Token ids of seeded random text, at least ``need`` long (grows the text if not)."""
    while True:
        ids = tokenizer.encode(_words(rng, first, words), add_special_tokens=False)
        if len(ids) >= need or words > 64 * need + 1000:
            return list(ids)
        words *= 2


def _fit(tokenizer: Any, source: list[int], *, length: int, target: int,
         api: str) -> tuple[str, int]:
    """The prefix of ``source`` whose text counts ``length`` tokens (or the closest found)."""
    take = min(target, len(source))
    best: tuple[int, str, int] | None = None
    seen: set[int] = set()
    for _ in range(_MAX_ADJUSTMENTS):
        seen.add(take)
        text = tokenizer.decode(source[:take], skip_special_tokens=True)
        count = count_tokens(tokenizer, text, api)
        diff = count - length
        if best is None or abs(diff) < abs(best[0]) or (abs(diff) == abs(best[0]) and diff < 0):
            best = (diff, text, count)
        if diff == 0:
            break
        take = max(1, min(len(source), take - diff))
        if take in seen:
            take = max(1, take - 1 if diff > 0 else take + 1)
            if take in seen or take > len(source):
                break
    assert best is not None
    return best[1], best[2]


def build_prompts(tokenizer: Any, *, length: int, count: int, api: str = "tgi",
                  seed: int = 0, start: int = 0) -> PromptSet:
    """``count`` different prompts of ``length`` tokens each (see the module docstring).

    Prompt ``i`` depends only on ``seed`` and ``i``: ``start`` continues a series (prompts
    ``start`` to ``start + count - 1``), so a long run can build its prompts in chunks.
    The first pass is batched (encode, cut, decode, count: the tokenizer's fast batch paths);
    only prompts whose count is off after the cut are adjusted one by one.
    """
    overhead = count_tokens(tokenizer, "", api)  # special tokens or the chat template
    target = max(1, length - overhead)
    need = target + _MAX_ADJUSTMENTS
    words = max(8, int(need / _tokens_per_word(tokenizer) * 1.25) + 8)
    indices = range(start, start + count)
    rngs = [random.Random(f"{seed}-{index}") for index in indices]
    firsts = [_WORDS[(index * 7919 + seed) % len(_WORDS)].capitalize() for index in indices]
    drafts = [_words(rng, first, words) for rng, first in zip(rngs, firsts)]
    sources = [list(ids) for ids in _batch_ids(tokenizer, drafts, special=False)] if count else []
    for index, ids in enumerate(sources):
        if len(ids) < need:
            sources[index] = _source_ids(tokenizer, rngs[index], firsts[index], need, words * 2)
    texts = list(tokenizer.batch_decode([ids[:target] for ids in sources],
                                        skip_special_tokens=True)) if count else []
    counts = _batch_counts(tokenizer, texts, api)
    for index in range(count):
        if counts[index] != length:
            texts[index], counts[index] = _fit(tokenizer, sources[index], length=length,
                                               target=target, api=api)
    return PromptSet(texts=tuple(texts), token_counts=tuple(counts), length=length)


def _batch_ids(tokenizer: Any, texts: list[str], *, special: bool) -> list[list[int]]:
    return list(tokenizer(texts, add_special_tokens=special)["input_ids"])


def _batch_counts(tokenizer: Any, texts: list[str], api: str) -> list[int]:
    if not texts:
        return []
    if api == "openai-chat":
        if _has_chat_template(tokenizer):
            return [len(_chat_ids(tokenizer, text)) for text in texts]
        return [len(ids) for ids in _batch_ids(tokenizer, texts, special=False)]
    return [len(ids) for ids in _batch_ids(tokenizer, texts, special=True)]


# ---------------------------------------------------------------------------------------------
# A tokenizer made here, for offline use

TINY_WORDS = (
    "the quick brown fox jumps over a lazy dog while seven tired engineers measure latency "
    "throughput tokens batches prefill decode server client stream event model weights memory "
    "graphics card queue request response benchmark percentile median average lowest highest "
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
    "sigma tau upsilon phi chi psi omega one two three four five six seven eight nine ten"
).split()

TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tiny_tokenizer(folder: Path) -> Path:
    """Train a byte-level BPE tokenizer (about 400 tokens, a BOS token, a chat template) and save
    it in ``folder``, where ``AutoTokenizer`` loads it. No network: ``calibrate`` and the tests
    use it where no model's tokenizer can be downloaded."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [" ".join(TINY_WORDS[i:] + TINY_WORDS[:i]) for i in range(len(TINY_WORDS))]
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", model_max_length=100_000
    )
    fast.chat_template = TINY_CHAT_TEMPLATE
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    return folder
