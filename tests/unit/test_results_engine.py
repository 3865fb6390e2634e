"""The results engine (appliance/core/results.py) against hand-worked cases: trimmed means, weights and
deductions, exact decimals, ties, rank styles, award edges, overrides and incomplete entries; and
its loader over a real box (import, ledger)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path

from appliance.core import personal
from appliance.core.event_package.format import AwardBand, CriterionRule, Override, Scoring
from appliance.core.ledger import SheetReceipt, SheetSubmission, submit_sheets
from appliance.core.results import EntryResult, Inputs, ResultEntry, compute, load
from appliance.core.storage import Store
from provisioning.event_import import import_package, load_package
from tests.conftest import make_box, paired_device
from tests.unit.test_event_import import write_package

D = Decimal
ONE = {"total": CriterionRule()}  # one criterion: a sheet's total is its value
PANEL3 = ("J1", "J2", "J3")
DEFAULTS = Scoring()  # an event without a scoring block
PANEL5 = ("J1", "J2", "J3", "J4", "J5")


def entry(entry_id: str, category: str = "Solo", division: str = "Teen", session: str = "S1") -> ResultEntry:
    fields = {"entry_id": entry_id, "session_id": session, "title": f"Routine {entry_id}"}
    fields |= {"category": category, "division": division}
    return ResultEntry(entry_id, session, int(entry_id), f"Routine {entry_id}", fields, 1)


def totals(**by_judge: str) -> dict[str, dict[str, Decimal]]:
    """Sheets of the one criterion ``total``: judge -> its value (text, as stored)."""
    return {judge: {"total": D(value)} for judge, value in by_judge.items()}


def run(
    sheets: dict[str, dict[str, dict[str, Decimal]]],
    scoring: Scoring = DEFAULTS,
    criteria: dict[str, CriterionRule] = ONE,
    entries: list[ResultEntry] | None = None,
    panel: tuple[str, ...] = PANEL3,
) -> dict[str, EntryResult]:
    listed = entries if entries is not None else [entry(entry_id) for entry_id in sheets]
    inputs = Inputs(scoring, criteria, tuple(listed), {"S1": panel}, sheets)
    return {result.entry.entry_id: result for result in compute(inputs).entries}


TRIMMED = Scoring(judges="trimmed_mean", drop_highest=1, drop_lowest=1)


def test_a_trimmed_mean_of_five_judges_drops_the_highest_and_the_lowest() -> None:
    result = run({"1": totals(J1="9.8", J2="8.9", J3="9.0", J4="8.9", J5="7.1")}, TRIMMED, panel=PANEL5)["1"]

    # 9.8 and 7.1 go; (8.9 + 9.0 + 8.9) / 3 = 8.9333... -> 8.93.
    assert [(d.judge_id, d.total, d.end) for d in result.dropped] == [
        ("J1", D("9.8"), "highest"),
        ("J5", D("7.1"), "lowest"),
    ]
    assert result.score == D("8.93") and str(result.score) == "8.93"
    assert not result.drops_skipped
    assert (
        result.explain()
        == "J1 9.8 and J5 7.1 dropped; mean of 3 = 8.93; rank 1 in category Solo, division Teen"
    )


def test_a_trimmed_mean_of_two_judges_drops_nobody_and_says_so() -> None:
    result = run({"1": totals(J1="9.0", J2="8.0")}, TRIMMED, panel=("J1", "J2"))["1"]

    assert result.dropped == () and result.drops_skipped
    assert result.score == D("8.50")
    assert result.explain().startswith(
        "only 2 judges scored: nothing dropped (the trimmed mean drops 1 highest and 1 lowest from 3 "
        "judges or more); mean of 2 = 8.50"
    )


def test_weights_and_a_deduction_make_the_total_and_the_mean_rounds_half_up() -> None:
    criteria = {
        "technique": CriterionRule(weight=D(2)),
        "artistry": CriterionRule(),
        "fall": CriterionRule(kind="deduction"),
    }
    sheets = {
        "1": {
            # 2 x 9.5 + 8.7 - 0.5 = 27.2
            "J1": {"technique": D("9.5"), "artistry": D("8.7"), "fall": D("0.5")},
            # 2 x 9.2 + 9.1 - 0.25 = 27.25
            "J2": {"technique": D("9.2"), "artistry": D("9.1"), "fall": D("0.25")},
        }
    }
    result = run(sheets, criteria=criteria, panel=("J1", "J2"))["1"]

    assert result.totals == {"J1": D("27.2"), "J2": D("27.25")}
    # (27.2 + 27.25) / 2 = 27.225 exactly: half-up gives 27.23 (half-even would give 27.22).
    assert result.score == D("27.23")


def test_a_weighted_deduction_counts_its_weight() -> None:
    criteria = {"artistry": CriterionRule(), "fall": CriterionRule(weight=D("1.5"), kind="deduction")}
    result = run({"1": {"J1": {"artistry": D("9"), "fall": D("2")}}}, criteria=criteria, panel=("J1",))["1"]

    assert result.totals == {"J1": D("6.0")}  # 9 - 1.5 x 2


def test_point_one_plus_point_two_is_exactly_point_three() -> None:
    criteria = {"a": CriterionRule(), "b": CriterionRule()}
    sheet = {"a": D("0.1"), "b": D("0.2")}
    result = run(
        {"1": {"J1": sheet, "J2": sheet, "J3": sheet}},
        Scoring(judges="sum", precision=10),
        criteria=criteria,
    )["1"]

    assert result.totals == {"J1": D("0.3"), "J2": D("0.3"), "J3": D("0.3")}
    assert result.score == D("0.9000000000")  # 3 x 0.3, never 0.9000000000000001


# -- ties -------------------------------------------------------------------------------------------

TIES = ("criterion:technique", "highest_single")
TECH_ART = {"technique": CriterionRule(), "artistry": CriterionRule()}


def sheet(technique: str, artistry: str) -> dict[str, Decimal]:
    return {"technique": D(technique), "artistry": D(artistry)}


# Four entries at 18.00 and one at 17.00. A has the best technique (9.00 against 8.67); among B, C
# and D, C has the best single sheet (18.5 against 18.0); B and D are equal on everything.
TIED = {
    "1": {"J1": sheet("9.0", "9.0"), "J2": sheet("9.0", "9.0"), "J3": sheet("9.0", "9.0")},  # A
    "2": {"J1": sheet("8.0", "10.0"), "J2": sheet("9.0", "9.0"), "J3": sheet("9.0", "9.0")},  # B
    "3": {"J1": sheet("8.0", "10.0"), "J2": sheet("9.0", "9.5"), "J3": sheet("9.0", "8.5")},  # C
    "4": {"J1": sheet("8.0", "10.0"), "J2": sheet("9.0", "9.0"), "J3": sheet("9.0", "9.0")},  # D
    "5": {"J1": sheet("8.5", "8.5"), "J2": sheet("8.5", "8.5"), "J3": sheet("8.5", "8.5")},  # 17.00
}


def test_a_tie_is_broken_on_a_criterion_then_on_the_highest_single_then_shared_skipping_places() -> None:
    results = run(TIED, Scoring(ties=TIES), criteria=TECH_ART)

    assert {e: (r.score, r.rank) for e, r in results.items()} == {
        "1": (D("18.00"), 1),
        "3": (D("18.00"), 2),
        "2": (D("18.00"), 3),
        "4": (D("18.00"), 3),
        "5": (D("17.00"), 5),
    }
    assert "tie with 2, 3 and 4 broken on technique: 9.00 against 8.67 (2), 8.67 (3), 8.67 (4)" in (
        results["1"].explain()
    )
    assert results["3"].explain() == (
        "mean of 3 = 18.00; tie with 1, 2 and 4 broken on technique: 8.67 against 9.00 (1), 8.67 (2), "
        "8.67 (4); tie with 2 and 4 broken on highest single: 18.5 against 18.0 (2), 18.0 (4); "
        "rank 2 in category Solo, division Teen"
    )
    assert (
        results["4"]
        .explain()
        .endswith(
            "tie with 2 and 3 broken on highest single: 18.0 against 18.0 (2), 18.5 (3); "
            "rank 3 (shared with 2) in category Solo, division Teen"
        )
    )
    assert results["2"].shared_with == ("4",) and results["1"].shared_with == ()


def test_dense_ranks_do_not_skip_after_a_shared_rank() -> None:
    results = run(TIED, Scoring(ties=TIES, ranks="dense"), criteria=TECH_ART)

    assert {e: r.rank for e, r in results.items()} == {"1": 1, "3": 2, "2": 3, "4": 3, "5": 4}


def test_a_two_way_tie_is_explained_with_both_values() -> None:
    two = {key: TIED[key] for key in ("1", "2")}
    results = run(two, Scoring(ties=TIES), criteria=TECH_ART)

    assert results["1"].explain() == (
        "mean of 3 = 18.00; tie with 2 broken on technique 9.00 > 8.67; "
        "rank 1 in category Solo, division Teen"
    )
    assert "tie with 1 broken on technique 8.67 < 9.00; rank 2" in results["2"].explain()


def test_without_tie_rules_equal_scores_share_a_rank() -> None:
    results = run(TIED, Scoring(), criteria=TECH_ART)

    assert {e: r.rank for e, r in results.items()} == {"1": 1, "2": 1, "3": 1, "4": 1, "5": 5}
    assert "rank 1 (shared with 1, 3 and 4)" in results["2"].explain()


def test_a_criterion_tie_value_is_combined_by_the_trimmed_mean_of_that_criterion_alone() -> None:
    # Totals tie at 18.00: A's 19, 18, 18, 18, 11 drop 19 and 11; B's are all 18. Technique alone:
    # A's 10, 9, 9, 9, 1 drop 10 and 1 -> 9.00; B's 9.5, 9.5, 8.5, 8.5, 8.5 drop a 9.5 and an 8.5 ->
    # 26.5 / 3 = 8.83.
    a = {"J1": ("10", "9"), "J2": ("9", "9"), "J3": ("9", "9"), "J4": ("9", "9"), "J5": ("1", "10")}
    b = {
        "J1": ("9.5", "8.5"),
        "J2": ("9.5", "8.5"),
        "J3": ("8.5", "9.5"),
        "J4": ("8.5", "9.5"),
        "J5": ("8.5", "9.5"),
    }
    sheets = {
        "1": {judge: sheet(t, art) for judge, (t, art) in a.items()},
        "2": {judge: sheet(t, art) for judge, (t, art) in b.items()},
    }
    scoring = Scoring(judges="trimmed_mean", drop_highest=1, drop_lowest=1, ties=("criterion:technique",))
    results = run(sheets, scoring, criteria=TECH_ART, panel=PANEL5)

    assert (results["1"].score, results["2"].score) == (D("18.00"), D("18.00"))
    assert (results["1"].rank, results["2"].rank) == (1, 2)
    assert "tie with 2 broken on technique 9.00 > 8.83" in results["1"].explain()


# -- awards -----------------------------------------------------------------------------------------

BANDS = (AwardBand("Platinum", D(27)), AwardBand("High Gold", D("25.5")), AwardBand("Gold", D(24)))


def test_award_bands_at_their_exact_edges_and_on_the_rounded_score() -> None:
    scores = {"1": "27", "2": "26.99", "3": "25.5", "4": "25.49", "5": "24", "6": "23.99"}
    sheets = {entry_id: totals(J1=value) for entry_id, value in scores.items()}
    # 26.99 and 27.00 average 26.995, shown 27.00: what is shown is what is banded.
    sheets["7"] = totals(J1="26.99", J2="27")
    results = run(sheets, Scoring(awards=BANDS), panel=("J1",))

    assert {e: r.award for e, r in results.items() if e != "7"} == {
        "1": "Platinum",
        "2": "High Gold",
        "3": "High Gold",
        "4": "Gold",
        "5": "Gold",
        "6": None,
    }
    assert (results["7"].score, results["7"].award) == (D("27.00"), "Platinum")
    assert results["6"].explain().endswith("no award (below Gold's 24)")
    assert results["1"].explain().endswith("award Platinum")


# -- overrides --------------------------------------------------------------------------------------


def test_an_override_for_one_category_replaces_only_the_keys_it_lists() -> None:
    scoring = Scoring(
        judges="trimmed_mean",
        drop_highest=1,
        drop_lowest=1,
        awards=(AwardBand("Gold", D(8)),),
        overrides=(Override(match={"category": "Solo"}, judges="mean", awards=()),),
    )
    five = totals(J1="10", J2="9", J3="9", J4="6", J5="6")
    results = run(
        {"1": five, "2": five},
        scoring,
        entries=[entry("1", category="Solo"), entry("2", category="Duet")],
        panel=PANEL5,
    )

    solo, duet = results["1"], results["2"]
    # Solo: the mean of all five (40 / 5 = 8.00), no awards; the drops it does not list stay 1 and 1.
    assert (solo.rule.judges, solo.rule.drop_highest, solo.rule.awards) == ("mean", 1, ())
    assert (solo.score, solo.dropped, solo.award) == (D("8.00"), (), None)
    # Duet: the event's trimmed mean (10 and a 6 dropped, J4's: equal totals drop the lower judge id
    # low; 24 / 3 = 8.00) and its award.
    assert (duet.score, [d.judge_id for d in duet.dropped], duet.award) == (D("8.00"), ["J1", "J4"], "Gold")
    assert (solo.rank, duet.rank) == (1, 1)  # each in its own category


def test_an_override_on_a_rank_within_field_sets_the_rank_style_of_that_group_only() -> None:
    scoring = Scoring(overrides=(Override(match={"CATEGORY": "Duet"}, ranks="dense"),))
    sheets = {
        e: totals(J1=v) for e, v in {"1": "9", "2": "9", "3": "8", "4": "9", "5": "9", "6": "8"}.items()
    }
    entries = [entry(e, category="Solo" if int(e) <= 3 else "Duet") for e in sheets]
    results = run(sheets, scoring, entries=entries, panel=("J1",))

    assert [results[e].rank for e in ("1", "2", "3")] == [1, 1, 3]  # Solo: skip
    assert [results[e].rank for e in ("4", "5", "6")] == [1, 1, 2]  # Duet: dense


# -- complete or provisional ------------------------------------------------------------------------


def test_an_incomplete_entry_keeps_its_partial_score_but_is_provisional_unranked_and_unawarded() -> None:
    sheets = {"1": totals(J1="9", J2="9.5"), "2": totals(J1="8", J2="8", J3="8")}
    results = run(sheets, Scoring(awards=(AwardBand("Gold", D(7)),)))

    partial, full = results["1"], results["2"]
    assert (partial.score, partial.complete, partial.provisional) == (D("9.25"), False, True)
    assert (partial.rank, partial.award) == (None, None)
    assert (
        partial.explain()
        == "mean of 2 = 9.25; provisional: 2 of 3 panel judges scored (J3 missing); no rank, no award"
    )
    assert (full.rank, full.award, full.provisional) == (1, "Gold", False)  # first despite the lower score


def test_an_entry_nobody_scored_has_no_score_never_zero() -> None:
    results = run({"1": {}}, Scoring())

    assert (results["1"].score, results["1"].rank, results["1"].totals) == (None, None, {})
    assert results["1"].explain().startswith("not scored yet; provisional: 0 of 3 panel judges scored")


def test_the_judges_rules_sum_and_median() -> None:
    four = {"1": totals(J1="7", J2="9", J3="8", J4="10")}
    panel = ("J1", "J2", "J3", "J4")

    assert run(four, Scoring(judges="sum"), panel=panel)["1"].score == D("34.00")
    assert run(four, Scoring(judges="median"), panel=panel)["1"].score == D("8.50")  # (8 + 9) / 2
    three = {"1": totals(J1="7", J2="9.7", J3="8")}
    assert run(three, Scoring(judges="median", precision=1))["1"].score == D("8.0")


# -- the loader, over a real box --------------------------------------------------------------------

EVENT = """{
  "id": "spring-gala", "name": "Spring Gala", "timezone": "America/Toronto",
  "criteria": [
    {"key": "technique", "label": "Technique", "min": 0, "max": 10, "step": 0.1, "weight": 2},
    {"key": "fall", "label": "Falls", "min": 0, "max": 3, "step": 0.25, "kind": "deduction"}
  ],
  "sessions": [{"id": "S1", "name": "Saturday"}],
  "scoring": {"judges": "mean", "precision": 3, "awards": [{"label": "Gold", "min": 18.2}]}
}"""


def test_load_reads_the_current_sheets_as_exact_decimals_and_compute_ranks_them(tmp_path: Path) -> None:
    package = write_package(
        tmp_path / "package",
        EVENT,
        "entry_id,session_id,order,title,category,division\n1,S1,1,Fire,Solo,Teen\n2,S1,2,Air,Solo,Teen\n",
        "judge_id,name,sessions\nJ1,Ana,*\nJ2,Bo,*\n",
    )
    config = make_box(tmp_path / "box", package=None)
    key = personal.load_key(config.data_key_path)
    with Store(config.db_path) as store:
        loaded = load_package(package)
        store.write_sync(lambda conn: import_package(conn, loaded, key, "test"))
        devices = {judge: paired_device(store, judge) for judge in ("J1", "J2")}

        def submit(
            judge: str, entry_id: str, technique: float, fall: float, supersedes: str | None = None
        ) -> str:
            sheet = SheetSubmission(
                str(uuid.uuid4()),
                entry_id,
                {"technique": technique, "fall": fall},
                "2026-04-18T10:00:00-04:00",
                supersedes=supersedes,
            )
            [receipt] = store.write_sync(lambda c: submit_sheets(c, [(devices[judge], sheet)]))
            assert isinstance(receipt, SheetReceipt) and receipt.status == 201, receipt
            return sheet.sheet_id

        first = submit("J1", "1", 5.0, 3.0)
        submit("J1", "1", 9.3, 0.25, supersedes=first)  # the correction is the current sheet
        submit("J2", "1", 9.1, 0.0)
        submit("J1", "2", 9.2, 0.0)
        results = {r.entry.entry_id: r for r in compute(store.query(load)).entries}

    one, two = results["1"], results["2"]
    assert one.totals == {"J1": D("18.35"), "J2": D("18.2")}  # 2 x 9.3 - 0.25; 2 x 9.1 - 0
    assert (one.score, one.rank, one.award) == (D("18.275"), 1, "Gold")
    assert (two.score, two.complete, two.rank) == (D("18.400"), False, None)
