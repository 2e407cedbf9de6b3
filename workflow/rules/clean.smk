# The data: a synthetic demo capsule (default), the real CodeOcean capsule 5416997, or a
# pre-cleaned dataset -> results/clean/interactions.parquet (Contract 1 of docs/DESIGN.md).
# The real capsule and a dataset are read in place, not declared as inputs (they are large, may be
# a hub name, and never change); the demo capsule is built by the rule below.
import json
import shlex

CLEAN_SOURCE = config["data"]["source"]
CLEAN_DATASET = config["data"].get("dataset") or {}
CLEAN_SOURCE_ARGS = {
    "demo": "--capsule results/demo_capsule",
    "capsule": f"--capsule {shlex.quote(config['data'].get('capsule_dir', ''))}",
    "dataset": f"--dataset {shlex.quote(str(CLEAN_DATASET.get('path') or ''))} "
    f"--columns {shlex.quote(json.dumps(CLEAN_DATASET.get('columns') or {}))}",
}[CLEAN_SOURCE]


rule demo_capsule:
    output:
        directory("results/demo_capsule"),
    params:
        grail=GRAIL,
        participants=config["data"].get("demo", {}).get("participants", 1200),
        seed=config["data"].get("demo", {}).get("seed", 13),
    log:
        "results/logs/demo_capsule.log",
    resources:
        mem_mb=2000,
    conda:
        "../../envs/grail.yaml"
    shell:
        "{params.grail} demo-capsule --out {output:q} --participants {params.participants} "
        "--seed {params.seed} > {log:q} 2>&1"


rule clean:
    input:
        ["results/demo_capsule"] if CLEAN_SOURCE == "demo" else [],
    output:
        interactions="results/clean/interactions.parquet",
        stats="results/clean/stats.json",
    params:
        grail=GRAIL,
        source=CLEAN_SOURCE_ARGS,
        clean_config=shlex.quote(json.dumps(config.get("clean", {}), sort_keys=True)),
    log:
        "results/logs/clean.log",
    resources:
        mem_mb=4000,
    conda:
        "../../envs/grail.yaml"
    shell:
        "{params.grail} clean {params.source} --config-json {params.clean_config} "
        "--out {output.interactions:q} --stats {output.stats:q} > {log:q} 2>&1"
