"""`prompttune train|eval|report ...`: checks the config in one line, then hands over to Hydra."""

import itertools
import re
import sys
from pathlib import Path

from prompttune.errors import UserError
from prompttune.paths import CONFIG_DIR, GROUPS

USAGE = """usage: prompttune {train,eval,report,bench} [hydra overrides and flags]

  prompttune train method=ptuning_v1 shots=16
  prompttune train -m method=finetune,pet seed=13,21,42
  prompttune eval run=outputs/<date>/<time>          re-evaluate a training run
  prompttune eval method=pet dataset=mr               zero-shot evaluation of a pattern
  prompttune report outputs/multirun/<date>/<time>    mean ± std table, files and plot
  prompttune bench                                    every method against PEFT, fp32 and bf16

Hydra's flags work after the subcommand: -m, --cfg job, --help, --config-dir DIR."""

# Flags Hydra takes with a value, and flags that only inspect the config (no check needed).
_VALUE_FLAGS = {"--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp", "--experimental-rerun"}
_INSPECT_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc"}
_PRINT_FLAGS = {"--info", "-i", "--cfg", "-c", "--shell-completion", "-sc"}  # Hydra refuses them with -m


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "report":
        from prompttune.commands.report import main as report_main

        return report_main(rest)
    if command == "bench":
        from prompttune.commands.bench import main as bench_main

        return bench_main(rest)
    if command not in ("train", "eval"):
        print(
            f"error: unknown command {command!r}; use train, eval, report or bench (prompttune --help)", file=sys.stderr
        )
        return 2
    try:
        if MULTIRUN_FLAGS.intersection(rest) and _PRINT_FLAGS.intersection(rest):
            raise UserError(
                "-m cannot be combined with --cfg, --info or --shell-completion (Hydra does one of them); "
                "drop -m to print the config of one job, with that job's values"
            )
        if not _INSPECT_FLAGS.intersection(rest):
            rest = prepare(command, rest)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if rest is None:  # nothing to do
        return 0
    sys.argv = [f"prompttune {command}", *rest]
    if command == "train":
        from prompttune.commands.train import main as entry
    else:
        from prompttune.commands.evaluate import main as entry
    entry()
    return 0


def prepare(command: str, rest: list[str]) -> list[str] | None:
    """Check the command line and give the run a dir of its own; for resume=DIR, rebuild the run's command.
    None when there is nothing to do (the run to resume has completed)."""
    overrides, _ = split_arguments(rest)
    resume = value_of(overrides, "resume")
    if resume is not None:
        if command != "train" or MULTIRUN_FLAGS.intersection(rest):
            raise UserError("resume=DIR continues one training run; a sweep is finished by running it again")
        rest = resume_arguments(rest, overrides, Path(resume))
        if rest is None:
            return None
    if command == "eval" and value_of(overrides, "run") is not None:
        from prompttune.runs.lifecycle import check_eval_overrides

        check_eval_overrides(overrides)
    check_overrides(command, rest)
    return rest if resume is not None else place_run(command, rest)


MULTIRUN_FLAGS = {"-m", "--multirun"}
RESUME_MAY_CHANGE = ("hydra.", "trainer.threads", "trainer.save_every", "resume")


def resume_arguments(rest: list[str], overrides: list[str], run_dir: Path) -> list[str] | None:
    """The run's own overrides (from its .hydra/overrides.yaml), into its own dir."""
    from omegaconf import OmegaConf

    from prompttune.runs.record import RunRecord

    saved = run_dir / ".hydra" / "overrides.yaml"
    if not run_dir.is_dir() or not saved.exists():
        raise UserError(f"resume={run_dir} is not a run directory (it has no .hydra/overrides.yaml)")
    record = RunRecord.read(run_dir)
    if record is None:
        raise UserError(f"resume={run_dir}: {run_dir / 'metrics.json'} is missing; it is not a run directory")
    if record.command != "train":
        raise UserError(f"resume={run_dir} is a `prompttune {record.command}` run; only training runs resume")
    changed = [o for o in overrides if not o.lstrip("+~").startswith(RESUME_MAY_CHANGE)]
    if changed:
        raise UserError(
            f"resume=DIR takes the run's config from DIR; drop {', '.join(changed)} (only trainer.threads, "
            "trainer.save_every and hydra.* may be added)"
        )
    if record.status == "completed":
        print(f"{run_dir} already completed (test accuracy {record.test['accuracy']:.4f}); nothing to resume")
        return None
    try:
        original = [str(o) for o in OmegaConf.load(saved) if not str(o).startswith("resume=")]
    except Exception as err:  # yaml's and omegaconf's errors have no common base
        raise UserError(f"{saved} is damaged ({_first_line(err)})") from None
    flags = [a for a in rest if a not in overrides]
    kept = [o for o in overrides if not o.startswith("resume=")]
    return [*flags, *original, *kept, f"resume={_quoted(str(run_dir))}", f"hydra.run.dir={_quoted(str(run_dir))}"]


