# Markdown reports rendered with Jinja2. The templates are inputs of these rules only, so editing a
# template re-renders the reports without re-evaluating or retraining anything.
REPORT = config["report"]
REPORT_SPLITS = config["evaluate"]["splits"]
PACKAGED_TEMPLATES = "src/grail_sim/report/templates"


rule report:
    input:
        template=REPORT.get("model_template", f"{PACKAGED_TEMPLATES}/model_report.md.j2"),
        config="config/config.yaml",
        metrics=lambda w: expand(rules.evaluate.output.metrics, split=REPORT_SPLITS, allow_missing=True),
        # The untrained `base` has no training log; a trained model's report plots its curves.
        training=lambda w: [] if w.model == "base" else [f"results/train/{w.model}_{w.short}/metrics.jsonl"],
    output:
        report="reports/{model}_{short}.md",
        figures=directory("reports/figures/{model}_{short}"),
    wildcard_constraints:
        # reports/simulation_{short}.md is simulate.smk's page, not a model called "simulation".
        model="(?!simulation_?$)[A-Za-z0-9_-]+",
        short="|".join(ISSUES),
    params:
        grail=GRAIL,
        evals=lambda w, input: " ".join(shlex.quote(os.path.dirname(path)) for path in input.metrics),
        train=lambda w: "" if w.model == "base" else f"--train-dir results/train/{w.model}_{w.short}",
        config=stage_json("report"),
        code=code_version("report"),
    log:
        "results/logs/report_{model}_{short}.log",
    resources:
        mem_mb=2000,
        **SLURM_RESOURCES,
    conda:
        "../../envs/grail.yaml"
    shell:
        "{params.grail} report --model {wildcards.model} --issue {wildcards.short} --eval {params.evals} {params.train} "
        "--template {input.template:q} --provenance-config {input.config:q} --figures {output.figures:q} "
        "--config-json {params.config} --out {output.report:q} > {log:q} 2>&1"


rule portfolio:
    input:
        template=REPORT.get("portfolio_template", f"{PACKAGED_TEMPLATES}/portfolio.md.j2"),
        config="config/config.yaml",
        metrics=expand(
            rules.evaluate.output.metrics,
            model=REPORT["models"],
            short=config["issues"],
            split=REPORT["portfolio_splits"],
        ),
    output:
        "reports/portfolio.md",
    params:
        grail=GRAIL,
        evals=lambda w, input: " ".join(shlex.quote(os.path.dirname(path)) for path in input.metrics),
        config=stage_json("report"),
        code=code_version("report"),
    log:
        "results/logs/portfolio.log",
    resources:
        mem_mb=2000,
        **SLURM_RESOURCES,
    conda:
        "../../envs/grail.yaml"
    shell:
        "{params.grail} report portfolio --eval {params.evals} --template {input.template:q} "
        "--provenance-config {input.config:q} --config-json {params.config} --out {output:q} > {log:q} 2>&1"
