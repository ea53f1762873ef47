"""Browser flags through PoolConfig: passed to every browser the pool launches, the pool's own refused."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from poolwarden.browser.launcher import BrowserProcess, find_chromium
from poolwarden.errors import ConfigurationError
from poolwarden.pool import PoolConfig, ResourcePool
from poolwarden.workers.chromium import ChromiumWorker
from poolwarden.workers.firefox import FirefoxWorker
from tests.bridge_helpers import installed

FLAG = "--enable-features=WebMachineLearningNeuralNetwork"


def test_browser_args_reach_every_browser_handle(tmp_path: Path) -> None:
    """Each Chromium and Firefox handle the pool makes carries PoolConfig.browser_args."""
    config = PoolConfig(workers=("chromium", "firefox"), db=tmp_path / "p.db", browser_args=(FLAG,))
    pool = ResourcePool(config)
    chromium = pool._new_handle("chromium", "conn-0")
    firefox = pool._new_handle("firefox", "conn-1")
    assert isinstance(chromium, ChromiumWorker)
    assert isinstance(firefox, FirefoxWorker)
    assert chromium.extra_args == firefox.extra_args == (FLAG,)


@pytest.mark.parametrize(
    "arg",
    ["--remote-debugging-port=9222", "--user-data-dir=/tmp/x", "-profile", "not-a-flag", "--marionette"],
)
def test_the_pools_own_flags_are_refused(tmp_path: Path, arg: str) -> None:
    """Flags that would hand the browser's control channel or profile to someone else are refused."""
    with pytest.raises(ConfigurationError):
        PoolConfig(db=tmp_path / "p.db", browser_args=(arg,))


@pytest.mark.browser
@pytest.mark.skipif(not installed(find_chromium), reason="Chromium is not installed")
async def test_a_flag_is_on_the_chromium_command_line(tmp_path: Path) -> None:
    """A pool's Chromium runs with the flag given in PoolConfig."""
    config = PoolConfig(connections=1, workers=("chromium",), db=tmp_path / "p.db", browser_args=(FLAG,))
    async with ResourcePool(config) as pool:
        process = pool.members["conn-0"].handle.process  # type: ignore[attr-defined]
        assert isinstance(process, BrowserProcess)
        assert FLAG in psutil.Process(process.pid).cmdline()
