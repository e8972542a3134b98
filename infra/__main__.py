"""Pulumi entry point (`main: infra/`): parse the config, then declare the platform."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: infra/, modules/, workloads/

import pulumi  # noqa: E402

from infra.settings import ConfigError, config_warnings, load_stack_config  # noqa: E402

try:
    config = load_stack_config()
except ConfigError as error:
    raise pulumi.RunError(str(error)) from None  # printed without a traceback
for warning in config_warnings(config):
    pulumi.log.warn(warning)

from infra.program import declare  # noqa: E402

declare(config)
