"""The real app on the fake source in a real terminal, for tests/tui's tmux
tests: `python -m tests.tui.run_fake OWNERS.json` (run from the checkout).

OWNERS.json: a list of FakeOwner fields (tests/tui/fakesource.py); the flows
get those owners with their names exactly as given (uncleaned).
"""

from __future__ import annotations

import json
import sys

from flowtop.tui import FlowtopApp
from tests.tui.conftest import no_dns
from tests.tui.fakedns import resolver_of
from tests.tui.fakesource import FakeOwner, FakeSource


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as f:
        owners = [FakeOwner(**o) for o in json.load(f)]
    src = FakeSource(flows=30, frames=3, owners=owners)
    # The flow view, which the tmux tests read (their owner columns' widths).
    app = FlowtopApp(src, resolve=False, resolver=resolver_of(no_dns), group="flow")  # type: ignore[arg-type]
    app.run()
    src.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
