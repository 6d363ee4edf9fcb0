"""The ``gnsm`` parser, its dispatch, and the one place where errors become exit statuses.

A user error (bad option, missing or unreadable file, unknown column, an output that cannot be
written, an optional dependency that is not installed) prints ``gnsm: error: <message>`` on stderr
and exits with status 2, without a traceback. Options with a fixed form (counts, choices) are
checked by argparse, which prints the usage and also exits with status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .common import CLIError
from .segmentation import add_seg_commands
from .tabular import add_tabular_commands

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``gnsm`` argument parser with every command registered."""
    parser = argparse.ArgumentParser(prog="gnsm", description="Gumbel Noise Score Matching anomaly detection "
                                     "for categorical / mixed tables and segmentation masks.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_tabular_commands(sub)
    add_seg_commands(sub)
    return parser


def _message(err: BaseException) -> str:
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        return f"{err.filename}: {err.strerror}"  # e.g. "/dev/full: No space left on device"
    return str(err) or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gnsm`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:  # torchrun --nproc-per-node N -m gnsm fit ... : DDP training, rank 0 saves
        from ..training import init_distributed
        rank, _ = init_distributed()
        if rank > 0:
            args.quiet = True
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, TypeError, KeyError, OSError, ImportError) as err:
        print(f"gnsm: error: {_message(err)}", file=sys.stderr)
        return 2
    finally:
        if distributed:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()
