"""An upstream's key from a file (rotated by a reload), and credentials given twice refused where they are written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gatehouse.configuration.reload import changed_upstreams
from gatehouse.errors import GatehouseError
from gatehouse.settings import Settings
from gatehouse.upstreams.config import ConfigError, load_config
from gatehouse.upstreams.service import validated


def _settings(tmp_path: Path, upstream: dict[str, object]) -> Settings:
    path = tmp_path / "gatehouse.yaml"
    path.write_text(yaml.safe_dump({"upstreams": [{"name": "up", "kind": "openai", **upstream}]}))
    return Settings(database_url="sqlite:///" + str(tmp_path / "db"), gatehouse_config=path, _env_file=None)


def test_key_file_is_read_and_a_rotation_shows_as_a_changed_upstream(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("old-key\n")
    settings = _settings(tmp_path, {"base_url": "https://api.example.com", "api_key_file": str(key)})
    before = load_config(settings)
    assert before.upstreams[0].resolved_api_key() == "old-key"
    key.write_text("new-key")
    after = load_config(settings)
    assert after.upstreams[0].resolved_api_key() == "new-key"
    assert changed_upstreams(before, after) == ["up"]
    assert changed_upstreams(after, load_config(settings)) == []


@pytest.mark.parametrize(
    ("upstream", "named"),
    [
        ({"api_key_file": "/nonexistent/key"}, "upstreams.up.api_key_file: cannot read /nonexistent/key"),
        ({"api_key": "k", "api_key_env": "KEY"}, "upstreams.up: give one of api_key and api_key_env"),
        ({"base_url": "https://u:p@api.example.com", "api_key": "k"}, "base_url carries credentials"),
        (
            {"base_url": "https://u:p@api.example.com", "headers": {"Authorization": "Bearer x"}},
            "base_url carries credentials",
        ),
    ],
)
def test_bad_credentials_in_the_file_are_named(tmp_path: Path, upstream: dict[str, object], named: str) -> None:
    settings = _settings(tmp_path, {"base_url": "https://api.example.com", **upstream})
    with pytest.raises(ConfigError, match="GATEHOUSE_CONFIG=.*" + named.replace("(", r"\(")):
        load_config(settings)


def test_an_empty_key_file_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("\n")
    settings = _settings(tmp_path, {"base_url": "https://api.example.com", "api_key_file": str(key)})
    with pytest.raises(ConfigError, match=f"api_key_file: {key} is empty"):
        load_config(settings)


def test_the_api_refuses_credentials_given_twice() -> None:
    with pytest.raises(GatehouseError) as caught:
        validated({"name": "up", "kind": "openai", "base_url": "https://u:p@api.example.com", "api_key": "k"})
    assert caught.value.status == 400
    assert "base_url carries credentials" in caught.value.message
