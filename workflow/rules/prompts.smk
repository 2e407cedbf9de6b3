# Chat-prompt datasets per issue (long names): next-video choice and opinion shift, plus stats.json
# with drops, gold-position baselines, token lengths and the leak guards' results. The system
# prompts and the profile phrase table are inputs, so editing them re-renders the prompts.

PROMPTS = config.get("prompts", {})
PROMPT_TEMPLATES = {
    "next_video": "config/prompts/next_video_system.j2",
    "opinion_index": "config/prompts/opinion_index_system.j2",
    "opinion_direction": "config/prompts/opinion_direction_system.j2",
    **PROMPTS.get("system_prompts", {}),
}


rule prompts:
    input:
        interactions="results/clean/interactions.parquet",
        tokenizer="results/models/base",
        next_video_system=PROMPT_TEMPLATES["next_video"],
        opinion_index_system=PROMPT_TEMPLATES["opinion_index"],
        opinion_direction_system=PROMPT_TEMPLATES["opinion_direction"],
        profile_fields=PROMPTS.get("profile_fields", "config/prompts/profile_fields.yaml"),
    output:
        next_video=directory("results/prompts/{issue}/next_video"),
        opinion=directory("results/prompts/{issue}/opinion"),
        stats="results/prompts/{issue}/stats.json",
    wildcard_constraints:
        issue="gun_control|minimum_wage",
    params:
        grail=GRAIL,
        out_dir="results/prompts/{issue}",
        max_history=PROMPTS.get("max_history", 12),
        show_ids="--show-ids" if PROMPTS.get("show_ids", False) else "--no-show-ids",
        max_prompt_tokens=PROMPTS.get("max_prompt_tokens", 1024),
        opinion_target=PROMPTS.get("opinion_target", "index"),
        direction_tolerance=PROMPTS.get("direction_tolerance", 1e-6),
        max_gap=PROMPTS.get("max_missing_metadata_gap", 0.25),
    log:
        "results/logs/prompts_{issue}.log",
    resources:
        mem_mb=4000,
    conda:
        "../../envs/grail.yaml"
    shell:
        "{params.grail} prompts build --interactions {input.interactions:q} --issue {wildcards.issue} "
        "--tokenizer {input.tokenizer:q} --out-dir {params.out_dir:q} "
        "--max-history {params.max_history} {params.show_ids} --max-prompt-tokens {params.max_prompt_tokens} "
        "--system-next-video {input.next_video_system:q} --system-opinion-index {input.opinion_index_system:q} "
        "--system-opinion-direction {input.opinion_direction_system:q} --profile-fields {input.profile_fields:q} "
        "--opinion-target {params.opinion_target} --direction-tolerance {params.direction_tolerance} "
        "--max-missing-metadata-gap {params.max_gap} > {log} 2>&1"
