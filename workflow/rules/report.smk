# Markdown reports rendered with Jinja2. The templates are inputs of these rules only, so editing a
# template re-renders the reports without re-evaluating or retraining anything.

import os

REPORT = config.get("report", {})
REPORT_SPLITS = config.get("evaluate", {}).get("splits", ["validation", "test"])


rule report:
    input:
        template=REPORT.get("model_template", "src/grail_sim/report/templates/model_report.md.j2"),
        config="config/config.yaml",
        metrics=lambda w: [f"results/eval/{w.model}_{w.short}/{split}/metrics.json" for split in REPORT_SPLITS],
        # The untrained `base` has no training log; a trained model's report plots its curves.
        training=lambda w: [] if w.model == "base" else [f"results/train/{w.model}_{w.short}/metrics.jsonl"],
    output:
        report="reports/{model}_{short}.md",
        figures=directory("reports/figures/{model}_{short}"),
    wildcard_constraints:
        model="[A-Za-z0-9_-]+",
        short="gun|wage",
    params:
        grail=GRAIL,
        evals=lambda w: " ".join(f"results/eval/{w.model}_{w.short}/{split}" for split in REPORT_SPLITS),
        train=lambda w: "" if w.model == "base" else f"--train-dir results/train/{w.model}_{w.short}",
        constant_share=REPORT.get("constant_share", 0.75),
        samples=REPORT.get("samples", 3),
    log:
        "results/logs/report_{model}_{short}.log",
    resources:
        mem_mb=2000,
    conda:
        "../../envs/grail.yaml"
    shell:
        "{params.grail} report --model {wildcards.model} --issue {wildcards.short} --eval {params.evals} {params.train} "
        "--template {input.template:q} --config {input.config:q} --figures {output.figures:q} "
        "--constant-share {params.constant_share} --samples {params.samples} --out {output.report:q} > {log} 2>&1"


rule portfolio:
    input:
        template=REPORT.get("portfolio_template", "src/grail_sim/report/templates/portfolio.md.j2"),
        config="config/config.yaml",
        metrics=expand(
            "results/eval/{model}_{short}/{split}/metrics.json",
            model=REPORT.get("models", ["base", "grpo", "grail"]),
            short=config.get("issues", ["gun"]),
            split=REPORT.get("portfolio_splits", ["test"]),
        ),
    output:
        "reports/portfolio.md",
    params:
        grail=GRAIL,
        evals=lambda w, input: " ".join(os.path.dirname(path) for path in input.metrics),
    log:
        "results/logs/portfolio.log",
    resources:
        mem_mb=2000,
    conda:
        "../../envs/grail.yaml"
    shell:
        "{params.grail} report portfolio --eval {params.evals} --template {input.template:q} --config {input.config:q} "
        "--out {output:q} > {log} 2>&1"
