"""A replica's accelerator: what it can see of its GPU, and what a ``gpu_fault`` does to it.

GPU serving fails in its own ways, and a replica meets each of them at the same place, the
launch of its inference (:meth:`Gpu.launch`, around the user tower and the index search of
:class:`~drillkit.stacks.recommender.runtime.LoadedModel`):

- ``oom``: the device's memory is full (a leak, or another process's job). On a CUDA device
  this is genuine: the fault empties PyTorch's cache, allocates every free byte and caps the
  process at what it then holds (``torch.cuda.set_per_process_memory_fraction``), so the next
  allocation of an inference raises CUDA's own ``torch.OutOfMemoryError``. On the CPU a
  simulated 16 GiB device keeps the same books (the model's bytes, the CUDA context, the
  filler) and its budget check raises the same exception type before the work runs.
- ``device_lost``: the GPU fell off the bus (Xid 79). Every launch fails with the error CUDA
  gives then, while the process, its event loop and ``/healthz`` carry on: only a readiness
  check that runs a real inference sees it. (On a CUDA device the error is raised at the
  launch; a real device cannot be detached from a process on demand.)
- ``throttle``: the clocks are held down (thermal slowdown): each launch takes ``factor``
  times as long, the extra time spent blocking the serving thread as a slow device does.
- ``ecc``: a failing memory row. Corrected (single-bit) errors are counted, and some errors
  get past the correction: the user vectors come out perturbed by noise of ``noise`` times
  their own spread. Nothing fails; only the answers' quality, and the ECC counters where
  someone exports them (dcgm-exporter's default set leaves them out), show it.

Healing is a GPU reset (``nvidia-smi -r``): the condition, the filler and the last Xid go, and
the volatile ECC counts start again from zero.

:meth:`Gpu.sample` reads the device as NVIDIA's dcgm-exporter reports it (``DCGM_FI_DEV_*``):
from NVML (``nvidia-ml-py``) on a CUDA device where it is installed, otherwise from the
simulated device, with the fault's marks on top (Xid 79, the thermal throttle bits, the ECC
counts) so that the alert rules a team runs on dcgm-exporter fire in a drill.

This module imports torch and numpy only when it must (an oom fault, a CUDA device, an ecc
read): the replica's process has them loaded anyway, the fault kind's validation never does.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "DEFAULT_FACTOR",
    "DEFAULT_NOISE",
    "MODES",
    "DeviceLost",
    "Gpu",
    "GpuCondition",
    "out_of_memory_error",
    "throttle_words",
    "trouble_of",
]

log = logging.getLogger("drillkit.replica.gpu")

MODES = ("oom", "device_lost", "throttle", "ecc")
DEFAULT_FACTOR = 4.0
DEFAULT_NOISE = 1.0
MAX_FACTOR = 100.0
MAX_NOISE = 10.0
#: The Xid NVIDIA's driver logs when a GPU falls off the bus.
XID_FALLEN_OFF_BUS = 79
_MIB = 1 << 20
#: The simulated device: a 16 GiB card; a CUDA context takes about 300 MiB of it.
SIM_TOTAL_MIB = 16384
SIM_CONTEXT_MIB = 300
SIM_BOOST_MHZ = 1590
SIM_IDLE_TEMP_C = 45.0
SIM_HOT_TEMP_C = 91.0
#: NVML's clock throttle reasons (dcgm-exporter's DCGM_FI_DEV_CLOCK_THROTTLE_REASONS).
THROTTLE_HW_SLOWDOWN = 0x8
THROTTLE_SW_THERMAL = 0x20
THROTTLE_HW_THERMAL = 0x40
_THERMAL = THROTTLE_HW_SLOWDOWN | THROTTLE_HW_THERMAL | THROTTLE_SW_THERMAL
_THROTTLE_WORDS = {
    0x4: "SW power cap",
    THROTTLE_HW_SLOWDOWN: "HW slowdown",
    THROTTLE_SW_THERMAL: "SW thermal slowdown",
    THROTTLE_HW_THERMAL: "HW thermal slowdown",
    0x80: "HW power brake",
}


class DeviceLost(RuntimeError):
    """What CUDA raises once the device is gone; every later launch raises it too."""


def out_of_memory_error(message: str) -> Exception:
    """PyTorch's own out-of-memory exception (``torch.OutOfMemoryError``, which
    ``torch.cuda.OutOfMemoryError`` names too) carrying ``message``."""
    import torch

    return torch.OutOfMemoryError(message)


@dataclass(frozen=True)
class GpuCondition:
    """A fault's hold on the device; ``mode`` None is a healthy device."""

    mode: str | None = None
    factor: float = DEFAULT_FACTOR
    noise: float = DEFAULT_NOISE
    since: float = 0.0

    @classmethod
    def parse(cls, data: object) -> GpuCondition:
        """A condition from ``POST /admin/gpu``'s JSON body, checked field by field
        (ValueError naming the field); ``{"mode": null}`` is a reset."""
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        unknown = sorted(set(data) - {"mode", "factor", "noise"})
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r} (expected mode, factor, noise)")
        mode = data.get("mode")
        if mode is not None and mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(MODES)} or null, got {mode!r}")
        factor = _number(data, "factor", DEFAULT_FACTOR, 1.0, MAX_FACTOR, "[")
        noise = _number(data, "noise", DEFAULT_NOISE, 0.0, MAX_NOISE, "(")
        return cls(mode=mode, factor=factor, noise=noise, since=time.time() if mode else 0.0)

    def describe(self) -> str:
        if self.mode == "throttle":
            return f"throttle (x{self.factor:g} service time)"
        if self.mode == "ecc":
            return f"ecc (noise {self.noise:g})"
        if self.mode == "device_lost":
            return f"device lost (Xid {XID_FALLEN_OFF_BUS})"
        return self.mode or "healthy"


