"""Our async tests run under pytest-asyncio without the user configuring it.

Two parts keep that promise:

* :func:`pytest_agentmem.plugin.pytest_pycollect_makeitem` marks our async tests
  (marked ``agentmem_perf`` or using our fixtures) with ``asyncio``, whatever
  ``asyncio_mode`` is.
* :func:`quiet_unset_loop_scope_warning` (this module) keeps pytest-asyncio's
  ``asyncio_default_fixture_loop_scope is unset`` deprecation warning from ending
  the run.

Where that warning comes from: every pytest-asyncio from 1.0 to 1.5 (the newest
checked) warns in its ``pytest_configure`` when the ini option
``asyncio_default_fixture_loop_scope`` is unset. Its ``pytest_configure`` runs
before pytest's own warning capture starts (pytest-asyncio is registered after
pytest's ``warnings`` plugin, so it is called first), so ``-W error`` on the pytest
command line does not see it, but ``python -W error``, ``PYTHONWARNINGS=error`` or
an in-process pytester run inside a suite with ``filterwarnings = error`` turn it
into an exception, and the run ends in INTERNALERROR before any test runs.

Why a filter and not an ini default: giving the option a default on the user's
behalf would change what *their* async fixtures do. Unset means "each async
fixture's loop has the fixture's own scope"; ``function`` (pytest-asyncio's
announced future default) would move a user's session-scoped async fixture into a
function-scoped loop and break it; ``fixture-scope`` (which means "unset" but exists
only from pytest-asyncio 1.5) is refused as invalid by 1.0 to 1.4, and would pin
today's behaviour after pytest-asyncio changes its default. The filter changes no
behaviour on any version: it ignores exactly that one warning (message, category
and module), and is a no-op once pytest-asyncio stops emitting it. Our own async
fixtures are function-scoped, so the option does not matter to them. A user who
wants the advice sets the option, as pytest-asyncio suggests.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable

import pytest

#: The start of pytest-asyncio's warning, the same from 1.0 to 1.5.
UNSET_LOOP_SCOPE_WARNING = 'The configuration option "asyncio_default_fixture_loop_scope" is unset'


def quiet_unset_loop_scope_warning() -> Callable[[], None]:
    """Ignore pytest-asyncio's unset-loop-scope warning; return a function that undoes it.

    Call it before pytest-asyncio's ``pytest_configure`` runs and undo it at the
    config's cleanup: the plugin does both from a ``tryfirst`` ``pytest_configure``.
    (Not from ``pytest_load_initial_conftests``: pytest's ``warnings`` plugin wraps
    that hook in ``catch_warnings``, which drops any filter added inside it.)
    """
    warnings.filterwarnings("ignore", message=re.escape(UNSET_LOOP_SCOPE_WARNING),
                            category=pytest.PytestDeprecationWarning, module=r"pytest_asyncio\b")
    entry = warnings.filters[0]

    def undo() -> None:
        filters = warnings.filters
        # Gone already when a catch_warnings block restored the list around us.
        if isinstance(filters, list) and entry in filters:
            filters.remove(entry)

    return undo
