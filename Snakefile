# grail-sim: one DAG from the raw capsule to Markdown reports.
#   local:   snakemake --profile profiles/local
#   cluster: snakemake --profile profiles/slurm reports/grail_gun.md
# The rules live in workflow/rules/ (in DAG order); common.smk validates the configuration against
# the package's schema, which fills every default, and holds the helpers the rules share.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/clean.smk"
include: "workflow/rules/prompts.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/math.smk"


# The default target: a report per trained model and for the untrained base (the zero-shot
# reference) on every configured issue, and the portfolio that sets them beside the baselines.
rule all:
    input:
        final_outputs(),
    default_target: True