def _number(
    data: dict[str, Any], name: str, default: float, low: float, high: float, bracket: str
) -> float:
    """``data[name]``, a number in ``[low, high]`` (``bracket`` "[") or ``(low, high]``."""
    value = data.get(name, default)
    # Compared, never converted: a 400-digit integer is out of range, not an OverflowError;
    # NaN and the infinities fail the comparisons.
    fits = (
        type(value) in (int, float)
        and value <= high
        and (value >= low if bracket == "[" else value > low)
    )
    if not fits:
        raise ValueError(f"{name}: expected a number in {bracket}{low:g}, {high:g}], got {value!r}")
    return float(value)


@dataclass
class _Books:
    """What the device has seen since its last reset: the last Xid, the volatile ECC counts."""

    xid: int = 0
    sbe: int = 0
    dbe: int = 0


class Gpu:
    """One replica's device: ``"cuda"`` (real, read through NVML where it can be) or
    ``"cpu"`` (simulated). Thread-safe: faults arrive on the event loop, samples are taken
    by the scrape and the replica's watcher."""

    def __init__(self, device: str, name: str = "replica") -> None:
        self.device = device
        self.name = name
        self.simulated = device != "cuda"
        self._condition = GpuCondition()
        self._books = _Books()
        self._lock = threading.Lock()
        self._resident = 0  # bytes the served model holds on the device
        self._filler: Any = None  # oom on a CUDA device: the tensor holding the free memory
        self._capped = False  # oom on a CUDA device: the process's memory fraction is set
        #: Launches that ran to the end: how the replica tells an inference from a cache hit.
        self.launches = 0
        self._rng: Any = None  # numpy's generator, made on the first ecc read
        self._nvml = _Nvml.open() if not self.simulated else None
        self._labels = self._make_labels()

    # -- what the replica tells it ----------------------------------------------------------
    def hold(self, resident_bytes: int) -> None:
        """The served model now holds ``resident_bytes`` of device memory."""
        self._resident = max(0, int(resident_bytes))

    @property
    def condition(self) -> GpuCondition:
        return self._condition

    def set_condition(self, condition: GpuCondition) -> None:
        """Apply a fault's condition, or reset the device (``mode`` None)."""
        with self._lock:
            self._release_filler()
            if condition.mode is None:
                self._books = _Books()
                if self._nvml is not None:
                    self._nvml.xid = 0  # a reset clears the last Xid
                if self._condition.mode is not None:
                    log.warning("%s: GPU reset: %s cleared", self.name, self._condition.describe())
                self._condition = condition
                return
            if condition.mode == "oom" and not self.simulated:
                self._fill_memory()
            if condition.mode == "device_lost":
                self._books.xid = XID_FALLEN_OFF_BUS
            self._condition = condition
        log.warning("%s: GPU condition: %s", self.name, condition.describe())

    # -- the launch of an inference ---------------------------------------------------------
    @contextlib.contextmanager
    def launch(self, work_bytes: int) -> Iterator[None]:
        """Run one inference step on the device: fails as the condition says before the
        work runs (a lost device, no memory for ``work_bytes``), and takes ``factor`` times
        as long under a throttle."""
        condition = self._condition
        if condition.mode == "device_lost":
            raise DeviceLost(
                "CUDA error: unspecified launch failure (the GPU has fallen off the bus, "
                f"Xid {XID_FALLEN_OFF_BUS})"
            )
        if condition.mode == "oom":
            # The budget check a launch makes: the device's free memory (the simulated books,
            # or the driver's figure with the filler holding the rest) against the work's.
            free = self._free_mib()
            # PyTorch's allocator takes device memory in blocks of 2 MiB or more.
            block = max(2 * _MIB, -(-work_bytes // (2 * _MIB)) * 2 * _MIB)
            if block > free * _MIB:
                where = "drillkit's simulated device" if self.simulated else "memory filled"
                raise out_of_memory_error(
                    f"CUDA out of memory. Tried to allocate {block / _MIB:.2f} MiB. GPU 0 "
                    f"has a total capacity of {self._total_mib() / 1024:.2f} GiB of which "
                    f"{free} MiB is free ({where})"
                )
        started = time.perf_counter()
        yield
        if condition.mode == "throttle" and condition.factor > 1:
            time.sleep((condition.factor - 1.0) * (time.perf_counter() - started))
        self.launches += 1

    def corrupt(self, values: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``values`` read back from device memory: under ``ecc``, perturbed by noise of
        ``noise`` times each row's spread (some errors get past the correction), and the
        corrected ones counted."""
        condition = self._condition
        if condition.mode != "ecc" or values.size == 0:
            return values
        import numpy as np

        with self._lock:
            if self._rng is None:
                self._rng = np.random.default_rng(0)
            self._books.sbe += int(values.shape[0])
            spread = values.std(axis=-1, keepdims=True) + 1e-12
            noise = self._rng.standard_normal(values.shape).astype(values.dtype)
        out: npt.NDArray[np.float32] = values + condition.noise * spread * noise
        return out

    # -- what it reports --------------------------------------------------------------------
    def sample(self) -> dict[str, float]:
        """The device's DCGM fields now, by dcgm-exporter's metric name."""
        condition = self._condition
        if self._nvml is not None:
            values = self._nvml.read()
        else:
            used, free = self._simulated_memory()
            values = {
                "DCGM_FI_DEV_FB_USED": float(used),
                "DCGM_FI_DEV_FB_FREE": float(free),
                "DCGM_FI_DEV_GPU_TEMP": SIM_IDLE_TEMP_C,
                "DCGM_FI_DEV_SM_CLOCK": float(SIM_BOOST_MHZ),
                "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": 0.0,
                "DCGM_FI_DEV_XID_ERRORS": 0.0,
                "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": 0.0,
                "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": 0.0,
            }
        books = self._books
        # The fault's marks, where a real device would show them.
        values["DCGM_FI_DEV_XID_ERRORS"] = float(books.xid or values["DCGM_FI_DEV_XID_ERRORS"])
        values["DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"] += books.sbe
        values["DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"] += books.dbe
        if condition.mode == "throttle":
            values["DCGM_FI_DEV_CLOCK_THROTTLE_REASONS"] = float(
                int(values["DCGM_FI_DEV_CLOCK_THROTTLE_REASONS"]) | _THERMAL
            )
            values["DCGM_FI_DEV_GPU_TEMP"] = max(values["DCGM_FI_DEV_GPU_TEMP"], SIM_HOT_TEMP_C)
            values["DCGM_FI_DEV_SM_CLOCK"] = round(
                values["DCGM_FI_DEV_SM_CLOCK"] / condition.factor
            )
        return values

    def status(self) -> dict[str, Any]:
        """For ``/info``: the device, where its figures come from, the condition."""
        condition = self._condition
        return {
            "device": self.device,
            "source": "nvml" if self._nvml is not None else "simulated",
            "labels": dict(self._labels),
            "condition": None if condition.mode is None else asdict(condition),
            "describe": condition.describe(),
            "fields": self.sample(),
        }

    def labels(self) -> dict[str, str]:
        return dict(self._labels)

    # -- internals --------------------------------------------------------------------------
    def _simulated_memory(self) -> tuple[int, int]:
        used = SIM_CONTEXT_MIB + math.ceil(self._resident / _MIB)
        if self._condition.mode == "oom":
            used = SIM_TOTAL_MIB
        used = min(used, SIM_TOTAL_MIB)
        return used, SIM_TOTAL_MIB - used

    def _free_mib(self) -> int:
        """Free device memory now: the simulated books, or the driver's own figure
        (``cudaMemGetInfo``) on a CUDA device."""
        if self.simulated:
            return self._simulated_memory()[1]
        import torch

        return int(torch.cuda.mem_get_info()[0] // _MIB)

    def _total_mib(self) -> int:
        if self.simulated:
            return SIM_TOTAL_MIB
        import torch

        return int(torch.cuda.mem_get_info()[1] // _MIB)

    def _fill_memory(self) -> None:
        """Take every free byte of the CUDA device, and cap PyTorch's allocator at what the
        process then holds: no new segment can be had until the reset."""
        import torch

        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info()
        fillers: list[Any] = []
        # One large block, then smaller ones into what is left, down to PyTorch's 2 MiB.
        for step in (64 * _MIB, 8 * _MIB, 2 * _MIB):
            size = (torch.cuda.mem_get_info()[0] // step) * step
            while size >= step:
                try:
                    fillers.append(torch.empty(size, dtype=torch.uint8, device="cuda"))
                    size = (torch.cuda.mem_get_info()[0] // step) * step
                except torch.OutOfMemoryError:
                    size -= step
        self._filler = fillers
        reserved = torch.cuda.memory_reserved()
        self._capped = True
        torch.cuda.set_per_process_memory_fraction(max(reserved / total, 1e-6))
        held = sum(int(t.numel()) for t in fillers) // _MIB
        log.warning("%s: filled %d of %d MiB free on the GPU", self.name, held, free // _MIB)

    def _release_filler(self) -> None:
        """Undo :meth:`_fill_memory`: the filler freed, the allocator uncapped (PyTorch's
        default fraction, 1)."""
        if self.simulated or (self._filler is None and not self._capped):
            return
        import torch

        self._filler = None
        if self._capped:
            self._capped = False
            torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()

    def _make_labels(self) -> dict[str, str]:
        host = socket.gethostname()
        if self._nvml is not None:
            return {**self._nvml.labels, "Hostname": host}
        return {
            "gpu": "0",
            "UUID": f"GPU-{uuid.uuid5(uuid.NAMESPACE_URL, 'drillkit:' + self.name)}",
            "device": "nvidia0",
            "modelName": "drillkit simulated GPU",
            "Hostname": host,
        }


class _Nvml:
    """The device as NVML reads it, and a listener for its critical Xid events."""

    def __init__(self, module: Any, handle: Any, index: int) -> None:
        self._nvml = module
        self._handle = handle
        self.xid = 0
        self.labels = {
            "gpu": str(index),
            "UUID": _text(module.nvmlDeviceGetUUID(handle)),
            "device": f"nvidia{index}",
            "modelName": _text(module.nvmlDeviceGetName(handle)),
        }
        threading.Thread(target=self._listen, name="nvml-xid", daemon=True).start()

    @classmethod
    def open(cls) -> _Nvml | None:
        try:
            import pynvml
            import torch

            index = torch.cuda.current_device()
            pynvml.nvmlInit()
            uuid_text = str(torch.cuda.get_device_properties(index).uuid)
            try:
                handle = pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid_text}")
            except pynvml.NVMLError:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            return cls(pynvml, handle, index)
        except Exception as exc:  # no nvidia-ml-py, no driver: the simulated figures it is
            log.warning("NVML unavailable (%s): GPU metrics are simulated", exc)
            return None

    def read(self) -> dict[str, float]:
        """Each field from NVML; one the device does not support (ECC off, throttle reasons
        on some vGPU or MIG setups) reads 0, the others are still the device's own."""
        nvml, handle = self._nvml, self._handle
        reads: dict[str, Any] = {
            "DCGM_FI_DEV_FB_USED": lambda: nvml.nvmlDeviceGetMemoryInfo(handle).used // _MIB,
            "DCGM_FI_DEV_FB_FREE": lambda: nvml.nvmlDeviceGetMemoryInfo(handle).free // _MIB,
            "DCGM_FI_DEV_GPU_TEMP": lambda: nvml.nvmlDeviceGetTemperature(
                handle, nvml.NVML_TEMPERATURE_GPU
            ),
            "DCGM_FI_DEV_SM_CLOCK": lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM),
            "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": lambda: (
                nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle)
            ),
            "DCGM_FI_DEV_XID_ERRORS": lambda: self.xid,
            "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": lambda: nvml.nvmlDeviceGetTotalEccErrors(
                handle, nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, nvml.NVML_VOLATILE_ECC
            ),
            "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": lambda: nvml.nvmlDeviceGetTotalEccErrors(
                handle, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC
            ),
        }
        values: dict[str, float] = {}
        for name, read in reads.items():
            try:
                values[name] = float(read())
            except Exception:  # not supported here: none to report
                values[name] = 0.0
        return values

    def _listen(self) -> None:
        nvml = self._nvml
        try:
            events = nvml.nvmlEventSetCreate()
            nvml.nvmlDeviceRegisterEvents(self._handle, nvml.nvmlEventTypeXidCriticalError, events)
        except Exception:  # not supported (e.g. inside some containers): Xid stays 0
            return
        while True:
            try:
                data = nvml.nvmlEventSetWait_v2(events, 1000)
            except nvml.NVMLError_Timeout:
                continue  # a second without an event
            except Exception:  # the driver went away: nothing more to listen to
                return
            self.xid = int(data.eventData)
            log.error("GPU Xid %d", self.xid)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def trouble_of(exc: BaseException) -> str | None:
    """What a failed inference says about the device: ``"out of memory"``, ``"device
    lost"``, ``"device error"`` (any other CUDA error), or None when the device is not to
    blame."""
    import sys

    if isinstance(exc, DeviceLost):
        return "device lost"
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return "out of memory"
    text = str(exc)
    if isinstance(exc, RuntimeError) and ("cudaMalloc" in text or "out of memory" in text):
        return "out of memory"  # faiss-gpu's own allocations say it this way
    if isinstance(exc, RuntimeError) and text.startswith("CUDA error"):
        return "device error"
    return None


def throttle_words(reasons: int) -> str:
    """NVML's throttle reasons bitmask in words, e.g. ``HW slowdown, HW thermal slowdown``."""
    return ", ".join(word for bit, word in _THROTTLE_WORDS.items() if reasons & bit)


#: The bits that hold the clocks down for a hardware reason (what the replica reports).
HARDWARE_THROTTLE = THROTTLE_HW_SLOWDOWN | THROTTLE_SW_THERMAL | THROTTLE_HW_THERMAL | 0x80