def place_run(command: str, rest: list[str]) -> list[str]:
    """Claim the run dir (the sweep dir with -m) before Hydra starts: a new one exclusively, or the next free
    name; a sweep dir named on the command line is used as it is, so that a sweep run again finishes there."""
    from prompttune.runs.rundirs import claim, reuse

    overrides, config_dir = split_arguments(rest)
    multirun = bool(MULTIRUN_FLAGS.intersection(rest))
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = value_of(overrides, key)
    if given is not None and multirun:
        reuse(Path(given))
        return rest
    wanted = Path(given) if given is not None else default_dir(command, overrides, config_dir, key)
    claimed = claim(wanted)
    if given is not None and claimed != wanted:
        print(f"note: {wanted} exists; this run writes to {claimed}", file=sys.stderr)
    if multirun:
        print(f"sweep dir: {claimed} (if the sweep stops, run this command again with hydra.sweep.dir={claimed})")
    return [a for a in rest if not a.startswith(f"{key}=")] + [f"{key}={_quoted(str(claimed))}"]


def default_dir(command: str, overrides: list[str], config_dir: Path | None, key: str) -> Path:
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    parsed = OverridesParser.create().parse_overrides(overrides)
    single = [o.input_line for o in parsed if not o.is_sweep_override()]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(command, overrides=_with_user_config_dir(single, config_dir), return_hydra_config=True)
    return Path(str(OmegaConf.select(cfg, key)))


def value_of(overrides: list[str], key: str) -> str | None:
    """The value an override gives `key`, unquoted; None when none does."""
    for override in overrides:
        name, _, value = override.lstrip("+~").partition("=")
        if name == key:
            return value[1:-1] if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"" else value
    return None


