"""Settings of a run: command line > ini file > environment > default.

Every setting is declared once in :data:`OPTIONS`; :func:`add_options` turns the
table into one ``agentmem`` option group (each a command-line option and, where it
makes sense, an ini key sharing the same help text), and :func:`load_settings`
resolves the values into a frozen :class:`Settings`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pytest

SERVICE_MODES = ("auto", "docker", "local", "external")

#: Set by ``--agentmem-compare`` in the environment of the base side's pytest process:
#: the link to the candidate (which also hands it the servers to share).
AB_ADDRESS_ENV = "AGENTMEM_AB_ADDRESS"


# --------------------------------------------------------------------------- parsers
# Each raises pytest.UsageError with a hint, so a bad value stops the run while
# options are parsed (pytest-xdist's parse_ramp_duration does the same).


def parse_service_mode(value: str) -> str:
    mode = value.strip().lower()
    if mode not in SERVICE_MODES:
        raise pytest.UsageError(
            f"--agentmem-services: unknown mode {value!r}; choose one of {', '.join(SERVICE_MODES)}"
        )
    return mode


def parse_fraction(value: str) -> float:
    """A non-negative fraction; ``15%`` and ``0.15`` both mean 0.15."""
    text = str(value).strip()
    try:
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise pytest.UsageError(f"expected a fraction like 0.15 or 15%, got {value!r}") from None
    if not 0 <= number < 100:
        raise pytest.UsageError(f"expected a fraction between 0 and 1 (e.g. 0.15 or 15%), got {value!r}")
    return number


def parse_positive_int(value: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise pytest.UsageError(f"expected a positive whole number, got {value!r}") from None
    if number < 1:
        raise pytest.UsageError(f"expected a positive whole number, got {value!r}")
    return number


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


def parse_bool(value: str) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise pytest.UsageError(f"expected true or false, got {value!r}")


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


OPTIONS: tuple[Option, ...] = (
    # --- run selection and baselines
    Option("perf", "--agentmem-perf", "run the performance tests marked agentmem_perf "
           "(without it they are skipped)", default=False, is_flag=True),
    Option("update_baselines", "--update-baselines", "write this run's results as the new "
           "baselines of the perf tests that completed", default=False, is_flag=True),
    Option("baselines_dir", "--agentmem-baselines", "folder of the stored baselines "
           "(default: perf_baselines next to the rootdir)", ini="agentmem_baselines",
           env="AGENTMEM_BASELINES", metavar="DIR"),
    # --- services
    Option("services", "--agentmem-services", "how to get Postgres and Redis: auto (external URL "
           "if given, else Testcontainers if a Docker engine answers, else local servers), "
           "docker, local or external", default="auto", ini="agentmem_services",
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
           parse=parse_fraction, metavar="FRACTION"),
    Option("rounds", "--agentmem-rounds", "measured rounds of every perf.run unless the test says "
           "otherwise (agentmem_perf(rounds=...) or perf.run(rounds=...)); default 1, and a "
           "suspected regression is re-measured anyway", ini="agentmem_rounds",
           env="AGENTMEM_ROUNDS", parse=parse_positive_int, metavar="N"),
    # --- same-run A/B
    Option("compare", "--agentmem-compare", "same-run A/B: also measure git REF (a temporary "
           "worktree run by a second pytest process) and gate on the paired change of rounds "
           "alternated between REF and this checkout, instead of the stored baselines",
           ini="agentmem_compare", env="AGENTMEM_COMPARE", parse=parse_ref, metavar="REF"),
    Option("compare_tolerance", "--agentmem-compare-tolerance", "allowed regression in A/B mode "
           "(paired rounds cancel the machine's drift, so it is tighter than against stored "
           "baselines; per test: agentmem_perf(tolerance=...))", default=0.03,
           ini="agentmem_compare_tolerance", env="AGENTMEM_COMPARE_TOLERANCE",
           parse=parse_fraction, metavar="FRACTION"),
    Option("compare_pairs", "--agentmem-compare-pairs", "paired rounds of every perf.run in A/B "
           "mode (each side's measured time is split over them; a suspect gets as many again)",
           default=10, ini="agentmem_compare_pairs", env="AGENTMEM_COMPARE_PAIRS",
           parse=parse_pairs, metavar="N"),
    # --- components
    Option("embedding_model", "--agentmem-embedding-model", "fastembed model of the embedder "
           "fixture (default: the offline all-MiniLM-L6-v2 int8 model; other models need a "
           "reachable model hub)", ini="agentmem_embedding_model", env="AGENTMEM_EMBEDDING_MODEL",
           metavar="NAME"),
    # --- reports
    Option("report_path", "--agentmem-report", "write a JSON report of every measured result "
           "to PATH", ini="agentmem_report", metavar="PATH"),
    Option("html_path", "--agentmem-html", "write a self-contained HTML report with charts "
           "to PATH", ini="agentmem_html", metavar="PATH"),
)


def add_options(parser: pytest.Parser) -> None:
    """Declare every option of :data:`OPTIONS` in the ``agentmem`` group."""
    group = parser.getgroup("agentmem", "agentmem: performance gating of agent-memory systems")
    for opt in OPTIONS:
        if opt.is_flag:
            group.addoption(opt.flag, action="store_true", dest=opt.dest, default=None, help=opt.help)
        else:
            group.addoption(opt.flag, action="store", dest=opt.dest, default=None,
                            type=opt.parse, metavar=opt.metavar, help=opt.help)
        if opt.ini:
            parser.addini(opt.ini, help=opt.help, type="string", default=None)


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Settings:
    """The resolved settings of a run (command line > ini > environment > default)."""

    perf: bool = False
    update_baselines: bool = False
    baselines_dir: Path = Path("perf_baselines")
    services: str = "auto"
    postgres_url: str | None = None
    redis_url: str | None = None
    service_timeout: int = 60
    tolerance: float = 0.15
    rounds: int | None = None
    embedding_model: str | None = None
    compare: str | None = None
    compare_tolerance: float = 0.03
    compare_pairs: int = 10
    ab_role: str | None = None  # "base" in the base side's process of an A/B run
    report_path: Path | None = None
    html_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_PATH_FIELDS = {"baselines_dir", "report_path", "html_path"}


def _resolve(config: pytest.Config, opt: Option) -> Any:
    value = config.getoption(opt.dest, default=None)
    if value is not None and value is not False:
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
    if opt.parse is None:
        return raw
    try:
        return opt.parse(raw)
    except pytest.UsageError as exc:
        raise pytest.UsageError(f"{source}: {exc}") from None


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
    if os.environ.get(AB_ADDRESS_ENV):
        # the base side of an A/B run: the candidate's servers, no comparison of its own
        values.update(ab_role="base", compare=None, perf=True, update_baselines=False,
                      report_path=None, html_path=None)
    elif values.get("compare"):
        values["perf"] = True  # comparing means running the perf tests
    return Settings(**values, extra=extra)
