"""The demo capsule's vocabulary: stance-bearing titles and channels, wave-1 answers per leaning,
and the experiment's arm, study and topic names.

Kept apart from `demo_capsule.py` (the generator and its behaviour model) because it is data, not
logic: changing a title changes no probability of the behaviour model.
"""

from __future__ import annotations

# Stance-bearing vocabulary: the stance is readable from the title and from the channel name.
TITLES = {
    ("gun_control", "conservative"): [
        "Why the Second Amendment Protects Every Family",
        "Gun Control Laws Do Not Stop Criminals",
        "Armed Citizens Stop Crime: The Facts",
        "Defend Your Gun Rights Before They Are Gone",
        "The Truth About Concealed Carry Saving Lives",
        "Gun Bans Fail: What the Data Shows",
    ],
    ("gun_control", "liberal"): [
        "Stricter Gun Laws Save Lives",
        "Universal Background Checks Now",
        "Ban Assault Weapons: The Case for Reform",
        "How Gun Control Reduced Deaths in Other Countries",
        "We Need Common-Sense Gun Safety Laws",
        "Too Many Guns, Too Many Funerals",
    ],
    ("minimum_wage", "conservative"): [
        "A $15 Minimum Wage Kills Small Business Jobs",
        "Why Raising the Minimum Wage Hurts Workers",
        "Minimum Wage Hikes Mean Automation and Layoffs",
        "The Economics Against a Higher Minimum Wage",
        "Let the Market Set Wages, Not Washington",
        "Small Business Owners Say No to $15",
    ],
    ("minimum_wage", "liberal"): [
        "Workers Deserve a Living Wage: Raise It to $15",
        "Raising the Minimum Wage Lifts Families Out of Poverty",
        "Fight for $15: Why Higher Pay Helps Everyone",
        "No One Working Full Time Should Be Poor",
        "The Case for Raising the Minimum Wage Now",
        "Higher Wages Boost the Whole Economy",
    ],
}

CHANNELS = {
    ("gun_control", "conservative"): ["Gun Rights Defenders", "Second Amendment Channel", "Armed Citizen Report"],
    ("gun_control", "liberal"): ["Safer Streets Now", "Gun Safety Coalition", "End Gun Violence TV"],
    ("minimum_wage", "conservative"): ["Free Market Economics", "Small Business Voice", "Job Creators Network"],
    ("minimum_wage", "liberal"): ["Living Wage Alliance", "Fair Pay Now", "Workers First Media"],
}

TITLE_SUFFIXES = ["", " (Part 2)", " | Full Interview", " - Explained", " | Debate Highlights",
                   " - Documentary", " | News Report", " (Must Watch)", " - Town Hall", " | Podcast Clip"]

# Wave-1 answers per leaning a profile states. A moderate states no side: a middle ideology, mostly
# no party, and issue answers drawn from both sides and the middle.
IDEOLOGY = {"liberal": ["Very liberal", "Liberal", "Somewhat liberal"],
            "conservative": ["Very conservative", "Conservative", "Somewhat conservative"],
            "moderate": ["Moderate", "Moderate", "Haven't thought much about it"]}

PARTY = {"liberal": "Democrat", "conservative": "Republican"}
MODERATE_PARTIES = ["Independent", "Independent", "Democrat", "Republican"]

GUN_PRIORITY = {"liberal": "Reducing gun violence", "conservative": "Protecting gun rights"}

GUN_OWN = {"liberal": "No", "conservative": "Yes"}

MINWAGE_VIEW = {"liberal": ["Strongly support", "Somewhat support"],
                "conservative": ["Strongly oppose", "Somewhat oppose"],
                "moderate": ["Neither support nor oppose", "Somewhat support", "Somewhat oppose"]}

# The side a profile states by mistake (10% of profiles): the other side for a partisan; for a
# moderate, one side drawn at random.
OTHER_SIDE = {"liberal": "conservative", "conservative": "liberal"}
SIDES = ("liberal", "conservative")

# Arm names as in the experiment; in the demo `pro` seeds a video on the issue's "pro" side
# (pro-gun for gun control, pro-raise for the minimum wage), `31` / `22` is the recommendation mix.
ARM_SEED_STANCE = {
    "gun_control": {"pro": "conservative", "anti": "liberal"},
    "minimum_wage": {"pro": "liberal", "anti": "conservative"},
}

STUDY_ISSUE = {"study1": "gun_control", "study2": "minimum_wage", "study3": "minimum_wage"}

TOPIC_IDS = {"gun_control": ["gun_control", "GunControl-v2", "guns"], "minimum_wage": ["min_wage", "minimum_wage", "MinWage-2"]}
