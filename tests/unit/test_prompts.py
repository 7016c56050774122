"""Prompts of exactly the asked length, as the server will count them."""

from __future__ import annotations

import pytest

from benchmark.errors import TokenizerError
from benchmark.core.prompts import build_prompts, count_tokens, load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer):
    return load_tokenizer(tiny_tokenizer)


@pytest.mark.parametrize("api", ["tgi", "openai-completions", "openai-chat"])
@pytest.mark.parametrize("length", [4, 10, 64, 300])
def test_prompts_have_exactly_the_asked_length(tokenizer, api, length):
    prompts = build_prompts(tokenizer, length=length, count=6, api=api, seed=3)
    assert prompts.exact
    for text in prompts.texts:
        assert count_tokens(tokenizer, text, api) == length


def test_length_counts_special_tokens_and_chat_template(tokenizer):
    text = build_prompts(tokenizer, length=20, count=1, api="tgi").texts[0]
    ids = tokenizer.encode(text, add_special_tokens=True)
    assert len(ids) == 20 and ids[0] == tokenizer.bos_token_id
    chat = build_prompts(tokenizer, length=20, count=1, api="openai-chat").texts[0]
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": chat}],
                                             add_generation_prompt=True, tokenize=True)
    ids = rendered["input_ids"] if hasattr(rendered, "keys") else rendered
    assert len(ids) == 20


def test_prompts_differ_so_a_prefix_cache_cannot_help(tokenizer):
    prompts = build_prompts(tokenizer, length=32, count=40, api="tgi", seed=0)
    assert len(set(prompts.texts)) == 40
    firsts = {tuple(tokenizer.encode(t, add_special_tokens=False)[:3]) for t in prompts.texts}
    assert len(firsts) > 30
    again = build_prompts(tokenizer, length=32, count=40, api="tgi", seed=0)
    assert again.texts == prompts.texts  # seeded: the same run can be repeated


def test_too_short_length_is_reported_not_hidden(tokenizer):
    prompts = build_prompts(tokenizer, length=1, count=2, api="openai-chat")
    assert not prompts.exact
    assert all(c > 1 for c in prompts.token_counts)


def test_unknown_tokenizer_names_it_and_mentions_hf_token(tmp_path):
    missing = tmp_path / "no-such-tokenizer"
    with pytest.raises(TokenizerError) as info:
        load_tokenizer(str(missing))
    message = str(info.value)
    assert str(missing) in message and "HF_TOKEN" in message


def build_metaspace_tokenizer(folder) -> str:
    """A Llama-style tokenizer: SentencePiece's '▁' word marker, byte fallback, BOS, a chat
    template that starts with the BOS text. Round trips differ from byte-level BPE."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from support.helpers import WORDS

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False)
    tok.train_from_iterator([" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))],
                            trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    fast.chat_template = ("{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} "
                          "[/INST]{% endfor %}")
    fast.save_pretrained(str(folder))
    return str(folder)


@pytest.mark.parametrize("api", ["tgi", "openai-completions", "openai-chat"])
def test_exact_lengths_with_a_llama_style_tokenizer(tmp_path_factory, api):
    folder = tmp_path_factory.mktemp("metaspace") / "tok"
    tokenizer = load_tokenizer(build_metaspace_tokenizer(folder))
    for length in (20, 257):
        prompts = build_prompts(tokenizer, length=length, count=5, api=api, seed=1)
        assert prompts.exact, (length, prompts.token_counts)
        assert all(count_tokens(tokenizer, t, api) == length for t in prompts.texts)


def test_prompts_can_be_built_in_chunks(tokenizer):
    whole = build_prompts(tokenizer, length=24, count=10, seed=5)
    first = build_prompts(tokenizer, length=24, count=4, seed=5)
    rest = build_prompts(tokenizer, length=24, count=6, seed=5, start=4)
    assert whole.texts == first.texts + rest.texts
