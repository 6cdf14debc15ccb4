"""The machine fingerprint records the CPU flags vector code depends on."""

from __future__ import annotations

import platform

from pytest_agentmem._cpu import cpu_flags, describe_cpu_flags
from pytest_agentmem.gate.fingerprint import machine_differences, machine_fingerprint, stack_fingerprint


def test_the_fingerprint_records_the_cpu_flags_that_matter() -> None:
    flags = machine_fingerprint()["cpu_flags"]
    assert flags == cpu_flags()
    if platform.machine() == "x86_64":
        assert set(flags) == {"avx2", "fma", "avx512f"}
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            has_avx512 = " avx512f" in fh.read()
        assert flags["avx512f"] is has_avx512
    assert describe_cpu_flags() != ""


def test_machine_differences_name_a_changed_cpu_flag() -> None:
    stored = {"machine": {"cpu_model": "AMD EPYC", "cpu_flags": {"avx2": True, "avx512f": True}}}
    current = {"machine": {"cpu_model": "AMD EPYC", "cpu_flags": {"avx2": True, "avx512f": False}}}
    assert machine_differences(stored, current) == ["cpu flag avx512f: yes -> no"]


def test_a_baseline_without_cpu_flags_is_not_a_different_machine() -> None:
    stored = {"machine": {"cpu_model": "AMD EPYC"}}
    current = {"machine": {"cpu_model": "AMD EPYC", "cpu_flags": {"avx2": True, "avx512f": False}}}
    assert machine_differences(stored, current) == []


def test_the_stack_says_which_postgres_binaries_ran(agentmem_services, pytestconfig) -> None:  # type: ignore[no-untyped-def]
    postgres = agentmem_services.postgres
    stack = stack_fingerprint(pytestconfig)
    assert stack["postgres"] == postgres.version
    if postgres.mode == "local":
        assert stack["postgres_binaries"] == postgres.source != ""
