"""The built-in synthetic arithmetic task: two-operand sums and differences with a digit trace.

It serves three purposes: pre-training text for the tiny model, GRPO prompts, and a fixed
held-out split for evaluation. Problems are keyed by their question so the held-out split is
disjoint from training by construction, not by luck.
"""

from __future__ import annotations

import hashlib
import random

SYSTEM_PROMPT = ""
OPERATORS = ("+", "-")
MAX_OPERAND = 99


def solve(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b


def make_problem(rng: random.Random) -> dict[str, str]:
    a = rng.randint(0, MAX_OPERAND)
    b = rng.randint(0, MAX_OPERAND)
    op = rng.choice(OPERATORS)
    question = f"{a}{op}{b}"
    return {"question": question, "answer": str(solve(a, op, b))}


def is_held_out(question: str) -> bool:
    """About 1 in 8 questions belong to the test split, decided by a stable hash."""
    return hashlib.sha256(question.encode()).digest()[0] < 32


def build_split(name: str, n: int, seed: int) -> list[dict[str, str]]:
    """n distinct problems of the split; deterministic in (name, n, seed)."""
    if name not in ("train", "test"):
        raise ValueError(f"unknown split {name!r}: expected 'train' or 'test'")
    want_test = name == "test"
    rng = random.Random(f"arith-{name}-{seed}")
    seen: set[str] = set()
    rows: list[dict[str, str]] = []
    while len(rows) < n:
        p = make_problem(rng)
        if is_held_out(p["question"]) != want_test or p["question"] in seen:
            continue
        seen.add(p["question"])
        rows.append(p)
    return rows


def question_to_messages(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def reasoning_trace(question: str) -> str:
    """A column-wise working, so a small model can learn the algorithm rather than a lookup."""
    op = "+" if "+" in question else "-"
    a_s, b_s = question.split(op)
    a, b = int(a_s), int(b_s)
    result = solve(a, op, b)
    if op == "+":
        ones = a % 10 + b % 10
        tens = a // 10 + b // 10 + ones // 10
        return f"{a_s}{op}{b_s}: ones {a % 10}+{b % 10}={ones}, tens {tens}, so {result}"
    if a < b:
        return f"{a_s}{op}{b_s}: {a}<{b}, so -({b}-{a}) = {result}"
    return f"{a_s}{op}{b_s}: {a}-{b} = {result}"


def solve_question(question: str) -> int:
    op = "+" if "+" in question else "-"
    a, b = question.split(op)
    return solve(int(a), op, int(b))
