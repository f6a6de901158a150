"""Station cases (station x backend x recipes x mode x batch) and the check that times one into a StationRow.

Members resolve their recipe as: the member's own, else the station's ``recipe``, else each recipe of
``--perf-recipes`` in turn (one case per recipe), else the model's first perf recipe (``[defaults]
perf_recipes`` among its recipes: ``fp32`` for the bundled models); their profile as the member's, the
station's, else the model's first. Batches: ``--perf-batches``, else the station's ``batches``, else 1; a
batch some member's profile does not admit generates no case. Ids read
``station-vision-ort_cpu-fp32-threadpool-b4``.

The check builds each member's engine through the recipe / backend / cache path (or, in merged mode, the
merged model's, after checking its outputs against the separate engines'), stages one batch per member
(``SampleSet``, as every perf case), and times the mode under the run's timing policy while a
ResourceMonitor samples CPU, memory and (NVML) the GPU. On a GPU the device memory in use just before the
timed runners are made is recorded too (``resources.gpu_mem_before_mb``), so that the report can show what
the mode's runners took. Every runner of a station runs with ONNX Runtime's intra-op spinning off
(``RunnerOptions.extra``; other backends ignore it): several sessions share the cores, and an idle one's
spinning threads would slow the one running (README, "Stations"). A runner that fails is named with its
member; a merged engine whose outputs differ from the separate models' fails the case, untimed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..backends import Backend, Engine, Runner, RunnerOptions, get_backend
from ..backends.ort import INTRA_OP_SPINNING
from ..data import SampleSet, batch_size_of
from ..errors import HarnessError, RegistryError
from ..recipes import RecipeArtifact, apply_recipe
from ..resources import ResourceMonitor
from ..rows import StationRow
from ..session import HarnessSession
from ..spec import ModelSpec, StationSpec
from ..timing import TimingPolicy
from .merge import compare_outputs, describe_failure, merge_station, merged_feeds, tolerance
from .modes import STATION_MODES, MemberFailed, StationMeasurement


class MergedMismatch(AssertionError):
    """The merged engine's outputs differ from the separate models' beyond the tolerance: nothing is timed."""


@dataclass(frozen=True)
class StationCase:
    station: str
    backend: str
    recipe: str  # the members' recipes, joined with "+" where they differ
    mode: str
    batch: int
    resident: bool = True
    cuda_graph: bool = False
    recipes: tuple[str, ...] = ()  # per member
    profiles: tuple[str, ...] = ()  # per member

    @property
    def id(self) -> str:
        parts = ["station", self.station, self.backend, self.recipe, self.mode, f"b{self.batch}"]
        if not self.resident:
            parts.append("copy")
        if self.cuda_graph:
            parts.append("graph")
        return "-".join(parts)

    @property
    def profile(self) -> str:
        return "+".join(dict.fromkeys(self.profiles))


def selected_stations(hs: HarnessSession) -> list[StationSpec]:
    stations = hs.registry.stations
    names = hs.settings.perf.stations
    if names:
        unknown = [n for n in names if n not in stations]
        if unknown:
            raise HarnessError(f"--stations names unknown station(s) {', '.join(unknown)}; the registry "
                               f"{hs.registry.path} has {', '.join(stations) or 'none'}")
        return [stations[n] for n in names]
    if hs.settings.models:  # --models: the stations made only of selected models
        chosen = set(hs.settings.models)
        return [s for s in stations.values() if set(s.models) <= chosen]
    return list(stations.values())


def _first_perf_recipe(hs: HarnessSession, spec: ModelSpec) -> str:
    recipes = hs.model_recipes(spec, hs.settings.recipes)
    perf = [r for r in recipes if r in (hs.registry.perf_recipes or recipes)]
    return (perf or recipes or ["fp32"])[0]


def resolve_members(hs: HarnessSession, st: StationSpec, override: str | None) -> list[tuple[str, str, str]]:
    """(model, recipe, profile) per member; ``override`` is the --perf-recipes recipe for members naming none."""
    out = []
    for i, m in enumerate(st.members):
        spec = hs.model(m.model)
        recipe = m.recipe or st.recipe or override or _first_perf_recipe(hs, spec)
        if recipe not in hs.recipes:
            entry = f"{st.members_key}[{i}]"
            fld = f"{entry}.recipe" if m.recipe else "recipe" if st.recipe else entry
            raise RegistryError(st.source, st.name, fld, f"unknown recipe {recipe!r} for {m.model}; known: "
                                f"{', '.join(hs.recipes)}", kind="station")
        profile = m.profile or st.profile or next(iter(spec.profiles), "")
        out.append((m.model, recipe, profile))
    return out


def _admits(hs: HarnessSession, members: list[tuple[str, str, str]], batch: int) -> bool:
    for model, _, pname in members:
        spec = hs.model(model)
        if spec.unavailable is not None:
            continue  # no profiles to check: the case is generated, and skips with the model's reason
        profile = spec.profiles[pname]
        if not batch_size_of(spec, profile, "min") <= batch <= batch_size_of(spec, profile, "max"):
            return False
    return True


def station_cases(hs: HarnessSession) -> Iterator[StationCase]:
    ps = hs.settings.perf
    unknown = [m for m in ps.station_modes if m not in STATION_MODES]
    if unknown:
        raise HarnessError(f"--station-modes names unknown mode(s) {', '.join(unknown)}; known: "
                           f"{', '.join(STATION_MODES)}")
    for st in selected_stations(hs):
        variants: dict[tuple[tuple[str, str, str], ...], None] = {}
        overrides: list[str | None] = [*ps.recipes] if ps.recipes else [None]
        for override in overrides:
            variants[tuple(resolve_members(hs, st, override))] = None
        for backend in hs.backends():
            for members in variants:
                recipes = tuple(r for _, r, _ in members)
                label = "+".join(dict.fromkeys(recipes))
                for mode in ps.station_modes:
                    for batch in ps.batches or list(st.batches) or [1]:
                        if not _admits(hs, list(members), batch):
                            continue
                        for resident in ps.resident:
                            for graph in ps.cuda_graph:
                                yield StationCase(st.name, backend, label, mode, batch, resident, graph, recipes,
                                                  tuple(p for _, _, p in members))


def skip_reason(hs: HarnessSession, case: StationCase) -> str | None:
    """Why a station case cannot run here: the first member that cannot (model, backend or recipe), or a
    recipe the merged mode cannot compose."""
    st = hs.registry.stations[case.station]
    for i, (m, recipe) in enumerate(zip(st.members, case.recipes)):
        reason = hs.skip_reason(m.model, case.backend, recipe)
        if reason:
            return f"station {st.name!r}, member {i} ({m.model}): {reason}"
        if STATION_MODES[case.mode].merged and hs.recipe(recipe).kind == "trt_legacy":
            return (f"station {st.name!r}: merged mode composes ONNX files; {recipe} is a TensorRT 10 builder "
                    f"setting of member {i} ({m.model}), not in its ONNX")
    return None


@dataclass
class _Member:
    spec: ModelSpec
    art: RecipeArtifact
    feeds: dict[str, np.ndarray]
    engine: Engine


def _build_member(hs: HarnessSession, backend: Backend, case: StationCase, i: int) -> _Member:
    spec = hs.model(hs.registry.stations[case.station].members[i].model)
    recipe = hs.recipe(case.recipes[i])
    profile = spec.profiles[case.profiles[i]]
    samples = SampleSet(spec, profile, size=case.batch)
    samples.check_profile(case.batch)
    feeds = next(samples.batches(case.batch)).feeds
    art = apply_recipe(recipe, spec, hs.cache)
    options = hs.build_options(backend, art.build_options, backend.perf_build_options(case.mode, 1))
    engine = backend.build(art.path, profile, hs.cache, label=f"{spec.name}/{backend.name}/{recipe.name}-{profile.name}",
                           model_hash=art.model_hash, options=options, calibration=art.calibration)
    return _Member(spec, art, feeds, engine)


def _merged_runner(hs: HarnessSession, backend: Backend, case: StationCase, members: list[_Member],
                   options: RunnerOptions, row: StationRow) -> tuple[Runner, Engine, float | None]:
    """Build the merged engine and check its outputs against the separate engines'; return its staged runner,
    its engine and the GPU memory in use before the runner was made."""
    merged = merge_station(case.station, case.recipe, [(m.spec.name, m.art.path, m.art.model_hash) for m in members],
                           [m.engine.profile for m in members], hs.cache)
    engine = backend.build(merged.path, merged.profile, hs.cache,
                           label=f"station-{case.station}/{backend.name}/{case.recipe}-merged",
                           model_hash=merged.model_hash, options=hs.build_options(backend))
    feeds = merged_feeds([m.feeds for m in members], merged.prefixes)
    separate = []
    for m in members:
        with m.engine.runner(RunnerOptions(threads=options.threads)) as r:
            separate.append(r.infer(m.feeds))
    before = _gpu_memory_now(backend)
    runner = engine.runner(options)
    try:
        check = compare_outputs(separate, runner.infer(feeds), merged.prefixes,
                                [tolerance(hs.recipe(r).kind) for r in case.recipes])
        row.merged = {"check": check, "composition": merged.info, "profile": merged.profile.describe(),
                      "model_key": merged.entry.key if merged.entry else None}
        if not check["passed"]:
            raise MergedMismatch(f"{case.id}: {describe_failure(check)}")
        runner.prepare(feeds, resident=case.resident)
    except BaseException:
        runner.close()
        raise
    return runner, engine, before


def _gpu_memory_now(backend: Backend) -> float | None:
    if not backend.on_gpu:
        return None
    with ResourceMonitor(gpu_index=0) as mon:
        pass
    value = mon.result.get("gpu_mem_peak_mb")
    return float(value) if value is not None else None


def check_station(hs: HarnessSession, case: StationCase) -> StationRow:
    """Time one station case; write and return its row."""
    st = hs.registry.stations[case.station]
    backend = get_backend(case.backend)
    mode = STATION_MODES[case.mode]
    ps = hs.settings.perf
    policy = TimingPolicy(warmup=ps.warmup, min_duration=ps.duration, min_iters=ps.min_iters, cv_bound=ps.max_cv,
                          drift_bound=ps.max_drift)
    n = 1 if mode.merged else len(st.members)
    threads = mode.runner_threads(backend, n)
    row = StationRow(
        id=case.id, model=st.name, backend=backend.name, recipe=case.recipe, profile=case.profile, mode=case.mode,
        batch=case.batch, resident=case.resident, cuda_graph=case.cuda_graph, backend_version=backend.version(),
        members=[{"model": m.model, "recipe": r, "profile": p} for m, r, p in zip(st.members, case.recipes, case.profiles)],
        fps_target=st.fps, runners=n, threads_per_runner=threads,
        policy={"warmup_s": ps.warmup, "min_duration_s": ps.duration, "min_iters": ps.min_iters,
                "max_cv": ps.max_cv, "max_drift": ps.max_drift},
    )
    # several sessions taking turns (or running side by side) on the same cores: an idle session's threads
    # spin-waiting for work steal the cores of the one running (ONNX Runtime CPU, measured in the README).
    # The merged engine runs with the same setting, so that the modes differ only in how they run the models.
    options = RunnerOptions(threads=threads, cuda_graph=case.cuda_graph, extra={INTRA_OP_SPINNING: False})
    runners: list[Runner] = []
    try:
        members = [_build_member(hs, backend, case, i) for i in range(len(st.members))]
        if mode.merged:
            runner, engine, before = _merged_runner(hs, backend, case, members, options, row)
            runners.append(runner)
            engines = [engine]
        else:
            before = _gpu_memory_now(backend)
            for mb in members:
                runners.append(mb.engine.runner(options))
                runners[-1].prepare(mb.feeds, resident=case.resident)
            engines = [mb.engine for mb in members]
        row.update(engine_keys=[e.entry.key for e in engines], cache_hit=all(e.entry.hit for e in engines))
        mon = ResourceMonitor(gpu_index=0 if backend.on_gpu else None)
        with mon:
            m = mode.measure(runners, policy, batch=case.batch)
        row.runner = runners[0].describe()
    except MemberFailed as exc:
        who = "the merged engine" if mode.merged else f"member {exc.index} ({st.members[exc.index].model})"
        row.update(status="error", message=f"{type(exc).__name__}: {exc} (runner {exc.index + 1} is {who})")
        hs.write_row(row)
        raise
    except MergedMismatch as exc:
        row.update(status="fail", message=str(exc))
        hs.write_row(row)
        raise
    except Exception as exc:
        hs.write_failure(row, exc)
        raise
    finally:
        for r in runners:
            r.close()
    summary = m.summary()
    summary.pop("gpu_ms", None)  # frames are timed on the host clock only
    row.update(summary)
    row.fps = m.iterations / m.timed if m.timed > 0 else None
    if isinstance(m, StationMeasurement) and m.member_seconds:
        row.member_ms = [1e3 * s for s in m.member_seconds]
    row.resources = dict(mon.result)
    if before is not None:
        row.resources["gpu_mem_before_mb"] = before
    row.status = "pass" if m.stable else "unstable"
    hs.write_row(row)
    return row
