# octopi model exploration: discover runs, split them, train one network per Optuna trial
# (one GPU job each), select the best model and score it on the test runs.
#
# Run it in a study directory that holds config.yaml (`octopi model-explore` does this):
#   snakemake --directory STUDY --snakefile Snakefile --workflow-profile profiles/default
# Edit STUDY/config.yaml, not --config. Once the study has started only search.num_trials,
# trial_resources.*, monitor.* and tracking.* may change there (MUTABLE_SETTINGS in
# src/octopi/study_settings.py): its first run records its settings in started_config.yaml
# (the onstart handler below), and later runs refuse other values.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


# Types and allowed values only: the octopi commands read config.yaml and fill defaults
# from octopi.config themselves, so nothing here relies on schema defaults.
validate(config, "workflow/schemas/config.schema.json", set_default=False)


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/explore.smk"
include: "workflow/rules/evaluate.smk"


# Runs that execute jobs only (not dry runs; not a job's own Snakemake): the settings of a
# study that has not started yet become the ones it started with (started_config.yaml).
onstart:
    record_start(Path.cwd(), STUDY)


localrules:
    all,
    discover_runs,
    split_runs,
    select_best,
    tabulate_study,
    tabulate_test,


rule all:
    default_target: True
    input:
        study_targets(),
        test_targets,
