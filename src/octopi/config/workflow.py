"""Model exploration (Optuna), trial resources, monitoring, tracking, and the workflow
config that a study's config.yaml holds.

Part of :mod:`octopi.config` (import from there).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from octopi.config.base import (
    DataConfig,
    Frozen,
)
from octopi.config.stages import (
    EvaluationConfig,
    InferenceConfig,
    LocalizeConfig,
    TargetsConfig,
    TrainingConfig,
)


class SearchConfig(Frozen):
    """Model exploration: Optuna study settings."""

    model_type: Literal["Unet", "AttentionUnet", "SegResNet", "MedNeXt", "DynUNet", "SwinUNETR"] = (
        Field(default="Unet", description="model family the study explores")
    )
    num_trials: int = Field(
        default=100, ge=1, description="trial slots `0 … N-1`; may grow in a running study"
    )
    random_seed: int = Field(default=42, description="sampler seed (slot `i` uses seed + i)")
    study_name: str = Field(
        default="model-search", description="Optuna study and MLflow experiment name"
    )
    pruner: Literal["median", "halving", "none"] = Field(
        default="median", description="stop unpromising trials early: `median`, `halving` or `none`"
    )
    ensemble_size: int = Field(
        default=3,
        ge=0,
        description="select-best also averages the top this-many COMPLETE trials into an "
        "ensemble (best_ensemble/, calibrated on the validation runs; evaluate-test scores "
        "it beside the best model); 0 or 1: no ensemble",
    )


class TrialResources(Frozen):
    """Resources of one trial job (Snakemake `resources:`)."""

    gpu: int = Field(
        default=1, ge=0, description="GPUs per trial job (Snakemake resource `gpu`; Slurm `--gpus`)"
    )
    mem_mb: int = Field(
        default=16000, ge=256, description="memory per trial job (MB; Slurm `--mem`)"
    )
    runtime_minutes: int = Field(
        default=720, ge=1, description="wall-time limit per trial job (minutes; Slurm `--time`)"
    )
    threads: int = Field(
        default=4, ge=1, description="CPU threads per trial job (Slurm `--cpus-per-task`)"
    )
    retries: int = Field(
        default=2,
        ge=0,
        description="reruns of a failed trial job; each resumes from `checkpoint.pt`",
    )
    warning_seconds: int = Field(
        default=300,
        ge=0,
        description="Slurm warns a trial job this many seconds before its time limit "
        "(sbatch --signal=TERM@N, sent up to 60 s earlier still); the trial then saves a "
        "checkpoint of its current step and exits, and its retry continues from that step. "
        "0: no warning (a trial killed at the limit resumes from its last epoch).",
    )


class MonitorConfig(Frozen):
    """What the study's head (`octopi model-explore` on a cluster) prints while it runs."""

    heartbeat_minutes: float = Field(
        default=5.0,
        gt=0,
        description="Print one line every N minutes: trials finished, running and queued on "
        "Slurm, and how long ago the head last noticed a job end.",
    )
    stall_minutes: float = Field(
        default=10.0,
        gt=0,
        description="Warn, naming the likely cause, when a trial's result has been on disk "
        "this long without the head noticing that its job ended (its job status checks get "
        "no answer).",
    )


class TrackingConfig(Frozen):
    """Where a study's trials log to MLflow. May change between runs of a study."""

    uri: str | None = Field(
        default=None,
        description="MLflow tracking URI of the trials: an existing server (http://host:port) "
        "or store, used as is (no server is started); 'none' turns tracking off. None: the "
        "study's own store STUDY/mlflow.db, written directly by local trials and through an "
        "MLflow server on the head node with a cluster profile (see server)",
    )
    server: bool | None = Field(
        default=None,
        description="Run an MLflow server on the head node for the study's store (its only "
        "writer; the trials log over HTTP). None: with a cluster profile only; false: never "
        "(every trial writes mlflow.db, unsafe on NFS/Lustre from many nodes)",
    )
    server_host: str | None = Field(
        default=None,
        description="Name or address the trial jobs reach the head node at. None: its fully "
        "qualified name, else its host name",
    )
    server_bind: str = Field(
        default="0.0.0.0",
        description="Address the server listens on: 0.0.0.0 all interfaces; an address of the "
        "cluster network keeps others out",
    )
    server_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Server port. 0: the study's previous port if free, else any free port",
    )

    @model_validator(mode="after")
    def _uri_or_server(self) -> TrackingConfig:
        if self.uri is not None and self.server:
            raise ValueError(
                "tracking.uri names a store to use and tracking.server: true starts one; set "
                "only one of them"
            )
        return self


class WorkflowConfig(Frozen):
    """Everything a model-exploration study runs with (the Snakemake config)."""

    data: DataConfig = Field(description="tomograms, targets and the run split")
    training: TrainingConfig = Field(
        default=TrainingConfig(),
        description="settings of every trial that the search does not draw",
    )
    search: SearchConfig = Field(default=SearchConfig(), description="the Optuna study")
    inference: InferenceConfig = Field(
        default=InferenceConfig(), description="segmentation of the test runs by the best model"
    )
    localize: LocalizeConfig = Field(
        default=LocalizeConfig(), description="picks from those segmentations"
    )
    evaluation: EvaluationConfig = Field(
        default=EvaluationConfig(), description="scoring of the test picks"
    )
    trial_resources: TrialResources = Field(
        default=TrialResources(), description="resources of each trial job (and of `evaluate_test`)"
    )
    monitor: MonitorConfig = Field(
        default=MonitorConfig(),
        description="what the head prints while a cluster study runs (heartbeat, stall warning)",
    )
    tracking: TrackingConfig = Field(
        default=TrackingConfig(),
        description="where the trials log to MLflow; the MLflow server of a cluster run",
    )
    create_targets: TargetsConfig | None = Field(
        default=None, description="null: the targets exist already; else make them first"
    )


def workflow_json_schema() -> dict[str, Any]:
    """JSON schema of :class:`WorkflowConfig` (committed as workflow/schemas/config.schema.json)."""
    schema = WorkflowConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "octopi model-exploration workflow config"
    return schema
