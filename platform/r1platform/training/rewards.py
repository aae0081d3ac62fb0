"""R1 rule rewards (accuracy, format, tag count), a registry for pluggable ones, and scoring.

Every reward function has TRL's signature, `fn(completions, **dataset_columns) -> list[float |
None]`, so functions written for TRL's GRPOTrainer plug in unchanged and ours plug into TRL.
`completions` are strings, or TRL's conversational form (a list of messages per completion).

Our chat template ends the generation prompt with `<think>`, so a completion normally starts
inside the think block: `...</think><answer>68</answer>`. Texts that carry their own opening
`<think>` are accepted too. This module imports only the standard library, and math-verify
(a runtime dependency) only when a non-numeric answer needs it, so the TRL peer's separate
venv can use it as-is; without math-verify such an answer raises `GraderMissingError`.
"""

from __future__ import annotations

import importlib
import math
import multiprocessing
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .answer_match import GraderMissingError, answers_match, parse_number

# Re-exported: callers grade answers through this module, the rewards' one entry point.
__all__ = ["GraderMissingError", "answers_match", "parse_number"]

RewardFn = Callable[..., list[float | None]]

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
# Long candidates are never a plausible short answer, and symbolic parsing of them can hang.


class RewardSpecError(ValueError):
    """A reward spec that cannot be resolved; the message is one line naming the spec."""


class RewardError(RuntimeError):
    """A reward function that raised, returned garbage or ran past its timeout; the message is
    one line naming the reward."""


# ---------------------------------------------------------------------------- text helpers


