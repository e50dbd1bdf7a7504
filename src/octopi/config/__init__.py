"""Configuration models: the one home of every default in octopi.

All models are pydantic v2, frozen and ``extra="forbid"``. CLI options default to ``None``
and only override these models (see :func:`octopi.cli.options.build`); the Snakemake config
is validated against the JSON schema generated from :class:`WorkflowConfig`.

Defaults follow the published octopi training guide (docs/flags.md maps its flags to these
settings); docs/architecture.md describes the layers and where defaults live.
"""

from __future__ import annotations

from octopi.config.architectures import (
    MODEL_TYPES,
    AttentionUnetConfig,
    DynUNetConfig,
    MedNeXtConfig,
    ModelArchitecture,
    SegResNetConfig,
    SwinUNETRConfig,
    UnetConfig,
    canonical_model_type,
)
from octopi.config.base import (
    CZII_CLASS_WEIGHTS,
    DEFAULT_PREDICTED_PICKS,
    DEFAULT_SEGMENTATION_TARGET,
    CopickSource,
    DataConfig,
    Frozen,
    NormalisationConfig,
    PickSpec,
    TargetSpec,
    check_copick_name,
)
from octopi.config.stages import (
    AmpMode,
    AugmentationConfig,
    EvaluationConfig,
    ImportConfig,
    InferenceConfig,
    LocalizeConfig,
    LossConfig,
    LossName,
    LrDecay,
    Metric,
    SynthesizeConfig,
    TargetsConfig,
    TrainingConfig,
)
from octopi.config.workflow import (
    MonitorConfig,
    SearchConfig,
    TrackingConfig,
    TrialResources,
    WorkflowConfig,
    workflow_json_schema,
)

__all__ = [
    "AmpMode",
    "LrDecay",
    "AttentionUnetConfig",
    "AugmentationConfig",
    "CZII_CLASS_WEIGHTS",
    "CopickSource",
    "DEFAULT_PREDICTED_PICKS",
    "DEFAULT_SEGMENTATION_TARGET",
    "DataConfig",
    "DynUNetConfig",
    "EvaluationConfig",
    "Frozen",
    "ImportConfig",
    "InferenceConfig",
    "LocalizeConfig",
    "LossConfig",
    "LossName",
    "MODEL_TYPES",
    "MedNeXtConfig",
    "Metric",
    "ModelArchitecture",
    "MonitorConfig",
    "NormalisationConfig",
    "PickSpec",
    "SearchConfig",
    "SegResNetConfig",
    "SwinUNETRConfig",
    "SynthesizeConfig",
    "TargetSpec",
    "TargetsConfig",
    "TrackingConfig",
    "TrainingConfig",
    "TrialResources",
    "UnetConfig",
    "WorkflowConfig",
    "canonical_model_type",
    "check_copick_name",
    "workflow_json_schema",
]
