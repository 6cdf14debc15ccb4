"""The code examples of the README and the docs, read from the markdown they live in.

An example is one or more fenced blocks, each announced by an HTML comment on the line
before it (invisible on GitHub and on the site)::

    <!-- example NAME file=PATH [services] [args="..."] [expect="passed=1"] [reason="..."] [output="..."] -->

Blocks of one page with the same NAME are the files of one small project (a conftest and
a test file, say). The block that carries ``expect`` says how to run it: ``args`` for the
inner pytest, ``services`` to point it at the outer run's Postgres and Redis, ``expect``
the outcomes (``skipped=all``: every test skipped, none run), ``reason`` a skip reason every
skipped test must give, ``output`` a line pattern the output must show.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Generated pages hold no examples.
GENERATED = {"reference.md"}

_COMMENT = re.compile(r"^<!--\s*example\s+(?P<body>.*?)\s*-->\s*$")
_FENCE = re.compile(r"^(?P<fence>`{3,})(?P<lang>[\w+-]*)")
_KEYS = {"file", "args", "expect", "reason", "output"}


@dataclass
class ExampleFile:
    path: str
    code: str


@dataclass
class Example:
    """One runnable example: its files and how to run them."""

    page: str
    name: str
    line: int
    files: list[ExampleFile] = field(default_factory=list)
    services: bool = False
    args: list[str] = field(default_factory=list)
    expect: dict[str, int | str] = field(default_factory=dict)
    reason: str | None = None
    output: str | None = None

    @property
    def id(self) -> str:
        return f"{self.page}::{self.name}"


@dataclass(frozen=True)
class Block:
    """A fenced code block of a page and the example comment before it (if any)."""

    page: str
    line: int
    lang: str
    code: str
    comment: str | None


def pages() -> list[Path]:
    """The README and every hand-written page of the docs."""
    docs = sorted(p for p in (ROOT / "docs").glob("**/*.md") if p.name not in GENERATED)
    return [ROOT / "README.md", *docs]


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of the page at ``path``."""
    page = str(path.relative_to(ROOT))
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i].lstrip())
        if not match:
            i += 1
            continue
        fence, start = match["fence"], i
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence), None)
        if end is None:
            raise ValueError(f"{page}:{start + 1}: code block never closed")
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        comment = _COMMENT.match(before.strip())
        indent = len(lines[i]) - len(lines[i].lstrip())
        code = "\n".join(line[indent:] for line in lines[start + 1:end]) + "\n"
        found.append(Block(page, start + 1, match["lang"], code, comment["body"] if comment else None))
        i = end + 1
    return found


def _parse_expect(text: str, where: str) -> dict[str, int | str]:
    out: dict[str, int | str] = {}
    for part in text.split():
        key, _, value = part.partition("=")
        if key not in ("passed", "failed", "skipped", "errors", "xfailed", "xpassed") or not value:
            raise ValueError(f"{where}: bad expect {part!r} (e.g. passed=1, skipped=all)")
        out[key] = value if value == "all" else int(value)
    return out


def examples() -> list[Example]:
    """Every example of every page, checked for a complete description."""
    found: dict[tuple[str, str], Example] = {}
    for path in pages():
        for block in blocks(path):
            if block.comment is None:
                continue
            where = f"{block.page}:{block.line}"
            words = shlex.split(block.comment)
            if not words or "=" in words[0]:
                raise ValueError(f"{where}: an example comment starts with its name")
            name, options = words[0], words[1:]
            example = found.setdefault((block.page, name), Example(block.page, name, block.line))
            attrs: dict[str, str] = {}
            for option in options:
                key, eq, value = option.partition("=")
                if key == "services" and not eq:
                    example.services = True
                elif key in _KEYS and eq:
                    attrs[key] = value
                else:
                    raise ValueError(f"{where}: unknown example option {option!r}")
            if "file" not in attrs:
                raise ValueError(f"{where}: example {name!r} needs file=PATH")
            example.files.append(ExampleFile(attrs["file"], block.code))
            if "expect" in attrs:
                if example.expect:
                    raise ValueError(f"{where}: example {name!r} has two expect= blocks")
                example.expect = _parse_expect(attrs["expect"], where)
                example.args = shlex.split(attrs.get("args", ""))
                example.reason = attrs.get("reason")
                example.output = attrs.get("output")
    for example in found.values():
        if not example.expect:
            raise ValueError(f"{example.page}:{example.line}: example {example.name!r} has no "
                             "block with expect=")
    return list(found.values())
