# grail-sim: one DAG from the raw capsule to Markdown reports.
#   local:   snakemake --profile profiles/local
#   cluster: snakemake --profile profiles/slurm reports/grail_gun.md
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")

GRAIL = "grail-sim"


include: "workflow/rules/model.smk"
include: "workflow/rules/clean.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/prompts.smk"


# The default target: a report per trained model and for the untrained base (the zero-shot
# reference) on every configured issue, and the portfolio that sets them beside the baselines.
rule all:
    input:
        "results/models/base_smoke.json",
        expand(
            "reports/{model}_{short}.md",
            model=["base", *config.get("train", {}).get("trainers", ["grpo", "grail"])],
            short=config["issues"],
        ),
        "reports/portfolio.md",
    default_target: True
