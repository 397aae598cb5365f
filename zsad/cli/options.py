"""Options shared by the subcommands of the ``zsad`` command line: parsers of values, argument groups and the
settings they turn into."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Sequence

from zsad.errors import ZsadError


def parse_set(items: Sequence[str] | None) -> dict[str, Any]:
    """Parse ``--set key=value`` pairs; values are JSON when they parse (``336``, ``true``, ``null``), else text.

    Example:
        >>> parse_set(["image_size=336", "backbone_checkpoint=/w/l14", "prompt_checkpoint=null"])
        {'image_size': 336, 'backbone_checkpoint': '/w/l14', 'prompt_checkpoint': None}
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ZsadError(f"--set expects key=value, got {item!r} (e.g. --set image_size=336).")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


class Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    return whole_number(text, 1)


def non_negative_int(text: str) -> int:
    return whole_number(text, 0)


def subcommand(subparsers, name: str, help: str, examples: str, description: str | None = None) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name, help=help, description=description or help, epilog="examples:\n" + examples, formatter_class=Formatter
    )


def add_recipe_args(p: argparse.ArgumentParser, *, device: bool = True) -> None:
    p.add_argument("--recipe", default="tipsomaly", help="recipe name or JSON file (default: tipsomaly; see `zsad recipes`)")
    p.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set image_size=336 --set backbone_checkpoint=DIR (repeatable)")
    if device:
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
        p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"], help="backbone precision (default float32)")


def add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="where the model runs: local = this process (default); ray = Ray workers "
                        "(pip install 'zsad[ray]')")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="Ray workers, one detector each (default: one per GPU, else one)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster to join: auto = the running cluster, or ray://host:10001 "
                        "(default: a local Ray runtime started in this process)")


# -- commands ----------------------------------------------------------------------------------------------------


def add_runtime_args(p: argparse.ArgumentParser, files: bool = True) -> None:
    """The runtime flags (--compile, --no-tf32, --preprocess; --decode-workers for commands that read files)."""
    speed = p.add_argument_group("speed (see the performance page of the docs; none changes the recipe)")
    speed.add_argument("--compile", action="store_true", help="torch.compile the model (the first batches are slower)")
    speed.add_argument("--no-tf32", action="store_true",
                       help="full float32 matmuls on CUDA (default: TF32 for a float32 backbone on CUDA)")
    speed.add_argument("--preprocess", choices=["exact", "device"], default="exact",
                       help="exact = the recipe's decode and resize on the host, identical to the reference "
                            "pipeline (default); device = resize (and decode JPEG files) on the model's device")
    if not files:  # uploads are decoded in this process
        p.set_defaults(decode_workers=None)
        return
    speed.add_argument("--decode-workers", type=non_negative_int, default=None, metavar="N",
                       help="image-decoding worker processes per detector (default: one per CPU core for a GPU "
                            "model, none for a CPU model: threads decode; 0 = threads only)")


def runtime_flags(args: argparse.Namespace) -> list[tuple[str, bool]]:
    return [("--compile", args.compile), ("--no-tf32", args.no_tf32), ("--preprocess", args.preprocess != "exact"),
            ("--decode-workers", args.decode_workers is not None)]


def runtime_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """The runtime options of the flags, or None when none was given (a given detector keeps its own)."""
    if not any(given for _, given in runtime_flags(args)):
        return None
    return {"compile": args.compile, "tf32": False if args.no_tf32 else None,
            "pipeline": {"preprocess": args.preprocess, "workers": args.decode_workers}}


def engine_args(args: argparse.Namespace) -> dict[str, Any]:
    return {"engine": args.engine, "workers": args.workers, "ray_address": args.ray_address}


def writable_folder(path: str, option: str) -> Path:
    """*path* as an output folder that can be written, checked before any work starts (nothing is created).

    Raises :class:`ZsadError` when it is a file, lies under a file, or its nearest existing folder cannot be
    written to (probed by creating and removing a temporary file there).
    """
    folder = Path(path).expanduser()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == folder else f"lies under the file {existing}"
        raise ZsadError(f"{option} {folder} {where}; give a folder (it is created if missing).")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".zsad-write-check-"):
            pass
    except OSError as exc:
        raise ZsadError(
            f"{option} {folder} cannot be written ({exc.strerror or exc} in {existing}); choose a folder you can "
            "write to."
        ) from None
    return folder
