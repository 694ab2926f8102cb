"""The long-running commands run on uvloop where the lock installs it (Linux and macOS on CPython)."""

from __future__ import annotations

import asyncio
import gc
import platform
import sys

import pytest

from stepflow.adapters.cli import loop


async def _running_loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_the_commands_loop_is_uvloop_where_it_is_a_dependency() -> None:
    expected = "uvloop" if sys.platform != "win32" and platform.python_implementation() == "CPython" else "asyncio"
    assert loop.run(_running_loop_module()).split(".")[0] == expected


def test_it_returns_what_the_coroutine_returns_and_raises_what_it_raises() -> None:
    async def fails() -> None:
        raise ValueError("from the coroutine")

    assert loop.run(asyncio.sleep(0, result=7)) == 7
    with pytest.raises(ValueError, match="from the coroutine"):
        loop.run(fails())


async def _thresholds() -> tuple[int, ...]:
    return gc.get_threshold()


def test_the_commands_collect_cycles_less_often_and_give_the_settings_back() -> None:
    """A full collection stops every step under way (45-75 ms at half load with Python's
    defaults); an embedding caller's own settings come back when the loop ends."""
    before = gc.get_threshold()
    assert loop.run(_thresholds()) == loop.GC_THRESHOLDS
    assert loop.GC_THRESHOLDS[0] > before[0]
    assert gc.get_threshold() == before
