"""The `keras-opt-migrate` command: a thin shell over the library.

Exit codes: 0 success; 1 `audit --strict` found something; 2 bad input (unreadable,
corrupt or unsupported file, bad arguments), always as one line on stderr, no traceback.
"""

import argparse
import json
import os
import sys

EXIT_OK, EXIT_FINDINGS, EXIT_BAD_INPUT = 0, 1, 2
PROG = "keras-opt-migrate"


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line (its default prints usage too, which is fine)."""

    def error(self, message):
        # `keras-opt-migrate: error: ` whichever subcommand parser complains (its prog names the command)
        command = self.prog[len(PROG):].strip()
        from .errors import printable
        self.exit(EXIT_BAD_INPUT, "%s: error: %s%s\n" % (PROG, "%s: " % command if command else "", printable(message)))


class ArgumentError(ValueError):
    """A command-line argument that cannot be used (reported as one line, exit 2)."""


MAX_VARIABLES_BYTES = 64 * 1024 * 1024


def _json_argument(option, text):
    """--config / --target-config: a JSON object, else ArgumentError saying what was received."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except RecursionError:
        raise ArgumentError("bad argument %s: the JSON is nested too deeply" % option) from None
    except ValueError as e:
        raise ArgumentError("bad argument %s: not JSON (%s); expected an object such as '{\"epsilon\": 1e-08}'"
                            % (option, e)) from None
    if not isinstance(value, dict):
        raise ArgumentError("bad argument %s: expected a JSON object of hyperparameters such as "
                            "'{\"epsilon\": 1e-08}', received a JSON %s" % (option, _json_kind(value)))
    return value


def _json_kind(value):
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def _shape(dims, where):
    if not isinstance(dims, (list, tuple)) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                      for d in dims):
        raise ArgumentError("bad argument --variables: %s: the shape must be a list of non-negative integers, "
                            "received %s" % (where, json.dumps(dims)[:80]))
    return tuple(dims)


def _parse_variables(text):
    """--variables: a JSON file of [[name, shape, dtype?], ...] or 'name:5x4,name2:4'."""
    if text is None:
        return None
    if os.path.isfile(text):  # a regular file (a FIFO or device is not one, so it is never opened)
        from .errors import printable
        try:
            with open(text, "rb") as f:
                raw = f.read(MAX_VARIABLES_BYTES + 1)
            if len(raw) > MAX_VARIABLES_BYTES:
                raise ArgumentError("%s: the --variables file is larger than %d bytes" % (printable(text),
                                                                                          MAX_VARIABLES_BYTES))
            data = json.loads(raw)
        except RecursionError:
            raise ArgumentError("%s: the --variables JSON is nested too deeply; expected a list of "
                                "[name, shape, dtype?]" % printable(text)) from None
        except (ValueError, OSError) as e:
            raise ArgumentError("%s: the --variables file is not readable JSON (%s)" % (printable(text), e)) from None
        if not isinstance(data, list):
            raise ArgumentError("%s: the --variables file must hold a JSON array of [name, shape, dtype?] or "
                                "{\"name\": ..., \"shape\": ...}, received a JSON %s"
                                % (printable(text), "object" if isinstance(data, dict) else _json_kind(data)))
        out = []
        for i, v in enumerate(data):
            where = "%s: item %d" % (printable(text), i)
            if isinstance(v, dict) and isinstance(v.get("name"), str) and "shape" in v:
                name, dims, dtype = v["name"], v["shape"], v.get("dtype", "float32")
            elif isinstance(v, list) and len(v) in (2, 3) and isinstance(v[0], str):
                name, dims, dtype = v[0], v[1], v[2] if len(v) == 3 else "float32"
            else:
                raise ArgumentError("bad argument --variables: %s: expected [name, shape, dtype?] or "
                                    "{\"name\": ..., \"shape\": ...}, received %s" % (where, json.dumps(v)[:80]))
            if not isinstance(dtype, str):
                raise ArgumentError("bad argument --variables: %s: the dtype must be a string" % where)
            out.append((name, _shape(dims, where), dtype))
        return out
    out = []
    for item in text.split(","):
        name, _, dims = item.strip().rpartition(":")
        if not name:
            raise ArgumentError("bad argument --variables: item %r is not NAME:SHAPE (e.g. dense/kernel:5x4)" % item)
        try:
            shape = tuple(int(d) for d in dims.split("x")) if dims not in ("", "scalar") else ()
        except ValueError:
            raise ArgumentError("bad argument --variables: item %r: the shape %r is not dimensions joined by x "
                                "(e.g. 5x4)" % (item, dims)) from None
        if any(d < 0 for d in shape):
            raise ArgumentError("bad argument --variables: item %r: negative dimension" % item)
        out.append((name, shape))
    return out


