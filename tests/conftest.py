"""Shared fixtures: a tiny tokenizer built here (no network), free ports, the simulator.

Nothing in the tests reaches the network: the tokenizer is trained in the session on a few KB of
made-up text with the `tokenizers` library and saved in a folder that ``AutoTokenizer`` loads.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

WORDS = (
    "the quick brown fox jumps over a lazy dog while seven tired engineers measure latency "
    "throughput tokens batches prefill decode server client stream event model weights memory "
    "graphics card queue request response benchmark percentile median average lowest highest "
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
    "sigma tau upsilon phi chi psi omega one two three four five six seven eight nine ten"
).split()

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tiny_tokenizer(folder: Path) -> Path:
    """Train a byte-level BPE tokenizer (about 400 tokens) with a BOS token and save it."""
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
    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))]
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", model_max_length=100_000
    )
    fast.chat_template = CHAT_TEMPLATE
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory) -> str:
    """Path of a folder holding a tiny tokenizer that ``AutoTokenizer.from_pretrained`` loads."""
    return str(build_tiny_tokenizer(tmp_path_factory.mktemp("tokenizer") / "tiny-tokenizer"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def port() -> int:
    return free_port()


# ---------------------------------------------------------------------------------------------
# The simulated TGI server as a subprocess (added by the simulator's owner)


def _simulator_flags(flags: dict) -> list[str]:
    """``{"max_batch_size": 8, "zero_cost": True}`` -> ``["--max-batch-size", "8", "--zero-cost"]``."""
    argv: list[str] = []
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        else:
            argv += [flag, str(value)]
    return argv


@pytest.fixture
def simulator_process():
    """Factory: ``url = simulator_process(max_batch_size=8, trace=path)`` starts
    ``python -m benchmark.simulator --port 0 ...`` (keyword names are flag names with ``_``),
    waits for its ``Simulated TGI listening on`` line and returns the URL. The processes are
    stopped (SIGTERM, then kill) when the test ends. ``simulator_process.procs`` lists them
    (each with ``log_lines``, its output so far)."""
    from benchmark.simulator.process import SimulatorProcess

    sims: list[SimulatorProcess] = []
    procs: list = []

    def start(timeout_s: float = 30.0, **flags) -> str:
        sim = SimulatorProcess(_simulator_flags(flags))
        sims.append(sim)
        try:
            url = sim.start(timeout_s)
        except Exception as err:
            raise RuntimeError("simulator did not start:\n" + "\n".join(sim.lines[-20:])) from err
        sim.proc.log_lines = sim.lines  # type: ignore[union-attr]
        procs.append(sim.proc)
        return url

    start.procs = procs  # type: ignore[attr-defined]
    yield start
    for sim in sims:
        sim.stop()
