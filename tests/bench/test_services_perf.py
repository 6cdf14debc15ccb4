"""Provisioning time of the local servers (run with --agentmem-perf).

    python -m pytest tests/bench/test_services_perf.py --agentmem-perf -s -p no:cacheprovider

Starts and stops each server several times, interleaved, and records the medians;
also the cold start of Postgres (initdb) against the cached cluster, in the same run.
"""

from __future__ import annotations

import glob
import shutil
import statistics
import tempfile
from pathlib import Path

import pytest

from pytest_agentmem.services.local_postgres import start_local_postgres
from pytest_agentmem.services.local_redis import start_local_redis

STARTS = 7


def _drop_cached_clusters() -> None:
    for path in glob.glob(str(Path(tempfile.gettempdir()) / "agentmem-pg-pristine-*")):
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.agentmem_perf(max_postgres_start_s=5, max_redis_start_s=2)
def test_local_server_start_times(perf) -> None:  # type: ignore[no-untyped-def]
    postgres, redis, cold = [], [], []
    for _ in range(STARTS):
        for samples, start in ((postgres, start_local_postgres), (redis, start_local_redis)):
            service = start()
            samples.append(service.startup_s)
            service.stop()
            assert not service.process_ids()
    for _ in range(3):
        _drop_cached_clusters()  # the first start after this runs initdb
        service = start_local_postgres()
        cold.append(service.startup_s)
        service.stop()
    figures = {"postgres_start_s": statistics.median(postgres), "redis_start_s": statistics.median(redis),
               "postgres_cold_start_s": statistics.median(cold)}
    print(f"\nstart times over {STARTS} starts (median): " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items())
          + f"; cached cluster vs initdb: {figures['postgres_cold_start_s'] / figures['postgres_start_s']:.2f}x faster")
    perf.record("provisioning", **figures)
