"""`open-stt-server [ray] …`: read the flags (`flags`), then run the single box or hand over to cluster mode."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from open_stt_server.flags import ConfigError, parse_bool, parse_log_level, settings_from

__all__ = ["ConfigError", "main", "parse_bool", "parse_log_level", "settings_from"]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["ray"]:
        from open_stt_server.cluster.command import main as cluster_main

        return cluster_main(argv[1:])
    try:
        settings = settings_from(argv)
    except ConfigError as exc:
        print(f"open-stt-server: configuration error: {exc}", file=sys.stderr)
        return 2
    from open_stt_server.api.app import StartupError, serve
    from open_stt_server.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        serve(settings)
    except StartupError as exc:
        logging.getLogger("open_stt_server").error("%s", exc)
        print(f"open-stt-server: {exc}", file=sys.stderr)
        return 1
    return 0
