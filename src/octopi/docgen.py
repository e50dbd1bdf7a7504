"""Generate the reference parts of the user docs from the code.

``python -m octopi.docgen`` rewrites:

- ``docs/config-reference.md`` (whole file): every config model of :mod:`octopi.config` and
  its fields (type, default, constraints, description), in the order of
  :class:`~octopi.config.WorkflowConfig`, then the models of single commands;
- ``docs/search-space.md``: the block between the ``generated`` markers, from
  :func:`octopi.models.search_spaces.search_space_table`;
- ``docs/flags.md``: the block between the ``generated`` markers, one table of options per
  ``octopi`` subcommand (read from the click commands).

``python -m octopi.docgen --check`` writes nothing and exits 1 when a page is stale.
Only click and the config models are imported at module level; the CLI modules and the
search spaces are imported when their pages are made.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from octopi import config as config_module
from octopi.config import WorkflowConfig

DOCS_DIR = Path(__file__).resolve().parents[2] / "docs"
CONFIG_REFERENCE = "config-reference.md"
SEARCH_SPACE = "search-space.md"
FLAGS = "flags.md"
COMMAND = "python -m octopi.docgen"

# Descriptions of fields whose Field() carries none (the config model's own wins when set).
FALLBACK_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "CopickSource": {"path": "copick project config JSON"},
    "TargetSpec": {
        "name": "segmentation name",
        "user_id": "copick user ID",
        "session_id": "copick session ID",
    },
    "PickSpec": {"user_id": "copick user ID", "session_id": "copick session ID"},
    "DataConfig": {"target": "segmentation the networks learn (`octopi create-targets`)"},
    "TrainingConfig": {
        "num_epochs": "training epochs (per trial in a study)",
        "val_interval": "validate every N epochs (and at the last epoch)",
        "lr": "peak AdamW learning rate (linear warm-up, then cosine decay)",
        "weight_decay": "AdamW weight decay",
        "warmup_epochs": "epochs of linear learning-rate warm-up",
        "best_metric": "checkpoint (and trial) metric: `avg_f1` or `fBetaN`, e.g. `fBeta4`",
        "ncache_tomos": "tomograms cached per epoch (SmartCache window)",
        "background_ratio": "background / foreground crop ratio (`1.0` → 50/50)",
        "loss": "segmentation loss",
        "augmentation": "random augmentation of training crops",
        "seed": "random seed (crops, initialisation, augmentation)",
        "amp": "mixed precision: `auto` (bf16 where supported), `bf16`, `fp16`, `off`",
    },
    "LossConfig": {
        "name": "loss function (MONAI)",
        "focal_gamma": "focal exponent (focal losses only)",
    },
    "AugmentationConfig": {
        "flip_probability": "probability of a random flip per axis",
        "gaussian_noise_std": "standard deviation of added Gaussian noise (z-scored units)",
    },
    "SearchConfig": {
        "model_type": "model family the study explores",
        "num_trials": "trial slots `0 … N-1`; may grow in a running study",
        "random_seed": "sampler seed (slot `i` uses seed + i)",
        "study_name": "Optuna study and MLflow experiment name",
        "pruner": "stop unpromising trials early: `median`, `halving` or `none`",
    },
    "InferenceConfig": {
        "overlap": "overlap of neighbouring windows (fraction of the window)",
        "window_batch_size": "windows per forward pass",
        "amp": "mixed precision: `auto`, `bf16`, `fp16`, `off`",
    },
    "EvaluationConfig": {
        "distance_fraction": "a pick matches a true particle within this × its radius",
        "beta": "beta of the weighted F-beta score",
        "class_weights": "`{object: weight}` of the weighted F-beta; objects not listed weigh 1",
    },
    "TrialResources": {
        "gpu": "GPUs per trial job (Snakemake resource `gpu`; Slurm `--gpus`)",
        "mem_mb": "memory per trial job (MB; Slurm `--mem`)",
        "runtime_minutes": "wall-time limit per trial job (minutes; Slurm `--time`)",
        "threads": "CPU threads per trial job (Slurm `--cpus-per-task`)",
        "retries": "reruns of a failed trial job; each resumes from `checkpoint.pt`",
    },
    "WorkflowConfig": {
        "data": "tomograms, targets and the run split",
        "training": "settings of every trial that the search does not draw",
        "search": "the Optuna study",
        "inference": "segmentation of the test runs by the best model",
        "localize": "picks from those segmentations",
        "evaluation": "scoring of the test picks",
        "trial_resources": "resources of each trial job (and of `evaluate_test`)",
        "create_targets": "null: the targets exist already; else make them first",
    },
    "UnetConfig": {
        "model_type": "discriminator",
        "channels": "feature maps per level",
        "strides": "downsampling between levels (one fewer than channels)",
        "num_res_units": "residual units per level",
        "dropout": "dropout probability",
    },
    "AttentionUnetConfig": {
        "model_type": "discriminator",
        "channels": "feature maps per level",
        "strides": "downsampling between levels (one fewer than channels)",
        "dropout": "dropout probability",
    },
    "SegResNetConfig": {
        "model_type": "discriminator",
        "init_filters": "feature maps of the first level (doubling per level)",
        "blocks_down": "residual blocks per encoder level",
        "dropout": "dropout probability",
    },
    "MedNeXtConfig": {
        "model_type": "discriminator",
        "init_filters": "feature maps of the first level",
        "blocks_down": "MedNeXt blocks per encoder level",
        "blocks_bottleneck": "blocks in the bottleneck",
        "expansion_ratio": "channel expansion inside a block",
        "kernel_size": "depthwise convolution kernel",
    },
    "SynthesizeConfig": {
        "output": "new project folder",
        "runs": "number of runs",
        "shape_zyx": "tomogram shape (Z, Y, X) in voxels",
        "voxel_size_angstrom": "voxel size (Å)",
        "seed": "random seed; same seed, same project",
        "picks": "user and session of the ground-truth picks",
        "run_prefix": "run names are `<prefix>_<i>`",
    },
    "TargetsConfig": {
        "configs": "copick project configs",
        "voxel_size_angstrom": "voxel size (Å) of the label volumes",
        "target": "segmentation to write",
        "picks": "picks to read",
        "run_ids": "runs to process; null → all",
    },
    "ImportConfig": {
        "config": "copick project config JSON",
        "input_dir": "folder of `.mrc` / `.rec` files (run names from file names)",
        "tomo_algorithm": "tomogram algorithm name to write",
        "output_voxel_size_angstrom": "resample to this voxel size; null → as in the header",
        "overwrite": "replace existing tomograms",
    },
}

# Cross-field checks (model validators), by model; field validators show as constraints.
CHECKS: dict[str, list[str]] = {
    "DataConfig": [
        "`data_split` ratios lie strictly between 0 and 1 and sum to less than 1",
        "`train_run_ids` and `validate_run_ids`: both or neither, non-empty, no overlap",
        "several `configs` need distinct `session_name`s",
    ],
    "UnetConfig": ["`strides` has one entry fewer than `channels`"],
    "LocalizeConfig": ["`max_size_fraction` (when set) ≥ `min_size_fraction`"],
    "AttentionUnetConfig": ["`strides` has one entry fewer than `channels`"],
    "TrainingConfig": ["`val_interval` ≤ `num_epochs`"],
    "TargetSpec": ["names use letters, digits, `-` and `.` only (copick separates with `_`)"],
    "PickSpec": ["IDs use letters, digits, `-` and `.` only (copick separates with `_`)"],
}

# Models that single commands build (not part of the study config).
COMMAND_MODELS: dict[str, str] = {
    "UnetConfig": "`octopi train --model-type Unet` (`--channels`, `--strides`, `--res-units`); "
    "the `architecture` of `model_config.yaml`",
    "AttentionUnetConfig": "`octopi train --model-type AttentionUnet`; `model_config.yaml`",
    "SegResNetConfig": "`octopi train --model-type SegResNet`; `model_config.yaml`",
    "MedNeXtConfig": "`octopi train --model-type MedNeXt`; `model_config.yaml`",
    "SynthesizeConfig": "`octopi synthesize` (and `make demo`)",
    "ImportConfig": "`octopi import`",
    "TargetsConfig": "`octopi create-targets`; the study's optional `create_targets` section",
}


# --------------------------------------------------------------------------- config reference


def _anchor(name: str) -> str:
    return name.lower()


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _model_types(annotation: Any) -> Iterator[type[BaseModel]]:
    """Config models named anywhere inside a type annotation."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in typing.get_args(annotation):
        yield from _model_types(arg)


