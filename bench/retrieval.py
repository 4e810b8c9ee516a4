"""Retrieval benchmark: drillkit's RetrievalIndex over a large catalog, against the machine's
measured fp32 GEMM ceiling.

What runs is drillkit's own retrieval path, not a re-implementation: RetrievalIndex.build
(faiss IndexFlatIP for kind="flat"; IndexIVFFlat with drillkit's default nlist and nprobe for
kind="ivf"; faiss-gpu or the torch exact search on a GPU) and RetrievalIndex.search with k=10,
over seeded random unit vectors (items and queries from numpy's default_rng).

Exact search costs 2*N*d FLOPs per query, so QPS converts to achieved GFLOP/s. The ceiling it
is compared with is measured in the same run:
  * "peak": the best fp32 rate of a big square GEMM (numpy/OpenBLAS and torch on the CPU,
    torch.matmul with TF32 off on a GPU);
  * "same-shape GEMM": queries[B, d] @ items[chunk, d].T streamed over all N items, the
    matrix product an exact search at batch B cannot avoid (no top-k).

Prints, for the CPU (faiss OpenMP threads = usable cores unless --threads) and, when torch
sees a CUDA GPU, for the GPU:
  * the ceilings;
  * exact search at 1, 16, 256 and 1024 queries per call: QPS, GFLOP/s, share of each ceiling;
  * IVF: build time, recall@10 against exact search on a query sample, and QPS for a few
    nprobe values around drillkit's default.
CPU rows also say how many cores the process actually got (CPU time / wall time): on a shared
machine that, more than the load average, tells whether a figure is trustworthy. The "calls"
column says how many calls were timed; a single long call is one sample.

Random unit vectors have no cluster structure, the worst case for IVF: its recall here is
likely pessimistic for trained item embeddings at the same nprobe.

Usage: python bench/retrieval.py [--items 1000000] [--dim 128] [--quick] [--threads N]
Tables go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import faiss
import numpy as np
import numpy.typing as npt
import torch

from drillkit.stacks.recommender.index import RetrievalIndex, get_threads, set_threads

Floats = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]

K = 10
BATCHES = (1, 16, 256, 1024)
SEED = 20240611
QUERY_POOL = 4096  # a multiple of every batch size: each call searches fresh queries
CPU_CHUNK = 8192  # items per product in the CPU same-shape GEMM (output stays cache-sized)
GPU_CHUNK = 1 << 18  # items per product on a GPU ([1024, 2^18] fp32 = 1 GiB of scores)
GPU_SQUARE = 8192  # the GPU ceiling's square GEMM: 1.1 TFLOP, long enough to time well
GPU_DEVICE = "cuda"

_STARTED = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _STARTED:7.1f} s] {message}", file=sys.stderr, flush=True)


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> Floats:
    rows = rng.standard_normal((n, dim), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


# -- timing -----------------------------------------------------------------------------------


@dataclass
class Timing:
    calls: int
    seconds: float
    cpu_seconds: float | None = None  # this process's CPU time over the run (CPU timings)

    @property
    def cores_used(self) -> str:
        """Process CPU time / wall time: how much of the machine the run actually got."""
        return "n/a" if self.cpu_seconds is None else f"{self.cpu_seconds / self.seconds:.2f}"

    @property
    def ms_per_call(self) -> float:
        return 1e3 * self.seconds / self.calls


def time_cpu(fn: Callable[[int], object], min_time: float, min_calls: int = 1) -> Timing:
    """Call ``fn(i)`` for i = 0, 1, ... until ``min_time`` has passed and ``min_calls`` ran."""
    calls = 0
    cpu_start = time.process_time()
    start = time.perf_counter()
    while True:
        fn(calls)
        calls += 1
        elapsed = time.perf_counter() - start
        if calls >= min_calls and elapsed >= min_time:
            return Timing(calls, elapsed, time.process_time() - cpu_start)


def time_cuda(fn: Callable[[int], object], min_time: float, min_calls: int = 3) -> Timing:
    """Time ``fn`` on the GPU with CUDA events.

    One call warms up (cuBLAS handles, allocator), a second sizes the run so that the queued
    work lasts about ``min_time``; asynchronous kernels are then timed between two events and
    not by the host clock, which would stop while the queue is still full.
    """
    fn(0)
    torch.cuda.synchronize()
    started = time.perf_counter()
    fn(1)
    torch.cuda.synchronize()
    estimate = max(time.perf_counter() - started, 1e-6)
    calls = int(min(max(min_calls, math.ceil(min_time / estimate)), 100_000))
    begin = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    begin.record()
    for i in range(calls):
        fn(2 + i)
    end.record()
    end.synchronize()
    return Timing(calls, begin.elapsed_time(end) / 1e3)


# -- tables -----------------------------------------------------------------------------------


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    print(f"\n== {title}")
    print(
        "  ".join(
            h.rjust(w) if i else h.ljust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    )
    for r in rows:
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    sys.stdout.flush()


def pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole > 0 else "n/a"


@dataclass
class Shape:
    items: int
    dim: int

    def exact_flops(self, queries: int) -> float:
        """FLOPs of exact inner-product search for ``queries`` queries: 2*N*d each."""
        return 2.0 * self.items * self.dim * queries


@dataclass
class SearchRow:
    label: str
    batch: int
    timing: Timing

    def qps(self) -> float:
        return self.batch * self.timing.calls / self.timing.seconds


def exact_rows(
    shape: Shape, rows: Sequence[SearchRow], peak: float, same_shape: dict[int, float]
) -> list[list[str]]:
    out = []
    for row in rows:
        qps = row.qps()
        gflops = qps * shape.exact_flops(1) / 1e9
        gemm = same_shape.get(row.batch, 0.0)
        out.append(
            [
                row.label,
                str(row.batch),
                str(row.timing.calls),
                f"{row.timing.ms_per_call:.2f}",
                f"{qps:,.1f}",
                f"{gflops:,.1f}",
                pct(gflops, peak),
                pct(gflops, gemm),
                row.timing.cores_used,
            ]
        )
    return out


EXACT_HEADERS = (
    "exact search",
    "batch",
    "calls",
    "ms/call",
    "QPS",
    "GFLOP/s",
    "% of peak",
    "% of same-shape GEMM",
    "cores used",
)


def recall_at_k(found: Ids, truth: Ids) -> float:
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def batch_of(queries: Floats, batch: int, i: int) -> Floats:
    start = (i * batch) % queries.shape[0]
    return queries[start : start + batch]


def searcher(index: RetrievalIndex, queries: Floats, batch: int) -> Callable[[int], object]:
    """Call i searches the i-th batch of the query pool: every call sees fresh queries."""

    def call(i: int) -> object:
        return index.search(batch_of(queries, batch, i), K)

    return call


def torch_reference(items: torch.Tensor, queries: Floats, batch: int) -> Callable[[int], object]:
    """``topk(q @ items.T)``: what drillkit's torch-cuda backend computes, on ``items``' device."""

    def call(i: int) -> object:
        q = torch.from_numpy(batch_of(queries, batch, i)).to(items.device)
        return torch.topk(q @ items.T, K, dim=1)

    return call


# -- CPU --------------------------------------------------------------------------------------


def cpu_ceiling(min_time: float) -> list[tuple[str, float, str]]:
    n = 2048
    rng = np.random.default_rng(SEED + 2)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)
    t = time_cpu(lambda i: np.matmul(a, b, out=out), min_time, 2)
    rates = [
        (
            f"numpy (OpenBLAS) sgemm {n}x{n}x{n}",
            2.0 * n**3 * t.calls / t.seconds / 1e9,
            t.cores_used,
        )
    ]
    ta, tb, tout = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out)
    torch.matmul(ta, tb, out=tout)
    t = time_cpu(lambda i: torch.matmul(ta, tb, out=tout), min_time, 2)
    rates.append(
        (f"torch (MKL) sgemm {n}x{n}x{n}", 2.0 * n**3 * t.calls / t.seconds / 1e9, t.cores_used)
    )
    return rates


def cpu_same_shape(
    items: Floats, queries: Floats, batch: int, min_time: float
) -> tuple[float, str]:
    """GFLOP/s of queries[batch] @ items[chunk].T streamed over the whole catalog."""
    n, dim = items.shape
    chunk = min(CPU_CHUNK, n)
    starts = range(0, n - chunk + 1, chunk)
    q = queries[:batch]
    out = np.empty((batch, chunk), dtype=np.float32)

    def step(i: int) -> None:
        s = starts[i % len(starts)]
        np.matmul(q, items[s : s + chunk].T, out=out)

    step(0)
    t = time_cpu(step, min_time, len(starts))  # at least one full pass over the items
    return float(2.0 * batch * chunk * dim * t.calls / t.seconds / 1e9), t.cores_used


def blas_threshold() -> int | None:
    value = getattr(faiss.cvar, "distance_compute_blas_threshold", None)
    return None if value is None else int(value)


def threshold_batch(threshold: int | None, dim: int) -> str:
    return "?" if threshold is None else str(-(-threshold // dim))


def set_blas_threshold(value: int) -> None:
    faiss.cvar.distance_compute_blas_threshold = int(value)


def run_cpu(
    items: Floats, queries: Floats, sample: Floats, args: argparse.Namespace, shape: Shape
) -> Ids:
    """The CPU tables; returns the exact top-k ids of ``sample`` (the recall reference)."""
    threads = args.threads
    set_threads(threads)
    torch.set_num_threads(threads)
    default_threshold = blas_threshold()
    print(
        f"\nCPU: {usable_cores()} usable cores; faiss OpenMP threads {get_threads()} "
        f"(set through drillkit's set_threads = faiss.omp_set_num_threads); torch threads "
        f"{torch.get_num_threads()}; faiss distance_compute_blas_threshold "
        f"{default_threshold} (faiss 1.15 compares batch*d with it: exact search of fewer "
        f"than {threshold_batch(default_threshold, shape.dim)} queries per call at d="
        f"{shape.dim} takes its non-BLAS loop, except a batch below the thread count, "
        "which faiss splits over the items with BLAS)"
    )

    log("CPU: measuring the fp32 GEMM ceiling")
    squares = cpu_ceiling(args.min_time)
    peak = max(rate for _, rate, _ in squares)
    rows = [[label, f"{rate:,.1f}", pct(rate, peak), cores] for label, rate, cores in squares]
    same_shape: dict[int, float] = {}
    for batch in BATCHES:
        log(f"CPU: same-shape GEMM, batch {batch}")
        rate, cores = cpu_same_shape(items, queries, batch, args.min_time)
        same_shape[batch] = rate
        rows.append(
            [
                f"numpy q[{batch},{shape.dim}] @ items[{CPU_CHUNK},{shape.dim}].T, all N",
                f"{rate:,.1f}",
                pct(rate, peak),
                cores,
            ]
        )
    table(
        f"CPU fp32 GEMM ceiling (peak = best square GEMM = {peak:,.1f} GFLOP/s)",
        ("product", "GFLOP/s", "% of peak", "cores used"),
        rows,
    )

    results, truth = cpu_exact(items, queries, sample, args, shape, peak, same_shape)
    run_cpu_ivf(items, queries, sample, truth, args, shape, results)
    return truth


def cpu_exact(
    items: Floats,
    queries: Floats,
    sample: Floats,
    args: argparse.Namespace,
    shape: Shape,
    peak: float,
    same_shape: dict[int, float],
) -> tuple[list[SearchRow], Ids]:
    log("CPU: building drillkit's flat index (RetrievalIndex.build kind=flat device=cpu)")
    started = time.perf_counter()
    flat = RetrievalIndex.build(items, kind="flat", device="cpu")
    flat_build = time.perf_counter() - started
    flat.search(queries[:1], K)  # page in, start the OpenMP team

    check_exact(flat, items, queries[:4])
    results: list[SearchRow] = []
    for batch in BATCHES:
        log(f"CPU: exact search, batch {batch}")
        t = time_cpu(searcher(flat, queries, batch), args.min_time)
        results.append(SearchRow(f"drillkit {flat.backend}", batch, t))
    # Diagnostics: the same call under other process-wide settings.
    set_threads(1)
    log("CPU: exact search, batch 1, 1 thread (the replica's setting)")
    t = time_cpu(searcher(flat, queries, 1), args.min_time)
    results.append(SearchRow("  same, 1 faiss thread (replica)", 1, t))
    set_threads(args.threads)
    default_threshold = blas_threshold()
    if default_threshold is not None:
        set_blas_threshold(1)
        for batch in BATCHES:
            log(f"CPU: exact search, batch {batch}, faiss blas threshold 1")
            t = time_cpu(searcher(flat, queries, batch), args.min_time)
            results.append(SearchRow("  same, blas_threshold=1 (BLAS)", batch, t))
        set_blas_threshold(default_threshold)
    # Not drillkit's CPU path: the expression of drillkit's torch-cuda backend, on the CPU,
    # as a yardstick for faiss's top-k handling (skipped where the score matrix is > 1 GiB).
    items_t = torch.from_numpy(items)
    for batch in BATCHES:
        if batch * shape.items * 4 > 2**30:
            continue
        log(f"CPU: reference torch matmul + topk, batch {batch}")
        t = time_cpu(torch_reference(items_t, queries, batch), args.min_time)
        results.append(SearchRow("  reference: torch topk(q @ items.T)", batch, t))
    table(
        f"CPU exact search, N={shape.items:,} d={shape.dim} k={K} "
        f"({shape.exact_flops(1) / 1e9:.3f} GFLOP/query; index built in {flat_build:.1f} s)",
        EXACT_HEADERS,
        exact_rows(shape, results, peak, same_shape),
    )

    log(f"CPU: exact top-{K} of the {len(sample)}-query recall sample")
    _, truth = flat.search(sample, K)
    return results, truth


def check_exact(index: RetrievalIndex, items: Floats, queries: Floats) -> None:
    """The benchmarked path returns the exact top-k (numpy reference on a few queries)."""
    scores = items @ queries.T
    _, ids = index.search(queries, K)
    agree = 0
    for j in range(queries.shape[0]):
        best = np.argpartition(-scores[:, j], K)[:K]
        agree += int(set(best.tolist()) == set(ids[j].tolist()))
    print(
        f"check: {index.backend} top-{K} equals numpy's exact top-{K} for "
        f"{agree}/{queries.shape[0]} queries"
    )
    if agree != queries.shape[0]:
        # The figures that follow would time a search that is not the exact one: stop here.
        sys.exit(
            f"benchmark failed: {index.backend} is not exact "
            f"({queries.shape[0] - agree} of {queries.shape[0]} top-{K} lists differ)"
        )


def run_cpu_ivf(
    items: Floats,
    queries: Floats,
    sample: Floats,
    truth: Ids,
    args: argparse.Namespace,
    shape: Shape,
    exact: Sequence[SearchRow],
) -> None:
    log("CPU: building drillkit's IVF index (RetrievalIndex.build kind=ivf device=cpu)")
    started = time.perf_counter()
    ivf = RetrievalIndex.build(items, kind="ivf", device="cpu")
    build = time.perf_counter() - started
    ivf.search(queries[:1], K)
    rows = ivf_rows(ivf, queries, sample, truth, args, exact, "CPU")
    nlist = _nlist(ivf)
    table(
        f"CPU IVF (drillkit defaults: nlist {nlist}, nprobe {ivf.nprobe}; built in "
        f"{build:.1f} s), recall@{K} vs exact on {len(sample)} queries",
        IVF_HEADERS,
        rows,
    )


IVF_HEADERS = (
    "index",
    "nprobe",
    "share scanned",
    f"recall@{K}",
    "batch",
    "QPS",
    "speedup vs exact",
)


def _nlist(index: RetrievalIndex) -> int:
    # RetrievalIndex does not expose nlist; read it from the wrapped faiss index.
    cpu = index._cpu
    return int(faiss.extract_index_ivf(cpu).nlist)


def ivf_rows(
    ivf: RetrievalIndex,
    queries: Floats,
    sample: Floats,
    truth: Ids,
    args: argparse.Namespace,
    exact: Sequence[SearchRow],
    where: str,
    timer: Callable[[Callable[[int], object], float], Timing] | None = None,
) -> list[list[str]]:
    timer = timer or time_cpu
    nlist = _nlist(ivf)
    default = ivf.nprobe or 1
    probes = sorted({max(1, default // 4), max(1, default // 2), default, min(nlist, default * 2)})
    if ivf.backend == "torch-cuda/exact":
        probes = [default]  # that backend ignores the inverted lists: nprobe changes nothing
    exact_qps = {r.batch: r.qps() for r in exact if r.label.startswith("drillkit")}
    rows = []
    for nprobe in probes:
        ivf.nprobe = nprobe
        _, found = ivf.search(sample, K)
        recall = recall_at_k(found, truth)
        for batch in (1, 256):
            log(f"{where}: IVF nprobe {nprobe}, batch {batch}")
            t = timer(searcher(ivf, queries, batch), args.min_time)
            qps = batch * t.calls / t.seconds
            base = exact_qps.get(batch)
            rows.append(
                [
                    f"drillkit {ivf.backend}" + (" (default)" if nprobe == default else ""),
                    str(nprobe),
                    pct(nprobe, nlist),
                    f"{recall:.3f}",
                    str(batch),
                    f"{qps:,.1f}",
                    f"{qps / base:.1f}x" if base else "n/a",
                ]
            )
    ivf.nprobe = default
    return rows


# -- GPU --------------------------------------------------------------------------------------


def run_gpu(
    items: Floats,
    queries: Floats,
    sample: Floats,
    truth: Ids,
    args: argparse.Namespace,
    shape: Shape,
) -> None:
    if not torch.cuda.is_available():
        print("\nGPU: not present, skipped")
        return
    device = torch.device(GPU_DEVICE)
    props = torch.cuda.get_device_properties(device)
    has_faiss_gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    print(
        f"\nGPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, "
        f"{props.multi_processor_count} SMs; torch {torch.__version__}, CUDA "
        f"{torch.version.cuda}; faiss GPU support: {'yes' if has_faiss_gpu else 'no'}"
    )
    saved_precision = torch.get_float32_matmul_precision()
    try:
        log("GPU: measuring the matmul ceiling")
        squares = gpu_ceiling(device, args.min_time)
        peak = squares[0][1]
        torch.set_float32_matmul_precision("highest")  # fp32 search figures: no TF32
        gpu_items = torch.from_numpy(items).to(device)
        same_shape: dict[int, float] = {}
        for batch in BATCHES:
            log(f"GPU: same-shape GEMM, batch {batch}")
            same_shape[batch] = gpu_same_shape(gpu_items, queries, batch, args.min_time)
        del gpu_items
        torch.cuda.empty_cache()
        rows = [[label, f"{rate:,.0f}", pct(rate, peak)] for label, rate in squares]
        rows += [
            [
                f"torch q[{b},{shape.dim}] @ items[N,{shape.dim}].T fp32",
                f"{rate:,.0f}",
                pct(rate, peak),
            ]
            for b, rate in same_shape.items()
        ]
        table(
            f"GPU matmul ceiling (peak = fp32 square GEMM, TF32 off = {peak:,.0f} GFLOP/s)",
            ("product", "GFLOP/s", "% of fp32 peak"),
            rows,
        )

        log("GPU: building drillkit's flat index (RetrievalIndex.build kind=flat device=cuda)")
        started = time.perf_counter()
        flat = RetrievalIndex.build(items, kind="flat", device="cuda")
        build = time.perf_counter() - started
        results: list[SearchRow] = []
        failures: list[str] = []
        for batch in BATCHES:
            log(f"GPU: exact search, batch {batch}")
            try:
                t = time_cuda(searcher(flat, queries, batch), args.min_time)
            except (torch.cuda.OutOfMemoryError, RuntimeError, MemoryError) as exc:
                failures.append(f"batch {batch}: {first_line(exc)}")
                torch.cuda.empty_cache()
                continue
            results.append(SearchRow(f"drillkit {flat.backend}", batch, t))
        table(
            f"GPU exact search, N={shape.items:,} d={shape.dim} k={K} (queries from and "
            f"results to host memory, as a replica does; index built and copied in "
            f"{build:.1f} s)",
            EXACT_HEADERS,
            exact_rows(shape, results, peak, same_shape),
        )
        for failure in failures:
            print(f"  failed: {failure}")
        del flat
        torch.cuda.empty_cache()

        log("GPU: building drillkit's IVF index (RetrievalIndex.build kind=ivf device=cuda)")
        started = time.perf_counter()
        ivf = RetrievalIndex.build(items, kind="ivf", device="cuda")
        build = time.perf_counter() - started
        note = (
            ""
            if ivf.backend.startswith("faiss-gpu")
            else "; NOTE: without faiss-gpu drillkit searches IVF exactly with torch"
        )
        rows = ivf_rows(ivf, queries, sample, truth, args, results, "GPU", time_cuda)
        table(
            f"GPU IVF (drillkit defaults: nlist {_nlist(ivf)}, nprobe {ivf.nprobe}; built in "
            f"{build:.1f} s{note}), recall@{K} vs exact on {len(sample)} queries",
            IVF_HEADERS,
            rows,
        )
        del ivf
        torch.cuda.empty_cache()
    finally:
        torch.set_float32_matmul_precision(saved_precision)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def gpu_ceiling(device: torch.device, min_time: float) -> list[tuple[str, float]]:
    n = GPU_SQUARE
    generator = torch.Generator(device=device).manual_seed(SEED + 3)
    a = torch.randn((n, n), device=device, generator=generator)
    b = torch.randn((n, n), device=device, generator=generator)
    out = torch.empty((n, n), device=device)
    flops = 2.0 * n**3
    rates = []
    for precision, label in (("highest", "fp32 (TF32 off)"), ("high", "TF32 tensor cores")):
        torch.set_float32_matmul_precision(precision)
        t = time_cuda(lambda i: torch.matmul(a, b, out=out), min_time)
        rates.append((f"torch.matmul {n}x{n}x{n} {label}", flops * t.calls / t.seconds / 1e9))
    torch.set_float32_matmul_precision("highest")
    a16, b16 = a.bfloat16(), b.bfloat16()
    out16 = torch.empty((n, n), device=device, dtype=torch.bfloat16)
    t = time_cuda(lambda i: torch.matmul(a16, b16, out=out16), min_time)
    rates.append(
        (
            f"torch.matmul {n}x{n}x{n} bf16 (not the search's precision)",
            flops * t.calls / t.seconds / 1e9,
        )
    )
    return rates


def gpu_same_shape(gpu_items: torch.Tensor, queries: Floats, batch: int, min_time: float) -> float:
    n, dim = gpu_items.shape
    q = torch.from_numpy(np.ascontiguousarray(queries[:batch])).to(gpu_items.device)
    chunks = [gpu_items[s : s + GPU_CHUNK] for s in range(0, n, GPU_CHUNK)]

    def full_pass(i: int) -> None:
        for chunk in chunks:
            torch.matmul(q, chunk.T)

    t = time_cuda(full_pass, min_time)
    return 2.0 * batch * n * dim * t.calls / t.seconds / 1e9


# -- main -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument(
        "--items",
        type=int,
        default=None,
        help="catalog size N (default 1,000,000; 100,000 with --quick)",
    )
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument(
        "--quick", action="store_true", help="100k items, short timings: under a minute on 2 cores"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=usable_cores(),
        help="faiss and torch CPU threads (default: usable cores)",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=None,
        help="queries in the recall sample (default 1024; 256 with --quick)",
    )
    args = parser.parse_args(argv)
    args.items = args.items or (100_000 if args.quick else 1_000_000)
    args.sample = args.sample or (256 if args.quick else 1024)
    args.min_time = 0.3 if args.quick else 3.0
    if args.items < 2 * CPU_CHUNK or args.dim < 1 or args.threads < 1 or args.sample < 1:
        parser.error(f"need --items >= {2 * CPU_CHUNK}, --dim >= 1, --threads >= 1, --sample >= 1")
    shape = Shape(args.items, args.dim)

    print(
        f"retrieval benchmark: N={shape.items:,} items x d={shape.dim} float32 "
        f"({shape.items * shape.dim * 4 / 2**20:,.0f} MiB), k={K}, random unit vectors "
        f"(numpy default_rng seed {SEED}); {os.cpu_count()} CPUs; load average at start "
        f"{load_text()}; faiss {faiss.__version__}, numpy {np.__version__}, "
        f"torch {torch.__version__}"
    )
    log(f"generating {shape.items:,} x {shape.dim} items and {QUERY_POOL} queries")
    rng = np.random.default_rng(SEED)
    items = unit_rows(rng, shape.items, shape.dim)
    queries = unit_rows(rng, QUERY_POOL, shape.dim)
    sample = queries[: args.sample]

    truth = run_cpu(items, queries, sample, args, shape)
    try:
        run_gpu(items, queries, sample, truth, args, shape)
    except Exception as exc:  # a GPU failure should not hide the CPU figures above
        traceback.print_exc()
        print(f"\nGPU: failed: {first_line(exc)}")
        sys.exit(1)
    print(f"\nload average at end: {load_text()}; wall time {time.perf_counter() - _STARTED:.0f} s")


if __name__ == "__main__":
    main()
