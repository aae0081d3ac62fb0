"""Trace reader, deployment split, mirrored looping and slicing, on the shipped real trace
and on small files written here."""

from __future__ import annotations

import gzip
import itertools

import pytest
from r1platform.pools import trace


def _csv(path, rows):
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens,Extra\n" + "".join(rows))
    return path


@pytest.fixture(scope="module")
def azure():
    return trace.read_requests(trace.AZURE_CONV)


def test_the_shipped_azure_conversation_trace_reads_whole(azure):
    reqs = azure
    assert len(reqs) == 19366
    assert reqs[0].t == 0.0 and 3400 < reqs[-1].t < 3700  # one hour
    assert all(a.t <= b.t for a, b in itertools.pairwise(reqs))
    assert (trace.AZURE_CONV.parent / "azure_llm_2023_conv.LICENSE").exists()


def test_any_csv_of_the_format_works_plain_gzipped_unsorted_extra_columns(tmp_path):
    rows = [f"2024-01-01 00:{m:02d}:00.1234567,{100 + m},{10 + m},x\n" for m in (2, 0, 1)]
    plain = _csv(tmp_path / "a.csv", rows)
    gz = tmp_path / "a.csv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    for p in (plain, gz):
        reqs = trace.read_requests(p)
        assert [r.t for r in reqs] == [0.0, 60.0, 120.0]  # sorted, relative to the first
        assert [r.line for r in reqs] == [3, 4, 2]
    secs = _csv(tmp_path / "b.csv", ["10.5,1,1,z\n", "70.5,1,1,z\n"])
    assert [r.t for r in trace.read_requests(secs)] == [0.0, 60.0]


def test_split_is_seeded_stable_and_covers_every_request(azure):
    reqs = azure
    a, b = trace.split(reqs, 8, seed=1), trace.split(reqs, 8, seed=1)
    assert [len(p) for p in a] == [len(p) for p in b]
    assert sum(len(p) for p in a) == len(reqs)
    assert min(len(p) for p in a) > 0.8 * len(reqs) / 8  # a hash deals evenly
    other = trace.split(reqs, 8, seed=2)
    assert [len(p) for p in other] != [len(p) for p in a]


def test_mirror_loop_has_no_jump_at_the_seams():
    s = [1.0, 2.0, 5.0, 3.0]
    out = trace.mirror_loop(s, 13)
    assert out == [1, 2, 5, 3, 3, 5, 2, 1, 1, 2, 5, 3, 3]
    steps = [abs(b - a) for a, b in itertools.pairwise(out)]
    assert max(steps) <= max(abs(b - a) for a, b in itertools.pairwise(s))
    with pytest.raises(ValueError, match="empty"):
        trace.mirror_loop([], 3)


def test_real_trace_looped_to_a_day_per_deployment(azure):
    tr = trace.azure_csv(trace.AZURE_CONV, 60, duration_s=86400, deployments=4, seed=3)
    assert len(tr.shape) == 1440 and len(tr.per_deployment) == 4
    for s in (tr.shape, *tr.per_deployment):
        assert sum(s) / len(s) == pytest.approx(1.0)
    n_own = int(azure[-1].t // 60)  # whole minutes in the file (the partial last one dropped)
    seam = [abs(tr.shape[k] - tr.shape[k - 1]) for k in range(n_own, 1440, n_own)]
    inner = [abs(tr.shape[k] - tr.shape[k - 1]) for k in range(1, 1440)]
    assert max(seam) == 0.0 and max(inner) > 0  # each seam repeats a point: no jump
    assert tr.at(0, 1) == tr.per_deployment[1][0] and tr.at(0) == tr.shape[0]
    w = tr.window(3600, 7200)
    assert len(w.shape) == 120 and w.at(0, 2) == tr.at(3600, 2)
    assert 1000 < tr.avg_input_tokens < 1300 and 150 < tr.avg_output_tokens < 300
