"""--shard I/N: every case in exactly one shard, the same split on every host, balanced by earlier durations."""

from __future__ import annotations

import json

import pytest

from harness.shard import ShardError, assign, durations_from, hashed, parse_shard, select

CASES = [f"accuracy:model{m}-ort_cpu-{r}-dynamic" for m in range(12) for r in ("fp32", "fp16", "int8")]


def shards_of(cases, n, durations=None):
    return [[c for c, keep in zip(cases, select(cases, parse_shard(f"{i}/{n}"), durations)) if keep]
            for i in range(1, n + 1)]


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_every_case_lands_in_exactly_one_shard(n):
    parts = shards_of(CASES, n)
    assert sorted(c for p in parts for c in p) == sorted(CASES)
    assert all(p for p in parts) or n > len(CASES)


def test_a_cases_shard_does_not_depend_on_what_else_was_collected():
    """Hosts that collect different cases (backends auto on unlike machines) still run each case once."""
    full = dict(zip(CASES, select(CASES, parse_shard("2/3"))))
    some = CASES[::3]
    assert dict(zip(some, select(some, parse_shard("2/3")))) == {c: full[c] for c in some}
    durations = {c: float(i % 5 + 1) for i, c in enumerate(CASES)}
    full = dict(zip(CASES, select(CASES, parse_shard("2/3"), durations)))
    assert dict(zip(some, select(some, parse_shard("2/3"), durations))) == {c: full[c] for c in some}



def test_the_hash_is_the_same_in_another_process_with_another_hash_seed():
    """Python's hash() of a string changes with PYTHONHASHSEED; the shard of a case must not."""
    import os
    import subprocess
    import sys

    code = f"from harness.shard import hashed; print([hashed(c, 5) for c in {CASES!r}])"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str([hashed(c, 5) for c in CASES])


def test_durations_balance_the_shards_longest_first():
    # a few long cases and many short ones: the hash alone puts the long ones where it may
    durations = {c: (60.0 if i < 4 else 1.0) for i, c in enumerate(CASES)}
    plan = assign(4, durations)
    assert sorted(plan.load) == [(60 + (len(CASES) - 4) // 4)] * 4  # 4 x 60 s, 32 x 1 s: 68 s each
    by_hash = [sum(durations[c] for c in part) for part in shards_of(CASES, 4)]
    assert max(by_hash) - min(by_hash) > 0 and max(plan.load) - min(plan.load) == 0
    # and the plan is what select() follows
    parts = shards_of(CASES, 4, durations)
    assert sorted(sum(durations[c] for c in p) for p in parts) == sorted(plan.load)


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0", ""])
def test_a_bad_shard_is_refused_naming_the_option(text):
    with pytest.raises(ShardError) as exc:
        parse_shard(text, "--shard")
    assert str(exc.value) == f"--shard: cannot use {text!r}: give I/N with 1 <= I <= N, e.g. 2/4 (the second of four parts)"


def test_durations_come_from_an_earlier_results_file(tmp_path):
    rows = [
        {"schema": 3, "type": "accuracy", "id": "ranker-ort_cpu-fp32-dynamic", "model": "ranker", "backend": "ort_cpu",
         "recipe": "fp32", "profile": "dynamic", "status": "pass", "seconds": 2.5, "run_id": "r1"},
        {"schema": 3, "type": "perf", "id": "ranker-ort_cpu-fp32-dynamic-serial-b1", "model": "ranker",
         "backend": "ort_cpu", "recipe": "fp32", "profile": "dynamic", "mode": "serial", "batch": 1,
         "status": "pass", "warmup_s": 0.2, "wall_s": 0.5, "run_id": "r1"},
    ]
    (tmp_path / "results.json").write_text(json.dumps({"rows": rows}))
    assert durations_from(tmp_path) == {"accuracy:ranker-ort_cpu-fp32-dynamic": 2.5,
                                        "perf:ranker-ort_cpu-fp32-dynamic-serial-b1": pytest.approx(0.7)}
    with pytest.raises(ShardError, match=r"--shard-durations .*nothing.json: no results at"):
        durations_from(tmp_path / "nothing.json")
