"""Cluster-mode flags and the Serve config file, without Ray: parsing, per-model settings, errors, resources; and
what happens where Ray is not installed."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from open_stt_server.cli import ConfigError, main
from open_stt_server.cluster.command import config_yaml, needed_resources
from open_stt_server.cluster.options import Deployment, argv_of, parse
from tests.conftest import SAMPLES, server_env, start_server


def test_defaults_and_per_model_settings() -> None:
    settings, options, _ = parse(
        ["--model", "whisper-tiny.en,base", "--replicas", "2", "--num-cpus", "1.5", "--workers", "1",
         "--deployment", "whisper-base:autoscale=1-4,num_gpus=0.5,target_ongoing=3"]
    )  # fmt: skip
    assert settings.models == ("whisper-tiny.en", "base") and settings.workers == 1
    assert options.address == "auto" and options.deployment("whisper-tiny.en") == Deployment(
        replicas=2, num_cpus=1.5
    )
    base = options.deployment("whisper-base")
    assert (base.autoscale, base.num_gpus, base.target_ongoing, base.num_cpus) == ((1, 4), 0.5, 3.0, 1.5)
    assert base.slots(workers=2) == 2  # smallest size: one replica × 2 workers
    assert needed_resources(settings, options) == {"CPU": pytest.approx(0.1 + 3.0 + 1.5), "GPU": 0.5}


@pytest.mark.parametrize(
    "flags",
    [
        ["--autoscale", "3:1"],
        ["--autoscale", "x"],
        ["--deployment", "whisper-base"],
        ["--deployment", "whisper-base:colour=red"],
        ["--deployment", "whisper-small:replicas=2"],  # not served
        ["--replicas", "0"],
        ["--num-gpus", "-1"],
    ],
)
def test_bad_cluster_flags_are_configuration_errors(flags: list[str]) -> None:
    with pytest.raises(ConfigError):
        parse(["--model", "whisper-base", *flags])


def test_the_command_reports_configuration_errors_with_status_2(capsys) -> None:
    assert main(["ray", "--model", "whisper-base", "--autoscale", "5:2"]) == 2
    assert "configuration error" in capsys.readouterr().err


def test_print_config_is_a_serve_config_whose_args_give_the_same_settings(capsys) -> None:
    argv = ["--model", "whisper-tiny.en", "--model=whisper-base", "--replicas", "2", "--api-key", "secret",
            "--deployment", "whisper-base:num_cpus=2", "--port", "9000", "--workers", "1"]  # fmt: skip
    assert main(["ray", *argv, "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "secret" not in text
    config = yaml.safe_load(text)
    assert config["http_options"] == {"host": "0.0.0.0", "port": 9000}
    app = config["applications"][0]
    assert app["import_path"] == "open_stt_server.cluster.app:build" and app["route_prefix"] == "/"
    settings, options, _ = parse(argv_of(app["args"]))
    expected, expected_options, _ = parse([a for a in argv if a not in ("--api-key", "secret")])
    # the port is Serve's (http_options above), not the app's
    assert settings == dataclasses.replace(expected, port=8080) and options == expected_options
    assert config_yaml([], "127.0.0.1", 8080, "open-stt", "HeadOnly").count("args: {}") == 1


@pytest.fixture
def ray_unavailable(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment in which `import ray` fails (as where the extra is not installed) and leaves a mark."""
    shim = tmp_path / "shim" / "ray"
    shim.mkdir(parents=True)
    mark = tmp_path / "ray-was-imported"
    (shim / "__init__.py").write_text(
        f"open({str(mark)!r}, 'w').close()\nraise ImportError('No module named ray (test shim)')\n"
    )
    return {"PYTHONPATH": str(shim.parent)}, mark


def test_without_ray_the_command_says_how_to_install_it(
    hf_home: Path, ray_unavailable: tuple[dict[str, str], Path]
) -> None:
    env, mark = ray_unavailable
    done = subprocess.run(
        [sys.executable, "-m", "open_stt_server", "ray", "--model", "whisper-tiny.en"],
        env=server_env(hf_home, **env), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "pip install 'open-stt-server[ray]'" in done.stderr and "Traceback" not in done.stderr
    assert mark.exists()  # the shim stood in for Ray: the next test's check can see an import


def test_the_single_box_never_imports_ray(
    hf_home: Path, tmp_path: Path, ray_unavailable: tuple[dict[str, str], Path]
) -> None:
    env, mark = ray_unavailable
    server = start_server(hf_home, tmp_path, "--model", "whisper-tiny.en", env=server_env(hf_home, **env))
    try:
        clip = SAMPLES / "en" / "hello_world.wav"
        r = httpx.post(
            server.base_url + "/audio/transcriptions", files={"file": clip.open("rb")}, timeout=120
        )
        assert r.status_code == 200 and "hello" in r.json()["text"].lower()
        assert httpx.get(server.url + "/metrics", timeout=10).status_code == 200
        assert httpx.get(server.base_url + "/models", timeout=10).status_code == 200
    finally:
        server.stop()
    assert not mark.exists(), server.log()
