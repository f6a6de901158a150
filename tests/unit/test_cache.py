"""The content-addressed cache: keys, corruption, crash safety and concurrent builders."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.backends import get_backend
from harness.cache import Cache, CacheWarning, cache_key
from harness.data import SampleSet
from harness.errors import CacheError
from harness.recipes import all_recipes, recipe_from_table, recipe_key_parts
from harness.registry import load_registry
from harness.spec import SampleSource
from tests.helpers import FIXTURES

leaves = st.one_of(st.integers(-5, 5), st.text("ab", max_size=3), st.booleans(),
                   st.floats(-2, 2, allow_nan=False))
trees = st.recursive(leaves, lambda kids: st.one_of(st.lists(kids, min_size=1, max_size=3),
                                                     st.dictionaries(st.text("xyz", min_size=1, max_size=2), kids,
                                                                     min_size=1, max_size=3)), max_leaves=12)


def paths(tree, prefix=()):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from paths(v, prefix + (i,))
    else:
        yield prefix


def changed(tree, path):
    if not path:
        return [tree] if not isinstance(tree, list) else tree + [0]  # a different leaf: wrap it
    copy = dict(tree) if isinstance(tree, dict) else list(tree)
    copy[path[0]] = changed(tree[path[0]], path[1:])
    return copy


@given(st.dictionaries(st.text("abcdef", min_size=1, max_size=4), trees, min_size=1, max_size=5), st.data())
def test_changing_any_key_part_changes_the_key_and_nothing_else_does(parts, data):
    key = cache_key(parts)
    assert cache_key(json.loads(json.dumps(parts))) == key  # same content, rebuilt object: same key
    assert cache_key(dict(reversed(list(parts.items())))) == key  # key order does not matter
    path = data.draw(st.sampled_from(list(paths(parts))))
    assert cache_key(changed(parts, path)) != key


@pytest.fixture(scope="module")
def registry():
    return load_registry(FIXTURES / "models.toml")


def test_engine_key_covers_model_bytes_profile_backend_version_and_options(registry):
    backend = get_backend("ort_cpu")
    spec = registry.models["classifier"]
    dyn, fixed = spec.profiles["dynamic"], spec.profiles["fixed"]
    base = cache_key(backend.key_parts("aa" * 32, dyn, {}))
    assert cache_key(backend.key_parts("aa" * 32, dyn, {})) == base
    assert cache_key(backend.key_parts("ab" * 32, dyn, {})) != base
    assert cache_key(backend.key_parts("aa" * 32, fixed, {})) != base
    assert cache_key(backend.key_parts("aa" * 32, dyn, {"opt_level": 3})) != base

    class NextVersion(type(backend)):
        def version(self) -> str:
            return backend.version() + ".1"

    assert cache_key(NextVersion().key_parts("aa" * 32, dyn, {})) != base
    parts = backend.key_parts("aa" * 32, dyn, {})
    assert parts["device"]["type"] == "cpu" and parts["device"]["model"]


def test_recipe_key_covers_parameters_and_calibration_data(registry):
    spec = registry.models["ranker"]
    recipes = all_recipes(registry)
    base, cal = recipe_key_parts(recipes["int8-minmax"], spec)
    assert cal.real and cache_key(recipe_key_parts(recipes["int8-minmax"], spec)[0]) == cache_key(base)
    for other in ("int8-entropy", "int8-minmax-pc", "int8-minmax-generated"):
        assert cache_key(recipe_key_parts(recipes[other], spec)[0]) != cache_key(base)
    smaller = recipe_from_table("int8-minmax", {"kind": "int8", "calibration_size": 128}, "t")
    assert cache_key(recipe_key_parts(smaller, spec)[0]) != cache_key(base)
    # other real samples (another file hash) mean other calibration data
    other_data = dataclasses.replace(spec, samples=SampleSource(spec.samples.path, "0" * 64))
    assert cache_key(recipe_key_parts(recipes["int8-minmax"], other_data)[0]) != cache_key(base)
    # generated calibration data depends on the seed
    gen = recipes["int8-minmax-generated"]
    reseeded = dataclasses.replace(spec, eval_seed=spec.eval_seed + 1)
    assert cache_key(recipe_key_parts(gen, reseeded)[0]) != cache_key(recipe_key_parts(gen, spec)[0])


def test_generated_samples_do_not_depend_on_the_batch_they_land_in(registry):
    spec = registry.models["encoder"]
    s = SampleSet(spec, spec.profiles["dynamic"], size=10)
    whole = s.samples(0, 10)["tokens"]
    parts = [b.feeds["tokens"][: b.count] for b in s.batches(3)]
    assert (whole == __import__("numpy").concatenate(parts)).all()
    assert SampleSet(spec, spec.profiles["fixed"], size=10).key() == s.key()


# ------------------------------------------------------------------------------------ the cache itself


def writer(text: str, calls: list | None = None):
    def build(path: Path) -> dict:
        if calls is not None:
            calls.append(path)
        path.write_text(text)
        return {"note": text}
    return build


def test_build_once_then_hit(tmp_path):
    cache = Cache(tmp_path)
    calls: list = []
    a = cache.get_or_build("engines", "m/b/r-p", {"k": 1}, "model.bin", writer("A", calls))
    b = cache.get_or_build("engines", "m/b/r-p", {"k": 1}, "model.bin", writer("A", calls))
    assert (a.outcome, b.outcome, len(calls)) == ("built", "hit", 1)
    assert a.path == b.path and a.path.read_text() == "A" and b.info == {"note": "A"}
    assert a.path.parent.parent == tmp_path / "engines" / "m" / "b" / "r-p"
    side = json.loads((a.path.parent / "entry.json").read_text())
    assert side["parts"] == {"k": 1} and side["size"] == 1 and side["build_seconds"] >= 0
    assert (cache.stats.built, cache.stats.hit) == (1, 1)
    assert [b["key"] for b in cache.builds()] == [a.key]


@pytest.mark.parametrize("damage, problem", [
    (lambda e: e.path.write_text(""), "truncated"),
    (lambda e: e.path.write_text("B"), "checksum"),
    (lambda e: (e.path.parent / "entry.json").write_text('{"schema": 1, "key": '), "sidecar unreadable"),
    (lambda e: (e.path.parent / "entry.json").unlink(), "sidecar missing"),
    (lambda e: e.path.unlink(), "missing"),
])
def test_a_damaged_entry_is_detected_with_a_warning_and_rebuilt(tmp_path, damage, problem):
    cache = Cache(tmp_path)
    entry = cache.get_or_build("engines", "x", {"k": 1}, "model.bin", writer("A"))
    damage(entry)
    with pytest.warns(CacheWarning, match=problem):
        again = cache.get_or_build("engines", "x", {"k": 1}, "model.bin", writer("A"))
    assert again.outcome == "rebuilt" and again.path.read_text() == "A"
    assert cache.get_or_build("engines", "x", {"k": 1}, "model.bin", writer("A")).outcome == "hit"


def test_a_failed_build_leaves_nothing_behind(tmp_path):
    cache = Cache(tmp_path)

    def broken(path: Path) -> dict:
        path.write_text("half")
        raise RuntimeError("builder crashed")

    with pytest.raises(RuntimeError):
        cache.get_or_build("engines", "x", {"k": 1}, "model.bin", broken)
    leftovers = [p for p in (tmp_path / "engines" / "x").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == [] and cache.builds() == []
    assert cache.get_or_build("engines", "x", {"k": 1}, "model.bin", writer("A")).outcome == "built"


def test_rebuild_rebuilds_each_entry_once_per_run(tmp_path):
    Cache(tmp_path).get_or_build("engines", "x", {"k": 1}, "model.bin", writer("A"))
    cache = Cache(tmp_path, rebuild=True, run_id="run2")
    outcomes = [cache.get_or_build("engines", "x", {"k": 1}, "model.bin", writer("A")).outcome for _ in range(3)]
    assert outcomes == ["rebuilt", "hit", "hit"]


def _slow_build(args: tuple[str, int]) -> str:
    root, i = args
    cache = Cache(root)

    def build(path: Path) -> dict:
        time.sleep(0.5)
        path.write_text("engine")
        return {"builder": i}

    return cache.get_or_build("engines", "shared", {"k": "same"}, "model.bin", build).outcome


def test_concurrent_processes_build_an_entry_exactly_once(tmp_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        outcomes = pool.map(_slow_build, [(str(tmp_path), i) for i in range(4)])
    assert sorted(outcomes) == ["built", "hit", "hit", "hit"]
    assert len(Cache(tmp_path).builds()) == 1


def test_an_entry_found_unusable_once_used_is_discarded_and_rebuilt(tmp_path):
    """A plan the library will not deserialize passes every check the cache makes: its user discards it."""
    cache = Cache(tmp_path)

    def writer(data):
        def build(path):
            path.write_bytes(data)
        return build

    first = cache.get_or_build("engines", "m/b/r-p", {"k": 1}, "plan", writer(b"old"))
    with pytest.warns(CacheWarning, match=r"is unusable \(will not deserialize\); rebuilding it"):
        cache.discard(first, "will not deserialize")
    assert not first.path.exists()
    again = cache.get_or_build("engines", "m/b/r-p", {"k": 1}, "plan", writer(b"new"))
    assert again.outcome == "rebuilt" and again.path.read_bytes() == b"new" and cache.stats.rebuilt == 1
    with pytest.warns(CacheWarning):  # a stale handle (another process rebuilt it already) removes nothing
        cache.discard(first, "will not deserialize")
    assert again.path.read_bytes() == b"new"


def _use_read_only(args: tuple[str, int | None]) -> list[str]:
    """In a process of its own: as an unprivileged user where the test runs as root (root writes anywhere)."""
    root, uid = args
    if uid is not None:
        os.seteuid(uid)
    cache = Cache(root)
    out = [cache.get_or_build("engines", "good", {"k": 1}, "model.bin", writer("A")).outcome]
    try:
        cache.get_or_build("engines", "bad", {"k": 2}, "model.bin", writer("B"))
        out.append("rebuilt")
    except CacheError as exc:
        out.append(str(exc))
    return out


def test_a_read_only_cache_serves_its_entries_and_names_the_one_it_cannot_rebuild():
    # a folder every user can read (pytest's tmp_path is private to its owner)
    folder = Path(tempfile.mkdtemp(prefix="harness-ro-cache-"))
    try:
        os.chmod(folder, 0o755)
        cache = Cache(folder / "c")
        cache.get_or_build("engines", "good", {"k": 1}, "model.bin", writer("A"))
        bad = cache.get_or_build("engines", "bad", {"k": 2}, "model.bin", writer("B"))
        bad.path.write_text("")  # truncated: it needs a rebuild
        everything = [folder / "c", *(folder / "c").rglob("*")]
        for p in everything:
            os.chmod(p, 0o555 if p.is_dir() else 0o444)
        uid = 65534 if os.geteuid() == 0 else None  # nobody
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            (outcomes,) = pool.map(_use_read_only, [(str(folder / "c"), uid)])
        hit, error = outcomes
        assert hit == "hit"
        assert error.startswith(f"engine cache {folder / 'c'}: entry engines/bad/{bad.key[:16]} must be rebuilt "
                                "(artifact is 0 bytes, the sidecar says 1 (truncated?)), but the cache cannot be "
                                "written (Permission denied: ")
        assert error.endswith("point --engine-cache (or $HARNESS_CACHE_DIR) at a writable folder")
        assert bad.path.read_text() == ""  # nothing was touched
    finally:
        for p in [folder, *folder.rglob("*")]:
            os.chmod(p, 0o755)
        shutil.rmtree(folder)