def _load_options(args):
    return {"format": args.format, "optimizer": args.optimizer, "variables": _parse_variables(args.variables),
            "config": _json_argument("--config", getattr(args, "config", None))}


def _add_load_options(p):
    p.add_argument("--format", help="read as this format instead of detecting it")
    p.add_argument("--optimizer", help="the algorithm, when the file cannot tell (e.g. adam vs adamax)")
    p.add_argument("--variables", help="the model's trainable variables in order, for positional layouts: "
                                       "a JSON file or NAME:SHAPE,... (e.g. hidden/kernel:5x4,hidden/bias:4)")
    p.add_argument("--config", help="JSON object of hyperparameters the file lacks (e.g. '{\"amsgrad\": true}')")


def cmd_inspect(args):
    from . import load_state, report
    desc = report.describe(load_state(args.path, **_load_options(args)))
    print(json.dumps(desc, indent=1, sort_keys=True, default=str) if args.json else report.format_text(desc))
    return EXIT_OK


def cmd_audit(args):
    from .audit import audit
    result = audit(args.path, **_load_options(args))
    if args.json:
        print(json.dumps(result.to_json(), indent=1, sort_keys=True, default=str))
    else:
        print("%s: %s %s state, %d tensors checked, %d finding(s)"
              % (result.path, result.generation, result.algorithm, result.tensors_checked, len(result.findings)))
        if result.candidates:
            print("  the file cannot tell %s apart; pass --optimizer to choose. Checks that depend on the "
                  "algorithm ran for each of them" % result.algorithm)
        for f in result.findings:
            print("  " + str(f))
    return EXIT_FINDINGS if (args.strict and result.findings) else EXIT_OK


class _Progress:
    """Tensor-count progress on stderr, shown only for long conversions on a terminal."""

    def __init__(self, enabled):
        self.enabled = enabled
        self.shown = False

    def __call__(self, done, total, what=""):
        if not self.enabled or total < 50:
            return
        sys.stderr.write("\r%s: %d/%d tensors %s" % (PROG, done, total, str(what)[:40].ljust(40)))
        self.shown = True
        if done >= total:
            sys.stderr.write("\n")


def _convert_options(args):
    load = _load_options(args)
    return {"source_optimizer": load["optimizer"], "variables": load["variables"], "source_config": load["config"],
            "source_format": load["format"],
            "format": args.to_format, "partial": args.partial, "dry_run": args.dry_run, "force": args.force,
            "progress": _Progress(sys.stderr.isatty() and not args.json)}


def _print_conversion(args, report):
    if args.json:
        print(json.dumps(report.to_json(), indent=1, sort_keys=True, default=str))
    else:
        print(report.format_text())
        print("(dry run: nothing written)" if args.dry_run else "wrote %s (%s)" % (args.dst, report.target_format))
    assumed = report.assumed_defaults()
    if assumed:  # one line on stderr, so --json output stays parseable
        print("%s: note: %s not stored in %s, default%s assumed (%s); if the run used other values, pass them: "
              "--config '%s'" % (PROG, "1 hyperparameter" if len(assumed) == 1 else "%d hyperparameters" % len(assumed),
                                 args.src, "" if len(assumed) == 1 else "s",
                                 ", ".join("%s=%r" % kv for kv in sorted(assumed.items())),
                                 json.dumps({k: "..." for k in sorted(assumed)}).replace('"..."', "...")),
              file=sys.stderr)


