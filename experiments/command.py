"""What every seqjax command shares: the flags that name a config, the folder a
command writes and the run it reads, and a start that turns bad flags into a
usage message instead of a traceback.

Flag names, the same in every command:
  --config=SPEC            a config file[:variant[,variant...]]; a path that is
                           not a file here is looked up among the shipped
                           configs, so `configs/default.py` and `default` work
                           from any directory (seqjax.config.resolve_config_path)
  --config.<key>=VALUE     overrides one field (train, submit and sweep alike)
  --workdir=DIR            the run folder a command writes (and resumes)
  --run_dir=DIR            a finished or running run a command reads
  --out_dir=DIR            where a command that reads puts its files
"""

import re
import sys

from absl import app, flags
from ml_collections import config_flags

from seqjax import config as config_lib

CONFIG_HELP = (
    "Config file[:variant[,variant...]], e.g. configs/default.py:gru (shipped configs also by name: default:gru); "
    "override a field with --config.<section>.<key>=value."
)


def define_config(help_string: str = CONFIG_HELP) -> flags.FlagHolder:
    """The --config flag: the config, loaded, with its --config.* overrides applied."""
    holder = config_flags.DEFINE_config_file("config", None, help_string, lock_config=True)
    flags.mark_flag_as_required("config")
    return holder


def define_workdir(help_string: str = "The run folder to write: checkpoints, metrics, outputs.") -> flags.FlagHolder:
    holder = flags.DEFINE_string("workdir", None, help_string)
    flags.mark_flag_as_required("workdir")
    return holder


def define_run_dir(help_string: str = "The run to read (the --workdir it was trained in).") -> flags.FlagHolder:
    holder = flags.DEFINE_string("run_dir", None, help_string)
    flags.mark_flag_as_required("run_dir")
    return holder


def config_value(holder: flags.FlagHolder, validate: bool = True):
    """The ConfigDict of --config; a file that does not load, or a config
    `seqjax.config.validate` refuses, is a usage error naming the problem."""
    try:
        config = holder.value
        config.keys()  # a file that failed to load raises on first access
        if validate:
            config_lib.validate(config)
    except (OSError, config_lib.ConfigError) as error:
        raise app.UsageError(str(error)) from error
    return config


def config_spec(holder: flags.FlagHolder) -> str:
    """The `path[:variants]` string that --config was given (path resolved)."""
    return config_flags.get_config_filename(flags.FLAGS[holder.name])


def config_overrides(holder: flags.FlagHolder) -> dict:
    """The --config.<key>=value overrides, e.g. {'train.num_steps': 500}."""
    return dict(config_flags.get_override_values(flags.FLAGS[holder.name]))


def start(main) -> None:
    """app.run(main) with config paths resolved and config flag errors as usage errors."""
    app.run(main, flags_parser=parse_flags)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, after resolving --config paths; an unknown or
    mistyped --config.<key> exits with status 1 and one line naming it."""
    try:
        return flags.FLAGS(resolve_config_args(argv))
    except (flags.Error, FileNotFoundError) as error:
        _usage_exit(str(error))
    except (AttributeError, KeyError, TypeError, ValueError) as error:  # from --config.<key>=value
        _usage_exit(f"{_override_named_by(error, argv)} was refused: {_one_line(error)}")


def resolve_config_args(argv: list[str]) -> list[str]:
    """argv with the path of `--config=PATH[:variants]` (or `--config PATH`)
    resolved by seqjax.config.resolve_config_path."""
    resolved = list(argv)
    for i, arg in enumerate(resolved):
        if arg.startswith("--config="):
            resolved[i] = "--config=" + _resolve_spec(arg.removeprefix("--config="))
        elif arg == "--config" and i + 1 < len(resolved):
            resolved[i + 1] = _resolve_spec(resolved[i + 1])
    return resolved


def _resolve_spec(spec: str) -> str:
    path, sep, variants = spec.partition(":")
    return config_lib.resolve_config_path(path) + sep + variants


def _override_named_by(error: BaseException, argv: list[str]) -> str:
    """The --config.<key> flag whose key the error quotes (ml_collections names only the last part)."""
    quoted = re.findall(r"'([^'\\]+)'", str(error).replace("\\'", "'"))
    keys = [arg.split("=", 1)[0] for arg in argv if arg.startswith("--config.")]
    named = [key for key in keys if any(key.split(".")[-1] == q or f".{q}." in key for q in quoted)]
    return named[0] if named else "a --config.<key>=value override"


def _one_line(error: BaseException) -> str:
    text = str(error).strip("'\"").replace("\\n", " ").replace("\\'", "'").replace("\n", " ")
    return " ".join(text.split())


def _usage_exit(message: str) -> None:
    print(f"FATAL Flags parsing error: {message}", file=sys.stderr)
    print("Pass --helpshort or --helpfull to see help on flags.", file=sys.stderr)
    sys.exit(1)
