# grail-sim: one DAG from the raw capsule to Markdown reports.
#   local:   snakemake --profile profiles/local
#   cluster: snakemake --profile profiles/slurm reports/grail_gun.md
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")

GRAIL = "grail-sim"


include: "workflow/rules/model.smk"


rule all:
    input:
        "results/models/base_smoke.json",
    default_target: True
