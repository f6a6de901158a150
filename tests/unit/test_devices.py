"""One worker per GPU: which GPU each worker gets, what it is told, which CPUs it runs on (no GPU needed)."""

from __future__ import annotations

import pytest
from execnet import XSpec

from harness import devices
from harness.devices import ENV_CPUS, ENV_CPUS_FROM, ENV_PINNED, GpuError, cpu_env, parse_gpus, plan_gpus, split_cpus
from harness.environment import find_gpu, gpu_for, visible_entries


def count(n):
    return lambda: n


def test_without_cuda_visible_devices_the_gpus_are_nvidias_numbers_and_workers_count_in_pci_order():
    plan = plan_gpus("all", environ={}, count=count(4))
    assert plan.entries == ["0", "1", "2", "3"] and not plan.caller_list
    assert plan.pin_env("2") == {"CUDA_VISIBLE_DEVICES": "2", ENV_PINNED: "2", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert plan_gpus([3, 1], environ={}, count=count(4)).entries == ["3", "1"]
    # a caller's own CUDA_DEVICE_ORDER is theirs to keep
    assert "CUDA_DEVICE_ORDER" not in plan_gpus("all", environ={"CUDA_DEVICE_ORDER": "FASTEST_FIRST"},
                                                count=count(2)).pin_env("0")


def test_a_callers_cuda_visible_devices_is_indexed_into_and_passed_on_unchanged():
    env = {"CUDA_VISIBLE_DEVICES": "3,5"}
    plan = plan_gpus("all", environ=env, count=count(None))  # NVML not even needed
    assert plan.entries == ["3", "5"] and plan.caller_list
    assert plan_gpus([1], environ=env).entries == ["5"]
    assert plan.pin_env("5") == {"CUDA_VISIBLE_DEVICES": "5", ENV_PINNED: "5"}  # the caller's numbering stands
    uuids = {"CUDA_VISIBLE_DEVICES": "GPU-8f2a,MIG-GPU-8f2a/1/0"}
    assert plan_gpus("all", environ=uuids).entries == ["GPU-8f2a", "MIG-GPU-8f2a/1/0"]
    # CUDA stops at the first entry it cannot use
    assert visible_entries({"CUDA_VISIBLE_DEVICES": "0,-1,2"}) == ["0"]


def test_worker_k_gets_the_kth_gpu_round_robin():
    plan = plan_gpus([0, 1], environ={}, count=count(2))
    assert devices.worker_entries(plan, 2) == ["0", "1"] and devices.exclusive(devices.worker_entries(plan, 2))
    assert devices.worker_entries(plan, 5) == ["0", "1", "0", "1", "0"] and not devices.exclusive(devices.worker_entries(plan, 5))
    assert [devices.worker_number(w) for w in ("gw0", "gw7", "gw12")] == [0, 7, 12]
    with pytest.raises(GpuError, match="unexpected pytest-xdist worker id 'main'"):
        devices.worker_number("main")


@pytest.mark.parametrize("environ, wanted, n, message", [
    ({}, [2], 2, "--gpus 2: no GPU 2 here: this process sees 2 (2 GPU(s) found by NVML), numbered 0 to 1"),
    ({"CUDA_VISIBLE_DEVICES": "3,5"}, [0, 2], None,
     "--gpus 0,2: no GPU 2 here: this process sees 2 (CUDA_VISIBLE_DEVICES='3,5'), numbered 0 to 1"),
    ({"CUDA_VISIBLE_DEVICES": ""}, "all", 8, "--gpus all: CUDA_VISIBLE_DEVICES='' hides every GPU from this process"),
    ({}, "all", None, "--gpus all: cannot count this host's GPUs (no NVML: install nvidia-ml-py, or no driver)"),
    ({}, [0], 0, "--gpus 0: NVML finds no GPU on this host"),
])
def test_gpus_that_are_not_there_are_refused_naming_what_there_is(environ, wanted, n, message):
    with pytest.raises(GpuError) as exc:
        plan_gpus(wanted, environ=environ, count=count(n))
    assert str(exc.value).startswith(message)


@pytest.mark.parametrize("text, message", [
    ("0,0", "GPU 0 named twice"), ("one", "give all, or GPU numbers"), ("-1", "give all, or GPU numbers"),
    ("", "give all, or GPU numbers"),
])
def test_a_bad_gpus_value_is_refused_naming_the_option(text, message):
    with pytest.raises(GpuError) as exc:
        parse_gpus(text, "harness_gpus in pyproject.toml")
    assert str(exc.value).startswith(f"harness_gpus in pyproject.toml: cannot use {text!r}: ") and message in str(exc.value)
    assert parse_gpus(" all ") == "all" and parse_gpus("1, 0") == [1, 0]


def test_the_worker_spec_sets_the_pin_before_the_worker_starts():
    spec = devices.tx_spec({"CUDA_VISIBLE_DEVICES": "MIG-GPU-8f2a/1/0", ENV_CPUS: "0-7,16-23", ENV_CPUS_FROM: "near GPU 1"})
    parsed = XSpec(spec)  # what execnet makes of it: popen, and the variables it sets before anything runs
    assert parsed.popen and parsed.env == {"CUDA_VISIBLE_DEVICES": "MIG-GPU-8f2a/1/0", ENV_CPUS: "0-7,16-23",
                                           ENV_CPUS_FROM: "near GPU 1"}
    with pytest.raises(GpuError, match="cannot hold '//'"):
        devices.tx_spec({"X": "a//b"})


def test_an_entry_finds_its_gpu_by_index_or_uuid_prefix():
    found = ({"index": 0, "uuid": "GPU-aaaa-1111", "name": "A"}, {"index": 1, "uuid": "GPU-bbbb-2222", "name": "B"})
    assert find_gpu("1", found)["name"] == "B" and find_gpu("GPU-aaaa", found)["name"] == "A"
    assert find_gpu("bbbb", found)["name"] == "B"  # CUDA takes a UUID without its GPU- prefix too
    assert find_gpu("GPU-", found) is None and find_gpu("7", found) is None  # ambiguous, absent
    # the GPU a process computes on: the first entry of its CUDA_VISIBLE_DEVICES, else NVML's first
    assert gpu_for(["1", "0"], found)["name"] == "B" and gpu_for(None, found)["name"] == "A"
    assert gpu_for([], found) is None
    # a MIG instance NVML's list does not hold: on a host of one GPU model, that model, no index
    same = tuple({**g, "name": "H200"} for g in found)
    assert gpu_for(["MIG-1234"], same) == {**same[0], "index": None, "uuid": "MIG-1234"}
    assert gpu_for(["MIG-1234"], found) is None  # two models: which one is unknown


def siblings(pairs):
    """Hyperthread siblings (c, c + pairs) share a core, as Linux numbers them on one socket."""
    return lambda c: c % pairs


def test_workers_sharing_a_numa_node_get_equal_disjoint_shares_of_whole_cores():
    node = set(range(16))  # 8 cores x 2 threads: CPUs c and c + 8 are siblings
    shares = split_cpus([node, node], set(range(16)), names=["GPU 0", "GPU 1"], core=siblings(8))
    (a, why_a), (b, why_b) = shares
    assert a == {0, 1, 2, 3, 8, 9, 10, 11} and b == {4, 5, 6, 7, 12, 13, 14, 15}
    assert why_a == "near GPU 0 (NVML), 1 of 2 equal shares"


def test_workers_on_two_numa_nodes_each_get_their_own_node():
    n0, n1 = set(range(0, 8)), set(range(8, 16))
    shares = split_cpus([n0, n1], n0 | n1, names=["GPU 0", "GPU 1"], core=lambda c: c)
    assert [s for s, _ in shares] == [n0, n1]
    assert [w for _, w in shares] == ["near GPU 0 (NVML)", "near GPU 1 (NVML)"]


def test_without_topology_the_allowed_cpus_are_split_and_too_few_cores_are_shared_and_said_so():
    shares = split_cpus([None, None, None], {0, 1, 2, 3, 4, 5}, names=["GPU 0", "GPU 1", "GPU 2"], core=lambda c: c)
    assert [s for s, _ in shares] == [{0, 1}, {2, 3}, {4, 5}]
    assert shares[0][1] == "no GPU topology from NVML: this process's CPUs, 1 of 3 equal shares"
    tight = split_cpus([None, None, None], {0, 1}, names=["a", "b", "c"], core=lambda c: c)
    assert all(s == {0, 1} and "shared by 3 workers (too few cores to split)" in w for s, w in tight)
    # near CPUs outside what this process may use are not given out
    assert split_cpus([{0, 1, 2, 3}], {2, 3}, names=["GPU 0"], core=lambda c: c)[0][0] == {2, 3}


def test_cpu_policy_all_pins_nothing_and_near_gives_every_worker_its_share():
    assert cpu_env(["0", "1"], "all", near=lambda e: None, allowed={0, 1}) == [{}, {}]
    envs = cpu_env(["0", "1"], "near", near=lambda e: None, allowed={0, 1, 2, 3})
    assert [e[ENV_CPUS] for e in envs] == ["0-1", "2-3"]