def completion_text(completion: Any) -> str:
    """The generated text of one completion: a string, or TRL's list of messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if isinstance(completion, Sequence):
        parts: list[str] = []
        for msg in completion:
            content = msg.get("content", "") if isinstance(msg, Mapping) else msg
            if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
                content = "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
            parts.append(content if isinstance(content, str) else "")
        return "".join(parts)
    return ""


def with_think_prefix(text: str) -> str:
    """The text as the model saw it: the template pre-fills `<think>` before the completion."""
    return text if text.lstrip().startswith(THINK_OPEN) else THINK_OPEN + text


def _texts(completions: Sequence[Any]) -> list[str]:
    return [completion_text(c) for c in completions]


# ---------------------------------------------------------------------------- format rewards

_NO_TAG = r"(?:(?!</?think>|</?answer>).)*"
_FORMAT_RE = re.compile(
    rf"^\s*<think>{_NO_TAG}</think>\s*<answer>(?P<ans>{_NO_TAG})</answer>\s*$", re.DOTALL
)


def format_reward(completions: Sequence[Any], **_: Any) -> list[float | None]:
    """1.0 for exactly one think block then one non-empty answer block and only whitespace
    around them (the pre-filled `<think>` counts as the opening tag); else 0.0."""
    out: list[float | None] = []
    for text in _texts(completions):
        m = _FORMAT_RE.match(with_think_prefix(text))
        out.append(1.0 if m and m.group("ans").strip() else 0.0)
    return out


def tag_count_reward(completions: Sequence[Any], **_: Any) -> list[float | None]:
    """0.25 for each of the four tags that occurs exactly once (open-r1's partial credit)."""
    out: list[float | None] = []
    for text in _texts(completions):
        full = with_think_prefix(text)
        out.append(sum(0.25 for tag in TAGS if full.count(tag) == 1))
    return out


# ---------------------------------------------------------------------------- answer extraction

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def _boxed_contents(text: str) -> list[str] | None:
    r"""Contents of every `\boxed{...}` / `\fbox{...}`, brace-balanced; None if one is unclosed."""
    found: list[str] = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, start = 1, m.end()
        i = start
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth:
            return None
        found.append(text[start : i - 1])
    return found


def extract_answers(text: str) -> list[str]:
    r"""Every final-answer candidate in a completion; [] when there is none or it is malformed.

    Only text after the last `</think>` counts when there is one, so scratch work inside the
    think block is never graded. Candidates come from `<answer>` blocks (a `\boxed{}` inside a
    block is unwrapped); with no answer tag at all, from `\boxed{}`. Unbalanced answer tags give
    no candidates: a truncated or nested block is not an answer.
    """
    region = text.rsplit(THINK_CLOSE, 1)[1] if THINK_CLOSE in text else text
    if region.count(ANSWER_OPEN) != region.count(ANSWER_CLOSE):
        return []
    if ANSWER_OPEN in region:
        blocks = _ANSWER_RE.findall(region)
        candidates: list[str] = []
        for block in blocks:
            if ANSWER_OPEN in block or THINK_OPEN in block or THINK_CLOSE in block:
                return []
            boxed = _boxed_contents(block)
            if boxed is None:
                return []
            candidates.extend(boxed or [block])
        return [c.strip() for c in candidates]
    boxed = _boxed_contents(region)
    return [c.strip() for c in boxed or []]


def gold_answer(value: Any) -> str | None:
    r"""The gold answer as text; a `\boxed{}` in a worked solution is unwrapped."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    boxed = _boxed_contents(text)
    if boxed:
        text = boxed[-1].strip()
    return text or None


def accuracy_reward(completions: Sequence[Any], **columns: Any) -> list[float | None]:
    """1.0 when the completion's final answer is correct, else 0.0; None when the row has no
    gold. The gold comes from the `answer` column (or open-r1's `solution`). Correct means at
    least one candidate and every candidate correct, so hedged or conflicting answers fail."""
    golds = columns.get("answer", columns.get("solution"))
    if golds is None:
        raise ValueError("accuracy_reward needs an 'answer' (or 'solution') dataset column")
    if len(golds) != len(completions):
        raise ValueError(f"{len(completions)} completions but {len(golds)} answers")
    out: list[float | None] = []
    for text, raw_gold in zip(_texts(completions), golds, strict=True):
        gold = gold_answer(raw_gold)
        if gold is None:
            out.append(None)
            continue
        cands = extract_answers(text)
        ok = bool(cands) and all(answers_match(gold, c) for c in cands)
        out.append(1.0 if ok else 0.0)
    return out


# ---------------------------------------------------------------------------- registry

BUILTIN_REWARDS: dict[str, RewardFn] = {
    "accuracy": accuracy_reward,
    "format": format_reward,
    "tag_count": tag_count_reward,
}


@dataclass(frozen=True)
class RewardFunc:
    name: str
    fn: RewardFn
    weight: float = 1.0
    # Set: each call runs in a forked process, killed after this many seconds. A hung
    # function cannot be stopped inside our own process (threads cannot be killed).
    timeout_s: float | None = None


def resolve_reward(spec: str) -> RewardFn:
    """A builtin name (`accuracy`, `format`, `tag_count`, with or without `_reward`) or an
    import path `module:function`. Errors are one line naming the spec."""
    spec = spec.strip()
    name = spec.removesuffix("_reward")
    if ":" not in spec:
        if name in BUILTIN_REWARDS:
            return BUILTIN_REWARDS[name]
        raise RewardSpecError(
            f"reward {spec!r}: not a builtin ({', '.join(BUILTIN_REWARDS)}) "
            "and not an import path 'module:function'"
        )
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise RewardSpecError(f"reward {spec!r}: expected 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise RewardSpecError(
            f"reward {spec!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RewardSpecError(f"reward {spec!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise RewardSpecError(f"reward {spec!r}: {attr!r} is not callable")
    return obj


def _spec_name(spec: str) -> str:
    return spec.strip().rpartition(":")[2].rpartition(".")[2].removesuffix("_reward")


def load_reward_funcs(specs: Sequence[str | Mapping[str, Any]]) -> list[RewardFunc]:
    """Resolve specs into weighted reward functions.

    A spec is a string (weight 1) or a mapping {"spec" (or "fn"): str, "weight": float,
    "name": str, "timeout_s": float}. Names default to the function name and must be unique, since metrics are
    keyed by them.
    """
    if not specs:
        raise RewardSpecError("no reward functions given")
    funcs: list[RewardFunc] = []
    for item in specs:
        timeout: Any = None
        if isinstance(item, str):
            spec, weight, name = item, 1.0, None
        elif isinstance(item, Mapping):
            spec = item.get("spec", item.get("fn"))
            if not isinstance(spec, str):
                raise RewardSpecError(f"reward {dict(item)!r}: needs a 'spec' string")
            weight, name = item.get("weight", 1.0), item.get("name")
            timeout = item.get("timeout_s")
        else:
            raise RewardSpecError(f"reward {item!r}: expected a string or a mapping")
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise RewardSpecError(f"reward {spec!r}: weight {weight!r} is not a number") from None
        if not math.isfinite(weight):
            raise RewardSpecError(f"reward {spec!r}: weight {weight!r} is not finite")
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout < math.inf
        ):
            raise RewardSpecError(f"reward {spec!r}: timeout_s {timeout!r} must be seconds > 0")
        fn = resolve_reward(spec)
        funcs.append(RewardFunc(name or _spec_name(spec), fn, weight, timeout))
    names = [f.name for f in funcs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise RewardSpecError(f"duplicate reward names {dupes}: give each a distinct 'name'")
    return funcs


# ---------------------------------------------------------------------------- scoring


def reward_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Dataset columns as TRL passes them to reward functions: one list per key, without
    `prompt` (passed as `prompts`)."""
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k != "prompt" and k not in keys)
    columns = {k: [row.get(k) for row in rows] for k in keys}
    columns["prompts"] = [row.get("prompt") for row in rows]
    return columns


def score(
    completions: Sequence[Any],
    rows: Sequence[Mapping[str, Any]],
    funcs: Sequence[RewardFunc],
) -> tuple[list[float], dict[str, list[float]]]:
    """Weighted total reward per completion and each function's raw values.

    `rows[i]` is the dataset row that produced `completions[i]`. A None from a function means
    "not applicable": it adds 0 to the total and is NaN in `per_func`, so `reward_stats`
    leaves it out of that function's mean (TRL does the same).
    """
    if len(rows) != len(completions):
        raise ValueError(f"{len(completions)} completions but {len(rows)} rows")
    columns = reward_columns(rows)
    total = [0.0] * len(completions)
    per_func: dict[str, list[float]] = {}
    for f in funcs:
        values = call_reward(f, {"completions": list(completions), **columns})
        if len(values) != len(completions):
            raise ValueError(
                f"reward {f.name!r} returned {len(values)} values for {len(completions)} inputs"
            )
        raw: list[float] = []
        for i, v in enumerate(values):
            try:
                x = math.nan if v is None else float(v)
            except (TypeError, ValueError):
                raise RewardError(
                    f"reward {f.name!r} returned {v!r} for completion {i}, not a number"
                ) from None
            if math.isinf(x):
                raise ValueError(f"reward {f.name!r} returned {x} for completion {i}")
            raw.append(x)
            if not math.isnan(x):
                total[i] += f.weight * x
        per_func[f.name] = raw
    return total, per_func


def reward_stats(per_func: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """`rewards/<name>/mean` and `/std` (population) per function, ignoring NaN (None) entries;
    NaN when a function returned no values at all."""
    stats: dict[str, float] = {}
    for name, values in per_func.items():
        xs = [v for v in values if not math.isnan(v)]
        mean = sum(xs) / len(xs) if xs else math.nan
        var = sum((x - mean) ** 2 for x in xs) / len(xs) if xs else math.nan
        stats[f"rewards/{name}/mean"] = mean
        stats[f"rewards/{name}/std"] = math.sqrt(var) if xs else math.nan
    return stats


# ---------------------------------------------------------------------------- isolation


def call_reward(f: RewardFunc, kwargs: dict[str, Any]) -> list[Any]:
    """`f.fn(**kwargs)` as a list; in a forked process when `f.timeout_s` is set. Any failure
    is a RewardError naming the reward."""
    if f.timeout_s is None:
        try:
            values = f.fn(**kwargs)
        except Exception as exc:
            raise RewardError(f"reward {f.name!r} raised {type(exc).__name__}: {exc}") from exc
    else:
        values = _call_forked(f, kwargs)
    if not isinstance(values, Sequence) or isinstance(values, str | bytes):
        raise RewardError(f"reward {f.name!r} returned {type(values).__name__}, not a list")
    return list(values)


def _child(fn: RewardFn, kwargs: dict[str, Any], conn: Any) -> None:
    try:
        result: tuple[bool, Any] = (True, list(fn(**kwargs)))
    except BaseException as exc:  # reported to the parent, which raises RewardError
        result = (False, f"{type(exc).__name__}: {exc}")
    conn.send(result)
    conn.close()


def _call_forked(f: RewardFunc, kwargs: dict[str, Any]) -> Any:
    # fork, not spawn: the function need not be importable or picklable, only its result.
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(f.fn, kwargs, send), daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(f.timeout_s):
            raise RewardError(
                f"reward {f.name!r} did not finish within its timeout_s ({f.timeout_s:g} s); "
                "its process was killed"
            )
        ok, value = recv.recv()
    except EOFError:
        proc.join(5)
        raise RewardError(
            f"reward {f.name!r}: its process died (exit code {proc.exitcode})"
        ) from None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        recv.close()
    if not ok:
        raise RewardError(f"reward {f.name!r} raised {value}")
    return value
