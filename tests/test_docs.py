"""The README and the docs site: their examples run, their reference is generated, they name
only options that exist.

Every ``python`` block of README.md and docs/*.md is an example (see tests/doc_examples.py):
it is written into a pytester project and run by an inner pytest, and its outcomes are
asserted, so an example that stops working fails here. Examples that need the perf services
for long run without ``--agentmem-perf`` and must be collected and skipped with the reason;
the short ones (``services`` + ``--agentmem-perf``) run for real on the outer run's servers, each
in a pytest process of its own.
"""

from __future__ import annotations

import re

import pytest
from doc_examples import ROOT, Example, blocks, examples, pages

from pytest_agentmem import reference
from pytest_agentmem.config import OPTIONS

EXAMPLES = examples()


def _unique(found: list[Example]) -> list[Example]:
    """The examples, those shown on several pages (the first test: README and getting started) once."""
    seen: dict[tuple[object, ...], Example] = {}
    for example in found:
        key = (tuple((f.path, f.code) for f in example.files), tuple(example.args),
               tuple(sorted(example.expect.items())), example.services, example.reason, example.output)
        if key in seen:
            seen[key].name += f"+{example.page}::{example.name}"
        else:
            seen[key] = example
    return list(seen.values())
README_MAX_LINES = 200


def test_every_python_block_is_a_tested_example() -> None:
    untested = [f"{b.page}:{b.line}" for path in pages() for b in blocks(path)
                if b.lang in ("python", "py", "python3") and b.comment is None]
    assert not untested, (
        "python blocks without an example comment (add `<!-- example NAME file=test_x.py "
        f"expect=\"passed=1\" -->` on the line before, see tests/doc_examples.py): {untested}")


def test_the_pages_hold_examples() -> None:
    pages_with_examples = {e.page for e in EXAMPLES}
    assert {"README.md", "docs/getting-started.md", "docs/writing-tests.md"} <= pages_with_examples
    assert any("--agentmem-perf" in e.args for e in EXAMPLES)  # some run for real, not just skip


@pytest.mark.parametrize("example", [
    pytest.param(e, id=e.id, marks=[pytest.mark.slow] if e.services else []) for e in _unique(EXAMPLES)])
def test_example(example: Example, pytester: pytest.Pytester, request: pytest.FixtureRequest) -> None:
    for file in example.files:
        path = pytester.path / file.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(file.code, encoding="utf-8")
    args = [*example.args, "-p", "no:cacheprovider", "-rs"]
    if example.services:
        # its own process: a second in-process run that connects to the servers again can crash
        # asyncpg's SSL negotiation in this process (see tests/test_users_scenario.py)
        args += request.getfixturevalue("service_urls")
        result = pytester.runpytest_subprocess(*args, timeout=300)
    else:
        result = pytester.runpytest(*args)
    outcomes = result.parseoutcomes()
    expect = dict(example.expect)
    if expect.get("skipped") == "all":
        assert outcomes.get("skipped", 0) >= 1, result.stdout.str()
        expect["skipped"] = outcomes["skipped"]
    result.assert_outcomes(**{k: int(v) for k, v in expect.items()})
    if example.reason:
        skips = [line for line in result.stdout.lines if line.startswith("SKIPPED")]
        assert skips and all(example.reason in line for line in skips), skips
    if example.output:  # usage errors go to stderr
        pytest.LineMatcher(result.outlines + result.errlines).fnmatch_lines([example.output])


def test_the_reference_page_is_generated_and_current() -> None:
    page = ROOT / reference.DEFAULT_PATH
    assert page.read_text(encoding="utf-8") == reference.render(), (
        f"{reference.DEFAULT_PATH} is stale: run `{reference.COMMAND}` and commit it")


def test_the_reference_lists_every_declared_setting() -> None:
    from pytest_agentmem.config import ENVIRONMENT
    from pytest_agentmem.marker import KEYWORDS

    text = reference.render()
    for opt in OPTIONS:
        for name in (*opt.flags, opt.ini, opt.env):
            assert name is None or f"`{name}" in text, name
    for var in ENVIRONMENT:
        assert f"`{var.name}`" in text
    for keyword in KEYWORDS:
        assert f"`{keyword.name}`" in text


def test_the_reference_command_checks_and_writes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    page = tmp_path / "reference.md"
    assert reference.main([str(page), "--check"]) == 1  # missing
    assert reference.main([str(page)]) == 0
    assert page.read_text(encoding="utf-8") == reference.render()
    assert reference.main([str(page), "--check"]) == 0
    page.write_text(page.read_text(encoding="utf-8") + "edited by hand\n", encoding="utf-8")
    assert reference.main([str(page), "--check"]) == 1


def test_the_pages_name_only_options_that_exist() -> None:
    known = {flag for opt in OPTIONS for flag in opt.flags}
    pattern = re.compile(r"--(?:agentmem-[a-z][a-z-]*[a-z]|update-baselines)")
    unknown = {f"{path.relative_to(ROOT)}: {flag}" for path in pages()
               for flag in pattern.findall(path.read_text(encoding="utf-8")) if flag not in known}
    assert not unknown, f"options named in the docs that the plugin does not declare: {sorted(unknown)}"


def test_the_readme_stays_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines: keep it a landing page (at most {README_MAX_LINES}); "
        "details belong in docs/")


def test_the_readme_keeps_the_two_set_up_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert ('pip install -e ".[dev]" && pytest tests/perf --agentmem-perf '
            "--agentmem-report=agentmem-report.json --agentmem-html=agentmem-report.html") in readme
    assert 'pip install -e ".[dev]" && pytest\n' in readme


def test_the_readme_links_reach_pages_and_headings() -> None:
    """mkdocs checks the site's links (`mkdocs build --strict`); the README is not part of the
    site, so its links into docs/ are checked here: the page exists, the heading too."""
    toc = pytest.importorskip("markdown.extensions.toc")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(((?!https?:)[^)#\s]+)(?:#([^)\s]+))?\)", readme)
    assert links
    broken = []
    for target, anchor in links:
        path = ROOT / target
        if not path.exists():
            broken.append(target)
        elif anchor:
            headings = re.findall(r"^#+\s+(.*?)\s*$", path.read_text(encoding="utf-8"), flags=re.M)
            if anchor not in {toc.slugify(h, "-") for h in headings}:
                broken.append(f"{target}#{anchor}")
    assert not broken, f"README links to missing pages or headings: {broken}"


def test_every_option_pytest_shows_is_in_the_reference(pytester: pytest.Pytester) -> None:
    """An option added beside OPTIONS (a plain ``addoption``) would be missing from the generated
    reference: what ``pytest --help`` shows of the plugin must all be declared in OPTIONS."""
    shown = set(re.findall(r"--agentmem-[a-z][a-z-]*[a-z]", pytester.runpytest("--help").stdout.str()))
    declared = {flag for opt in OPTIONS for flag in opt.flags}
    assert shown and shown <= declared, sorted(shown - declared)
