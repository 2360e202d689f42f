"""`swinv2 classify`'s progress bar is tqdm's, on a terminal and for 20 images or more only."""

from __future__ import annotations

import io

import pytest

from swinv2.cli import use


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("terminal", "total", "shown"), [(True, 25, True), (True, 19, False), (False, 25, False)])
def test_bar_only_on_a_terminal_for_20_images_or_more(
    monkeypatch: pytest.MonkeyPatch, terminal: bool, total: int, shown: bool
) -> None:
    err = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(use.sys, "stderr", err)
    with use._progress(total) as bar:
        for _ in range(total):
            bar.update(1)
    assert (f"{total}/{total}" in err.getvalue()) is shown, err.getvalue()
    assert bool(err.getvalue()) is shown