def _walk(model: type[BaseModel], path: str, seen: dict[str, list[str]]) -> None:
    """Record ``model`` at ``path``, then its nested models depth first, in field order."""
    seen.setdefault(model.__name__, [])
    if path:
        seen[model.__name__].append(path)
    for name, field in model.model_fields.items():
        for nested in _model_types(field.annotation):
            _walk(nested, f"{path}.{name}" if path else name, seen)


def model_order() -> tuple[list[type[BaseModel]], dict[str, list[str]]]:
    """Every config model: WorkflowConfig's tree first, then the other models of the module
    in source order; and the study-config key paths where each model appears."""
    seen: dict[str, list[str]] = {}
    _walk(WorkflowConfig, "", seen)
    models = {cls.__name__: cls for cls in _module_models()}
    ordered = [models[name] for name in seen if name in models]
    ordered += [cls for name, cls in models.items() if name not in seen]
    return ordered, seen


def _module_models() -> list[type[BaseModel]]:
    """Config models defined in :mod:`octopi.config`, in source order."""
    import inspect

    found = [
        value
        for value in vars(config_module).values()
        if isinstance(value, type)
        and issubclass(value, config_module.Frozen)
        and value is not config_module.Frozen
        and value.__module__ == config_module.__name__
    ]
    return sorted(found, key=lambda cls: inspect.getsourcelines(cls)[1])


