"""The options table: values checked with one line naming the option, and paths resolved where they were written."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.backends import BACKENDS
from harness.options import BY_DEST, OPTIONS, OptionError, Raw, parse_value, read_options, settings_from


def value(dest: str, text: object, source: str | None = None) -> object:
    opt = BY_DEST[dest]
    return parse_value(opt, Raw(text, source or opt.flag, Path("/base")))


@pytest.mark.parametrize("dest, text, allowed", [
    ("perf_batches", "0", "give positive integers separated by commas, e.g. 1,8,32"),
    ("perf_batches", "-4", "give positive integers"),
    ("perf_batches", "1,x", "give positive integers"),
    ("perf_concurrency", "0", "give positive integers"),
    ("perf_concurrency", ",", "it names nothing"),
    ("eval_size", "0", "give a positive integer"),
    ("perf_min_iters", "1.5", "give a positive integer"),
    ("perf_duration", "-1", "give a number >= 0"),
    ("perf_duration", "nan", "give a number >= 0"),
    ("perf_resident", "maybe", "give yes, no, or yes,no"),
    ("perf_modes", "serial,turbo", "turbo is not one of serial, multistream, threadpool"),
    ("backends", "foo", "foo is not one of auto, ort_cpu, ort_cuda, tensorrt, tensorrt_rtx"),
    ("reference_device", "tpu", "give one of cpu, gpu"),
    ("trt_options", "opt_level", "give key=value pairs"),
    ("models", " , ", "it names nothing"),
])
def test_a_value_that_cannot_be_used_is_one_line_naming_the_option_and_what_is_allowed(dest, text, allowed):
    with pytest.raises(OptionError) as err:
        value(dest, text)
    msg = str(err.value)
    assert msg.startswith(f"{BY_DEST[dest].flag}: cannot use {text!r}: ") and allowed in msg
    assert "\n" not in msg


def test_an_ini_value_is_named_by_its_ini_key_and_file():
    with pytest.raises(OptionError, match=r"^harness_perf_batches in pyproject.toml: cannot use '0'"):
        value("perf_batches", "0", "harness_perf_batches in pyproject.toml")


def test_good_values_parse():
    assert value("perf_batches", "1, 8,32") == [1, 8, 32]
    assert value("perf_resident", "yes,no,yes") == [True, False]
    assert value("perf_duration", "0") == 0.0
    assert value("backends", "auto,ort_cpu") == ["auto", "ort_cpu"]
    assert value("trt_options", "opt_level=5,tf32=yes,compute_capabilities=SM86+SM89") == {
        "opt_level": 5, "tf32": True, "compute_capabilities": ["SM86", "SM89"]}


def test_the_backend_choices_are_the_backends():
    assert BY_DEST["backends"].choices == ("auto", *BACKENDS)


def test_paths_resolve_where_they_were_written(tmp_path, monkeypatch):
    cwd, ini_dir, root = tmp_path / "cwd", tmp_path / "project", tmp_path / "root"
    given = {"registry": Raw("models.toml", "harness_registry in pyproject.toml", ini_dir),
             "report_dir": Raw("out", "--report-dir", cwd),
             "baseline": Raw("~/base.json", "--baseline", cwd)}
    monkeypatch.delenv("HARNESS_CACHE_DIR", raising=False)
    values, sources = read_options(lambda o: given.get(o.dest), root=root, cwd=cwd)
    assert values["registry"] == ini_dir / "models.toml"  # an ini path: against the ini file's folder
    assert values["report_dir"] == cwd / "out"  # a command-line path: against the working directory
    assert values["baseline"] == Path.home() / "base.json"
    assert values["engine_cache"] == root / ".cache" / "harness"  # a default: against the rootdir
    assert sources == {"registry": "harness_registry in pyproject.toml", "report_dir": "--report-dir",
                       "baseline": "--baseline"}
    monkeypatch.setenv("HARNESS_CACHE_DIR", "shared-cache")
    values, _ = read_options(lambda o: None, root=root, cwd=cwd)
    assert values["engine_cache"] == cwd / "shared-cache" and values["report_dir"] == root / "reports"
    assert values["registry"] is None  # no registry unless one is named


def test_settings_carry_every_option():
    values, _ = read_options(lambda o: Raw("r.toml", "--registry", Path("/p")) if o.dest == "registry" else None,
                             root=Path("/root"), cwd=Path("/p"))
    s = settings_from(values, {"profiles": "--profiles"})
    assert s.registry == Path("/p/r.toml") and s.perf.concurrency == [2] and s.perf.modes == [
        "serial", "multistream", "threadpool"]
    assert s.source("profiles") == "--profiles" and s.source("perf_batches") == "--perf-batches"
    assert {o.dest for o in OPTIONS} == set(values)
