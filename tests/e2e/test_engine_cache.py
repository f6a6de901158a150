"""The engine cache as users meet it: pytest-xdist workers, a second run, damaged entries, rebuilds."""

import json
import re
from collections import Counter

SUBSET = ("-m", "accuracy", "--models=ranker,encoder", "--recipes=fp32,fp16,int8-minmax", "--eval-size=64")


def builds(project) -> list[dict]:
    log = project.cache / "builds.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def entries(project) -> dict[str, dict]:
    return {json.loads(p.read_text())["key"]: json.loads(p.read_text()) for p in project.cache.rglob("entry.json")}


def summary(result) -> tuple[int, int, int]:
    m = re.search(r"engine cache: (\d+) built, (\d+) hit, (\d+) rebuilt", result.stdout.str())
    assert m, result.stdout.str()
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def test_two_workers_on_a_cold_cache_build_each_entry_once_and_a_second_run_builds_nothing(project):
    first = project.run(*SUBSET, "-n", "2")
    first.assert_outcomes(passed=12)
    log = builds(project)
    per_key = Counter(b["key"] for b in log)
    assert per_key and set(per_key.values()) == {1}, per_key  # every entry built exactly once
    assert set(per_key) == set(entries(project))  # and every entry in the cache was built by this run
    # recipes are shared by both profiles and references by every recipe: hits happened during the first run
    built, hit, rebuilt = summary(first)
    assert built == len(log) and hit > 0 and rebuilt == 0

    second = project.run(*SUBSET, "-n", "2", report="second")
    second.assert_outcomes(passed=12)
    assert summary(second)[0] == 0 and summary(second)[2] == 0
    assert len(builds(project)) == len(log)
    assert all(r["cache_hit"] for r in project.results("second"))


def test_a_truncated_artifact_and_a_corrupt_sidecar_are_rebuilt_and_nothing_else(project):
    project.run(*SUBSET).assert_outcomes(passed=12)
    before = builds(project)
    engines = sorted(p for p in project.cache.glob("engines/**/entry.json"))
    truncated = engines[0].parent / "model.onnx"
    truncated.write_bytes(truncated.read_bytes()[:100])
    corrupt = engines[1]
    corrupt.write_text(corrupt.read_text()[:40])
    damaged = {json.loads(engines[0].read_text())["key"]}

    result = project.run(*SUBSET, report="again")
    result.assert_outcomes(passed=12)
    new = builds(project)[len(before):]
    assert len(new) == 2
    assert damaged < {b["key"] for b in new}
    assert summary(result) == (0, summary(result)[1], 2)
    out = result.stdout.str()
    assert "CacheWarning" in out and "truncated?" in out and "sidecar unreadable" in out


def test_rebuild_engines_rebuilds_every_entry_the_run_uses_exactly_once(project):
    project.run(*SUBSET).assert_outcomes(passed=12)
    before = builds(project)
    result = project.run(*SUBSET, "-n", "2", "--rebuild-engines", report="rebuilt")
    result.assert_outcomes(passed=12)
    new = builds(project)[len(before):]
    assert Counter(b["key"] for b in new) == Counter(b["key"] for b in before)
    assert summary(result)[0] == 0 and summary(result)[2] == len(before)
