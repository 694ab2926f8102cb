"""Several RabbitMQ nodes in one `amqp_url` setting: how the setting is split, how it is
shown, and in which order a robust connection tries the nodes after a loss."""

from __future__ import annotations

import asyncio

import pytest

from stepflow.adapters.amqp.connection import ClusterConnection, mask_url, urls

A, B, C = ("amqp://u:secret@10.0.0.1:5672/v", "amqp://u:secret@10.0.0.2:5673/v", "amqps://u:secret@h3/v")


@pytest.mark.parametrize("setting", [
    f"{A},{B},{C}", f"{A}, {B} ,{C}", f"{A} {B}\n{C}", f" {A},,{B},\t{C}, ",
])
def test_the_setting_names_its_nodes_separated_by_commas_or_whitespace(setting: str) -> None:
    assert urls(setting) == [A, B, C]


def test_one_url_is_one_node() -> None:
    assert urls("amqp://guest:guest@127.0.0.1:5672/") == ["amqp://guest:guest@127.0.0.1:5672/"]


def test_a_comma_splits_only_before_the_next_urls_scheme() -> None:
    assert urls("amqp://u:a,b@h1/,amqp://u:a%2Cb@h2/") == ["amqp://u:a,b@h1/", "amqp://u:a%2Cb@h2/"]
    assert mask_url("amqp://u:a,b@h1/") == "amqp://u:***@h1/"


@pytest.mark.parametrize("setting", ["", " , ", "\n"])
def test_no_url_is_an_error(setting: str) -> None:
    with pytest.raises(ValueError, match="no RabbitMQ URL"):
        urls(setting)


def test_every_nodes_password_is_masked() -> None:
    masked = mask_url(f"{A},{B}")
    assert "secret" not in masked
    assert masked == "amqp://u:***@10.0.0.1:5672/v,amqp://u:***@10.0.0.2:5673/v"
    assert mask_url(A) == "amqp://u:***@10.0.0.1:5672/v"


def _closed(error: BaseException) -> asyncio.Future[None]:
    closing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    closing.set_exception(error)
    return closing


async def test_each_close_sends_the_next_attempt_to_the_next_node_round_robin() -> None:
    connection = ClusterConnection([A, B, C], start=1, client_properties={"connection_name": "t"})
    seen = [connection.url.host]
    for _ in range(4):
        await connection._on_connection_close(_closed(ConnectionError("node gone")))
        seen.append(connection.url.host)
    assert seen == ["10.0.0.2", "h3", "10.0.0.1", "10.0.0.2", "h3"]  # B, C, A, B, C
    assert str(connection.url) == C
    await connection.close()


async def test_a_closed_connection_stays_where_it_is() -> None:
    connection = ClusterConnection([A, B], client_properties={"connection_name": "t"})
    await connection.close()
    await connection._on_connection_close(_closed(ConnectionError("closed by us")))
    assert connection.url.port == 5672
