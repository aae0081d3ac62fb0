"""R1 rule rewards: correct answers score, and no garbage, empty or hedged answer ever does."""

import math
import sys
import types

import pytest
from r1platform.training.rewards import (
    RewardFunc,
    RewardSpecError,
    accuracy_reward,
    answers_match,
    extract_answers,
    format_reward,
    load_reward_funcs,
    parse_number,
    resolve_reward,
    reward_stats,
    score,
    tag_count_reward,
)


def acc(text, gold="68"):
    return accuracy_reward([text], answer=[gold])[0]


# ---------------------------------------------------------------- accuracy: correct


@pytest.mark.parametrize(
    "text",
    [
        "3+5=8, 2+4=6, so 68</think><answer>68</answer>",  # completion after the prefill
        "<think>3+5=8</think><answer>68</answer>",  # full text
        "<think>x</think>\n<answer> 68 </answer>\n",
        "<think>x</think><answer>$68$</answer>",
        "<think>x</think><answer>\\boxed{68}</answer>",
        "<think>x</think><answer>68.0</answer>",
        "<think>x</think><answer>+68</answer>",
        "<think>x</think><answer>68.</answer>",
        "<think>x</think> so the result is \\boxed{68}",  # boxed, no answer tag
        "<think>x</think><answer>68</answer><answer>68</answer>",  # repeated, not conflicting
        "no think at all <answer>68</answer>",  # format is format_reward's business
    ],
)
def test_accuracy_accepts_correct(text):
    assert acc(text) == 1.0


def test_accuracy_negative_fraction_and_thousands():
    assert acc("</think><answer>-12</answer>", "-12") == 1.0
    assert acc("</think><answer>\u221212</answer>", "-12") == 1.0  # unicode minus
    assert acc("</think><answer>0.5</answer>", "1/2") == 1.0
    assert acc("</think><answer>\\frac{1}{2}</answer>", "0.5") == 1.0
    assert acc("</think><answer>1,234</answer>", "1234") == 1.0


def test_accuracy_symbolic_gold_uses_equivalence():
    assert acc("</think><answer>\\sqrt{2}</answer>", "\\sqrt{2}") == 1.0
    assert acc("</think><answer>2^{1/2}</answer>", "\\sqrt{2}") == 1.0
    assert acc("</think><answer>\\sqrt{3}</answer>", "\\sqrt{2}") == 0.0


def test_accuracy_conversational_completions():
    conv = [[{"role": "assistant", "content": "7</think><answer>68</answer>"}]]
    parts = [[{"role": "assistant", "content": [{"type": "text", "text": "<answer>68</answer>"}]}]]
    assert accuracy_reward(conv, answer=["68"]) == [1.0]
    assert accuracy_reward(parts, answer=["68"]) == [1.0]


def test_accuracy_solution_column_with_boxed_gold():
    out = accuracy_reward(["</think><answer>68</answer>"], solution=["so \\boxed{68}."])
    assert out == [1.0]


# ---------------------------------------------------------------- accuracy: never correct

ADVERSARIAL = [
    "",
    "   ",
    "68",  # bare number, no answer tag or box
    "</think>68",
    "</think>The answer is 68.",
    "<think>x</think><answer></answer>",
    "<think>x</think><answer>   </answer>",
    "<think>x</think><answer>\\boxed{}</answer>",
    "<think>x</think>\\boxed{}",
    "<think>x</think><answer>68",  # truncated
    "<think>x</think>68</answer>",  # no opening tag
    "<think>x</think><answer>68</answer><answer>86</answer>",  # conflicting
    "<think>x</think><answer>86</answer><answer>68</answer>",
    "<think>x</think><answer>68</answer> <answer>86",  # second truncated
    "<think>x</think><answer><answer>68</answer></answer>",  # nested
    "<think>x</think><answer>68 or 86</answer>",
    "<think>x</think><answer>68, 86</answer>",
    "<think>x</think><answer>67 68 69</answer>",
    "<think>x</think><answer>6 8</answer>",
    "<think>x</think><answer>680</answer>",
    "<think>x</think><answer>-68</answer>",
    "<think>x</think><answer>68.5</answer>",
    "<think>x</think><answer>68e1</answer>",
    "<think>x</think><answer>the answer is 68</answer>",
    "<think>x</think><answer>x=68</answer>",
    "<think>x</think><answer>68\\%</answer>",
    "<think>x</think><answer>60+8</answer>",  # the question copied back
    "<think>x</think><answer>136/2</answer>",  # unsimplified fraction for an integer
    "<think>x</think><answer>\\frac{136}{2}</answer>",
    "<think>x</think><answer>\\boxed{68}\\boxed{86}</answer>",
    "<think>x</think><answer>\\boxed{68</answer>",  # unclosed box
    "<think>x</think><answer>nan</answer>",
    "<think>x</think><answer>inf</answer>",
    "<think>x</think><answer>\\infty</answer>",
    "<think>x</think><answer>1e999999999</answer>",
    "<think>x</think><answer>" + "6" * 300 + "</answer>",
    "<think>x</think><answer>" + "(" * 150 + "68" + ")" * 150 + "</answer>",
    "<think><answer>68</answer></think>",  # answer only inside the think block
    "<answer>68</answer></think>",  # ditto, completion form
    "<answer>68</answer></think><answer>86</answer>",
    "<think>x</think><answer>68</think></answer>",
    "<think>x</think><answer>{68}</answer>",
    "<think>x</think><answer>[68]</answer>",
    "<think>x</think><answer>0x44</answer>",
    "<think>x</think><answer>sixty-eight</answer>",
    "<think>x</think><answer>68/1</answer>",
    "<think>x</think><answer>1,2,3</answer>",
    "<think>x</think><answer>6,8</answer>",
]