def cmd_convert(args):
    from .api import convert
    options = _convert_options(args)
    target_config = _json_argument("--target-config", args.target_config)
    report = convert(args.src, args.dst, args.to, optimizer=args.to_optimizer, config=target_config, **options)
    _print_conversion(args, report)
    return EXIT_OK


def cmd_upgrade(args):
    from .api import upgrade
    report = upgrade(args.src, args.dst, **_convert_options(args))
    _print_conversion(args, report)
    return EXIT_OK


def cmd_diff(args):
    from .diff import diff
    result = diff(args.a, args.b, atol=args.atol, **_load_options(args))
    print(json.dumps(result.to_json(), indent=1, sort_keys=True) if args.json else result.format_text())
    return EXIT_OK if result.equal else EXIT_FINDINGS


def _tolerance(text):
    """--atol: a finite number >= 0 (NaN would make every comparison pass, a negative one every one fail)."""
    import math
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number >= 0, received %r" % text) from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError("expected a finite number >= 0, received %r" % text)
    return value


def build_parser():
    parser = _Parser(prog=PROG, description="Inspect, audit and migrate Keras / TensorFlow optimizer state.")
    parser.add_argument("--version", action="version", version="%(prog)s " + _version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("inspect", help="show what optimizer state a file holds (metadata only)")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_load_options(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("audit", help="check optimizer state for NaN/Inf, negative moments, missing slots, "
                                     "iteration inconsistencies and state real versions would drop")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--strict", action="store_true", help="exit 1 when there is any finding")
    _add_load_options(p)
    p.set_defaults(func=cmd_audit)

    def add_write_options(p):
        p.add_argument("src")
        p.add_argument("dst")
        p.add_argument("--format", dest="to_format", help="output format (default: from DST's extension; "
                                                          "a TF checkpoint prefix otherwise)")
        p.add_argument("--source-format", dest="format", help="read SRC as this format instead of detecting it")
        p.add_argument("--optimizer", help="SRC's algorithm, when the file cannot tell")
        p.add_argument("--variables", help="SRC's model variables in order (see inspect --help)")
        p.add_argument("--config", help="JSON hyperparameters SRC lacks")
        p.add_argument("--partial", action="store_true",
                       help="convert what can be carried with certainty and zero-initialise or drop the rest "
                            "(reported), instead of refusing")
        p.add_argument("--dry-run", action="store_true", help="print the per-slot report, write nothing")
        p.add_argument("--force", action="store_true", help="overwrite DST if it exists")
        p.add_argument("--json", action="store_true", help="machine-readable report")

    p = sub.add_parser("convert", help="convert optimizer state to another generation and/or format")
    add_write_options(p)
    p.add_argument("--to", required=True, choices=["v1", "v2", "experimental", "keras3", "tf1"],
                   help="target API generation; for a .keras DST it also picks the flavour: keras3 writes Keras 3's "
                        ".keras, experimental tf_keras 2.21's (v2 has none: tf_keras keeps no legacy optimizer state "
                        "in .keras files)")
    p.add_argument("--to-optimizer", help="target algorithm when it differs (e.g. adamw from adam)")
    p.add_argument("--target-config", help="JSON hyperparameters to set on the target (e.g. weight_decay)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("upgrade", help="convert to the newest target that fits: Keras 3 (.keras for full-model "
                                       "files, the Keras 3 layout for TF checkpoints)")
    add_write_options(p)
    p.set_defaults(func=cmd_upgrade)

    p = sub.add_parser("diff", help="compare two optimizer states slot by slot (exit 1 when they differ)")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--atol", type=_tolerance, default=0.0, help="absolute tolerance (default 0: bit-exact)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_load_options(p)
    p.set_defaults(func=cmd_diff)
    return parser


def _version():
    from . import __version__
    return __version__


def _import_tensorflow_quietly():
    """Import TensorFlow with its start-up logs muted (see `keras_opt_migrate._tensorflow`).

    Our users get one line per problem on stderr, not a screen of start-up noise.
    """
    from ._tensorflow import import_tensorflow
    try:
        import_tensorflow()
    except Exception:  # noqa: BLE001 - an import error is reported where TensorFlow is needed
        pass


def _reuse_freed_memory():
    """Ask glibc to keep freed blocks for reuse instead of returning them to the system.

    Commands stream a state one tensor at a time; by default every tensor above 32 MiB is a
    fresh mmap whose pages the kernel faults in and zeroes again (on the machine of
    docs/scale.md that was half of a large conversion's time). With these settings the
    blocks of earlier tensors are reused: the peak RSS is the same, it is just not given back
    before the process exits. Anything but glibc ignores this.
    """
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: blocks below 1 GiB come from the reusable heap
        libc.mallopt(-1, 1 << 31)  # M_TRIM_THRESHOLD: do not hand the heap back while running
    except (OSError, AttributeError):
        pass


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    _reuse_freed_memory()
    if args.command != "inspect":  # inspect reads metadata only; readers import TensorFlow if they need it
        _import_tensorflow_quietly()
    from .errors import KerasOptMigrateError
    try:
        return args.func(args)
    except (ArgumentError, KerasOptMigrateError) as e:
        print("%s: error: %s" % (PROG, _with_path(args, _one_line(e))), file=sys.stderr)
    except ValueError as e:
        print("%s: error: %s" % (PROG, _with_path(args, _one_line(e))), file=sys.stderr)
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`): not an error of the input.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except OSError as e:
        print("%s: error: %s: %s" % (PROG, _printable(getattr(e, "filename", "") or _paths(args)),
                                     _one_line(e.strerror or e)), file=sys.stderr)
    except RecursionError as e:
        print("%s: error: %s: input nested too deeply (%s)" % (PROG, _paths(args), _one_line(e)), file=sys.stderr)
    except KeyboardInterrupt:
        print("%s: interrupted" % PROG, file=sys.stderr)
        return 130
    except Exception as e:  # a bug of ours must still not spill a traceback over the user's terminal
        if os.environ.get("KERAS_OPT_MIGRATE_DEBUG"):
            raise
        print("%s: error: %s: internal error %s: %s (set KERAS_OPT_MIGRATE_DEBUG=1 for a traceback)"
              % (PROG, _paths(args), type(e).__name__, _one_line(e)), file=sys.stderr)
    return EXIT_BAD_INPUT


def _with_path(args, message):
    """`<path>: <problem>`: errors raised without a file (migration, mapping) get the command's paths."""
    paths = [_printable(getattr(args, k)) for k in ("path", "a", "b", "src", "dst") if getattr(args, k, None)]
    if any(message.startswith(p) for p in paths) or not paths:
        return message
    return "%s: %s" % (_paths(args), message)


def _paths(args):
    return " ".join(_printable(getattr(args, k)) for k in ("path", "a", "b", "src") if getattr(args, k, None))


def _printable(text):
    from .errors import printable
    return printable(text)


def _one_line(error):
    """The message as one line: our messages whole, with control characters (a newline in a file name)
    escaped; a library's multi-line text by its first line."""
    from .errors import KerasOptMigrateError
    text = str(error).strip()
    if not isinstance(error, KerasOptMigrateError):
        text = (text.splitlines() or [""])[0]
    return _printable(text) or type(error).__name__
