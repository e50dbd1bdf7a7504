# Data preparation: segmentation targets (optional), run discovery, train/val/test split.


if STUDY.create_targets is not None:

    rule create_targets:
        output:
            summary=TARGETS,
        log:
            "logs/create_targets.log",
        conda:
            ENV
        params:
            config=STUDY_CONFIG,
            folder=lambda wildcards, output: Path(output.summary).parent,
        shell:
            "octopi create-targets --study-config {params.config} --output {params.folder}"
            " > {log} 2>&1"


rule discover_runs:
    input:
        [TARGETS] if STUDY.create_targets is not None else [],
    output:
        runs=RUNS,
    log:
        "logs/discover_runs.log",
    conda:
        ENV
    params:
        config=STUDY_CONFIG,
    shell:
        "octopi discover-runs --study-config {params.config} --output {output.runs} > {log} 2>&1"


# A checkpoint: whether evaluate_test runs depends on the split having test runs.
checkpoint split_runs:
    input:
        runs=RUNS,
    output:
        split=SPLIT,
    log:
        "logs/split_runs.log",
    conda:
        ENV
    params:
        config=STUDY_CONFIG,
    shell:
        "octopi split-runs --study-config {params.config} --runs-file {input.runs}"
        " --output {output.split} > {log} 2>&1"
