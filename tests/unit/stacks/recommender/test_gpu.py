"""A replica's GPU under each ``gpu_fault`` mode: the simulated device, the replica's answers,
its checks, its events and its DCGM fields, with a real (tiny) model behind it."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from drillkit.stacks.recommender import gpu as gpu_module
from drillkit.stacks.recommender.data import CatalogSpec
from drillkit.stacks.recommender.gpu import (
    SIM_TOTAL_MIB,
    XID_FALLEN_OFF_BUS,
    DeviceLost,
    Gpu,
    GpuCondition,
    trouble_of,
)
from drillkit.stacks.recommender.model import train_versions
from drillkit.stacks.recommender.replica import (
    DCGM_FIELDS,
    ReplicaConfig,
    ServedModel,
    create_app,
)
from drillkit.stacks.recommender.runtime import LoadedModel

TOKEN = "t" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    version = train_versions(CatalogSpec(items=500, dim=16, seed=11), device="cpu", versions=1)[0]
    directory = tmp_path_factory.mktemp("v1")
    version.write(directory)
    return directory


def _condition(mode: str | None, **extra: Any) -> GpuCondition:
    return GpuCondition.parse({"mode": mode, **extra})


# -- the device --------------------------------------------------------------------------------


def test_a_healthy_device_runs_work_as_is_and_reports_its_memory() -> None:
    gpu = Gpu("cpu", "replica-1")
    gpu.hold(100 << 20)
    with gpu.launch(1 << 20):
        pass
    values = np.ones((2, 4), dtype=np.float32)
    assert gpu.corrupt(values) is values
    fields = gpu.sample()
    assert set(fields) == set(DCGM_FIELDS)
    assert fields["DCGM_FI_DEV_FB_USED"] + fields["DCGM_FI_DEV_FB_FREE"] == SIM_TOTAL_MIB
    assert fields["DCGM_FI_DEV_FB_USED"] >= 100
    assert fields["DCGM_FI_DEV_XID_ERRORS"] == 0
    assert fields["DCGM_FI_DEV_CLOCK_THROTTLE_REASONS"] == 0


def test_a_lost_device_fails_every_launch_with_xid_79_until_reset() -> None:
    gpu = Gpu("cpu")
    gpu.set_condition(_condition("device_lost"))
    for _ in range(2):
        with pytest.raises(DeviceLost, match="CUDA error") as caught, gpu.launch(1):
            pytest.fail("the work ran on a lost device")
        assert trouble_of(caught.value) == "device lost"
    assert gpu.sample()["DCGM_FI_DEV_XID_ERRORS"] == XID_FALLEN_OFF_BUS
    gpu.set_condition(_condition(None))
    with gpu.launch(1):
        pass
    assert gpu.sample()["DCGM_FI_DEV_XID_ERRORS"] == 0


def test_out_of_memory_is_pytorchs_own_exception_and_the_memory_reads_full() -> None:
    gpu = Gpu("cpu")
    gpu.set_condition(_condition("oom"))
    with (
        pytest.raises(torch.OutOfMemoryError, match="Tried to allocate 2.00 MiB") as caught,
        gpu.launch(4096),
    ):
        pytest.fail("the work ran without memory")
    # What a CUDA device raises is the same class: the replica's handling is one code path.
    assert isinstance(caught.value, torch.cuda.OutOfMemoryError)
    assert trouble_of(caught.value) == "out of memory"
    fields = gpu.sample()
    assert fields["DCGM_FI_DEV_FB_FREE"] == 0
    assert fields["DCGM_FI_DEV_FB_USED"] == SIM_TOTAL_MIB


def test_a_throttle_stretches_each_launch_by_its_factor(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    gpu = Gpu("cpu")
    gpu.set_condition(_condition("throttle", factor=6))
    ticks = [10.0, 10.5]  # the work takes 0.5 s by the device's clock
    monkeypatch.setattr(
        "drillkit.stacks.recommender.gpu.time.perf_counter", lambda: ticks.pop(0) if ticks else 10.5
    )
    monkeypatch.setattr("drillkit.stacks.recommender.gpu.time.sleep", slept.append)
    with gpu.launch(1):
        pass
    assert slept == [pytest.approx(2.5)]  # 0.5 s of work, 6 times as long in all
    fields = gpu.sample()
    assert int(fields["DCGM_FI_DEV_CLOCK_THROTTLE_REASONS"]) & 0x40  # HW thermal slowdown
    assert fields["DCGM_FI_DEV_GPU_TEMP"] >= 85
    assert fields["DCGM_FI_DEV_SM_CLOCK"] == round(gpu_module.SIM_BOOST_MHZ / 6)


def test_ecc_perturbs_what_comes_back_and_counts_the_corrected_errors() -> None:
    gpu = Gpu("cpu")
    gpu.set_condition(_condition("ecc", noise=1.0))
    values = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    out = gpu.corrupt(values.copy())
    assert out.shape == values.shape and out.dtype == values.dtype
    moved = np.linalg.norm(out - values, axis=1) / np.linalg.norm(values, axis=1)
    assert (moved > 0.3).all()  # noise as large as the signal
    assert gpu.sample()["DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"] == 3
    gpu.set_condition(_condition(None))  # a reset: volatile counts start again
    assert gpu.sample()["DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"] == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "expected a JSON object"),
        ({"mode": "melt"}, "mode: expected one of"),
        ({"mode": "throttle", "factor": 0.5}, "factor: expected a number in [1, 100]"),
        ({"mode": "throttle", "factor": math.inf}, "factor"),
        ({"mode": "throttle", "factor": True}, "factor"),
        ({"mode": "ecc", "noise": 0}, "noise: expected a number in (0, 10]"),
        ({"mode": "ecc", "command": "rm"}, "unknown field 'command'"),
    ],
)
def test_a_condition_is_checked_field_by_field(body: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        GpuCondition.parse(body)


def test_trouble_of_blames_the_device_only_for_device_errors() -> None:
    assert trouble_of(RuntimeError("CUDA error: an illegal memory access")) == "device error"
    assert trouble_of(RuntimeError("shape mismatch")) is None
    assert trouble_of(KeyError("x")) is None


# -- the replica -------------------------------------------------------------------------------


class Replica:
    """A replica app serving the tiny model, driven in-process."""

    def __init__(self, tmp_path: Path, version_dir: Path, readiness: str = "deep") -> None:
        config = ReplicaConfig(
            store=tmp_path / "store", name="replica-1", admin_token=TOKEN, readiness=readiness
        )
        self.app = create_app(config)
        self.replica = self.app.state.replica
        model = LoadedModel.load(version_dir, device="cpu", threads=None)
        model.accelerator = self.replica.gpu
        manifest: Any = SimpleNamespace(metrics={}, info={})
        served = ServedModel("v1", manifest, "d" * 64, model, time.time())
        self.replica._swap(served)

    def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://replica") as c:
                return await c.request(method, url, **kwargs)

        return asyncio.run(go())

    def gpu(self, **body: Any) -> httpx.Response:
        return self.call("POST", "/admin/gpu", json=body, headers=AUTH)

    def fields(self) -> dict[str, float]:
        text = self.call("GET", "/metrics").text
        return {
            family.name: family.samples[0].value
            for family in text_string_to_metric_families(text)
            if family.name.startswith("DCGM_")
        }


def device_events(replica: Replica) -> list[str]:
    """What the replica said about its GPU in /info's events, oldest first."""
    events = replica.call("GET", "/info").json()["events"]
    return [e["what"] for e in events if e["outcome"] == "device"]


