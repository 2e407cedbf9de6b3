# The data: a synthetic demo capsule (default), the real CodeOcean capsule 5416997, or a
# pre-cleaned dataset -> results/clean/interactions.parquet (Contract 1 of docs/DESIGN.md).
# The real capsule and a dataset are read in place, not declared as inputs (they are large, may be
# a hub name, and never change); the demo capsule is built by the rule below.
DATA = config["data"]
CLEAN_SOURCE = {
    "demo": "--capsule results/demo_capsule",
    "capsule": f"--capsule {shlex.quote(DATA['capsule_dir'])}",
    "dataset": f"--dataset {shlex.quote(str(DATA['dataset']['path'] or ''))}",
}[DATA["source"]]


rule demo_capsule:
    output:
        directory("results/demo_capsule"),
    params:
        grail=GRAIL,
        config=stage_json("demo-capsule", exclude=["data.source", "data.capsule_dir", "data.dataset"]),
        code=code_version("demo-capsule"),
    log:
        "results/logs/demo_capsule.log",
    benchmark:
        "results/benchmarks/demo_capsule.tsv"
    resources:
        mem_mb=2000,
        **SLURM_RESOURCES,
    conda:
        "../../envs/grail.yaml"
    shell:
        "{params.grail} demo-capsule --out {output:q} --config-json {params.config} > {log:q} 2>&1"


rule clean:
    input:
        rules.demo_capsule.output if DATA["source"] == "demo" else [],
    output:
        interactions="results/clean/interactions.parquet",
        stats="results/clean/stats.json",
    params:
        grail=GRAIL,
        source=CLEAN_SOURCE,
        config=stage_json("clean", exclude=["data.demo"]),
        code=code_version("clean"),
    log:
        "results/logs/clean.log",
    benchmark:
        "results/benchmarks/clean.tsv"
    resources:
        mem_mb=4000,
        **SLURM_RESOURCES,
    conda:
        "../../envs/grail.yaml"
    shell:
        "{params.grail} clean {params.source} --config-json {params.config} "
        "--out {output.interactions:q} --stats {output.stats:q} > {log:q} 2>&1"
