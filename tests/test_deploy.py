"""Issue 12: the deployment files in deploy/ are valid and agree with the code.

- ``docker compose config`` (or docker-compose) renders deploy/compose.yaml offline wherever
  docker is installed (no engine is needed, no image is pulled); it refuses to render
  without the database password.
- Always: every ``KB_*`` variable the compose file, the image and the systemd unit set is a
  real setting; the Chroma server image matches the chromadb client installed; the image
  copies every package the project installs; ``systemd-analyze verify`` accepts the unit.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

from kb.settings import check_environment

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SERVICES = {"postgres", "chroma", "redis", "migrate", "api"}


def _compose_command() -> list[str] | None:
    if shutil.which("docker") is None:
        return None
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
    if probe.returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise AssertionError("docker is installed but neither `docker compose` nor "
                         "docker-compose is: .ci/run installs docker-compose")


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


@pytest.mark.skipif(shutil.which("docker") is None, reason="docker is not installed")
def test_docker_compose_config_renders_offline(tmp_path: Path) -> None:
    command = _compose_command()
    assert command is not None
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("KB_", "CANON_", "COMPOSE_"))}
    args = [*command, "-f", str(DEPLOY / "compose.yaml"), "config"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60,
                          env={**base, "CANON_DB_PASSWORD": "s3cret", "CANON_WORKERS": "3"})
    assert done.returncode == 0, done.stderr
    rendered = yaml.safe_load(done.stdout)
    services = rendered["services"]
    assert set(services) == SERVICES
    api = services["api"]
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    env = _env(api)
    assert env["CANON_WORKERS"] == "3"
    assert env["KB_DATABASE_URL"] == "postgresql+psycopg://canon:s3cret@postgres:5432/canon"
    assert env["KB_CHROMA_URL"] == "http://chroma:8000"
    assert env["KB_REDIS_URL"].startswith("redis://redis:6379")
    check_environment(env)  # every KB_* name is a setting
    assert services["migrate"]["restart"] == "no"
    # Without the password it refuses to render, saying which variable is missing.
    missing = subprocess.run(args, capture_output=True, text=True, timeout=60, env=base)
    assert missing.returncode != 0 and "CANON_DB_PASSWORD" in missing.stderr


def test_compose_file_agrees_with_the_code() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) == SERVICES
    for name in ("migrate", "api"):
        check_environment(_env(services[name]))
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
    image = services["chroma"]["image"]
    pinned = re.search(r":-([0-9.]+)}$", image)
    assert pinned and pinned.group(1) == version("chromadb"), (image, version("chromadb"))
    assert "kb db upgrade" in " ".join(services["migrate"]["command"])
    assert services["postgres"]["healthcheck"] and services["redis"]["healthcheck"]


def test_dockerfile_installs_every_package_and_serves() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        assert re.search(rf"^COPY {package} \./{package}$", dockerfile, re.M), package
    env = dict(re.findall(r"(KB_[A-Z_]+)=(\S+)", dockerfile))
    check_environment(env)
    assert "HF_HUB_OFFLINE=1" in dockerfile and "USER canon" in dockerfile
    assert 'kb serve --host 0.0.0.0 --port 8000 --workers' in dockerfile
    assert "/readyz" in dockerfile


def test_systemd_unit_is_valid(tmp_path: Path) -> None:
    text = (DEPLOY / "canon.service").read_text(encoding="utf-8")
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(text)
    assert "kb serve" in unit["Service"]["ExecStart"]
    assert "kb db upgrade" in unit["Service"]["ExecStartPre"]
    assert unit["Service"]["EnvironmentFile"] == "/etc/canon/canon.env"
    envs = re.findall(r"^Environment=(.*)$", text, re.M)
    check_environment(dict(pair.split("=", 1) for line in envs for pair in line.split()))
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    kb = Path(sys.executable).with_name("kb")
    assert kb.exists()
    chroma = (DEPLOY / "canon-chroma.service").read_text(encoding="utf-8")
    assert "chroma run" in chroma and "--port 8001" in chroma
    for name, body in (("canon.service", text), ("canon-chroma.service", chroma)):
        local = tmp_path / name
        local.write_text(body.replace("/opt/canon/bin/kb", str(kb))
                         .replace("/opt/canon/bin/chroma", str(kb.with_name("chroma"))),
                         encoding="utf-8")
        done = subprocess.run([analyze, "verify", str(local)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0 and name not in done.stderr, done.stderr
