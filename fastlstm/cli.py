"""The ``fastlstm`` command, also ``python -m fastlstm``: one function per subcommand.

- ``info``: what ``fastlstm.show_config()`` prints (version, OpenMP and its runtime, BLAS,
  SIMD kernels, threads);
- ``inspect FILE``: the LSTMs in a model file, with the name to pick each by;
- ``convert FILE [--module|--layer|--node|--scope NAME] -o OUT``: load one LSTM from a
  PyTorch, Keras, ONNX or TF1 file and save it in fastlstm's own format (``fastlstm.load``);
  ``--node A,B`` picks a chain of ONNX LSTM nodes, one per layer;
- ``bench [...]``: the benchmark, ``python -m fastlstm.bench`` with the same flags.

Bad input (a missing file, a selector that does not fit the file's framework) ends with a
one-line error on stderr and exit status 1; a usage error with argparse's status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import __version__

PROG = "fastlstm"

# The flags that pick one LSTM (fastlstm.loaders.SELECTORS maps each kind of source to its own).
SELECTOR_FLAGS = ("module", "layer", "node", "scope")
KIND_NAMES = {"torch": "a PyTorch file", "keras": "a Keras model", "onnx": "an ONNX model",
              "tf1": "a TF1 checkpoint"}


def model_source(path: str) -> str:
    """argparse type of FILE: an existing file or directory, or a TF1 checkpoint prefix."""
    if not (os.path.exists(path) or os.path.exists(path + ".index")):
        raise argparse.ArgumentTypeError(f"{path!r} does not exist")
    return path


def cmd_info(args: argparse.Namespace) -> int:
    from .runtime import show_config

    show_config()
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .inspection import inspect

    print(inspect(args.file))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from . import loaders
    from .inspection import load_source

    kind = loaders.kind_of(args.file)
    expected = loaders.SELECTORS[kind]
    given = [flag for flag in SELECTOR_FLAGS if getattr(args, flag) is not None]
    name = None
    if given:
        (flag,) = given   # argparse keeps the four flags mutually exclusive
        if flag != expected:
            raise ValueError(f"--{flag} does not apply to {args.file!r}, {KIND_NAMES[kind]}: "
                             f"pick its LSTM with --{expected} NAME (`{PROG} inspect` lists them)")
        name = getattr(args, flag)
        if flag == "node" and "," in name:
            name = name.split(",")   # a chain of nodes, as inspect lists it
    model = load_source(args.file, name)
    model.save(args.output)
    print(f"wrote {args.output}: {model!r}")
    return 0


def cmd_bench(args: argparse.Namespace, rest: Sequence[str]) -> int:
    from .bench.__main__ import main as bench_main

    return bench_main(list(rest), prog=f"{PROG} bench")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description="Fast, exact LSTM inference on the CPU.")
    ap.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="show the build and runtime configuration (show_config)")
    info.set_defaults(run=cmd_info)

    inspect = sub.add_parser("inspect", help="list the LSTMs in a model file")
    inspect.add_argument("file", type=model_source, help=".pt/.pth/.bin/.safetensors, .keras/.h5, .onnx, a "
                                      "SavedModel directory or a TF1 checkpoint prefix")
    inspect.set_defaults(run=cmd_inspect)

    convert = sub.add_parser("convert", help="load one LSTM from a model file and save it as "
                                             "a fastlstm .npz (fastlstm.load reads it)")
    convert.add_argument("file", type=model_source, help="the model file, as for inspect")
    pick = convert.add_mutually_exclusive_group()
    for flag, kind, more in (("module", "PyTorch", ""), ("layer", "Keras", ""),
                             ("node", "ONNX", "; a chain of nodes as NAME,NAME,..."),
                             ("scope", "TF1 checkpoint", "")):
        pick.add_argument(f"--{flag}", metavar="NAME", help=f"the {kind} LSTM to take "
                                                            f"(as `inspect` names it{more})")
    convert.add_argument("-o", "--output", required=True, metavar="OUT",
                         help="where to write the model (.npz)")
    convert.set_defaults(run=cmd_convert)

    # Its flags are the benchmark's own, passed on unparsed (so `bench --help` is its help).
    bench = sub.add_parser("bench", add_help=False, help="run the benchmark (see "
                                                         f"`{PROG} bench --help`)")
    bench.set_defaults(run=cmd_bench)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    args, rest = ap.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    if args.command == "bench":
        return int(args.run(args, rest))
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return int(args.run(args))
    except (ValueError, TypeError, OSError) as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1
