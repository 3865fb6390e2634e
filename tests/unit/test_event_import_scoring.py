"""The event package's ``scoring`` block and criterion weight/kind at import (EVENT_PACKAGE.md): every
refusal at its line of event.json, all at once; a good block stored as written and read back."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from appliance.core import personal
from appliance.core.event_package.format import AwardBand, CriterionRule, Override, Scoring
from appliance.core.results import Inputs, load
from appliance.core.storage import Store
from provisioning.event_import import PackageInvalid, import_package, load_package
from tests.conftest import make_box
from tests.unit.test_event_import import write_package

ENTRIES = (
    "entry_id,session_id,order,title,Category,studio,Level Name,coach\n"
    "1,S1,1,Fire,Solo,Élan,Elite,Ana\n"
    "2,S1,2,Water,Duet,Pointe,Novice,Bo\n"
)
JUDGES = "judge_id,name,sessions\nJ1,Ana,*\nJ2,Bo,*\n"

# Every scoring refusal of EVENT_PACKAGE.md, one per line (line numbers on the left of the comments).
BAD_EVENT = """{
  "id": "spring-gala",
  "name": "Spring Gala",
  "timezone": "America/Toronto",
  "personal_columns": ["coach"],
  "criteria": [
    {"key": "technique", "label": "Technique", "min": 0, "max": 10, "step": 0.1, "weight": 0},
    {"key": "fall", "label": "Falls", "min": 0, "max": 3, "step": 0.25, "kind": "deduction", "weight": -1},
    {"key": "artistry", "label": "Artistry", "min": 0, "max": 10, "step": 0.1, "kind": "bonus"}
  ],
  "sessions": [{"id": "S1", "name": "Saturday"}],
  "scoring": {
    "judges": "average",
    "drop_highest": -1,
    "drop_lowest": 1,
    "ties": ["criterion:musicality", "highest_single", "coin"],
    "awards": [
      {"label": "Gold", "min": 24},
      {"label": "Platinum", "min": 27}
    ],
    "overrides": [
      {"match": {"stdio": "Élan"}, "judges": "mean"},
      {"match": {"studio": "Élan"}, "ranks": "dense"},
      {"match": {"category": "Solo"}, "rank_within": ["category"], "drop_lowest": -2},
      {"match": {"coach": "Ana"}, "awards": [{"label": "A", "min": 5}, {"label": "B", "min": 5}]}
    ],
    "precison": 3
  }
}
"""


def test_every_scoring_refusal_is_reported_at_its_line_all_at_once(tmp_path: Path) -> None:
    bad = write_package(tmp_path / "bad", BAD_EVENT, ENTRIES, JUDGES)

    with pytest.raises(PackageInvalid) as caught:
        load_package(bad)

    assert caught.value.problems == [
        "event.json:7: criterion 'technique': weight (0) must be greater than 0",
        "event.json:8: criterion 'fall': weight (-1) must be greater than 0",
        'event.json:9: criterion \'artistry\': unknown kind "bonus" (use "score" or "deduction")',
        'event.json:13: scoring: unknown judges rule "average" (use mean, sum, median, trimmed_mean)',
        "event.json:14: scoring: drop_highest (-1) must not be negative",
        "event.json:16: scoring: tie rule 'criterion:musicality' names no criterion of event.json "
        "(its criteria: technique, fall, artistry)",
        'event.json:16: scoring: unknown tie rule "coin" (use "criterion:KEY" or "highest_single")',
        "event.json:19: scoring: award bands must be in descending min: 'Platinum' (min 27) is not below "
        "'Gold' (min 24)",
        "event.json:22: scoring override 1: match: entries.csv has no column 'stdio' (its columns: "
        "entry_id, session_id, title, category, studio, Level Name)",
        "event.json:23: scoring override 2: sets ranks, which apply to a whole group, so it may match "
        "only on rank_within fields (category, division), not 'studio'",
        "event.json:24: scoring override 3: rank_within is event-wide only: set it in scoring, not in an "
        "override",
        "event.json:24: scoring override 3: drop_lowest (-2) must not be negative",
        "event.json:25: scoring override 4: award bands must be in descending min: 'B' (min 5) is not "
        "below 'A' (min 5)",
        "event.json:25: scoring override 4: match: results cannot use column 'coach' (participants and "
        "personal columns are kept encrypted, order and scheduled_at are not text fields; usable: "
        "entry_id, session_id, title, category, studio, Level Name)",
        "event.json:27: scoring: unknown key 'precison' (known: judges, drop_highest, drop_lowest, "
        "precision, awards, rank_within, ties, ranks, overrides)",
    ]


def good_event(scoring: dict[str, object]) -> str:
    return json.dumps(
        {
            "id": "spring-gala",
            "name": "Spring Gala",
            "timezone": "America/Toronto",
            "criteria": [
                {"key": "technique", "label": "Technique", "min": 0, "max": 10, "step": 0.1, "weight": 2},
                {"key": "artistry", "label": "Artistry", "min": 0, "max": 10, "step": 0.1},
                {"key": "fall", "label": "Falls", "min": 0, "max": 3, "step": 0.25, "kind": "deduction"},
            ],
            "sessions": [{"id": "S1", "name": "Saturday"}],
            "scoring": scoring,
        },
        indent=2,
    )


GOOD_SCORING = {
    "judges": "trimmed_mean",
    "drop_highest": 1,
    "drop_lowest": 1,
    "precision": 2,
    "rank_within": ["category", "level name"],
    "ties": ["criterion:technique", "highest_single"],
    "ranks": "skip",
    "awards": [
        {"label": "Platinum", "min": 27},
        {"label": "High Gold", "min": 25.5},
        {"label": "Gold", "min": 24},
    ],
    "overrides": [
        {"match": {"Category": "Solo"}, "judges": "mean", "awards": []},
        {"match": {"category": "Duet", "Level Name": "Novice"}, "ties": [], "ranks": "dense"},
    ],
}


def imported(tmp_path: Path, event: str) -> Inputs:
    """The results inputs of a fresh box once the package (``event`` with ENTRIES, JUDGES) is imported."""
    package = write_package(tmp_path / "package", event, ENTRIES, JUDGES)
    config = make_box(tmp_path / "box", package=None)
    key = personal.load_key(config.data_key_path)
    with Store(config.db_path) as store:
        loaded = load_package(package)
        store.write_sync(lambda conn: import_package(conn, loaded, key, "test"))
        return store.query(load)


def test_a_good_scoring_block_is_stored_as_written_and_read_back_exactly(tmp_path: Path) -> None:
    inputs = imported(tmp_path, good_event(GOOD_SCORING))

    assert inputs.scoring == Scoring(
        judges="trimmed_mean",
        drop_highest=1,
        drop_lowest=1,
        precision=2,
        rank_within=("category", "level name"),
        ties=("criterion:technique", "highest_single"),
        ranks="skip",
        awards=(
            AwardBand("Platinum", Decimal(27)),
            AwardBand("High Gold", Decimal("25.5")),
            AwardBand("Gold", Decimal(24)),
        ),
        overrides=(
            Override(match={"Category": "Solo"}, judges="mean", awards=()),
            Override(match={"category": "Duet", "Level Name": "Novice"}, ties=(), ranks="dense"),
        ),
    )
    assert inputs.criteria == {
        "technique": CriterionRule(weight=Decimal(2)),
        "artistry": CriterionRule(),
        "fall": CriterionRule(kind="deduction"),
    }
    # The fields results group and match on, by lower-case name; the personal-free extras included.
    assert inputs.entries[0].fields["level name"] == "Elite"
    assert inputs.entries[1].fields["category"] == "Duet"


def test_an_event_without_a_scoring_block_reads_as_the_defaults(tmp_path: Path) -> None:
    event = json.loads(good_event({}))
    del event["scoring"]
    inputs = imported(tmp_path, json.dumps(event))

    assert inputs.scoring == Scoring()
    assert (inputs.scoring.judges, inputs.scoring.precision, inputs.scoring.rank_within) == (
        "mean",
        2,
        ("category", "division"),
    )
