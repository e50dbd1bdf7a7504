# The best model on the test runs, and the tables of the HTML report.


rule evaluate_test:
    input:
        best=BEST_SUMMARY,
        split=SPLIT,
    output:
        metrics=TEST_METRICS,
    log:
        "logs/evaluate_test.log",
    conda:
        ENV
    threads: RESOURCES.threads
    resources:
        gpu=RESOURCES.gpu,
        mem_mb=RESOURCES.mem_mb,
        runtime=RESOURCES.runtime_minutes,
    params:
        config=STUDY_CONFIG,
    shell:
        "octopi evaluate-test --study-dir . --study-config {params.config}"
        " --split {input.split} > {log} 2>&1"


rule tabulate_study:
    input:
        trials="trials.csv",
        best=BEST_SUMMARY,
    output:
        trials=report(
            "report/trials.html", caption="../report/trials.rst", category="Study"
        ),
        best=report(
            "report/best.html", caption="../report/best.rst", category="Best model"
        ),
    log:
        "logs/tabulate_study.log",
    run:
        render_csv(input.trials, output.trials, "Trials")
        render_json(input.best, output.best, "Best model")


rule tabulate_test:
    input:
        metrics=TEST_METRICS,
    output:
        table=report(
            "report/test.html", caption="../report/test.rst", category="Test runs"
        ),
    log:
        "logs/tabulate_test.log",
    run:
        render_json(input.metrics, output.table, "Best model on the test runs")