def format_type(annotation: Any) -> str:
    """A readable type: ``list[int]``, ``float | null``, ``"a" | "b"``, model links."""
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{_anchor(annotation.__name__)})"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return format_type(args[0])
    if origin is Literal:
        return " \\| ".join(f"`{json.dumps(arg)}`" for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(format_type(arg) for arg in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(format_type(arg) for arg in args)}]"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def format_default(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        if value == type(value)():
            name = type(value).__name__
            return f"[defaults](#{_anchor(name)})"
        value = value.model_dump(mode="json")
    elif isinstance(value, tuple):
        value = list(value)
    return f"`{json.dumps(value, ensure_ascii=False, default=str)}`"


_BOUNDS = {
    annotated_types.Gt: ("> {}", "gt"),
    annotated_types.Ge: ("≥ {}", "ge"),
    annotated_types.Lt: ("< {}", "lt"),
    annotated_types.Le: ("≤ {}", "le"),
    annotated_types.MinLen: ("length ≥ {}", "min_length"),
    annotated_types.MaxLen: ("length ≤ {}", "max_length"),
}


def format_constraints(field: FieldInfo) -> str:
    parts = []
    for item in field.metadata:
        for kind, (template, attribute) in _BOUNDS.items():
            if isinstance(item, kind):
                parts.append(template.format(getattr(item, attribute)))
        pattern = getattr(item, "pattern", None)
        if pattern:
            parts.append(f"matches `{pattern}`")
    return ", ".join(parts)


_DOC_ENTRY = re.compile(r"^(\w+(?:\s*/\s*\w+)*):\s+(\S.*)$")


