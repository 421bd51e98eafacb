"""``astrai-train``: train the tokenizer, prepare data and run the PT / SFT / DPO / RM stages.

Every sub-command reads a YAML config (``-c FILE``); flags named after the config keys override it
(``--max-steps 200`` or ``--max_steps 200``); unknown keys are errors; ``--dry-run`` prints the
merged config and exits. Training stages also take ``--resume DIR``.

Extending: ``COMMANDS`` maps a sub-command name to a :class:`Command` (help, add_arguments, run).
A new sub-command is one entry in that dict (the recipes add ``reproduce`` there); a
:class:`Command` built with :func:`config_command` gets the YAML/flags/``--dry-run`` handling for free.
"""

from __future__ import annotations

import argparse
import sys
import typing
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from astrai_core.errors import AstraiError
from training.config import build_config, field_types, load_yaml, to_yaml
from training.stages import STAGES, PrepareJob, StageConfig, TokenizerJob, run_prepare, run_stage, run_tokenizer
from training.recipes.astrai_mini import reproduce


@dataclass
class Command:
    """A sub-command: ``add_arguments(parser)`` declares its flags, ``run(args)`` returns an exit code."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


_UNSET = object()


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """``-c/--config``, ``--dry-run`` and one override flag per field of dataclass ``cls``."""
    parser.add_argument("-c", "--config", help="YAML config file (flags below override it)")
    parser.add_argument("--dry-run", action="store_true", help="print the merged config and exit")
    group = parser.add_argument_group("config keys (override the YAML)")
    for name, hint in field_types(cls).items():
        is_list = typing.get_origin(hint) is list
        group.add_argument(f"--{name.replace('_', '-')}", f"--{name}", dest=f"cfg__{name}", default=_UNSET,
                           nargs="+" if is_list else None, metavar=name.upper())


def merged_config(args: argparse.Namespace, cls: type) -> Any:
    data = load_yaml(args.config) if args.config else {}
    for key, value in vars(args).items():
        if key.startswith("cfg__") and value is not _UNSET:
            data[key[5:]] = value
    return build_config(cls, data, source=args.config or "flags")


def config_command(cls: type, help: str, runner: Callable[[Any, argparse.Namespace], object],
                    resumable: bool = False) -> Command:
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_config_arguments(parser, cls)
        if resumable:
            parser.add_argument("--resume", metavar="DIR", help="continue from a run folder or its checkpoint/")

    def run(args: argparse.Namespace) -> int:
        cfg = merged_config(args, cls)
        if args.dry_run:
            sys.stdout.write(to_yaml(cfg))
            return 0
        result = runner(cfg, args)
        if result is not None:
            print(result)
        return 0

    return Command(help, add_arguments, run)


def _stage_command(stage: str, help: str) -> Command:
    return config_command(StageConfig, help, lambda cfg, args: run_stage(stage, cfg, args.resume), resumable=True)


COMMANDS: dict[str, Command] = {
    "tokenizer": config_command(TokenizerJob, "train the byte-level BPE tokenizer", lambda c, a: run_tokenizer(c)),
    "prepare": config_command(PrepareJob, "tokenize a corpus into a token store", lambda c, a: run_prepare(c)),
    "pt": _stage_command("pt", "pre-train (causal LM loss)"),
    "sft": _stage_command("sft", "supervised fine-tuning on chat conversations"),
    "dpo": _stage_command("dpo", "direct preference optimisation against a frozen reference"),
    "rm": _stage_command("rm", "train a reward model (Bradley-Terry)"),
    "reproduce": Command(reproduce.HELP, reproduce.add_arguments, reproduce.run_command),
}
assert set(STAGES) <= set(COMMANDS)


def build_parser(commands: dict[str, Command] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="astrai-train", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in (commands or COMMANDS).items():
        cmd.add_arguments(sub.add_parser(name, help=cmd.help, description=cmd.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except AstraiError as exc:
        print(f"astrai-train {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
