"""Prompt datasets for GRPO: the built-in arithmetic task, jsonl/json, parquet, and local HF
dataset directories, validated into plain lists of row dicts.

A row is `{"prompt": str | list[message], "answer": str, ...extra columns}`. Malformed rows are
skipped and counted, never fatal; a missing path or a source with no valid row is fatal with a
one-line error naming the path. Heavy imports (pyarrow, datasets, ray) happen only when a
source needs them, so the TRL peer's venv can use this module too.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUILTIN_DATASETS = ("arithmetic",)
# The held-out split is the same for every run (fixed seed); only the train draw follows `seed`.
ARITHMETIC_SIZES = {"train": 4000, "test": 200}
ARITHMETIC_TEST_SEED = 0
ROLES = frozenset({"system", "user", "assistant"})
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


class DatasetError(ValueError):
    """A dataset that cannot be used at all; the message is one line naming the source."""


class DatasetNotFoundError(DatasetError):
    pass


@dataclass
class PromptSet:
    rows: list[dict[str, Any]]
    source: str
    split: str
    skip_reasons: Counter[str] = field(default_factory=Counter)

    @property
    def skipped(self) -> int:
        return sum(self.skip_reasons.values())


# ---------------------------------------------------------------------------- built-in task


def load_arithmetic(split: str = "train", n: int | None = None, seed: int = 0) -> list[dict]:
    """Rows of the synthetic arithmetic task. The test split is fixed and disjoint from train."""
    from r1platform.tasks import arithmetic

    if split not in ARITHMETIC_SIZES:
        raise DatasetError(f"arithmetic: unknown split {split!r} (expected train or test)")
    n = ARITHMETIC_SIZES[split] if n is None else n
    split_seed = seed if split == "train" else ARITHMETIC_TEST_SEED
    return [
        {
            "prompt": arithmetic.question_to_messages(p["question"]),
            "answer": p["answer"],
            "question": p["question"],
        }
        for p in arithmetic.build_split(split, n, split_seed)
    ]


# ---------------------------------------------------------------------------- raw readers


def _read_jsonl(path: Path) -> Iterator[Any]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                yield _Malformed("invalid json")


def _read_json(path: Path, split: str) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, dict) and isinstance(data.get(split), list):
        return data[split]
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        return data["data"]
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of rows (or {{{split!r}: [...]}})")
    return data


def _read_parquet(path: Path) -> list[Any]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def _read_hf_dataset_dir(path: Path) -> list[Any]:
    """One split saved by `datasets.Dataset.save_to_disk`.

    Uses `datasets.load_from_disk` when installed; otherwise reads the Arrow stream files that
    state.json lists, which is all load_from_disk does for a plain (un-indexed) dataset.
    """
    try:
        import datasets
    except ImportError:
        datasets = None
    if datasets is not None:
        return datasets.load_from_disk(str(path)).to_list()
    import pyarrow as pa

    state = json.loads((path / "state.json").read_text())
    rows: list[Any] = []
    for entry in state.get("_data_files", []):
        with pa.memory_map(str(path / entry["filename"])) as source:
            rows.extend(pa.ipc.open_stream(source).read_all().to_pylist())
    return rows


def _split_files(directory: Path, split: str) -> list[Path]:
    """Files for `split` in a plain directory: `train.jsonl`, `data/train-00000-of-00002.parquet`,
    and the like."""
    found: list[Path] = []
    for base in (directory, directory / "data"):
        if base.is_dir():
            found.extend(
                p
                for p in sorted(base.iterdir())
                if p.is_file() and p.suffix in FILE_SUFFIXES and p.name.startswith(split)
            )
    return found


def _read_file(path: Path, split: str) -> Iterable[Any]:
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    if path.suffix == ".json":
        return _read_json(path, split)
    if path.suffix == ".parquet":
        return _read_parquet(path)
    raise DatasetError(f"{path}: unsupported file type (expected {', '.join(FILE_SUFFIXES)})")


def read_raw(path: Path, split: str = "train") -> list[Any]:
    """Unvalidated rows of `split` from a file or directory. A single file is the split itself."""
    if not path.exists():
        raise DatasetNotFoundError(f"dataset path not found: {path}")
    if path.is_file():
        return list(_read_file(path, split))
    if (path / "dataset_dict.json").exists():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        if split not in splits:
            raise DatasetError(f"{path}: no split {split!r} (has {', '.join(splits) or 'none'})")
        return _read_hf_dataset_dir(path / split)
    if (path / "state.json").exists():
        return _read_hf_dataset_dir(path)
    files = _split_files(path, split)
    if not files:
        raise DatasetError(
            f"{path}: no {split!r} data (expected {split}.jsonl/.json/.parquet or a "
            "datasets.save_to_disk directory)"
        )
    return [row for f in files for row in _read_file(f, split)]


# ---------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class _Malformed:
    reason: str


def _valid_messages(prompt: Any) -> bool:
    return (
        isinstance(prompt, list)
        and bool(prompt)
        and all(
            isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
            for m in prompt
        )
        and any(m["content"].strip() for m in prompt)
    )


def validate_row(
    raw: Any, prompt_key: str = "prompt", answer_key: str = "answer"
) -> dict[str, Any] | str:
    """The normalised row, or the reason it is malformed.

    A row without `prompt_key` but with a `question` string gets a single user message, which
    covers GSM8K-style data. Numeric answers become strings.
    """
    if isinstance(raw, _Malformed):
        return raw.reason
    if not isinstance(raw, dict):
        return "row is not an object"
    row = dict(raw)
    prompt = row.pop(prompt_key, None)
    if prompt is None and isinstance(row.get("question"), str):
        prompt = [{"role": "user", "content": row["question"]}]
    if isinstance(prompt, str):
        if not prompt.strip():
            return "empty prompt"
    elif prompt is None:
        return "missing prompt"
    elif not _valid_messages(prompt):
        return "malformed prompt messages"
    answer = row.pop(answer_key, None)
    if isinstance(answer, bool) or not isinstance(answer, str | int | float):
        return "missing answer" if answer is None else "answer is not a string or number"
    answer = str(answer).strip()
    if not answer:
        return "empty answer"
    return {"prompt": prompt, "answer": answer, **row}


def validate_rows(
    raw_rows: Iterable[Any], prompt_key: str = "prompt", answer_key: str = "answer"
) -> tuple[list[dict[str, Any]], Counter[str]]:
    rows: list[dict[str, Any]] = []
    reasons: Counter[str] = Counter()
    for raw in raw_rows:
        result = validate_row(raw, prompt_key, answer_key)
        if isinstance(result, str):
            reasons[result] += 1
        else:
            rows.append(result)
    return rows, reasons


# ---------------------------------------------------------------------------- entry points


def check_source(source: str) -> None:
    """Fail fast (before Ray or a model starts) when `source` is neither builtin nor a path."""
    if source in BUILTIN_DATASETS:
        return
    if not Path(source).expanduser().exists():
        hint = "" if ("/" in source or "." in source) else f" (built-ins: {BUILTIN_DATASETS})"
        raise DatasetNotFoundError(f"dataset path not found: {source}{hint}")


def load_prompts(
    source: str,
    split: str = "train",
    *,
    limit: int | None = None,
    seed: int = 0,
    prompt_key: str = "prompt",
    answer_key: str = "answer",
) -> PromptSet:
    """Validated rows of `split` from a built-in name or a path; at most `limit` rows."""
    check_source(source)
    if source == "arithmetic":
        rows = load_arithmetic(split, limit, seed)
        return PromptSet(rows, source, split)
    path = Path(source).expanduser()
    try:
        raw = read_raw(path, split)
    except DatasetError:
        raise
    except Exception as exc:  # pyarrow/datasets errors: keep them to one line with the path
        raise DatasetError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc
    rows, reasons = validate_rows(raw, prompt_key, answer_key)
    if not rows:
        detail = ", ".join(f"{n} {r}" for r, n in reasons.most_common()) or "no rows"
        raise DatasetError(f"{path}: no valid rows in split {split!r} ({detail})")
    if limit is not None:
        rows = rows[:limit]
    return PromptSet(rows, str(path), split, reasons)


def to_ray_dataset(rows: list[dict[str, Any]]) -> Any:
    """A Ray Dataset over the rows (ray.data.Dataset)."""
    import ray.data

    return ray.data.from_items(rows)