def _rst(text: str) -> str:
    """Docstring markup as markdown: double backticks become single, Sphinx roles are dropped
    (their target stays, in code font)."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def docstring_fields(model: type[BaseModel]) -> dict[str, str]:
    """Field descriptions written in the model's docstring as ``name: text`` paragraphs
    (``a / b: text`` describes both; indented lines continue the text)."""
    entries: dict[str, str] = {}
    names: list[str] = []
    lines = (model.__doc__ or "").splitlines()
    indent = min((len(x) - len(x.lstrip()) for x in lines[1:] if x.strip()), default=0)
    for raw in lines[1:]:
        line = raw[indent:] if raw.strip() else ""
        match = _DOC_ENTRY.match(line)
        if match and match.group(1).split("/")[0].strip() in model.model_fields:
            names = [name.strip() for name in match.group(1).split("/")]
            for name in names:
                entries[name] = match.group(2).strip()
        elif line.startswith((" ", "\t")) and names:
            for name in names:
                entries[name] += " " + line.strip()
        else:
            names = []
    return {name: _rst(text) for name, text in entries.items()}


def _description(model: type[BaseModel], name: str, field: FieldInfo) -> str:
    text = (
        field.description
        or docstring_fields(model).get(name)
        or FALLBACK_DESCRIPTIONS.get(model.__name__, {}).get(name, "")
    )
    return re.sub(r"\bNone\b", "null", text)  # as written in the YAML config


def missing_descriptions() -> list[str]:
    """``Model.field`` of every field without a description (for the tests)."""
    models, _ = model_order()
    return [
        f"{model.__name__}.{name}"
        for model in models
        for name, field in model.model_fields.items()
        if not _description(model, name, field)
    ]


def _model_section(model: type[BaseModel], paths: list[str]) -> list[str]:
    doc = _rst(" ".join((model.__doc__ or "").strip().split("\n\n")[0].split()))
    lines = [f"## {model.__name__}", "", doc, ""]
    if model is WorkflowConfig:
        lines += ["The top level of a study's `config.yaml`.", ""]
    elif paths:
        lines += ["Study config key: " + ", ".join(f"`{path}`" for path in paths) + ".", ""]
    if model.__name__ in COMMAND_MODELS:
        lines += [f"Used by: {COMMAND_MODELS[model.__name__]}.", ""]
    lines += [
        "| field | type | default | constraints | description |",
        "|---|---|---|---|---|",
    ]
    for name, field in model.model_fields.items():
        cells = (
            f"`{name}`",
            format_type(field.annotation),
            _cell(format_default(field)),
            _cell(format_constraints(field)),
            _cell(_description(model, name, field)),
        )
        lines.append("| " + " | ".join(cells) + " |")
    checks = CHECKS.get(model.__name__)
    if checks:
        lines += ["", "Checks: " + "; ".join(checks) + "."]
    lines.append("")
    return lines


def render_config_reference() -> str:
    models, paths = model_order()
    study = [m for m in models if m is WorkflowConfig or paths.get(m.__name__)]
    others = [m for m in models if m not in study]
    lines = [
        "# Configuration reference",
        "",
        f"<!-- GENERATED by `{COMMAND}` from src/octopi/config.py: do not edit by hand. -->",
        "",
        f"This page is generated by `{COMMAND}` from the pydantic models in",
        "`src/octopi/config.py`, the one home of every default; do not edit it by hand (a test",
        "fails when it is stale). All models are frozen and reject unknown keys. A study's",
        "`config.yaml` is a [WorkflowConfig](#workflowconfig); the command-line flags that set",
        "these fields are listed in [flags.md](flags.md), and [config/README.md]"
        "(../config/README.md) walks through an example study config.",
        "",
        "Study config (in the order of `WorkflowConfig`):",
        "",
    ]
    lines += [f"- [{m.__name__}](#{_anchor(m.__name__)})" for m in study]
    lines += ["", "Models of single commands and of `model_config.yaml`:", ""]
    lines += [f"- [{m.__name__}](#{_anchor(m.__name__)})" for m in others]
    lines.append("")
    for model in models:
        lines += _model_section(model, paths.get(model.__name__, []))
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- search space


def render_search_space() -> str:
    from octopi.models.search_spaces import search_space_table

    return search_space_table() + "\n"


# --------------------------------------------------------------------------- CLI flags

_DEFAULT_IN_HELP = re.compile(r"\s*\[default: (.*?)\]\s*$", re.S)


def _unset(default: Any) -> bool:
    """No default: None, or click's UNSET sentinel (click ≥ 8.2)."""
    return default is None or type(default).__name__ == "Sentinel"


def _code(value: str) -> str:
    """A value in code font; prose ("the model's") stays prose."""
    return value if " " in value else f"`{value}`"


def _config_defaults() -> dict[str, str]:
    """Defaults of the shared data options, whose help texts do not show them (the value
    comes from :class:`~octopi.config.DataConfig` when the option is left out)."""
    from octopi.config import DataConfig

    fields = DataConfig.model_fields

    def joined(name: str) -> str:
        return ",".join(str(v) for v in fields[name].get_default(call_default_factory=True))

    return {
        "voxel_size": f"{fields['voxel_size_angstrom'].default:g}",
        "target_info": str(fields["target"].get_default(call_default_factory=True)),
        "tomo_alg": joined("tomo_algorithms"),
        "data_split": joined("data_split"),
    }


