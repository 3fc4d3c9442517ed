"""Single doctor checks that need no service: secret strength, clock skew, the report's worst and exit code."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from gatehouse.cli.doctor_checks import Check, DoctorReport, Status, run_doctor
from gatehouse.cli.doctor_checks.clock import date_skew, judge_skew, upstream_clock
from gatehouse.cli.doctor_checks.configuration import configuration_checks, weakness
from gatehouse.cli.doctor_checks.tls import certificate_checks
from gatehouse.settings import Settings


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("change-me", "placeholder"),
        ("a" * 64, "one character repeated"),
        ("short-but-random", "characters (at least 32)"),
        ("abababababababababababababababababab", "little variety"),
        ("test-secret-" + "x" * 40, "little variety"),
    ],
)
def test_weak_secrets_are_named_with_the_reason(value: str, why: str) -> None:
    problem = weakness(value, 32)
    assert problem is not None and why in problem


@pytest.mark.parametrize("value", [secrets.token_urlsafe(48), secrets.token_hex(32), secrets.token_urlsafe(24)])
def test_random_secrets_pass(value: str) -> None:
    assert weakness(value, 32) is None


def test_a_weak_secret_fails_in_prod_and_warns_in_dev() -> None:
    for environment, status in (("prod", Status.FAIL), ("dev", Status.WARN)):
        settings = Settings(
            _env_file=None, environment=environment, job_token="1" * 20, jwt_secret=secrets.token_hex(32)
        )
        check = next(c for c in configuration_checks(settings) if c.name == "secret.job_token")
        assert check.status is status and "JOB_TOKEN" in check.fix
        assert "1" * 20 not in check.summary + check.fix  # the finding names the setting, never its value


def test_date_header_skew_allows_for_its_whole_seconds() -> None:
    assert date_skew(1000.0, 1000.7) == 0.0  # within the header's second: no skew
    assert date_skew(1000.0, 1002.5) == pytest.approx(-1.5)  # we are ahead
    assert date_skew(1010.0, 1000.0) == pytest.approx(10.0)  # they are ahead


def test_skew_thresholds() -> None:
    assert judge_skew("c", "x", 1.0).status is Status.PASS
    assert judge_skew("c", "x", -5.0).status is Status.WARN
    failed = judge_skew("c", "x", 45.0)
    assert failed.status is Status.FAIL and "behind x" in failed.summary and "NTP" in failed.fix
    assert upstream_clock([]).status is Status.SKIP
    assert upstream_clock([("a", 1000.0, 1000.2), ("b", 1000.0, 1100.0)]).summary.startswith(
        "this machine's clock is 99.0 s ahead of upstream b"
    )


def test_worst_and_exit_code() -> None:
    def report(*statuses: Status) -> DoctorReport:
        return DoctorReport(checks=[Check(f"c{i}", s, "x") for i, s in enumerate(statuses)])

    assert (report().worst, report().exit_code) == (Status.SKIP, 0)
    assert (report(Status.SKIP, Status.SKIP).exit_code, report(Status.PASS, Status.SKIP).exit_code) == (0, 0)
    assert (report(Status.PASS, Status.WARN).worst, report(Status.PASS, Status.WARN).exit_code) == (Status.WARN, 1)
    assert report(Status.WARN, Status.FAIL, Status.PASS).exit_code == 2
    document = report(Status.FAIL).as_dict()
    assert document["worst"] == "FAIL" and document["checks"][0]["status"] == "FAIL"


async def test_certificates_are_skipped_without_an_https_public_url() -> None:
    assert [c.status for c in await certificate_checks("", [], 1.0)] == [Status.SKIP]
    assert [c.status for c in await certificate_checks("http://ai.example.com", [], 1.0)] == [Status.SKIP]


async def test_a_closed_https_port_fails_quickly() -> None:
    checks = await certificate_checks("https://127.0.0.1:1", [], 1.0)
    assert [c.status for c in checks] == [Status.FAIL] and "no TLS connection" in checks[0].summary


def test_public_url_must_be_a_url() -> None:
    with pytest.raises(ValueError, match=r"PUBLIC_URL|public_url"):
        Settings(_env_file=None, public_url="ai.example.com")


async def test_a_check_that_breaks_is_a_finding_not_a_traceback(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        database_url=f"sqlite:///{tmp_path}/missing.db",
        data_dir=tmp_path,
        backup_dir=tmp_path / "backups",
        ollama_base_url="ftp://ollama.internal:11434",  # not a URL an upstream may have: its config cannot be built
        ollama_api_key="ollama-secret-not-shown",
    )
    report = await run_doctor(settings, wait=1.0)
    broken = report.by_name("upstreams")
    assert broken is not None and broken.status is Status.FAIL, broken
    assert "could not run (ValidationError" in broken.summary and "base_url" in broken.summary, broken
    assert "ollama-secret-not-shown" not in json.dumps(report.as_dict())
    database = report.by_name("database")
    assert database is not None and database.status is Status.FAIL and "does not exist" in database.summary
    assert not (tmp_path / "missing.db").exists()  # doctor only reads: it never creates the database


async def test_smoke_needs_a_gateway_and_a_key(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path}/none.db", data_dir=tmp_path)
    without_url = (await run_doctor(settings, smoke=True, key="gh_some_key", wait=1.0)).by_name("smoke")
    assert without_url is not None and without_url.status is Status.FAIL and "PUBLIC_URL" in without_url.fix
    at_public_url = settings.model_copy(update={"public_url": "http://127.0.0.1:1"})
    without_key = (await run_doctor(at_public_url, smoke=True, wait=1.0)).by_name("smoke")
    assert without_key is not None and "--key (GATEHOUSE_API_KEY)" in without_key.summary
