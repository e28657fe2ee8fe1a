"""Shared command-line handling of the jobs: `--config FILE` plus `key=value` overrides, one-line failures."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import TypeVar

from pipelines.config import ConfigError, load_config

T = TypeVar("T")

# Failures a user can fix from the command line get one line, not a traceback.
USER_ERRORS = (ConfigError, ValueError, FileNotFoundError, PermissionError)


def parse_config(schema: type[T], argv: list[str] | None, description: str) -> T:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file with options (see infra/configs/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override one option")
    arguments = parser.parse_intermixed_args(argv)
    return load_config(schema, arguments.config, arguments.overrides)


def run_job(name: str, main: Callable[[], int | None]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        return int(main() or 0)
    except USER_ERRORS as error:
        message = str(error).replace("\n", " ")
        print(f"{name}: error: {message}", file=sys.stderr)
        return 2
