"""Request validation with TGI's rules, order and wording (router/src/validation.rs, v3.3).

    parsed = parse_generate(body_bytes, counter, limits, stream=True)   # raises ApiError

Errors carry the HTTP status and TGI's JSON body: ``{"error": ..., "error_type": ...}``.
TGI wraps validation messages as ``Input validation error: <message>`` with error_type
``validation`` (422). Bodies that are not JSON, or whose fields have the wrong type, are
refused by TGI's web framework (axum) before validation: 400 for a syntax error, 422 for a
wrong shape, with axum's sentence. Real TGI sends those two as plain text; the simulator wraps
the same sentence in the JSON error shape (error_type ``validation``) so every error body has
one shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .config import SimulatorConfig
from .tokens import TokenCounter

DEFAULT_GENERATION_LENGTH = 1024
U32_MAX = 2**32 - 1


class ApiError(Exception):
    def __init__(self, status: int, message: str, error_type: str):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type


def validation_error(message: str) -> ApiError:
    return ApiError(422, f"Input validation error: {message}", "validation")


def deserialize_error(message: str) -> ApiError:
    return ApiError(422, f"Failed to deserialize the JSON body into the target type: {message}",
                    "validation")


@dataclass
class ValidRequest:
    input_length: int
    max_new_tokens: int
    seed: int | None             # None: the server draws one (from --seed when given)
    do_sample: bool              # TGI reports the seed in details only when sampling
    stops: list[str]
    details: bool = False
    include_usage: bool = False
    stream: bool = False
    top_n_tokens: int = 0


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"number out of range: {text[:40]}")
    return number


def load_json(body: bytes) -> Any:
    """Strict JSON like TGI's serde_json: no NaN/Infinity, no overflow to infinity; a body
    nested too deep for the parser is a parse error too (never a 500)."""
    try:
        return json.loads(body, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise ApiError(400, "Failed to parse the request body as JSON: recursion limit "
                            "exceeded", "validation") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"Failed to parse the request body as JSON: {exc}",
                       "validation") from None


# -- type checks that mimic serde's messages ---------------------------------------------------

def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f"string {json.dumps(value)}"
    if isinstance(value, list):
        return "a sequence"
    return "a map"


def _opt_uint(obj: dict, key: str, path: str, maximum: int = U32_MAX) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise deserialize_error(f"{path}{key}: invalid type: {_kind(value)}, expected u32")
    if value < 0 or value > maximum:
        raise deserialize_error(f"{path}{key}: invalid value: {_kind(value)}, expected u32")
    return value


def _opt_float(obj: dict, key: str, path: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise deserialize_error(f"{path}{key}: invalid type: {_kind(value)}, expected f32")
    return float(value)


def _opt_bool(obj: dict, key: str, path: str, default: bool) -> bool:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise deserialize_error(f"{path}{key}: invalid type: {_kind(value)}, expected a boolean")
    return value


def _stops(obj: dict, key: str, path: str) -> list[str]:
    value = obj.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise deserialize_error(f"{path}{key}: invalid type: {_kind(value)}, "
                                f"expected a sequence of strings")
    return list(value)


# -- the checks of Validation::validate, in TGI's order ----------------------------------------

def check_parameters(p: dict[str, Any], config: SimulatorConfig, *, stream: bool,
                     path: str = "parameters.") -> dict[str, Any]:
    best_of = _opt_uint(p, "best_of", path)
    temperature = _opt_float(p, "temperature", path)
    repetition_penalty = _opt_float(p, "repetition_penalty", path)
    frequency_penalty = _opt_float(p, "frequency_penalty", path)
    top_k = p.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)):
        raise deserialize_error(f"{path}top_k: invalid type: {_kind(top_k)}, expected i32")
    top_p = _opt_float(p, "top_p", path)
    typical_p = _opt_float(p, "typical_p", path)
    do_sample = _opt_bool(p, "do_sample", path, False)
    max_new_tokens = _opt_uint(p, "max_new_tokens", path)
    stops = _stops(p, "stop", path)
    truncate = _opt_uint(p, "truncate", path, maximum=2**63)
    seed = _opt_uint(p, "seed", path, maximum=2**64 - 1)
    top_n_tokens = _opt_uint(p, "top_n_tokens", path)
    details = _opt_bool(p, "details", path, False)  # serde default: false
    decoder_input_details = _opt_bool(p, "decoder_input_details", path, False)
    _opt_bool(p, "watermark", path, False)

    if best_of is not None:
        if best_of > 1 and stream:
            raise validation_error("`best_of` != 1 is not supported when streaming tokens")
        if config.max_best_of == 1 and best_of != 1:
            raise validation_error("`best_of` != 1 is not allowed for this endpoint")
        if best_of > config.max_best_of or best_of == 0:
            raise validation_error(f"`best_of` must be > 0 and <= {config.max_best_of}. "
                                   f"Given: {best_of}")
    if stream and decoder_input_details:
        raise validation_error(
            "`decoder_input_details` == true is not supported when streaming tokens")
    sampling = (do_sample or temperature is not None or top_k is not None
                or top_p is not None or typical_p is not None)
    if (best_of or 1) > 1 and not sampling:
        raise validation_error("you must use sampling when `best_of` is > 1")
    if temperature is not None and temperature <= 0.0:
        raise validation_error("`temperature` must be strictly positive")
    if repetition_penalty is not None and repetition_penalty <= 0.0:
        raise validation_error("`repetition_penalty` must be strictly positive")
    if frequency_penalty is not None and not -2.0 <= frequency_penalty <= 2.0:
        raise validation_error("`frequency_penalty` must be >= -2.0 and <= 2.0")
    if top_p is not None and not 0.0 < top_p < 1.0:
        raise validation_error("`top_p` must be > 0.0 and < 1.0")
    if typical_p is not None and not 0.0 < typical_p < 1.0:
        raise validation_error("`typical_p` must be > 0.0 and < 1.0")
    if top_k is not None and top_k <= 0:
        raise validation_error("`top_k` must be strictly positive")
    if max_new_tokens == 0:
        raise validation_error("`max_new_tokens` must be strictly positive")
    if len(stops) > config.max_stop_sequences:
        raise validation_error(f"`stop` supports up to {config.max_stop_sequences} stop "
                               f"sequences. Given: {len(stops)}")
    if seed is not None and (best_of or 1) > 1:
        raise validation_error("`seed` must not be set when `best_of` > 1")
    if top_n_tokens is not None and top_n_tokens > config.max_top_n_tokens:
        raise validation_error(f"`top_n_tokens` must be >= 0 and <= {config.max_top_n_tokens}. "
                               f"Given: {top_n_tokens}")
    return {"max_new_tokens": max_new_tokens, "stops": stops, "truncate": truncate,
            "seed": seed, "details": details, "do_sample": sampling,
            "top_n_tokens": top_n_tokens or 0}


def check_lengths(count: int, truncate: int | None, max_new_tokens: int | None,
                  config: SimulatorConfig) -> tuple[int, int]:
    """TGI's validate_input: (input_length, max_new_tokens) or a 422."""
    if truncate is not None and (truncate == 0 or truncate > config.max_input_tokens):
        raise validation_error(f"`truncate` must be strictly positive and less than "
                               f"{config.max_input_tokens}. Given: {truncate}")
    input_length = min(count, truncate) if truncate is not None else count
    if max_new_tokens is None:
        max_new_tokens = min(max(config.max_total_tokens - input_length, 0),
                             DEFAULT_GENERATION_LENGTH)
    if input_length + max_new_tokens > config.max_total_tokens:
        raise validation_error(f"`inputs` tokens + `max_new_tokens` must be <= "
                               f"{config.max_total_tokens}. Given: {input_length} `inputs` "
                               f"tokens and {max_new_tokens} `max_new_tokens`")
    if input_length > config.max_input_tokens:
        raise validation_error(f"`inputs` must have less than {config.max_input_tokens} "
                               f"tokens. Given: {input_length}")
    return input_length, max_new_tokens


