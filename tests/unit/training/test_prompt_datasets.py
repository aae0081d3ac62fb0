"""Prompt loading: every supported source, counted skips of malformed rows, one-line errors."""

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from r1platform.tasks import arithmetic
from r1platform.training.datasets import (
    DatasetError,
    DatasetNotFoundError,
    check_source,
    load_arithmetic,
    load_prompts,
    validate_row,
)

MSG = [{"role": "user", "content": "1+1"}]
GOOD = [{"prompt": MSG, "answer": "2", "id": 0}, {"prompt": "3+4", "answer": 7, "id": 1}]
BAD = [
    {"prompt": MSG},  # missing answer
    {"prompt": "", "answer": "1"},
    {"answer": "1"},
    {"prompt": [{"role": "robot", "content": "x"}], "answer": "1"},
    {"prompt": [], "answer": "1"},
    {"prompt": MSG, "answer": ""},
    {"prompt": MSG, "answer": True},
    {"prompt": MSG, "answer": [1]},
    [1, 2],
]


def expected_good():
    return [{"prompt": MSG, "answer": "2", "id": 0}, {"prompt": "3+4", "answer": "7", "id": 1}]


def write_jsonl(path, rows, extra_lines=()):
    lines = [json.dumps(r) for r in rows] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_arithmetic_rows_and_fixed_disjoint_test_split():
    train = load_prompts("arithmetic", "train", limit=300, seed=1).rows
    test_a = load_prompts("arithmetic", "test", limit=50, seed=1).rows
    test_b = load_arithmetic("test", 50, seed=7)
    assert test_a == test_b  # held-out split does not move with the run seed
    assert load_arithmetic("train", 20, seed=1) != load_arithmetic("train", 20, seed=2)
    assert not {r["question"] for r in train} & {r["question"] for r in test_a}
    row = train[0]
    assert row["prompt"] == arithmetic.question_to_messages(row["question"])
    a, op, b = re.fullmatch(r"(\d+)([+-])(\d+)", row["question"]).groups()
    assert row["answer"] == str(int(a) + int(b) if op == "+" else int(a) - int(b))
    with pytest.raises(DatasetError, match="unknown split"):
        load_arithmetic("validation")


def test_jsonl_skips_and_counts_malformed_rows(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", GOOD + BAD, extra_lines=["{not json", ""])
    ps = load_prompts(str(path))
    assert ps.rows == expected_good()
    assert ps.skipped == len(BAD) + 1
    assert ps.skip_reasons["invalid json"] == 1
    assert ps.skip_reasons["missing answer"] == 1
    assert ps.skip_reasons["malformed prompt messages"] == 2
    assert load_prompts(str(path), limit=1).rows == expected_good()[:1]


def test_json_list_and_split_mapping(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(GOOD))
    (tmp_path / "b.json").write_text(json.dumps({"train": GOOD[:1], "test": GOOD[1:]}))
    assert load_prompts(str(tmp_path / "a.json")).rows == expected_good()
    assert load_prompts(str(tmp_path / "b.json"), "test").rows == expected_good()[1:]
    (tmp_path / "c.json").write_text("{oops")
    with pytest.raises(DatasetError, match=r"c\.json: invalid JSON"):
        load_prompts(str(tmp_path / "c.json"))


def test_parquet_file_and_split_directory(tmp_path):
    rows = [{"prompt": MSG, "answer": "2"}, {"prompt": MSG, "answer": None}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "x.parquet")
    ps = load_prompts(str(tmp_path / "x.parquet"))
    assert ps.rows == [{"prompt": MSG, "answer": "2"}] and ps.skipped == 1
    # A hub-style snapshot: data/<split>-0000x-of-0000n.parquet
    data = tmp_path / "snap" / "data"
    data.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows[:1]), data / "train-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows[:1]), data / "train-00001-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows[:1]), data / "test-00000-of-00001.parquet")
    assert len(load_prompts(str(tmp_path / "snap")).rows) == 2
    assert len(load_prompts(str(tmp_path / "snap"), "test").rows) == 1
    with pytest.raises(DatasetError, match="no 'validation' data"):
        load_prompts(str(tmp_path / "snap"), "validation")


def save_like_hf(directory, rows):
    """The layout datasets.Dataset.save_to_disk writes: Arrow stream shards + state.json."""
    directory.mkdir(parents=True)
    table = pa.Table.from_pylist(rows)
    shard = str(directory / "data-00000-of-00001.arrow")
    with pa.OSFile(shard, "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    state = {"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}
    (directory / "state.json").write_text(json.dumps(state))
    (directory / "dataset_info.json").write_text("{}")


def test_hf_save_to_disk_directories(tmp_path):
    rows = [{"prompt": MSG, "answer": "2"}, {"prompt": MSG, "answer": ""}]
    save_like_hf(tmp_path / "single", rows)
    ps = load_prompts(str(tmp_path / "single"))
    assert ps.rows == [{"prompt": MSG, "answer": "2"}] and ps.skipped == 1
    save_like_hf(tmp_path / "dict" / "train", rows)
    save_like_hf(tmp_path / "dict" / "test", rows[:1])
    (tmp_path / "dict" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    assert len(load_prompts(str(tmp_path / "dict"), "test").rows) == 1
    with pytest.raises(DatasetError, match="no split 'dev' \\(has train, test\\)"):
        load_prompts(str(tmp_path / "dict"), "dev")


def test_question_column_becomes_a_user_message():
    row = validate_row({"question": "2+2", "answer": 4})
    assert row == {"prompt": [{"role": "user", "content": "2+2"}], "answer": "4", "question": "2+2"}
    assert validate_row({"q": "2+2", "a": "4"}, prompt_key="q", answer_key="a") == {
        "prompt": "2+2",
        "answer": "4",
    }


def test_missing_and_unusable_sources_fail_with_one_line_naming_the_path(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DatasetNotFoundError, match=f"dataset path not found: {missing}$"):
        load_prompts(str(missing))
    with pytest.raises(DatasetNotFoundError, match="built-ins"):
        check_source("gsm8k")
    check_source("arithmetic")
    (tmp_path / "data.csv").write_text("prompt,answer\n")
    with pytest.raises(DatasetError, match="unsupported file type"):
        load_prompts(str(tmp_path / "data.csv"))
    all_bad = write_jsonl(tmp_path / "bad.jsonl", BAD[:3])
    msg = r"bad\.jsonl: no valid rows in split 'train' \(1 missing answer, 1 empty prompt"
    with pytest.raises(DatasetError, match=msg):
        load_prompts(str(all_bad))
    garbled = tmp_path / "g.parquet"
    garbled.write_bytes(b"not parquet")
    with pytest.raises(DatasetError, match=r"g\.parquet: cannot read") as info:
        load_prompts(str(garbled))
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)
