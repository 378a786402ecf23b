"""What every launcher shares: a quiet start, one-line errors, and a clear word on bad flags.

    from soo_jax import cli
    cli.starting("SOO fine-tuning")           # first line, before JAX is imported
    _CONFIG = config_flags.DEFINE_config_file("config", ...)
    ...
    if __name__ == "__main__":
        cli.run(main)

Errors a user can act on (a bad config value, a missing file, a refused rerun) print one line
naming the key or file and exit 2; `--debug` shows the traceback instead. Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import importlib.util
import logging
import os
import re
import signal
import sys

import ml_collections
from absl import app, flags

from soo_jax.run_dir import Interrupted, RunDirError, say

flags.DEFINE_bool("debug", False, "Show Python tracebacks for errors instead of one-line messages.")
flags.DEFINE_bool("fresh", False, "Move an existing output directory aside (to NAME.old-TIME) and start anew.")

# Errors whose message is the whole story for a user (ConfigError is a ValueError).
USER_ERRORS = (RunDirError, ValueError, FileNotFoundError, NotADirectoryError, FloatingPointError)

EXIT_USAGE = 2


def starting(what: str) -> None:
    """The first line a launcher prints: the rest of its start-up (JAX, the config) takes seconds."""
    say(f"{os.path.basename(sys.argv[0])}: {what} (importing JAX and reading the config)...")


def quiet_startup() -> None:
    """Silences start-up log lines that look like errors on a CPU machine."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file it writes at INFO
    # JAX probes for a TPU and logs "Unable to initialize backend 'tpu' ... libtpu.so" at INFO.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if isinstance(err, KeyError) and text.startswith("'") and text.endswith("'"):
        text = text[1:-1]
    return text or type(err).__name__


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USAGE)


# ---------------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------------

