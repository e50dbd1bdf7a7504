# Model exploration: one job per Optuna trial slot, then best-model selection.


wildcard_constraints:
    slot=r"\d+",


# Only result.json is declared: it is written last, atomically. A trial's checkpoint.pt and
# other files must survive a killed job (Snakemake deletes the declared outputs of
# incomplete jobs before rerunning them), so that the rerun resumes from the last epoch.
rule trial:
    input:
        split=SPLIT,
    output:
        result=TRIAL_RESULT,
    log:
        "logs/trial/{slot}.log",
    retries: TRIAL_RETRIES
    conda:
        ENV
    threads: RESOURCES.threads
    resources:
        gpu=RESOURCES.gpu,
        mem_mb=RESOURCES.mem_mb,
        runtime=RESOURCES.runtime_minutes,
        slurm_extra=TRIAL_SLURM_EXTRA,
    params:
        config=STUDY_CONFIG,
    # exec: the trial replaces the shell, so that Slurm's warning signal (SIGTERM to every
    # process of the job step) reaches it with no shell in between that would die of it.
    # --fast-exit: the process ends without Python's teardown once the trial is reported.
    shell:
        "exec octopi explore-trial --study-dir . --slot {wildcards.slot} --fast-exit"
        " --study-config {params.config} --split {input.split} > {log} 2>&1"


rule select_best:
    input:
        expand(TRIAL_RESULT, slot=SLOTS),
    output:
        summary=BEST_SUMMARY,
        model_config="best/model_config.yaml",
        weights="best/best_model_weights.pth",
        table="trials.csv",
        plots=report(
            directory("plots"),
            patterns=["{name}.png"],
            caption="../report/plots.rst",
            category="Study",
        ),
    log:
        "logs/select_best.log",
    conda:
        ENV
    params:
        config=STUDY_CONFIG,
    shell:
        "octopi select-best --study-dir . --study-config {params.config} > {log} 2>&1"
