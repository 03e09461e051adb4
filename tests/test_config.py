from __future__ import annotations

from pathlib import Path

import pytest

from sync_workers.config import Config, SourceConfig, load
from sync_workers.errors import ConfigError
from sync_workers.registry import source_options
from tests.support import REPO


def test_example_lists_every_option_with_its_default():
    example = load(REPO / "config.yaml.example", source_options())
    defaults = Config(sources={name: SourceConfig(True, opts) for name, opts in source_options().items()})
    assert example.server == defaults.server
    assert example.security == defaults.security
    assert example.worker == defaults.worker
    assert example.sources == defaults.sources


def test_no_file_means_defaults():
    config = load(None, source_options())
    assert config.server.base_url is None
    assert config.worker.batch_size == 100
    assert config.source("claude_code").options == {"projects_dir": None}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("worker:\n  batch_sise: 3\n", "unknown key 'worker.batch_sise'"),
        ("worker:\n  batch_size: many\n", "worker.batch_size: expected int, got str 'many'"),
        ("worker:\n  batch_size: true\n", "worker.batch_size: expected int"),
        ("worker:\n  batch_size: 0\n", "worker.batch_size: must be greater than 0"),
        ("server:\n  timeout: fast\n", "server.timeout: expected int or float"),
        ("server:\n  base_url: ftp://x\n", "server.base_url: must start with http"),
        ("sources:\n  claude_code:\n    projects: /x\n", "unknown key 'sources.claude_code.projects'"),
        ("sources:\n  claude_code:\n    enabled: yes please\n", "sources.claude_code.enabled: expected bool"),
        ("sources:\n  nope: {}\n", "unknown key 'sources.nope'"),
        ("worker:\n  schedule: every hour\n", "worker.schedule: not a cron expression"),
        ("colour: blue\n", "unknown key 'colour'"),
        ("- a list\n", "the top level must be a mapping"),
        ("worker: [1\n", "not valid YAML"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path: Path, text: str, message: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(path, source_options())
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_token_precedence_env_then_file_then_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    path = tmp_path / "config.yaml"
    path.write_text(f"security:\n  worker_token: from-yaml\n  worker_token_file: {token_file}\n")
    monkeypatch.delenv("SYNC_WORKER_TOKEN", raising=False)
    config = load(path, source_options())
    assert config.token == "from-file"
    monkeypatch.setenv("SYNC_WORKER_TOKEN", "from-env")
    assert config.token == "from-env"
    assert "from-yaml" not in repr(config), "the token must not show in a repr (logs)"


def test_state_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert load(None, source_options()).state_dir == tmp_path / "sync-workers"
