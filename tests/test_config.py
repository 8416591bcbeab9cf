"""The one config loader: typed field readers shared by every table, strict about keys and types."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import fields
from datetime import timedelta
from pathlib import Path

import pytest

from tlsrpt_lmtp.alerts.config import AlertsConfig, load_alerts
from tlsrpt_lmtp.cli import check_config_file, main
from tlsrpt_lmtp.config import Config, ConfigError, PolicyConfig, load, load_policy
from tlsrpt_lmtp.configfields import from_json, readers, to_json
from tlsrpt_lmtp.core.dkim import DkimPolicy
from tlsrpt_lmtp.ingest.dkim.config import DkimConfig, load_dkim_config
from tlsrpt_lmtp.ingest.milter.config import MilterConfig, Mode, load_milter_config
from tlsrpt_lmtp.metrics.config import MetricsConfig, load_metrics_config

SECTIONS = (Config, PolicyConfig, DkimConfig, MilterConfig, AlertsConfig, MetricsConfig)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tlsrpt.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.__name__)
def test_every_field_of_every_section_has_a_reader(section: type) -> None:
    assert set(readers(section)) == {f.name for f in fields(section)}


@pytest.mark.parametrize(
    ("text", "load_table", "named"),
    [
        ("[lmtp]\nlisten = 24240\n", lambda p: load(p, {}), "[lmtp] listen: invalid value 24240"),
        ("[storage]\nmax_decompressed = '1M'\n", lambda p: load(p, {}), "[storage] max_dec"),
        ("[log]\nsyslog_max_size = 1.5\n", lambda p: load(p, {}), "[log] syslog_max_size"),
        ("[lmtp]\nrecipients = [1]\n", lambda p: load(p, {}), "[lmtp] recipients"),
        ("[policy]\nenforce_testing = 1\n", lambda p: load_policy(p, {}), "[policy] enforce_"),
        # a table of another command is checked as strictly (its types too)
        ("[policy]\ncache_size = 'x'\n", lambda p: load(p, {}), "[policy] cache_size"),
        ("[lmtp]\nidle_timeout = true\n", lambda p: load_policy(p, {}), "[lmtp] idle_timeout"),
        ("[metrics]\nlisten = 1\n", check_config_file, "[metrics] listen: invalid value 1"),
        ("[policy]\ncache = 5\n", check_config_file, "[policy] cache: invalid value 5"),
        ("[dkim]\ntimeout = '5s'\n", load_dkim_config, "[dkim] timeout: invalid value '5s'"),
        (
            "[milter]\ntimeout = 3.5\n",
            lambda p: load_milter_config(p, {}, Config(recipients=("a@b.example",))),
            "[milter] timeout: invalid value 3.5",
        ),
        ("[metrics]\nlisten = 9464\n", load_metrics_config, "[metrics] listen: invalid value"),
        ("[alerts]\nmail_to = 'a@b.example'\nqueue_size = '1'\n", load_alerts, "[alerts] queue"),
    ],
)
def test_a_wrong_type_names_the_file_the_table_and_the_key(
    tmp_path: Path, text: str, load_table: Callable[[Path], object], named: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_table(path)
    assert str(exc.value).startswith(f"{path}: ")
    assert named in str(exc.value)


@pytest.mark.parametrize("table", ["lmtp", "storage", "log", "policy", "dkim", "metrics"])
def test_an_unknown_key_names_the_file_and_the_table(tmp_path: Path, table: str) -> None:
    path = write(tmp_path, f"[{table}]\nlisten_on = 'x'\n")
    loader = {"dkim": load_dkim_config, "metrics": load_metrics_config}.get(
        table, lambda p: load(p, {})
    )
    with pytest.raises(ConfigError, match=rf"^{path}: unknown key 'listen_on' in \[{table}\]"):
        loader(path)


def test_the_defaults_without_a_file_are_the_dataclasses(tmp_path: Path) -> None:
    config = load(None, {})
    assert config == Config(data_dir=config.data_dir)
    policy = load_policy(None, {})
    assert policy == PolicyConfig(data_dir=policy.data_dir)
    assert load_dkim_config(None) == DkimConfig()
    assert load_alerts(None) == AlertsConfig()
    assert load_metrics_config(None) == MetricsConfig()


def test_flags_are_read_like_the_file() -> None:
    config = load(None, {"recipients": [" A@Example.ORG "], "data_dir": Path("~/x")})
    assert config.recipients == ("a@example.org",)
    assert config.data_dir == Path.home() / "x"
    assert load_dkim_config(None, policy="ENFORCE").policy is DkimPolicy.ENFORCE


def test_lists_are_normalised_per_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[policy]\nnameservers = " 127.0.0.1:53 "\ntlsrpt_maps = ["STS-TLSRPT"]\n'
        '[milter]\nrecipients = ["<Reports@Example.ORG>"]\nmode = "DISCARD"\n'
        '[alerts]\ndomains = ["Example.ORG."]\nmail_to = [" Ops@Example.org "]\n',
    )
    policy = load_policy(path, {})
    assert (policy.nameservers, policy.tlsrpt_maps) == (("127.0.0.1:53",), ("sts-tlsrpt",))
    milter = load_milter_config(path, {}, Config())
    assert (milter.recipients, milter.mode) == (("reports@example.org",), Mode.DISCARD)
    alerts = load_alerts(path)
    assert (alerts.domains, alerts.mail_to) == (("example.org",), ("Ops@Example.org",))


def test_every_section_goes_through_json_and_back_unchanged() -> None:
    given = [
        Config(recipients=("a@b.example",), data_dir=Path("/srv/x"), idle_timeout=7.5),
        PolicyConfig(nameservers=("127.0.0.1:53",), tlsrpt_attributes=True),
        DkimConfig(policy=DkimPolicy.ENFORCE, nameservers=("::1",), min_key_bits=2048),
        MilterConfig(mode=Mode.REJECT_INVALID, recipients=("r@x.example",)),
        AlertsConfig(
            repeat_window=timedelta(minutes=90),
            webhook_headers=(("Authorization", "Bearer x"),),
            domains=("*.example.org",),
        ),
        MetricsConfig(listen="127.0.0.1:9464", domains=("example.org",)),
    ]
    for section in given:
        text = json.dumps(to_json(section))
        assert from_json(type(section), json.loads(text)) == section


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[dkim]\npolcy = 'off'\n", "unknown key 'polcy' in [dkim]"),
        ("[milter]\nadd_header = 'yes'\n", "[milter] add_header: invalid value 'yes'"),
        ("[alerts]\nwebhok_url = 'http://x'\n", "unknown key 'webhok_url' in [alerts]"),
        ("[metrics]\nmax_label_values = '9'\n", "[metrics] max_label_values: invalid value"),
    ],
)
def test_every_command_refuses_a_typo_in_any_table(tmp_path: Path, text: str, named: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        check_config_file(path)  # before any command runs
    assert named in str(exc.value) and str(path) in str(exc.value)


def test_summary_says_so_and_stops(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[dkim]\npolcy = 'off'\n")
    assert main(["summary", "--config", str(path), "--data-dir", str(tmp_path)]) == 2
    assert "unknown key 'polcy' in [dkim]" in capsys.readouterr().err


def test_reading_the_whole_file_loads_no_verifier_and_no_resolver(tmp_path: Path) -> None:
    """`summary` checks [dkim] too, without importing dkimpy or dnspython for it."""
    path = write(tmp_path, "[dkim]\npolicy = 'enforce'\ntimeout = 2.0\n[alerts]\n[milter]\n")
    code = (
        "import sys; from pathlib import Path; import tlsrpt_lmtp.cli;"
        f" tlsrpt_lmtp.cli.check_config_file(Path({str(path)!r}));"
        " print(sorted({'dns', 'dkim'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
