"""The ``gaittools`` command: a click group whose subcommands load lazily.

Subcommands are imported only when invoked, so that ``gaittools synth --help`` does not pay
for importing torch or dask. Those built on the library alone live in ``gaittools.cli.commands``;
those that drive Dask pipelines live in ``pipelines.commands`` and are named here as strings,
never imported: the library stays below the layers that use it (``pipelines``, ``training``).
"""

from __future__ import annotations

import importlib
import importlib.util

import click

from gaittools import __version__
from gaittools.cli.errors import GuardedGroup

#: Subcommand name -> "module:attribute" of its click command, in pipeline order.
COMMANDS: dict[str, str] = {
    "synth": "gaittools.cli.commands.synth:synth",
    "extract-frames": "pipelines.commands.extract:extract_frames",
    "manifest": "pipelines.commands.extract:manifest",
    "flow": "gaittools.cli.commands.flow:flow",
    "show-flow": "gaittools.cli.commands.flow:show_flow",
    "compute-flow": "pipelines.commands.compute_flow:compute_flow",
    "build-split": "gaittools.cli.commands.split:build_split",
    "export-opengait": "gaittools.cli.commands.opengait:export_opengait",
    "enroll": "gaittools.cli.commands.identify:enroll",
    "identify": "gaittools.cli.commands.identify:identify",
    "calibrate": "gaittools.cli.commands.identify:calibrate",
    "preview": "gaittools.cli.commands.preview:preview",
}


class LazyGroup(GuardedGroup):
    """A group that imports a subcommand's module only when that subcommand is used; errors end
    in one line with exit 2 (usage) or 1 (some items failed): ``gaittools.cli.errors``."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, target in COMMANDS.items() if _module_exists(target)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None or not _module_exists(target):
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


def _module_exists(target: str) -> bool:
    module_name = target.split(":")[0]
    try:
        return importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:
        return False


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="gaittools")
def main() -> None:
    """Gait videos -> cropped gray clips and TV-L1 flow in a Zarr store (GaitCopy toolkit)."""


if __name__ == "__main__":
    main()