@pytest.fixture
def replica(tmp_path: Path, version_dir: Path) -> Replica:
    return Replica(tmp_path, version_dir)


def test_a_lost_gpu_gets_503_and_a_failing_deep_check_while_healthz_stays_green(
    replica: Replica,
) -> None:
    assert replica.call("GET", "/readyz").status_code == 200
    assert replica.gpu(mode="device_lost").status_code == 200
    answer = replica.call("GET", "/recommend?user_id=3&k=5")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert "device lost" in answer.json()["error"]
    assert replica.call("GET", "/healthz").status_code == 200
    ready = replica.call("GET", "/readyz")
    assert ready.status_code == 503 and "deep check" in ready.json()["reason"]
    replica.replica.watch_device()
    events = device_events(replica)
    assert events[-2:] == ["inference failed: device lost", "GPU Xid 79"]
    assert replica.fields()["DCGM_FI_DEV_XID_ERRORS"] == XID_FALLEN_OFF_BUS
    # The reset ends the episode, and the replica says so once.
    assert replica.gpu(mode=None).json()["condition"] is None
    assert replica.call("GET", "/recommend?user_id=3&k=5").status_code == 200
    assert replica.call("GET", "/readyz").status_code == 200
    assert device_events(replica)[-1] == "GPU reset"
    metrics = replica.call("GET", "/metrics").text
    assert 'drillkit_replica_device_failures_total{trouble="device lost"} 2.0' in metrics


