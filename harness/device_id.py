"""Where a row's case ran: the device part of its key.

A row's ``device`` is the host, and for a backend on the GPU the GPU it computed on (NVML's index, its name and
UUID), else the host's CPU model: ``{"host": "node1", "kind": "gpu", "name": "NVIDIA H200", "index": 1,
"uuid": "GPU-5f2c..."}``. Its *class* is what numbers depend on whatever the host or slot (the GPU model, or
the CPU model): :mod:`harness.compare` compares like with like by it.
"""

from __future__ import annotations

from typing import Any


def device_of(env: dict[str, Any], on_gpu: bool) -> dict[str, Any]:
    """Where a case ran, from the environment it ran in: the host and its GPU (NVML index, name, UUID) for a
    backend on the GPU when one is visible, else the host and its CPU model. (A MIG instance has no index.)"""
    host = str(env.get("host") or "")
    if on_gpu and env.get("gpu"):
        out: dict[str, Any] = {"host": host, "kind": "gpu", "name": str(env["gpu"]), "index": env.get("gpu_index")}
        if env.get("gpu_uuid"):
            out["uuid"] = str(env["gpu_uuid"])
        return out
    return {"host": host, "kind": "cpu", "name": str(env.get("cpu") or "")}


def device_key(device: dict[str, Any]) -> str:
    """A device's identity as text: host, kind, GPU index, name and UUID ("" for a row without a device)."""
    if not device:
        return ""
    return "|".join(str(device.get(k, "")) for k in ("host", "kind", "index", "name", "uuid"))


def device_class(device: dict[str, Any]) -> tuple[str, str]:
    """What numbers depend on, whichever host or slot: ("gpu", "NVIDIA H200") or ("cpu", its model)."""
    return str(device.get("kind", "")), str(device.get("name", ""))


def device_label(device: dict[str, Any]) -> str:
    """"node1 gpu1" or "node1 cpu": short, for tables (harness.device_report makes them unique)."""
    if not device:
        return "?"
    index = device.get("index")
    slot = ("gpu" if index is None else f"gpu{index}") if device.get("kind") == "gpu" else "cpu"
    return f"{device.get('host') or '?'} {slot}"