@pytest.mark.parametrize("text", ADVERSARIAL)
def test_accuracy_never_rewards_garbage(text):
    assert acc(text) == 0.0


def test_accuracy_garbage_against_symbolic_gold():
    for text in (
        "",
        "</think><answer></answer>",
        "</think><answer>x</answer>",
        "</think><answer>\\sqrt{2}</answer><answer>\\sqrt{3}</answer>",
        "</think><answer>{{{</answer>",
        "</think><answer>\\frac{</answer>",
    ):
        assert acc(text, "\\sqrt{2}") == 0.0, text


def test_accuracy_missing_gold_is_none_and_missing_column_raises():
    assert accuracy_reward(["</think><answer>1</answer>"] * 3, answer=[None, "", True]) == [
        None,
        None,
        None,
    ]
    with pytest.raises(ValueError, match="answer"):
        accuracy_reward(["x"], question=["1+1"])
    with pytest.raises(ValueError, match="2 answers"):
        accuracy_reward(["x"], answer=["1", "2"])


def test_extract_answers_and_parse_number():
    assert extract_answers("a</think>b<answer>1</answer><answer>\\boxed{2}</answer>") == ["1", "2"]
    assert extract_answers("<answer>1</answer>") == ["1"]
    assert extract_answers("\\boxed{\\frac{1}{2}}") == ["\\frac{1}{2}"]
    assert parse_number("1,000") == 1000
    assert parse_number("-\\frac{3}{4}") == parse_number("-0.75")
    assert parse_number("1/0") is None
    assert parse_number("1,00") is None
    assert parse_number("12abc") is None
    assert not answers_match("68", "")


# ---------------------------------------------------------------- format and tag count


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3+5=8</think><answer>68</answer>", 1.0),
        ("<think>3+5=8</think><answer>68</answer>", 1.0),
        ("</think><answer>68</answer>", 1.0),  # empty reasoning still has the structure
        ("x</think>\n<answer>68</answer>\n  ", 1.0),
        ("x</think><answer>68</answer>trailing", 0.0),
        ("x</think>between<answer>68</answer>", 0.0),
        ("x</think><answer></answer>", 0.0),
        ("x</think><answer> \n</answer>", 0.0),
        ("x</think><answer>68", 0.0),
        ("x<answer>68</answer>", 0.0),  # never left the think block
        ("x</think>The answer is 68.", 0.0),
        ("x</think><answer>6</answer><answer>8</answer>", 0.0),
        ("x</think></think><answer>68</answer>", 0.0),
        ("<think>a</think><think>b</think><answer>68</answer>", 0.0),
        ("x<think>y</think><answer>68</answer>", 0.0),  # second opening tag
        ("x</think><answer>6<answer>8</answer>", 0.0),
        ("Sure. <think>x</think><answer>68</answer>", 0.0),
        ("", 0.0),
    ],
)
def test_format_reward(text, expected):
    assert format_reward([text]) == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x</think><answer>68</answer>", 1.0),
        ("<think>x</think><answer>68</answer>", 1.0),
        ("x</think><answer>68", 0.75),
        ("x", 0.25),  # only the pre-filled <think>
        ("x</think></think><answer>1</answer><answer>2</answer>", 0.25),
        ("<think>x<think></think><answer>1</answer>", 0.75),
    ],
)
def test_tag_count_reward(text, expected):
    assert tag_count_reward([text]) == [expected]


# ---------------------------------------------------------------- registry and scoring


def test_resolve_builtins_and_import_paths():
    assert resolve_reward("accuracy") is accuracy_reward
    assert resolve_reward("format_reward") is format_reward
    assert resolve_reward("r1platform.training.rewards:tag_count_reward") is tag_count_reward


@pytest.mark.parametrize(
    ("spec", "msg"),
    [
        ("nope", "not a builtin"),
        ("no_such_module_xyz:fn", "cannot import 'no_such_module_xyz'"),
        ("r1platform.training.rewards:missing", "has no attribute"),
        ("r1platform.training.rewards:TAGS", "not callable"),
        (":fn", "module:function"),
    ],
)
def test_resolve_errors_are_one_line_naming_the_spec(spec, msg):
    with pytest.raises(RewardSpecError, match=msg) as info:
        resolve_reward(spec)
    assert repr(spec) in str(info.value)
    assert "\n" not in str(info.value)


