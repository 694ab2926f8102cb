"""The long-running commands run on uvloop where the lock installs it (Linux and macOS on CPython)."""

from __future__ import annotations

import asyncio
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
