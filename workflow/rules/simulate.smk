# The experiment in silico (docs/simulate.md): each predictor's sessions under every arm of the
# study and a counterfactual one, for the held-out participants (`simulate.split`), and the
# participants' own sessions (`observed`), then one page setting the arms' effects side by side.
# Not in the default target (benchmarks/simulate.md): `snakemake ... reports/simulation_gun.md`.
SIMULATE = config["simulate"]
# The models that choose: `simulate.models`, or every trainer. The baselines always join, and the
# demo's oracle, whose simulation is the truth there.
SIMULATED_MODELS = SIMULATE["models"] if SIMULATE["models"] is not None else config["train"]["trainers"]
SIMULATION_SOURCES = [OBSERVED, *SIMULATION_BASELINES, *([ORACLE] if DEMO_TRUTH else []), *SIMULATED_MODELS]
NOT_MODELS = {OBSERVED, ORACLE, *SIMULATION_BASELINES}
SIMULATE_EXCLUDE = [f"evaluate.{key}" for key in config["evaluate"] if key not in SIMULATE_EVALUATE_KEYS]


rule simulate:
    input:
        clean="results/clean/interactions.parquet",
        prompts=lambda w: f"results/prompts/{ISSUES[w.short]}/next_video",
        demo_capsule=rules.demo_capsule.output if DEMO_TRUTH else [],
        model=lambda w: [] if w.predictor in NOT_MODELS else evaluated_model(w.predictor, w.short),
        # The real capsule's stance labels: an input, so relabelling a video reruns the simulations.
        video_stances=SIMULATE["video_stances"] or [],
    output:
        summary="results/simulate/{predictor}_{short}/summary.json",
        sessions="results/simulate/{predictor}_{short}/sessions.jsonl",
    wildcard_constraints:
        predictor="[A-Za-z0-9_-]+",
        short="|".join(ISSUES),
    params:
        grail=GRAIL,
        capsule=lambda w: shlex.quote(simulated_capsule()),  # common.smk
        prompts=lambda w: f"results/prompts/{ISSUES[w.short]}",
        out="results/simulate/{predictor}_{short}",
        model=lambda w, input: f"--model {shlex.quote(input.model)}" if input.model else "",
        demo_truth=f"--demo-truth {DEMO_TRUTH}" if DEMO_TRUTH else "",
        config=stage_json("simulate", exclude=SIMULATE_EXCLUDE + ["simulate.models"]),
        code=code_version("simulate"),
    log:
        "results/logs/simulate_{predictor}_{short}.log",
    benchmark:
        "results/benchmarks/simulate_{predictor}_{short}.tsv"
    threads: EVALUATION_THREADS
    resources:
        **model_env_resources("simulate", mem_mb=EVALUATION_MEM_MB),
    conda:
        MODEL_ENV
    shell:
        "{params.grail} simulate --predictor {wildcards.predictor} {params.model} --issue {wildcards.short} "
        "--clean {input.clean:q} --capsule {params.capsule} --prompts {params.prompts:q} {params.demo_truth} "
        "--out {params.out:q} --config-json {params.config} > {log:q} 2>&1"


rule simulation_report:
    input:
        template=REPORT.get("simulation_template", f"{PACKAGED_TEMPLATES}/simulation_report.md.j2"),
        config="config/config.yaml",
        summaries=lambda w: expand(rules.simulate.output.summary, predictor=SIMULATION_SOURCES, short=w.short),
    output:
        report="reports/simulation_{short}.md",
        figures=directory("reports/figures/simulation_{short}"),
    wildcard_constraints:
        short="|".join(ISSUES),
    params:
        grail=GRAIL,
        runs=lambda w, input: " ".join(shlex.quote(os.path.dirname(path)) for path in input.summaries),
        config=stage_json("report"),
        code=code_version("report"),
    log:
        "results/logs/simulation_report_{short}.log",
    resources:
        mem_mb=2000,
        **SLURM_RESOURCES,
    conda:
        "../../envs/grail.yaml"
    shell:
        "{params.grail} report simulation --eval {params.runs} --template {input.template:q} "
        "--provenance-config {input.config:q} --figures {output.figures:q} --config-json {params.config} "
        "--out {output.report:q} > {log:q} 2>&1"
