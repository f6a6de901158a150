"""``[stations.NAME]`` tables of the registry, read into :class:`~harness.spec.StationSpec`.

Two spellings of the members, one meaning::

    [stations.vision]
    models = ["segmenter", "segmenter", "classifier"]     # names, repeats allowed
    batches = [1, 4]                                      # optional (default: --perf-batches, else 1)
    fps = 10                                              # optional: the frame rate it must hold
    recipe = "fp16"                                       # optional: for members naming none
    profile = "dynamic"                                   # optional: likewise

    [[stations.mixed.members]]                            # or one table per member
    model = "segmenter"
    recipe = "int8-minmax"                                # optional
    profile = "dynamic"                                   # optional

An entry of ``models`` may also be an inline table (``{ model = "classifier", recipe = "fp16" }``). Every
field is checked when the registry loads (model names, profiles, batches against each member's profile);
recipe names are checked when cases are generated, where the built-in recipes are known. An error names the
registry file, the station and the field.
"""

from __future__ import annotations

from typing import Any

from ..data import batch_size_of
from ..errors import RegistryError
from ..spec import ModelSpec, StationMember, StationSpec

_STATION_KEYS = {"models", "members", "batches", "fps", "recipe", "profile", "description"}
_MEMBER_KEYS = {"model", "recipe", "profile"}


def parse_stations(raw: Any, models: dict[str, ModelSpec], src: str) -> dict[str, StationSpec]:
    if not isinstance(raw, dict):
        raise RegistryError(src, None, "stations", "must be a table of named stations: [stations.NAME]")
    return {name: _parse_station(name, entry, models, src) for name, entry in raw.items()}


def _error(src: str, station: str, fld: str | None, problem: str) -> RegistryError:
    return RegistryError(src, station, fld, problem, kind="station")


def _parse_station(name: str, entry: Any, models: dict[str, ModelSpec], src: str) -> StationSpec:
    if not isinstance(entry, dict):
        raise _error(src, name, None, "must be a table with models = [...]")
    unknown = sorted(set(entry) - _STATION_KEYS)
    if unknown:
        raise _error(src, name, unknown[0], f"unknown field; allowed here: {', '.join(sorted(_STATION_KEYS))}")
    if ("models" in entry) == ("members" in entry):
        raise _error(src, name, "models", "give the station's models either as models = [\"a\", \"b\"] or as "
                     "[[stations.NAME.members]] tables" + (", not both" if "models" in entry else ""))
    fld = "models" if "models" in entry else "members"
    items = entry[fld]
    if not isinstance(items, list) or not items:
        raise _error(src, name, fld, f"must be a non-empty list of model names or member tables, got {items!r}")
    recipe = _optional_name(entry, "recipe", src, name)
    profile = _optional_name(entry, "profile", src, name)
    members = tuple(_member(item, f"{fld}[{i}]", models, src, name, profile) for i, item in enumerate(items))
    batches = _batches(entry.get("batches"), src, name)
    for b in batches:
        for i, m in enumerate(members):
            _check_batch(b, i, m, models[m.model], src, name, profile)
    fps = entry.get("fps")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps <= 0):
        raise _error(src, name, "fps", f"must be a positive number of frames per second, got {fps!r}")
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise _error(src, name, "description", f"must be a string, got {description!r}")
    return StationSpec(name, members, src, batches, float(fps) if fps is not None else None, recipe, profile,
                       description, fld)


def _optional_name(table: dict[str, Any], key: str, src: str, station: str, where: str = "") -> str | None:
    value = table.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise _error(src, station, where + key, f"must be a name, got {value!r}")
    return value


def _member(item: Any, fld: str, models: dict[str, ModelSpec], src: str, station: str,
            default_profile: str | None) -> StationMember:
    if isinstance(item, str):
        item = {"model": item}
    if not isinstance(item, dict):
        raise _error(src, station, fld, f"must be a model name or a table {{ model = ..., recipe = ..., profile = ... "
                     f"}}, got {item!r}")
    unknown = sorted(set(item) - _MEMBER_KEYS)
    if unknown:
        raise _error(src, station, f"{fld}.{unknown[0]}", f"unknown field; allowed here: {', '.join(sorted(_MEMBER_KEYS))}")
    model = item.get("model")
    if not isinstance(model, str) or not model:
        raise _error(src, station, f"{fld}.model", f"must name a model, got {model!r}")
    if model not in models:
        raise _error(src, station, fld, f"unknown model {model!r}; the registry has {', '.join(models)}")
    member = StationMember(model, _optional_name(item, "recipe", src, station, f"{fld}."),
                           _optional_name(item, "profile", src, station, f"{fld}."))
    spec = models[model]
    profile = member.profile or default_profile
    # a model whose package is missing has no profiles to check against: its cases skip with that reason
    if profile is not None and spec.unavailable is None and profile not in spec.profiles:
        where = f"{fld}.profile" if member.profile else "profile"
        raise _error(src, station, where, f"model {model!r} has no profile {profile!r}; its profiles are "
                     f"{', '.join(spec.profiles)}")
    return member


def _batches(raw: Any, src: str, station: str) -> tuple[int, ...]:
    if raw is None:
        return ()
    if (not isinstance(raw, list) or not raw
            or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in raw)):
        raise _error(src, station, "batches", f"must be a non-empty list of positive integers, got {raw!r}")
    return tuple(dict.fromkeys(raw))


def batch_range(member: StationMember, spec: ModelSpec, default_profile: str | None) -> tuple[str, int, int]:
    """The member's profile name and the batch sizes it admits (min, max)."""
    pname = member.profile or default_profile or next(iter(spec.profiles))
    profile = spec.profiles[pname]
    return pname, batch_size_of(spec, profile, "min"), batch_size_of(spec, profile, "max")


def _check_batch(batch: int, index: int, member: StationMember, spec: ModelSpec, src: str, station: str,
                 default_profile: str | None) -> None:
    if spec.unavailable is not None:
        return
    pname, lo, hi = batch_range(member, spec, default_profile)
    if not lo <= batch <= hi:
        raise _error(src, station, "batches", f"batch {batch} is outside the profile {pname!r} of member {index} "
                     f"({member.model}), which admits batches {lo} to {hi}")
