"""What an operator reads of the process: its versions, memory, CPU and open files, the GPU's memory on CUDA, how
old the newest checkpoint is and how far behind the real world each pipeline is."""

import importlib.metadata
import math
import os
import platform
import subprocess
import sys
import time
from datetime import datetime

import pytest
import torch
from prometheus_client import CollectorRegistry
from test_app import hours, worker

from forecaster import __version__, process
from forecaster.io.checkpoint import load_latest_checkpoint
from forecaster.metrics import Metrics
from forecaster.process import keep_freed_memory  # the real one: conftest.kept_memory stands in for it

GPU = "forecaster_gpu_memory_bytes"


class FakeCuda:
    """torch.cuda's two memory counters, set by the test."""

    def __init__(self):
        self.allocated, self.peak, self.asked = 0, 0, []

    def memory_allocated(self, device):
        self.asked.append(device)
        return self.allocated

    def max_memory_allocated(self, device):
        return self.peak


def test_the_build_is_one_series_naming_every_version_the_device_and_the_kafka_client():
    registry = CollectorRegistry()
    process.export(Metrics(registry), torch.device("cpu"), "confluent-kafka")
    labels = {
        "version": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": "cpu",
        "kafka_client": "confluent-kafka",
        "kafka_client_version": importlib.metadata.version("confluent-kafka"),
    }
    assert registry.get_sample_value("forecaster_build_info", labels) == 1


def test_the_process_memory_cpu_and_open_files_are_on_the_injected_registry():
    registry = CollectorRegistry()
    Metrics(registry)
    assert registry.get_sample_value("process_resident_memory_bytes") > 0
    assert registry.get_sample_value("process_open_fds") > 0
    assert registry.get_sample_value("process_cpu_seconds_total") > 0
    assert registry.get_sample_value("python_info", {**python_labels(), "implementation": "CPython"}) == 1


def python_labels() -> dict:
    major, minor, patchlevel = platform.python_version_tuple()
    return {"major": major, "minor": minor, "patchlevel": patchlevel, "version": platform.python_version()}


def test_off_cuda_no_gpu_memory_is_exported_or_read():
    registry, cuda = CollectorRegistry(), FakeCuda()
    process.export(Metrics(registry), torch.device("cpu"), "kafka-python", cuda)
    assert [s for family in registry.collect() for s in family.samples if s.name == GPU] == []
    assert process.gpu_memory(torch.device("cpu"), cuda) == {} and cuda.asked == []


def test_on_cuda_each_scrape_reads_the_memory_torch_holds_now_and_its_peak():
    registry, cuda, device = CollectorRegistry(), FakeCuda(), torch.device("cuda", 0)
    process.export(Metrics(registry), device, "kafka-python", cuda)
    cuda.allocated, cuda.peak = 3 << 20, 5 << 20
    assert registry.get_sample_value(GPU, {"device": "cuda:0", "kind": "allocated"}) == 3 << 20
    assert registry.get_sample_value(GPU, {"device": "cuda:0", "kind": "max_allocated"}) == 5 << 20
    cuda.allocated = 1 << 20
    assert registry.get_sample_value(GPU, {"device": "cuda:0", "kind": "allocated"}) == 1 << 20
    assert set(cuda.asked) == {device}


def lag(registry) -> float:
    return registry.get_sample_value("forecaster_event_time_lag_seconds", {"pipeline": "test"})


def test_the_event_time_lag_is_now_minus_the_newest_observation_stepped():
    w, _, _, registry = worker([hours("a", 0, 3) + hours("b", 0, 2), hours("a", 1, 2)])
    assert math.isnan(lag(registry))  # nothing seen yet
    w.run_once()
    w.run_once()  # an older record does not make the pipeline look younger
    newest = datetime.fromisoformat("2024-01-01T02:00:00+00:00").timestamp()
    before = time.time()
    measured = lag(registry)
    assert before - newest <= measured <= time.time() - newest


def test_the_last_checkpoint_time_is_the_newest_checkpoints_own_and_survives_a_restart(tmp_path):
    timestamp = lambda registry: registry.get_sample_value(
        "forecaster_last_checkpoint_timestamp_seconds", {"pipeline": "test"}
    )
    w, _, _, registry = worker([hours("a", 0, 2)], None, tmp_path, 2)
    assert math.isnan(timestamp(registry))  # none yet: no age to alert on
    w.run_once()
    written_at = load_latest_checkpoint(tmp_path)[0]["written_at"]
    assert timestamp(registry) == written_at
    _, _, _, restarted = worker([], None, tmp_path, restore=True)
    assert timestamp(restarted) == written_at


CHURN = """
import resource, sys, threading
import numpy as np
from forecaster import process
if sys.argv[1] == "keep":
    assert process.keep_freed_memory()
faults = []
def churn():  # a step's worth of large arrays, made and freed again and again, on a thread like a pipeline's
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        block = np.ones(16 * 2**20, np.float32)  # 64 MB, every page written
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
        del block
thread = threading.Thread(target=churn)
thread.start()
thread.join()
print(faults[-1])
"""


def pages_faulted_by_the_third_large_block(how: str) -> int:
    # 4 KiB pages, so that the count does not hang on whether the kernel found huge ones
    environment = {**os.environ, "NUMPY_MADVISE_HUGEPAGE": "0"}
    ran = subprocess.run([sys.executable, "-c", CHURN, how], capture_output=True, text=True, env=environment)
    assert ran.returncode == 0, ran.stderr
    return int(ran.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's; elsewhere it does nothing")
def test_with_freed_memory_kept_a_large_block_reuses_the_pages_of_the_one_freed_before_it():
    block_pages = 64 * 2**20 // 4096
    assert pages_faulted_by_the_third_large_block("default") >= block_pages  # the kernel maps fresh pages each time
    assert pages_faulted_by_the_third_large_block("keep") < block_pages // 100


class FakeLibc:
    def __init__(self, answer: int):
        self.answer, self.calls = answer, []

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append((parameter, value))
        return self.answer


def test_keeping_freed_memory_maps_no_block_alone_never_trims_and_shares_one_arena():
    libc = FakeLibc(answer=1)
    assert keep_freed_memory(libc)
    assert libc.calls == [(process.M_MMAP_MAX, 0), (process.M_TRIM_THRESHOLD, -1), (process.M_ARENA_MAX, 1)]


def test_a_c_library_that_refuses_the_settings_is_reported_not_raised():
    assert not keep_freed_memory(FakeLibc(answer=0))