def flag_value(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """`path.py` or `path.py:arg` -> its get_config() (as config_flags loads it)."""
    path, _, arg = spec.partition(":") if not os.path.isfile(spec) else (spec, "", "")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    module_spec = importlib.util.spec_from_file_location("_launcher_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def unknown_overrides(config: ml_collections.ConfigDict, argv: list[str]) -> list[str]:
    """One message per `--config.KEY...` argument whose KEY path is not in `config`."""
    errors = []
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        key = arg[len("--config."):].split("=", 1)[0]
        node = config
        for depth, part in enumerate(key.split(".")):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
                where = ".".join(["config", *key.split(".")[:depth]])
                errors.append(f"unknown config key {key!r} in {arg!r}: {where} has no field {part!r}"
                              + (f" (fields: {', '.join(known)})" if known else ""))
                break
            node = node[part]
    return errors


def parse_flags(argv: list[str], *, config_required: bool = True) -> list[str]:
    """absl's parser with one-line answers for a missing --config, an unknown --config.KEY, a
    config file that does not load or validate, and any other bad flag."""
    spec = flag_value(argv, "config")
    if config_required and spec is None:
        fail("--config FILE is required, e.g. --config configs/smollm2.py")
    if spec is not None and "--debug" not in argv:
        path = spec if os.path.isfile(spec) else spec.partition(":")[0]
        if not os.path.isfile(path):  # config_flags would defer this and report it in 45 lines
            fail(f"--config {path}: {'a directory, not a config file' if os.path.isdir(path) else 'no such file'}; "
                 f"give a config file such as configs/smollm2.py")
    try:
        remaining = flags.FLAGS(argv)
    except Exception as err:  # noqa: BLE001  (a flag or config file error: the message is the point)
        if "--debug" in argv:
            raise
        fail(_explain(err, spec, argv))
    failed = _deferred_config_error()
    if failed is not None and "--debug" not in argv:
        fail(f"--config {spec}: {one_line(failed)}")
    return remaining


def _deferred_config_error() -> BaseException | None:
    """config_flags keeps a config file's IOError until the config is read: that error, if any."""
    if "config" not in flags.FLAGS:
        return None
    value = flags.FLAGS["config"].value
    return getattr(value, "_error", None) if type(value).__name__ == "_ErrorConfig" else None


# absl's words for a --config.KEY=VALUE of the wrong type -> what the value must be.
_TYPE_ERRORS = (("invalid literal for int()", "an integer"), ("could not convert string to float", "a number"),
                ("Non-boolean argument to boolean flag", "True or False"))


def _explain(err: Exception, spec: str | None, argv: list[str]) -> str:
    """The line for a failed parse: an unknown --config.KEY named with the fields that exist
    (the locked config's own error does not say which argument), else the error itself. The
    config file is loaded a second time only here, when parsing has already failed."""
    if spec is not None and any(a.startswith("--config.") for a in argv):
        try:
            errors = unknown_overrides(load_config_file(spec), argv)
        except Exception:  # noqa: BLE001  (the file itself is broken: its own error says more)
            errors = []
        if errors:
            return errors[0] + ("" if len(errors) == 1 else f" (and {len(errors) - 1} more)")
    text = one_line(err)
    match = re.match(r"flag --([\w.-]+)=(.*?): ", text)
    for words, kind in _TYPE_ERRORS:
        if match and words in text:
            key = match.group(1) if match.group(1).startswith("config.") else f"--{match.group(1)}"
            return f"{key}: must be {kind}, got {match.group(2)!r}"
    if text.startswith("Missing value for flag"):
        return f"{text}: give it a value, e.g. {text.split()[-1]}=VALUE"
    return text


# Errors of the machine rather than the program: a full disk, a read-only or forbidden path.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
WRONG_KIND = (errno.ENOTDIR, errno.EISDIR)
# tensorstore (orbax's writer) reports a full disk as a ValueError("RESOURCE_EXHAUSTED: ...").
_DISK_FULL_WORDS = ("No space left on device", "Disk quota exceeded", "os_error_code='28'")


def system_error(err: BaseException | None) -> BaseException | None:
    """The error of a full disk or an unwritable or misshapen path in `err`'s chain, if any (orbax
    re-raises a writer thread's error from its own frames)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in DISK_FULL + NOT_WRITABLE + WRONG_KIND:
            return err
        if any(words in str(err) for words in _DISK_FULL_WORDS):
            return err
        err = err.__cause__ or err.__context__
    return None


def explain_system_error(err: BaseException) -> str:
    code = err.errno if isinstance(err, OSError) else errno.ENOSPC
    if isinstance(err, OSError):
        what = f"{err.strerror or type(err).__name__}" + (f": {err.filename}" if err.filename else "")
    else:
        found = re.search(r'(?:local file|Failed writing:) "([^"]+)"', str(err))
        what = "No space left on device" + (f": {found.group(1)}" if found else "")
    if code in DISK_FULL:
        advice = ("free space on that disk, or choose an output directory on another one, then rerun the same "
                  "command to resume")
    elif code in NOT_WRITABLE:
        advice = "choose a writable output directory, or fix the path's permissions"
    else:
        advice = "a path names a file where a directory is needed, or the reverse; check the paths given"
    return f"{what}; {advice}"


class _DropSystemErrorTracebacks(logging.Filter):
    """orbax's writer threads and asyncio log a full disk with its traceback before the main
    thread re-raises it, whose one line says it all: those records go, unless --debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return system_error(exc) is None and not any(w in record.getMessage() for w in _DISK_FULL_WORDS)


def _quiet_system_errors() -> None:
    """Install `_DropSystemErrorTracebacks` and a thread excepthook that stays silent on them."""
    import threading

    quiet = _DropSystemErrorTracebacks()
    for logger in (logging.getLogger(), logging.getLogger("absl")):
        for handler in logger.handlers:
            if not any(isinstance(f, _DropSystemErrorTracebacks) for f in handler.filters):
                handler.addFilter(quiet)
    previous = threading.excepthook

    def excepthook(args):
        if system_error(args.exc_value) is None:
            previous(args)

    if not getattr(threading.excepthook, "quiet_system_errors", False):
        excepthook.quiet_system_errors = True
        threading.excepthook = excepthook


def _interrupt(signum, frame):
    name = signal.Signals(signum).name
    err = Interrupted(f"interrupted by {name}; what was saved so far is kept: rerun the same command to resume",
                      128 + signum)
    err.by_signal = True
    err.signum = signum
    raise err


def _redeliver_swallowed_interrupts() -> None:
    """A signal handled while Python runs a callback whose exceptions it ignores (a gc callback
    such as JAX's, a __del__) would be lost, and the run would go on: such an Interrupted is
    delivered again, from a timer thread, so the handler runs once that callback has returned."""
    previous = sys.unraisablehook
    if getattr(previous, "redelivers_interrupts", False):
        return

    def hook(unraisable):
        err = unraisable.exc_value
        if isinstance(err, Interrupted) and getattr(err, "signum", None) is not None:
            import threading

            threading.Timer(0.05, signal.raise_signal, (err.signum,)).start()
            return
        previous(unraisable)

    hook.redelivers_interrupts = True
    sys.unraisablehook = hook


def _exit_now(code: int) -> None:
    """Exit without the interpreter's shutdown: a signal may have interrupted JAX mid-call (a
    compilation, a dispatch), and its exit handlers can then crash (a segfault after the line).
    Every `with` has unwound by now, so the lock is released and the files are closed."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run(main, *, config_required: bool = True) -> None:
    """`absl.app.run(main)` with a quiet start and one-line errors (tracebacks with --debug).
    SIGINT and SIGTERM end the run with one 'interrupted' line, releasing its directory's lock on
    the way out (a training loop catches them itself to save its state first)."""

    def wrapped(argv):
        quiet_startup()
        if not flags.FLAGS.debug:
            _quiet_system_errors()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _interrupt)
        _redeliver_swallowed_interrupts()
        try:
            return main(argv)
        except BrokenPipeError:
            # The reader of stdout left (`... | head`): stop quietly, as a shell tool does on SIGPIPE.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            _exit_now(128 + signal.SIGPIPE)
        except Interrupted as err:
            print(one_line(err), file=sys.stderr, flush=True)
            if getattr(err, "by_signal", False):
                _exit_now(err.exit_code)
            sys.exit(err.exit_code)
        except Exception as err:  # noqa: BLE001  (a user's error: one line; anything else is a bug)
            if flags.FLAGS.debug:
                raise
            if not isinstance(err, RunDirError) and system_error(err) is not None:  # a full disk, ...
                print(f"error: {explain_system_error(system_error(err))}", file=sys.stderr, flush=True)
                # Writer threads may still hold failed futures, whose clean-up at shutdown prints
                # more tracebacks ("Event loop is closed"): leave without it.
                _exit_now(EXIT_USAGE)
            if isinstance(err, USER_ERRORS):
                fail(one_line(err))
            raise

    app.run(wrapped, flags_parser=lambda argv: parse_flags(argv, config_required=config_required))
