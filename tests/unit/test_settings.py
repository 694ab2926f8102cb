"""One `Settings`: flags over `STEPFLOW_*` over defaults, typed, secrets masked, `stepflow config`."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import msgspec
import pytest

from stepflow import bootstrap
from stepflow.adapters.cli import build_parser, main
from stepflow.adapters.cli.config import config_command
from stepflow.adapters.cli.options import settings_of
from stepflow.adapters.persistence import describe, store_url
from stepflow.adapters.protocol import MAX_BODY_BYTES
from stepflow.settings import (
    SPECS,
    Settings,
    SettingsError,
    amqp_urls,
    data_dir,
    default_store,
    load_settings,
    quorum_queues,
    redact_text,
    resolve,
)

SECRET = "s3cret-pw"


@pytest.fixture(autouse=True)
def no_stepflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("STEPFLOW_")]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("AMQP_SERVER_CONFIGURATION", raising=False)  # the mcai SDK's, read as a fallback


def test_every_setting_has_one_spec_and_a_variable_named_after_it() -> None:
    assert [spec.name for spec in SPECS] == list(Settings.__struct_fields__)
    assert all(spec.env == "STEPFLOW_" + spec.name.upper() for spec in SPECS)
    assert not any(spec.env.startswith("STEPFLOW_FAULT") for spec in SPECS)  # the tests' crash points


def test_defaults_are_those_the_commands_had() -> None:
    s = Settings()
    assert (s.store, s.amqp_url, s.prefix) == (default_store(), "amqp://guest:guest@127.0.0.1:5672/", "")
    assert (s.batch_size, s.prefetch, s.outbox_poll, s.timeout_check) == (256, 512, 0.5, 1.0)
    assert (s.max_body, s.ready_max_lag, s.http_admin_group) == (MAX_BODY_BYTES, 10000, "admin")
    assert s.projections and not s.http_public_metrics and s.http is None and s.log_level is None
    assert s.amqp_server_configuration == "standalone" and not s.quorum_queues


def test_local_data_has_one_documented_place(tmp_path: Path) -> None:
    home = {"HOME": "/home/ann"}
    assert data_dir(home) == Path("/home/ann/.local/share/stepflow")
    assert data_dir({**home, "XDG_DATA_HOME": "/data"}) == Path("/data/stepflow")
    assert data_dir({**home, "XDG_DATA_HOME": "relative"}) == Path("/home/ann/.local/share/stepflow")  # XDG: ignored
    assert data_dir({**home, "XDG_DATA_HOME": "/data", "STEPFLOW_HOME": str(tmp_path)}) == tmp_path
    settings, sources = resolve({}, {**home, "STEPFLOW_HOME": str(tmp_path)})
    assert (settings.home, settings.store) == (str(tmp_path), f"sqlite:///{tmp_path}/stepflow.sqlite")
    assert (sources["home"], sources["store"]) == ("environment", "default")
    settings, sources = resolve({}, home)
    assert settings.store == "sqlite:////home/ann/.local/share/stepflow/stepflow.sqlite"
    assert sources["home"] == "default"
    assert resolve({"store": "memory://"}, home)[0].store == "memory://"


def test_a_flag_wins_over_the_environment_which_wins_over_the_default() -> None:
    env = {"STEPFLOW_STORE": "memory://", "STEPFLOW_BATCH_SIZE": "64", "STEPFLOW_PREFIX": "env_",
           "STEPFLOW_PROJECTIONS": "0", "STEPFLOW_HTTP_PUBLIC_METRICS": "yes", "STEPFLOW_PREFETCH": ""}
    settings, sources = resolve({"prefix": "flag_", "batch_size": None}, env)
    assert (settings.prefix, settings.store, settings.batch_size, settings.prefetch) == ("flag_", "memory://", 64, 512)
    assert settings.projections is False and settings.http_public_metrics is True
    assert (sources["prefix"], sources["store"], sources["prefetch"]) == ("flag", "environment", "default")


def test_lists_come_from_separated_variables_and_definitions_add_up() -> None:
    env = {"STEPFLOW_DEFINITIONS": f"a.toml{os.pathsep}defs/",
           "STEPFLOW_NOTIFICATION_HOSTS": "Hooks.Example, 127.0.0.1,"}
    settings = load_settings({"definitions": ["b.toml"]}, env)
    assert settings.definitions == ("a.toml", "defs/", "b.toml")
    assert settings.notification_hosts == ("hooks.example", "127.0.0.1")


@pytest.mark.parametrize(("flags", "env", "message"), [
    ({}, {"STEPFLOW_BATCH_SIZE": "many"}, "STEPFLOW_BATCH_SIZE='many': Expected `int`, got `str`"),
    ({"batch_size": "0"}, {}, "--batch-size='0': Expected `int` >= 1"),
    ({}, {"STEPFLOW_OUTBOX_POLL": "0"}, "STEPFLOW_OUTBOX_POLL='0': Expected `float` > 0.0"),
    ({}, {"STEPFLOW_LOG_FORMAT": "xml"}, "STEPFLOW_LOG_FORMAT='xml': Invalid enum value 'xml'"),
    ({}, {"STEPFLOW_HTTP_PUBLIC_METRICS": "maybe"}, "STEPFLOW_HTTP_PUBLIC_METRICS: expected one of"),
    ({"amqp_url": "nonsense"}, {}, "--amqp-url='nonsense': not a RabbitMQ URL (use amqp://"),
    ({}, {"STEPFLOW_AMQP_URL": "http://u:pw@rabbit/"}, "STEPFLOW_AMQP_URL='http://u:***@rabbit/': not a RabbitMQ URL"),
    ({"amqp_url": "amqp://a/, http://u:pw@b/"}, {},
     "--amqp-url='amqp://a/, http://u:***@b/': URL 2 of 2 'http://u:***@b/': not a RabbitMQ URL"),
    ({"amqp_url": "amqp://u:pw@a, b/"}, {}, "--amqp-url='amqp://u:***@a, b/': URL 1 of 2"),  # b has no scheme
    ({"amqp_url": "amqp://u:pw@rabbit:56x2/"}, {}, "--amqp-url='amqp://u:***@rabbit:56x2/': not a port number"),
    ({}, {"AMQP_SERVER_CONFIGURATION": "quorum"},  # the SDK would silently stay classic
     "AMQP_SERVER_CONFIGURATION='quorum': Invalid enum value 'quorum' (one of: standalone, cluster)"),
    ({}, {"STEPFLOW_AMQP_SERVER_CONFIGURATION": "Cluster", "AMQP_SERVER_CONFIGURATION": "cluster"},
     "STEPFLOW_AMQP_SERVER_CONFIGURATION='Cluster': Invalid enum value 'Cluster' (one of: standalone, cluster)"),
])
def test_a_bad_value_names_its_flag_or_variable(flags: dict[str, str], env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(flags, env)
    assert str(raised.value).startswith(message), str(raised.value)


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["--store", "mysql://u:pw@db/x"], {}, "--store='mysql://u:***@db/x': unsupported store URL scheme 'mysql'"),
    ([], {"STEPFLOW_STORE": "stepflow.sqlite"}, "STEPFLOW_STORE='stepflow.sqlite': not a store URL (use sqlite:///"),
    (["--store", "postgresql://db:port/x"], {}, "--store='postgresql://db:port/x': not a port number"),
])
def test_a_store_url_no_store_could_have_is_refused_by_every_command(
        argv: list[str], env: dict[str, str], message: str) -> None:
    for command in (["workflows"], ["run", "x.toml"], ["serve"], ["config"]):
        args = build_parser().parse_args([*command, *argv])
        with pytest.raises(SettingsError) as raised:
            settings_of(args, env)
        assert str(raised.value).startswith(message), str(raised.value)


def test_secrets_are_masked_when_printed() -> None:
    settings = load_settings({"store": f"postgresql://app:{SECRET}@db/x"},
                             {"STEPFLOW_AMQP_URL": f"amqp://app:{SECRET}@rabbit/", "STEPFLOW_HTTP_TOKENS": "tok-1=al:ops"})
    for shown in (repr(settings), str(settings), msgspec.json.encode(settings.redacted()).decode()):
        assert SECRET not in shown and "tok-1" not in shown, shown
        assert "app:***@db" in shown and "app:***@rabbit" in shown
    assert settings.amqp_url.endswith(f"{SECRET}@rabbit/")  # the real value is there for the broker
    assert describe(settings.store) == "postgresql://app:***@db/x"


def test_the_library_defaults_read_the_same_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STEPFLOW_STORE", f"sqlite:///{tmp_path}/x.sqlite")
    assert store_url() == f"sqlite:///{tmp_path}/x.sqlite" and store_url("memory://") == "memory://"


def test_commands_read_their_flags_and_leave_their_own_options_alone() -> None:
    parser = build_parser()
    args = parser.parse_args(["serve", "--prefix", "p_", "--no-projections", "--definitions", "a.toml",
                              "--batch-size", "32"])
    settings = settings_of(args, {"STEPFLOW_PREFIX": "env_"})
    assert (settings.prefix, settings.projections, settings.definitions, settings.batch_size) == (
        "p_", False, ("a.toml",), 32)
    # `project --batch-size` is the projection runner's batch, not the backend's setting
    args = parser.parse_args(["project", "--batch-size", "7", "--once"])
    assert settings_of(args, {}).batch_size == 256
    args = parser.parse_args(["audit", "--actor", "bob"])  # a filter, not who issues commands
    assert settings_of(args, {}).actor is None


def test_config_prints_a_table_and_json(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPFLOW_AMQP_URL", f"amqp://u:{SECRET}@rabbit/")
    monkeypatch.setenv("STEPFLOW_HTTP_TOKENS", "tok-1=al:ops")
    assert main(["config", "--prefix", "p_"]) == 0
    table = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    assert rows["prefix"][1:] == ["p_", "flag", "STEPFLOW_PREFIX", "--prefix"]
    assert rows["amqp_url"][1:3] == ["amqp://u:***@rabbit/", "environment"]
    assert rows["batch_size"][1:3] == ["256", "default"]
    assert rows["http_tokens"][1:] == ["***", "environment", "STEPFLOW_HTTP_TOKENS", "-"]
    assert SECRET not in table and "tok-1" not in table
    assert len(rows) == len(SPECS)
    assert main(["config", "--json", "--batch-size", "8"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert list(shown) == [spec.name for spec in SPECS]
    assert (shown["batch_size"], shown["http_tokens"], shown["amqp_url"]) == (8, "***", "amqp://u:***@rabbit/")


def test_a_bad_setting_is_exit_2_for_any_command(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STEPFLOW_MAX_BODY", "1MB")
    assert main(["config"]) == 2
    assert "STEPFLOW_MAX_BODY='1MB': Expected `int`" in capsys.readouterr().err


def test_config_command_writes_where_it_is_told() -> None:
    args = build_parser().parse_args(["config", "--json", "--store", "memory://"])
    out = io.StringIO()
    assert config_command(args, out) == 0
    assert json.loads(out.getvalue())["store"] == "memory://"


def test_cluster_mode_is_read_from_ours_then_from_the_mcai_sdks_variable() -> None:
    """One variable set for a deployment keeps stepflow and mcai workers declaring alike."""
    sdk, ours = "AMQP_SERVER_CONFIGURATION", "STEPFLOW_AMQP_SERVER_CONFIGURATION"
    cases = [({}, "standalone", "default"), ({sdk: "cluster"}, "cluster", "environment"),
             ({sdk: "cluster", ours: "standalone"}, "standalone", "environment"),
             ({sdk: "standalone", ours: "cluster"}, "cluster", "environment"),
             ({sdk: "cluster", ours: ""}, "cluster", "environment")]  # empty: unset, as for every setting
    for env, mode, source in cases:
        settings, sources = resolve({}, env)
        assert (settings.amqp_server_configuration, sources["amqp_server_configuration"]) == (mode, source), env
        assert settings.quorum_queues == quorum_queues(env) == (mode == "cluster")
        # ... and it reaches every broker the process builds (the backend's and its workers').
        brokers = bootstrap.brokers(settings, embedded=False)
        assert brokers.backend().topology.quorum == settings.quorum_queues
    with pytest.raises(SettingsError, match="AMQP_SERVER_CONFIGURATION='quorum'"):
        quorum_queues({sdk: "quorum"})


def test_amqp_url_may_name_a_clusters_nodes_each_checked_and_masked() -> None:
    single = load_settings({}, {"STEPFLOW_AMQP_URL": f"amqp://u:{SECRET}@rabbit:5672/vh"})
    assert single.amqp_url == f"amqp://u:{SECRET}@rabbit:5672/vh"  # one URL: as it was, untouched
    assert amqp_urls(single.amqp_url) == (single.amqp_url,)
    several = f" amqp://u:{SECRET}@r1/vh, amqps://u:{SECRET}1@r2:5671/vh\n amqp://u:p,w@r3/vh,"
    settings = load_settings({"amqp_url": several}, {})
    assert amqp_urls(settings.amqp_url) == (f"amqp://u:{SECRET}@r1/vh", f"amqps://u:{SECRET}1@r2:5671/vh",
                                            "amqp://u:p,w@r3/vh")  # a comma in a password stays there
    shown = repr(settings)
    assert SECRET not in shown and "p,w" not in shown and shown.count("u:***@r") == 3, shown
    error = f"cannot connect to amqps://u:{SECRET}1@r2:5671/vh or r3 (password p,w)"
    assert redact_text(error, settings.amqp_url) == "cannot connect to amqps://u:***@r2:5671/vh or r3 (password ***)"


def test_config_shows_both_variables_of_cluster_mode(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMQP_SERVER_CONFIGURATION", "cluster")
    assert main(["config"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["amqp_server_configuration"][1:] == [
        "cluster", "environment", "STEPFLOW_AMQP_SERVER_CONFIGURATION,AMQP_SERVER_CONFIGURATION", "-"]
