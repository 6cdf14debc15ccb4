"""Child processes that a test interrupts with SIGINT, as a user's Ctrl-C would."""

from __future__ import annotations

import signal


def sigint_as_default() -> None:
    """``preexec_fn`` of such a child: SIGINT back to its default disposition.

    A shell starts a background job (``cmd &``) with SIGINT ignored, and children
    inherit an ignored signal; Python then installs no KeyboardInterrupt handler,
    and a SIGINT the test sends does nothing. Reset, the child behaves as it does
    under a terminal, wherever this test run was started from.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