def _quoted(value: str) -> str:
    if re.fullmatch(r"[\w/.:@+-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def split_arguments(rest: list[str]) -> tuple[list[str], Path | None]:
    """The overrides among Hydra's arguments, and the user's --config-dir if any."""
    overrides, config_dir, skip = [], None, False
    for i, arg in enumerate(rest):
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in _VALUE_FLAGS:
            if name in ("--config-dir", "-cd"):
                config_dir = Path(arg.split("=", 1)[1] if "=" in arg else rest[i + 1])
            skip = "=" not in arg
        elif not arg.startswith("-"):
            overrides.append(arg)
    return overrides, config_dir


def check_overrides(command: str, rest: list[str]) -> None:
    """Compose and validate the config of every job a sweep would run, so that a mistake in any value of any
    key fails here, in one line, before the first job starts."""
    from hydra import initialize_config_dir

    from prompttune.config.run import register_configs

    overrides, config_dir = split_arguments(rest)
    parsed = _parsed([o for o in overrides if not o.startswith("hydra")], "the overrides")
    choices = _checked_choices(parsed, config_dir)
    register_configs()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        if MULTIRUN_FLAGS.intersection(rest):
            given = {o.get_key_element() for o in parsed}
            preset = _preset_sweep_lines(command, [values[0] for values in choices], config_dir, given)
            choices += _checked_choices(_parsed(preset, "the preset's hydra.sweeper.params"), config_dir)
        for job in itertools.product(*choices):
            _check_one(command, list(job), config_dir)


def _parsed(lines: list[str], what: str) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_overrides(lines)
    except Exception as err:  # Hydra's parse errors are several lines; keep the first
        raise UserError(f"cannot parse {what}: {_first_line(err)}") from None


def _checked_choices(parsed: list, config_dir: Path | None) -> list[list[str]]:
    """Each override's values (one, or a sweep's), every group option among them checked to exist."""
    choices = [[o.input_line] if not o.is_sweep_override() else _sweep_values(o) for o in parsed]
    for override in dict.fromkeys(value for values in choices for value in values):
        _check_group_choice(override, config_dir)
    return choices


def _preset_sweep_lines(command: str, first_job: list[str], config_dir: Path | None, given: set[str]) -> list[str]:
    """What a preset sweeps itself (`hydra.sweeper.params`, e.g. experiment=paradigm_curve), for the keys the
    command line leaves to it, as override lines."""
    from hydra import compose

    try:
        cfg = compose(command, overrides=_with_user_config_dir(first_job, config_dir), return_hydra_config=True)
    except Exception as err:
        raise UserError(_composition_problem(err, command)) from None
    params = cfg.hydra.sweeper.get("params") or {}
    return [f"{key}={values}" for key, values in params.items() if key not in given]


def _sweep_values(override) -> list[str]:
    key = override.get_key_element()
    return [f"{key}={v}" for v in override.sweep_string_iterator()]


def _check_one(command: str, overrides: list[str], config_dir: Path | None) -> None:
    from hydra import compose

    from prompttune.config.run import validate

    try:
        cfg = compose(command, overrides=_with_user_config_dir(overrides, config_dir))
    except Exception as err:
        raise UserError(_composition_problem(err, command)) from None
    validate(cfg)
    _check_model_is_used(cfg, overrides)
    _check_chat_template(cfg)
    _check_fact_objects(cfg)


def _check_model_is_used(cfg, overrides: list[str]) -> None:
    """A model setting for a method that loads no language model (tfidf, bilstm, textcnn) would be ignored."""
    from prompttune.methods import METHODS

    if METHODS[cfg.method.name].uses_backbone:
        return
    given = [o for o in overrides if o.lstrip("+~").split("=", 1)[0].split(".")[0] == "model"]
    if given:
        raise UserError(f"method={cfg.method.name} loads no language model, so {given[0]} would be ignored; drop it")


def _check_chat_template(cfg) -> None:
    """method.chat=true needs the model's chat template: read from its tokenizer before a run dir is written."""
    if not cfg.method.get("chat") or cfg.model.name in _CHAT_CHECKED:
        return
    from prompttune.prompts.chat import chat_turns

    chat_turns(_tokenizer_of(cfg.model), cfg.model.name)
    _CHAT_CHECKED.add(cfg.model.name)


_CHAT_CHECKED: set[str] = set()


def _tokenizer_of(model_cfg):
    """The model's tokenizer, read once per model for all of a sweep's pre-flight checks."""
    name = str(model_cfg.name)
    if name not in _TOKENIZERS:
        from prompttune.models.loading import load_tokenizer

        _TOKENIZERS[name] = load_tokenizer(model_cfg)
    return _TOKENIZERS[name]


_TOKENIZERS: dict[str, object] = {}


def _check_fact_objects(cfg) -> None:
    """A fact-probing run keeps the facts whose object is one token for its model: counted on the tokenizer alone
    before a run dir is written, so that a relation with too few stops with one line."""
    if str(cfg.dataset.get("task")) != "fact_probing" or not cfg.method.get("name"):
        return
    from prompttune.data.facts import facts_of
    from prompttune.methods.probing import answer_space, require_answerable_facts

    facts = facts_of(cfg.dataset)
    key = (str(cfg.model.name), str(cfg.dataset.name), answer_space(cfg.dataset, cfg.method), facts)
    if key in _FACTS_CHECKED:
        return
    require_answerable_facts(cfg.dataset, cfg.method, _tokenizer_of(cfg.model), str(cfg.model.name))
    _FACTS_CHECKED.add(key)


_FACTS_CHECKED: set[tuple] = set()


def _with_user_config_dir(overrides: list[str], config_dir: Path | None) -> list[str]:
    if config_dir is None:
        return overrides
    return [*overrides, f"hydra.searchpath=[file://{config_dir.resolve()}]"]


def _check_group_choice(override: str, config_dir: Path | None) -> None:
    key, _, value = override.lstrip("+~").partition("=")
    if key not in GROUPS or value in ("", "null"):
        return
    folders = [d / key for d in (CONFIG_DIR, config_dir) if d is not None]
    options = sorted({p.stem for f in folders if f.is_dir() for p in f.glob("*.yaml")})
    if value not in options:
        raise UserError(f"{key} {value!r} is unknown; choose one of: {', '.join(options)}")


def _composition_problem(err: Exception, command: str) -> str:
    from prompttune.config.schema import explain

    problem = explain(err)
    if "is not a config key" not in problem and "is invalid" not in problem and "is required" not in problem:
        problem += f" (`prompttune {command} --cfg job` shows the config)"
    return problem


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(err).__name__