def test_import_error_inside_module_is_reported(monkeypatch, tmp_path):
    (tmp_path / "broken_reward_mod.py").write_text("import not_installed_pkg_q\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RewardSpecError, match=r"ModuleNotFoundError.*not_installed_pkg_q"):
        load_reward_funcs(["broken_reward_mod:fn"])


def test_load_reward_funcs_weights_and_names():
    funcs = load_reward_funcs(
        ["accuracy", {"spec": "format", "weight": 0.5}, {"fn": "tag_count", "name": "tags"}]
    )
    assert [(f.name, f.fn, f.weight) for f in funcs] == [
        ("accuracy", accuracy_reward, 1.0),
        ("format", format_reward, 0.5),
        ("tags", tag_count_reward, 1.0),
    ]
    with pytest.raises(RewardSpecError, match="duplicate"):
        load_reward_funcs(["accuracy", "accuracy_reward"])
    with pytest.raises(RewardSpecError, match="weight"):
        load_reward_funcs([{"spec": "format", "weight": "heavy"}])
    with pytest.raises(RewardSpecError, match="no reward"):
        load_reward_funcs([])
    with pytest.raises(RewardSpecError, match="spec"):
        load_reward_funcs([{"weight": 1.0}])


def test_score_weights_none_and_stats(monkeypatch):
    # A user reward in TRL's style: None for rows it does not apply to; sees every column.
    seen = {}

    def only_long(completions, prompts, kind, **_):
        seen.update(prompts=prompts, kind=kind)
        pairs = zip(completions, kind, strict=True)
        return [None if k == "skip" else float(len(c) > 3) for c, k in pairs]

    mod = types.ModuleType("user_rewards_q")
    mod.only_long = only_long
    monkeypatch.setitem(sys.modules, "user_rewards_q", mod)
    funcs = load_reward_funcs(
        [{"spec": "accuracy", "weight": 2.0}, {"spec": "user_rewards_q:only_long", "weight": 0.5}]
    )
    rows = [
        {"prompt": "p0", "answer": "1", "kind": "a"},
        {"prompt": "p1", "answer": "2", "kind": "skip"},
        {"prompt": "p2", "answer": "3", "kind": "a"},
    ]
    comps = ["</think><answer>1</answer>", "</think><answer>2</answer>", "</think>"]
    total, per = score(comps, rows, funcs)
    # row0: 2*1 + .5*1; row1: 2*1 + None->0; row2: 2*0 + .5*1
    assert total == [2.5, 2.0, 0.5]
    assert per["accuracy"] == [1.0, 1.0, 0.0]
    assert per["only_long"][0] == 1.0 and math.isnan(per["only_long"][1])
    assert seen == {"prompts": ["p0", "p1", "p2"], "kind": ["a", "skip", "a"]}
    stats = reward_stats(per)
    # only_long over its two defined values [1, 1]: mean 1, std 0 (None excluded)
    assert stats["rewards/only_long/mean"] == 1.0 and stats["rewards/only_long/std"] == 0.0
    assert stats["rewards/accuracy/mean"] == pytest.approx(2 / 3)
    assert stats["rewards/accuracy/std"] == pytest.approx(math.sqrt(2) / 3)


def test_score_rejects_bad_reward_output():
    short = RewardFunc("short", lambda completions, **_: [1.0])
    inf = RewardFunc("inf", lambda completions, **_: [math.inf] * len(completions))
    rows = [{"prompt": "p", "answer": "1"}] * 2
    with pytest.raises(ValueError, match="'short' returned 1 values"):
        score(["a", "b"], rows, [short])
    with pytest.raises(ValueError, match="'inf' returned inf"):
        score(["a", "b"], rows, [inf])
    with pytest.raises(ValueError, match="rows"):
        score(["a"], rows, [short])
    assert math.isnan(reward_stats({"none": [math.nan]})["rewards/none/mean"])


def test_missing_math_verify_fails_loudly_not_as_a_zero(monkeypatch):
    import sys

    from r1platform.training.rewards import GraderMissingError, answers_match

    monkeypatch.setitem(sys.modules, "math_verify", None)  # import now raises ImportError
    assert answers_match("68", "68")  # numeric golds never need it
    with pytest.raises(GraderMissingError, match="pip install 'math-verify"):
        answers_match(r"\frac{\pi}{2}", r"\pi/2")
    with pytest.raises(GraderMissingError):
        accuracy_reward(["</think><answer>x^2</answer>"], answer=["x**2 + 0"])


def test_math_verify_is_a_runtime_dependency():
    import tomllib
    from pathlib import Path

    meta = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())
    assert any(d.startswith("math-verify") for d in meta["project"]["dependencies"])
