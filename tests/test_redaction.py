"""Passwords never reach output (issue 9, item 10).

Units of :mod:`pytest_agentmem.redact` (passwords holding ``@``, ``sslpassword=``,
quoted values, registered secrets), the repr of a ``RunningService``, and end to
end (pytester): a failing test whose fixture value and message hold a DSN, and a
perf test whose operations fail quoting a DSN, leave no password in the
terminal, the JSON and HTML reports or the step summary.
"""

from __future__ import annotations

import pytest

from pytest_agentmem.redact import redact_text, redact_url, redact_value, register_secret
from pytest_agentmem.services.base import RunningService


@pytest.mark.parametrize(("text", "expected"), [
    ("postgresql://app:p@ss@db:5432/x", "postgresql://app:***@db:5432/x"),
    ("connect to redis://:a:b@c@127.0.0.1:6379/0 failed", "connect to redis://:***@127.0.0.1:6379/0 failed"),
    ("'postgresql://u:p@ss@h/d'", "'postgresql://u:***@h/d'"),
    ("postgresql://u:pw@h/db?options=a@b", "postgresql://u:***@h/db?options=a@b"),
    ("host=h sslpassword=abc user=x", "host=h sslpassword=*** user=x"),
    ("host=h password='a b\\' c' user=x", "host=h password='***' user=x"),
    ('host=h password="quoted secret" port=5', 'host=h password="***" port=5'),
    ("{'password': 'zz top', 'user': 'u'}", "{'password': '***', 'user': 'u'}"),
    ('{"password": "zz top"}', '{"password": "***"}'),
    ("PGPASSWORD=xyz pg_dump", "PGPASSWORD=*** pg_dump"),
    ("requirepass hunter2", "requirepass ***"),
    ('password authentication failed for user "postgres"', 'password authentication failed for user "postgres"'),
])
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_redact_url_with_an_at_sign_in_the_password() -> None:
    assert redact_url("postgresql://app:p@ss@db:5432/x") == "postgresql://app:***@db:5432/x"


def test_registered_secrets_are_masked_anywhere() -> None:
    register_secret("Zq8-registered-Secret")
    assert redact_text("the server said: Zq8-registered-Secret!") == "the server said: ***!"
    assert redact_value({"a": ["x Zq8-registered-Secret"], "n": 1}) == {"a": ["x ***"], "n": 1}


def test_settings_repr_holds_no_password() -> None:
    from pytest_agentmem.config import Settings

    settings = Settings(postgres_url="postgresql://app:pg-Secret-1@db.example:5432/x",
                        redis_url="redis://:rd%40Secret-2@cache.example:6379/0",
                        extra={"history": "postgresql://h:hist-Secret-3@db/h",
                               "env": {"password": "kv-Secret-4"}})
    shown = repr(settings)
    for secret in ("pg-Secret-1", "rd%40Secret-2", "rd@Secret-2", "hist-Secret-3", "kv-Secret-4"):
        assert secret not in shown, shown
    assert "db.example:5432" in shown and "cache.example" in shown and "tolerance=0.15" in shown
    assert str(settings) == shown


def test_a_running_service_repr_holds_no_password() -> None:
    service = RunningService("postgres", "postgresql://postgres:Repr-S3cret@127.0.0.1:5/postgres",
                             "local", "18.6", 0.1)
    assert "Repr-S3cret" not in repr(service) and "Repr-S3cret" not in str(service)
    assert "postgresql://postgres:***@127.0.0.1:5/postgres" in repr(service)
    # ... and the service's password is masked in free text from now on.
    assert redact_text("FATAL: Repr-S3cret") == "FATAL: ***"


LEAKY_TESTS = '''
    import pytest

    DSN = "postgresql://app:Sup3r@Secret-Pw@db.example:5432/x"

    @pytest.fixture
    def dsn():
        return DSN

    def test_fixture_value_in_traceback(dsn):
        conninfo = {"password": "Other-Secret-Pw", "dsn": dsn}
        assert dsn.startswith("mysql"), f"cannot reach {dsn}"

    def test_skip_message():
        pytest.skip("no server at " + DSN)

    def test_captured_output(dsn):
        print("connecting to", dsn, "sslpassword=Third-Secret-Pw")
        raise ConnectionError("lost " + dsn)

    async def op(i):
        raise ConnectionError(f"lost {DSN} (op {i})")

    @pytest.mark.agentmem_perf(max_error_rate=0.0)
    async def test_errors_quote_the_dsn(perf):
        await perf.run(op, concurrency=1, total=20, warmup=0, name="leaky")
'''


def test_no_password_in_terminal_json_html_or_step_summary(pytester: pytest.Pytester,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    summary = pytester.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    pytester.makepyfile(test_leaky=LEAKY_TESTS)
    result = pytester.runpytest("--agentmem-perf", "-p", "no:cacheprovider", "-rA", "-l",
                                "--agentmem-report=out/report.json", "--agentmem-html=out/report.html",
                                "--junitxml=out/junit.xml")
    result.assert_outcomes(failed=3, skipped=1)
    outputs = {
        "terminal": result.stdout.str() + result.stderr.str(),
        "json": (pytester.path / "out" / "report.json").read_text(),
        "html": (pytester.path / "out" / "report.html").read_text(),
        "junit": (pytester.path / "out" / "junit.xml").read_text(),
        "step summary": summary.read_text(),
    }
    for where, text in outputs.items():
        for secret in ("Secret-Pw", "Sup3r"):
            assert secret not in text, f"{secret} leaked into the {where}"
    # What is left still says what happened.
    assert "postgresql://app:***@db.example:5432/x" in outputs["terminal"]
    assert "cannot reach postgresql://app:***@db.example" in outputs["terminal"]
    assert "ConnectionError" in outputs["json"] and "lost postgresql://app:***@db.example" in outputs["json"]
    result.stdout.fnmatch_lines(["*FAILED*test_fixture_value_in_traceback - AssertionError*"])