def _option_default(option: Any, config_defaults: dict[str, str]) -> tuple[str, str]:
    """(default text, help without its ``[default: …]`` suffix)."""
    text = " ".join((option.help or "").split())
    match = _DEFAULT_IN_HELP.search(text)
    if match:
        return _code(match.group(1)), text[: match.start()].rstrip()
    if option.name in config_defaults and _unset(option.default):
        return _code(config_defaults[option.name]), text
    if option.required:
        return "**required**", text
    default = option.default
    if option.is_flag and not option.secondary_opts:
        return "off", text
    if _unset(default) or callable(default):
        return "", text
    if isinstance(default, bool) and option.secondary_opts:
        chosen = option.opts if default else option.secondary_opts
        return f"`{chosen[0]}`", text
    return f"`{default}`", text


def _option_type(option: Any) -> str:
    import click

    if option.is_flag:
        return "flag"
    if isinstance(option.type, click.Choice):
        return " \\| ".join(f"`{choice}`" for choice in option.type.choices)
    name = option.type.name.upper()
    return {"PATH": "path", "DIRECTORY": "folder", "FILE": "file"}.get(name, name.lower())


def _option_names(option: Any) -> str:
    names = " / ".join(f"`{name}`" for name in [*option.opts, *option.secondary_opts])
    if option.multiple:
        names += " (repeatable)"
    if option.hidden:
        names += " (hidden)"
    return names


def render_flags() -> str:
    """One table per ``octopi`` subcommand: every option (hidden ones too)."""
    import click

    from octopi.cli import main

    context = click.Context(main, info_name="octopi")
    config_defaults = _config_defaults()
    lines: list[str] = []
    for name in main.list_commands(context):
        command = main.get_command(context, name)
        summary = " ".join((command.help or "").strip().split("\n\n")[0].split())
        lines += [f"### octopi {name}", "", summary, ""]
        lines += ["| option | type | default | description |", "|---|---|---|---|"]
        for option in command.params:
            if not isinstance(option, click.Option):
                continue
            default, text = _option_default(option, config_defaults)
            cells = (_option_names(option), _option_type(option), default, _cell(text))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- pages


def _begin(name: str) -> str:
    return f"<!-- BEGIN GENERATED {name}: `{COMMAND}` rewrites this block; do not edit. -->"


def _end(name: str) -> str:
    return f"<!-- END GENERATED {name} -->"


def replace_block(text: str, name: str, content: str, where: str) -> str:
    """``text`` with the generated block ``name`` replaced by ``content``."""
    begin, end = _begin(name), _end(name)
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(
            f"{where}: the markers of the generated block {name!r} are missing; put\n"
            f"{begin}\n{end}\non lines of their own where the block belongs"
        )
    return text[: start + len(begin)] + "\n\n" + content.strip("\n") + "\n\n" + text[stop:]


def expected_pages(docs_dir: Path = DOCS_DIR) -> dict[Path, str]:
    """The text each generated page should have (pages with blocks: their current prose)."""
    pages = {docs_dir / CONFIG_REFERENCE: render_config_reference()}
    for page, block, render in (
        (SEARCH_SPACE, "search-space", render_search_space),
        (FLAGS, "commands", render_flags),
    ):
        path = docs_dir / page
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: it holds the prose around the tables")
        pages[path] = replace_block(path.read_text(), block, render(), str(path))
    return pages


def stale_pages(docs_dir: Path = DOCS_DIR) -> list[Path]:
    return [
        path
        for path, text in expected_pages(docs_dir).items()
        if not path.is_file() or path.read_text() != text
    ]


def write_pages(docs_dir: Path = DOCS_DIR) -> list[Path]:
    """Regenerate the pages; return those that changed."""
    from octopi.io_utils import atomic_write_text

    changed = []
    for path, text in expected_pages(docs_dir).items():
        if not path.is_file() or path.read_text() != text:
            atomic_write_text(path, text)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs-dir", type=Path, default=DOCS_DIR, help="docs folder")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when a page is stale"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_pages(args.docs_dir)
        for path in stale:
            print(f"stale: {path} (run `{COMMAND}`)")
        return 1 if stale else 0
    changed = write_pages(args.docs_dir)
    for path in changed:
        print(f"wrote {path}")
    if not changed:
        print("docs are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
