"""Names of the two issues and three studies, in one place."""

SHORT_TO_ISSUE = {"gun": "gun_control", "wage": "minimum_wage"}
ISSUE_TO_SHORT = {issue: short for short, issue in SHORT_TO_ISSUE.items()}
ISSUES = tuple(SHORT_TO_ISSUE.values())
STUDIES = {"study1": "gun_control", "study2": "minimum_wage", "study3": "minimum_wage"}
ISSUE_LABELS = {"gun_control": "gun control", "minimum_wage": "the minimum wage"}


def issue_name(name: str) -> str:
    """Accept `gun`/`gun_control`/`wage`/`minimum_wage`; fail naming the valid choices."""
    if name in ISSUES:
        return name
    if name in SHORT_TO_ISSUE:
        return SHORT_TO_ISSUE[name]
    valid = ", ".join(sorted(set(ISSUES) | set(SHORT_TO_ISSUE)))
    raise ValueError(f"unknown issue {name!r}; valid: {valid}")