def parse_generate(data: Any, counter: TokenCounter, config: SimulatorConfig, *,
                   stream: bool) -> ValidRequest:
    if not isinstance(data, dict):
        raise deserialize_error(f"invalid type: {_kind(data)}, expected struct GenerateRequest")
    if "inputs" not in data:
        raise deserialize_error("missing field `inputs`")
    inputs = data["inputs"]
    if not isinstance(inputs, str):
        raise deserialize_error(f"inputs: invalid type: {_kind(inputs)}, expected a string")
    params = data.get("parameters") or {}
    if not isinstance(params, dict):
        raise deserialize_error(f"parameters: invalid type: {_kind(params)}, "
                                f"expected struct GenerateParameters")
    add_special = _opt_bool(data, "add_special_tokens", "", True)
    checked = check_parameters(params, config, stream=stream)
    if not inputs:
        raise validation_error("`inputs` cannot be empty")
    count = counter.count(inputs, add_special_tokens=add_special)
    input_length, max_new = check_lengths(count, checked["truncate"],
                                          checked["max_new_tokens"], config)
    return ValidRequest(input_length, max_new, checked["seed"], checked["do_sample"],
                        checked["stops"],
                        details=checked["details"], stream=stream,
                        top_n_tokens=checked["top_n_tokens"])