def test_a_shallow_check_stays_ready_on_a_lost_gpu(tmp_path: Path, version_dir: Path) -> None:
    replica = Replica(tmp_path, version_dir, readiness="shallow")
    replica.gpu(mode="device_lost")
    assert replica.call("GET", "/recommend?user_id=3&k=5").status_code == 503
    assert replica.call("GET", "/readyz").status_code == 200  # what a drill shows the cost of


def test_out_of_memory_is_a_503_and_the_memory_fields_say_why(replica: Replica) -> None:
    replica.gpu(mode="oom")
    answer = replica.call("GET", "/recommend?user_id=3&k=5")
    assert answer.status_code == 503 and "out of memory" in answer.json()["error"]
    assert replica.call("GET", "/readyz").status_code == 503
    fields = replica.fields()
    assert fields["DCGM_FI_DEV_FB_FREE"] == 0
    assert fields["DCGM_FI_DEV_FB_USED"] == SIM_TOTAL_MIB


def test_ecc_answers_200_from_the_right_model_with_other_items(replica: Replica) -> None:
    healthy = replica.call("GET", "/recommend?user_id=3&k=10").json()
    replica.gpu(mode="ecc", noise=2.0)
    corrupted = replica.call("GET", "/recommend?user_id=3&k=10")
    assert corrupted.status_code == 200
    assert corrupted.headers["x-model-version"] == "v1"
    assert corrupted.json()["items"] != healthy["items"]
    assert replica.call("GET", "/readyz").status_code == 200  # nothing in-band notices
    replica.replica.watch_device()
    assert not [
        e for e in replica.call("GET", "/info").json()["events"] if e["outcome"] == "device"
    ]
    assert replica.fields()["DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"] >= 2


def test_a_throttle_is_seen_by_the_replicas_watcher(replica: Replica) -> None:
    replica.gpu(mode="throttle", factor=2)
    assert replica.call("GET", "/recommend?user_id=3&k=5").status_code == 200
    replica.replica.watch_device()
    replica.gpu(mode=None)
    replica.replica.watch_device()
    events = device_events(replica)
    assert events[-2].startswith("GPU clocks throttled (HW slowdown")
    assert events[-1] == "GPU clocks no longer throttled"


