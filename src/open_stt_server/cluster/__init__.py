"""Cluster mode on Ray Serve: the same app as an ingress deployment, and one deployment per model whose replicas
hold today's `ModelQueue` + engine. The only package that imports Ray, and only when cluster mode runs."""

from __future__ import annotations

import importlib.util

INSTALL_HINT = "pip install 'open-stt-server[ray]'"


def ray_installed() -> bool:
    try:
        return importlib.util.find_spec("ray.serve") is not None
    except (ImportError, ValueError):
        return False
