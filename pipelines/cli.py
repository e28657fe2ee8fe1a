"""Shared command-line handling of the jobs: `--config FILE` plus `key=value` overrides, one-line failures."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TypeVar

from pipelines.config import ConfigError, load_config, to_yaml
from pipelines.config_help import options_help
from pipelines.output import configure_output

T = TypeVar("T")

# Failures a user can fix from the command line get one line, not a traceback.
USER_ERRORS = (ConfigError, ValueError, FileNotFoundError, PermissionError)


def parse_config(schema: type[T], argv: list[str] | None, description: str) -> T:
    """The job's config from `--config FILE` and `key=value` arguments. --help lists every option (generated from
    the schema); --print-config prints the resulting config as YAML, which --config reads back, and exits."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f"configuration (key=value; a list's item by its index, e.g. models.0.name=x):\n"
                                            f"{options_help(schema)}")
    parser.add_argument("--config", help="YAML file with options (examples: infra/configs/)")
    parser.add_argument("--print-config", action="store_true", help="print the whole configuration as YAML and exit")
    parser.add_argument("--verbose", action="store_true",
                        help="print Ray's, MLflow's and the workers' logs too (by default they stay in log files)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override one option")
    arguments = parser.parse_intermixed_args(argv)
    configure_output(arguments.verbose)
    config = load_config(schema, arguments.config, arguments.overrides)
    if arguments.print_config:
        print(to_yaml(config), end="")
        raise SystemExit(0)
    return config


def run_job(name: str, main: Callable[[], int | None], errors: tuple[type[BaseException], ...] = ()) -> int:
    """Run a command's body; a failure the user can fix (USER_ERRORS, and `errors`) is one line on stderr, exit 2."""
    try:
        return int(main() or 0)
    except (*USER_ERRORS, *errors) as error:
        message = " ".join(str(error).split())  # one line, a list of problems included
        print(f"{name}: error: {message}", file=sys.stderr)
        return 2