def test_the_dcgm_fields_carry_dcgm_exporters_labels(replica: Replica) -> None:
    text = replica.call("GET", "/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in DCGM_FIELDS:
        (sample,) = families[name].samples
        assert sample.name == name  # no _total: the names are dcgm-exporter's own
        assert {"gpu", "UUID", "device", "modelName", "Hostname"} <= set(sample.labels)
        assert sample.labels["UUID"].startswith("GPU-")


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({}, {"mode": "device_lost"}, 401),
        ({"Authorization": "Bearer wrong"}, {"mode": "device_lost"}, 401),
        (AUTH, {"mode": "melt"}, 400),
        (AUTH, {"mode": "throttle", "factor": 10**400}, 400),  # compared, never converted
    ],
)
def test_admin_gpu_wants_the_token_and_a_small_valid_body(
    replica: Replica, headers: dict[str, str], body: dict[str, Any], status: int
) -> None:
    answer = replica.call("POST", "/admin/gpu", json=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert replica.replica.gpu.condition.mode is None


def test_admin_gpu_is_disabled_without_a_token(tmp_path: Path) -> None:
    app = create_app(ReplicaConfig(store=tmp_path / "store", name="replica-1"))

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as c:
            return await c.post("/admin/gpu", json={"mode": "oom"}, headers=AUTH)

    assert asyncio.run(go()).status_code == 403


def test_admin_gpu_refuses_a_body_past_its_limit_unread(replica: Replica) -> None:
    body = '{"mode": "oom"' + " " * 2000 + "}"  # valid JSON, only too long
    answer = replica.call(
        "POST", "/admin/gpu", content=body, headers={**AUTH, "content-type": "application/json"}
    )
    assert answer.status_code == 400 and "at most 1024 bytes" in answer.text
    assert replica.replica.gpu.condition.mode is None


def test_the_deep_check_asks_for_a_sample_user_and_blames_only_the_device(
    replica: Replica,
) -> None:
    model = replica.replica.served.model
    probe = model.probe_user
    assert probe in {int(u) for u in model._tables["sample_users"]}
    # A version whose feature join lost users' rows: never the sample's, and even then the
    # device ran, so the replica is ready (a bad rollout is the rollout's to judge).
    model._unservable = frozenset({0, probe})
    assert replica.call("GET", "/readyz").status_code == 200


def test_an_answer_that_never_reached_the_device_ends_no_episode(replica: Replica) -> None:
    replica.gpu(mode="device_lost")
    assert replica.call("GET", "/recommend?user_id=3&k=5").status_code == 503
    cold = replica.call("GET", "/recommend?user_id=999999&k=5")  # popular items, no inference
    assert cold.status_code == 200 and cold.json()["cold_start"] is True
    assert device_events(replica) == ["inference failed: device lost"]


def test_a_reset_ends_the_episode_so_the_next_loss_is_logged_again(replica: Replica) -> None:
    for _ in range(2):
        replica.gpu(mode="device_lost")
        assert replica.call("GET", "/readyz").status_code == 503
        replica.gpu(mode=None)  # no request ran in between: the deep check is out of rotation
    assert device_events(replica) == ["inference failed: device lost", "GPU reset"] * 2


def test_the_drills_watcher_turns_device_events_into_detections(replica: Replica) -> None:
    from drillkit.stacks.recommender.watch import ReplicaInfo

    class Client:
        def get(self, url: str, timeout: float = 0.0) -> httpx.Response:
            return replica.call("GET", url.removeprefix("http://replica"))

    watcher = ReplicaInfo("replica-1", "http://replica")
    client: Any = Client()
    assert watcher.poll(client)[0] == []
    replica.gpu(mode="device_lost")
    replica.call("GET", "/recommend?user_id=3&k=5")
    replica.replica.watch_device()
    seen = watcher.poll(client)[0]
    assert [(e.subject, e.what) for e in seen] == [
        ("replica-1", "inference failed: device lost"),
        ("replica-1", "GPU Xid 79"),
    ]
    assert watcher.poll(client)[0] == []  # each event once
    # Events numbered out of time order (two threads) are still each seen once.
    events = replica.replica.events
    late = {"time": 1.0, "outcome": "device", "what": "late"}
    replica.replica._record(late)
    assert [e.what for e in watcher.poll(client)[0]] == ["late"]
    assert events[-1]["seq"] > events[-2]["seq"]


def test_a_gpu_heal_sends_the_token_only_to_a_replica_of_the_stack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from drillkit.stacks.recommender import gpu_fault

    sent: list[str] = []
    monkeypatch.setattr(gpu_fault, "admin_gpu", lambda state, name, body: sent.append(name))
    ctx: Any = SimpleNamespace(
        state=SimpleNamespace(names_with_role=lambda role: ["replica-1", "replica-2"]),
        backend=SimpleNamespace(service_status=lambda state, name: "running"),
    )
    kind = gpu_fault.GpuFault()
    kind.heal(ctx, {"replica": "gateway", "mode": "oom"})
    kind.heal(ctx, {"replica": "replica-2", "mode": "oom"})
    assert sent == ["replica-2"]


def test_oom_on_a_cuda_device_fills_it_caps_the_allocator_and_undoes_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # torch.cuda stood in for: what the device layer asks of PyTorch, and in what order.
    mib = 1 << 20
    free = [100 * mib + 5 * mib]
    calls: list[object] = []

    def empty(size: int, **_: object) -> Any:
        if size > free[0]:
            raise torch.OutOfMemoryError("CUDA out of memory")
        free[0] -= size
        return SimpleNamespace(numel=lambda: size)

    cuda = torch.cuda
    monkeypatch.setattr(torch, "empty", empty)
    monkeypatch.setattr(cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(cuda, "mem_get_info", lambda: (free[0], 1000 * mib))
    monkeypatch.setattr(cuda, "memory_reserved", lambda: 500 * mib)
    monkeypatch.setattr(cuda, "set_per_process_memory_fraction", calls.append)
    gpu = Gpu("cuda", "replica-1")
    gpu.set_condition(_condition("oom"))
    assert free[0] < 2 * mib  # filled down to less than one of PyTorch's blocks
    assert calls == ["empty_cache", 0.5]  # capped at what the process holds
    with pytest.raises(torch.OutOfMemoryError, match="memory filled"), gpu.launch(1):
        pytest.fail("the work ran without memory")
    gpu.set_condition(_condition(None))
    assert calls[2:] == [1.0, "empty_cache"]  # uncapped, the filler gone
