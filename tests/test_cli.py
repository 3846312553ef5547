"""Configuration precedence (flag > env > default) and start-up failures with their messages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from open_stt_server.cli import ConfigError, parse_bool, parse_log_level, settings_from
from open_stt_server.settings import Settings
from tests.conftest import server_env


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for key in list(os.environ):
        if key.startswith("OPEN_STT_") or key == "RUST_LOG":
            monkeypatch.delenv(key)
    return monkeypatch


def test_defaults(clean_env) -> None:
    s = settings_from([])
    assert s == Settings()
    assert s.models == ("whisper-base",) and s.port == 8080 and s.host == "0.0.0.0"
    assert s.max_upload_mb == 25 and s.api_key is None and s.log_level == "info" and not s.download


def test_env_overrides_defaults(clean_env) -> None:
    clean_env.setenv("OPEN_STT_PORT", "9001")
    clean_env.setenv("OPEN_STT_MODELS", " whisper-tiny.en , whisper-base ")
    clean_env.setenv("OPEN_STT_FORCE_CPU", "yes")
    clean_env.setenv("OPEN_STT_DOWNLOAD", "1")
    clean_env.setenv("OPEN_STT_API_KEY", "k")
    clean_env.setenv("OPEN_STT_COMPUTE_TYPE", "float32")
    clean_env.setenv("RUST_LOG", "debug")
    clean_env.setenv("OPEN_STT_MAX_UPLOAD_MB", "5")
    clean_env.setenv("OPEN_STT_DEFAULT_MODEL", "whisper-base")
    s = settings_from([])
    assert s.port == 9001 and s.models == ("whisper-tiny.en", "whisper-base")
    assert s.force_cpu and s.download and s.api_key == "k" and s.compute_type == "float32"
    assert s.log_level == "debug" and s.max_upload_mb == 5 and s.default_model == "whisper-base"


def test_flags_override_env(clean_env) -> None:
    clean_env.setenv("OPEN_STT_PORT", "9001")
    clean_env.setenv("OPEN_STT_MODELS", "whisper-tiny.en")
    clean_env.setenv("OPEN_STT_FORCE_CPU", "true")
    clean_env.setenv("RUST_LOG", "debug")
    clean_env.setenv("OPEN_STT_API_KEY", "from-env")
    s = settings_from(["--port", "9002", "--model", "whisper-base", "--model", "whisper-small,whisper-tiny",
                       "--force-cpu", "false", "--log-level", "warn", "--api-key", "from-flag"])  # fmt: skip
    assert s.port == 9002 and s.models == ("whisper-base", "whisper-small", "whisper-tiny")
    assert not s.force_cpu and s.log_level == "warning" and s.api_key == "from-flag"
    assert settings_from(["--force-cpu"]).force_cpu  # a bare boolean flag means true


def test_empty_api_key_means_no_key(clean_env) -> None:
    clean_env.setenv("OPEN_STT_API_KEY", "")
    assert settings_from([]).api_key is None
    assert settings_from(["--api-key", ""]).api_key is None


def test_open_stt_log_level_and_rust_log_directives(clean_env) -> None:
    clean_env.setenv("OPEN_STT_LOG_LEVEL", "error")
    assert settings_from([]).log_level == "error"
    assert parse_log_level("open_stt=debug,hyper=warn") in ("debug", "warning")
    assert parse_log_level("info") == "info" and parse_log_level("TRACE") == "debug"


@pytest.mark.parametrize(("word", "value"), [("true", True), ("1", True), ("yes", True), ("false", False),
                                             ("0", False), ("no", False), ("YES", True)])  # fmt: skip
def test_booleans(word: str, value: bool) -> None:
    assert parse_bool(word) is value


def test_bad_env_values_are_configuration_errors(clean_env) -> None:
    clean_env.setenv("OPEN_STT_FORCE_CPU", "maybe")
    with pytest.raises(ConfigError, match="OPEN_STT_FORCE_CPU"):
        settings_from([])
    clean_env.delenv("OPEN_STT_FORCE_CPU")
    clean_env.setenv("OPEN_STT_PORT", "eighty")
    with pytest.raises(ConfigError, match="OPEN_STT_PORT"):
        settings_from([])


def run_cli(hf_home, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "open_stt_server", "--port", "1", *args],
                          env=server_env(hf_home, **env), capture_output=True, text=True, timeout=120)  # fmt: skip


def test_help_documents_flags_and_env_vars() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "open_stt_server", "--help"], capture_output=True, text=True
    ).stdout
    for flag, env in [("--port", "OPEN_STT_PORT"), ("--host", "OPEN_STT_HOST"), ("--model", "OPEN_STT_MODELS"),
                      ("--default-model", "OPEN_STT_DEFAULT_MODEL"), ("--force-cpu", "OPEN_STT_FORCE_CPU"),
                      ("--download", "OPEN_STT_DOWNLOAD"), ("--api-key", "OPEN_STT_API_KEY"),
                      ("--compute-type", "OPEN_STT_COMPUTE_TYPE"), ("--log-level", "RUST_LOG"),
                      ("--max-upload-mb", "OPEN_STT_MAX_UPLOAD_MB")]:  # fmt: skip
        assert flag in out and env in out


def test_unknown_model_exits_with_message(hf_home) -> None:
    r = run_cli(hf_home, "--model", "whisper-enormous")
    assert r.returncode != 0 and "Unknown model 'whisper-enormous'" in r.stderr
    assert "Traceback" not in r.stderr


def test_default_model_must_be_loaded(hf_home) -> None:
    r = run_cli(hf_home, "--model", "whisper-tiny.en", "--default-model", "whisper-base")
    assert r.returncode != 0 and "--default-model 'whisper-base' is not one of the loaded models" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_weights_name_model_and_flag(hf_home) -> None:
    r = run_cli(hf_home, "--model", "whisper-small")
    assert r.returncode != 0
    assert "whisper-small" in r.stderr and "--download" in r.stderr and "Traceback" not in r.stderr


def test_download_while_offline_fails_clearly(hf_home) -> None:
    r = run_cli(hf_home, "--model", "whisper-small", "--download")
    assert r.returncode != 0 and "whisper-small" in r.stderr and "Traceback" not in r.stderr


def test_voxtral_without_weights_says_how_to_get_them(hf_home) -> None:
    pytest.importorskip("transformers")
    r = run_cli(hf_home, "--model", "voxtral-mini")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "mistralai/Voxtral-Mini-3B-2507" in r.stderr and "--download" in r.stderr


def test_bad_configuration_exits_2(hf_home) -> None:
    r = run_cli(hf_home, "--model", "whisper-base", OPEN_STT_MAX_UPLOAD_MB="lots")
    assert r.returncode == 2 and "OPEN_STT_MAX_UPLOAD_MB" in r.stderr
