"""Helpers shared by the bridge and browser tests."""

from __future__ import annotations

from collections.abc import Callable

from poolwarden.errors import BrowserNotFound


def installed(find: Callable[[], str]) -> bool:
    """Whether ``find`` (find_chromium, find_firefox) finds its browser on this machine."""
    try:
        find()
    except BrowserNotFound:
        return False
    return True
