"""Is a completion's final answer equal to the gold one: exact rationals for numeric golds,
math-verify for the rest. Standard library only (math-verify is imported on first use), so the
TRL peer's separate venv can import it like rewards.py.
"""

from __future__ import annotations

import re
import threading
from fractions import Fraction

MAX_ANSWER_CHARS = 200

_INT_RE = re.compile(r"[+-]?\d+")
_THOUSANDS_RE = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DECIMAL_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,3})?")
_FRAC_RE = re.compile(r"([+-]?\d+)\s*/\s*([+-]?\d+)")
_TEX_FRAC_RE = re.compile(r"([+-]?)\\[dt]?frac\{\s*([+-]?\d+)\s*\}\{\s*([+-]?\d+)\s*\}")


def _strip_wrappers(s: str) -> str:
    s = s.strip().replace("\u2212", "-")
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            s = s[len(left) : len(s) - len(right)].strip()
    return s.rstrip(".").strip()


def parse_number(s: str) -> Fraction | None:
    """An exact rational from a plain numeric literal (int, decimal, a/b, \\frac{a}{b},
    1,234 grouping); None for anything else, including expressions like `60+8`."""
    s = _strip_wrappers(s)
    if not s:
        return None
    if _THOUSANDS_RE.fullmatch(s):
        s = s.replace(",", "")
    try:
        if _INT_RE.fullmatch(s) or _DECIMAL_RE.fullmatch(s):
            return Fraction(s)
        m = _FRAC_RE.fullmatch(s)
        if m:
            return Fraction(int(m.group(1)), int(m.group(2)))
        m = _TEX_FRAC_RE.fullmatch(s)
        if m:
            value = Fraction(int(m.group(2)), int(m.group(3)))
            return -value if m.group(1) == "-" else value
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None


class GraderMissingError(RuntimeError):
    """The accuracy reward met an answer only math-verify can grade, and it is not installed."""


def _is_fraction_literal(s: str) -> bool:
    s = _strip_wrappers(s)
    return bool(_FRAC_RE.fullmatch(s) or _TEX_FRAC_RE.fullmatch(s))


def _symbolic_equal(gold: str, pred: str) -> bool:
    try:
        from math_verify import LatexExtractionConfig, parse, verify
    except ImportError as err:
        # Never a silent 0: a run would train against a grader that marks everything wrong.
        raise GraderMissingError(
            f"the accuracy reward needs math-verify to grade the non-numeric answer {gold!r}; "
            "install it: pip install 'math-verify>=0.5'"
        ) from err
    # The alarm-based timeout math-verify uses only works in the main thread.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    config = [LatexExtractionConfig()]
    try:
        # Parsing as one LaTeX formula, not free text, so prose around a number ("the answer
        # is 68") becomes a product of symbols instead of a lenient match on the number.
        g = parse(f"${gold}$", extraction_config=config, parsing_timeout=timeout)
        p = parse(f"${pred}$", extraction_config=config, parsing_timeout=timeout)
        return bool(g and p and verify(g, p, timeout_seconds=timeout))
    except Exception:  # a grader crash on garbage must read as "not correct"
        return False


def answers_match(gold: str, pred: str) -> bool:
    """Is `pred` a correct final answer for `gold`?

    A numeric gold needs a numeric literal with the same exact value: an expression such as
    `60+8` is not accepted, or a policy could copy an arithmetic question as its answer. A
    fraction literal is accepted only when the gold is not an integer, for the same reason.
    Other golds are compared symbolically with math-verify (`GraderMissingError` without it).
    """
    pred = pred.strip()
    if not pred or len(pred) > MAX_ANSWER_CHARS:
        return False
    gold_num = parse_number(gold)
    if gold_num is not None:
        pred_num = parse_number(pred)
        if pred_num is None:
            return False
        if gold_num.denominator == 1 and _is_fraction_literal(pred):
            return False
        return pred_num == gold_num
    if _strip_wrappers(gold) == _strip_wrappers(pred):
        return True
    return _symbolic_equal(_strip_wrappers(gold), _strip_wrappers(pred))