def _openai_common(data: dict[str, Any]) -> dict[str, Any]:
    """Map OpenAI fields onto TGI parameters the way TGI's chat/completions routes do."""
    max_tokens = data.get("max_tokens")
    if max_tokens is None:
        max_tokens = data.get("max_completion_tokens")
    temperature = _opt_float(data, "temperature", "")
    params: dict[str, Any] = {
        "max_new_tokens": max_tokens,
        "seed": data.get("seed"),
        "stop": data.get("stop"),
        "top_p": data.get("top_p"),
        "frequency_penalty": data.get("frequency_penalty"),
        "repetition_penalty": data.get("repetition_penalty"),
    }
    # TGI: temperature 0 means greedy decoding (no sampling), otherwise sampling.
    if temperature is not None and temperature != 0.0:
        params["temperature"] = temperature
        params["do_sample"] = True
    stream = _opt_bool(data, "stream", "", False)
    return {"params": {k: v for k, v in params.items() if v is not None}, "stream": stream}


def parse_chat(data: Any, counter: TokenCounter, config: SimulatorConfig) -> ValidRequest:
    if not isinstance(data, dict):
        raise deserialize_error(f"invalid type: {_kind(data)}, expected struct ChatRequest")
    if "messages" not in data:
        raise deserialize_error("missing field `messages`")
    messages = data["messages"]
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise deserialize_error(f"messages: invalid type: {_kind(messages)}, "
                                f"expected a sequence of messages")
    for m in messages:
        if "role" not in m:
            raise deserialize_error("messages: missing field `role`")
    common = _openai_common(data)
    stream = common["stream"]
    options = data.get("stream_options") or {}
    include_usage = bool(options.get("include_usage")) if isinstance(options, dict) else False
    checked = check_parameters(common["params"], config, stream=stream, path="")
    count = counter.count_chat(messages)
    if count == 0:
        raise validation_error("`inputs` cannot be empty")
    input_length, max_new = check_lengths(count, None, checked["max_new_tokens"], config)
    return ValidRequest(input_length, max_new, checked["seed"], checked["do_sample"],
                        checked["stops"],
                        include_usage=include_usage, stream=stream)


def parse_completion(data: Any, counter: TokenCounter, config: SimulatorConfig) -> ValidRequest:
    if not isinstance(data, dict):
        raise deserialize_error(f"invalid type: {_kind(data)}, expected struct CompletionRequest")
    if "prompt" not in data:
        raise deserialize_error("missing field `prompt`")
    prompt = data["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, list):
        raise validation_error("the simulator accepts one prompt per request")
    if not isinstance(prompt, str):
        raise deserialize_error(f"prompt: invalid type: {_kind(prompt)}, expected a string")
    common = _openai_common(data)
    stream = common["stream"]
    checked = check_parameters(common["params"], config, stream=stream, path="")
    if not prompt:
        raise validation_error("`inputs` cannot be empty")
    count = counter.count(prompt)
    input_length, max_new = check_lengths(count, None, checked["max_new_tokens"], config)
    return ValidRequest(input_length, max_new, checked["seed"], checked["do_sample"],
                        checked["stops"], stream=stream)
