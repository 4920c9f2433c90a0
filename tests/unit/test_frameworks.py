"""The compliance mappings an evidence pack's index is built from: the shipped files load and
say what they should, statuses follow the pack's contents, and a broken file or an unknown
framework is refused with a message that names what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlsteward.errors import ConfigError, MlstewardError
from mlsteward.evidence.frameworks import (
    EVIDENCE_KINDS,
    FRAMEWORKS,
    Control,
    Framework,
    compliance_dir,
    framework_names,
    load_framework,
    map_controls,
)

AUDIT = {"audit_slice", "audit_verification", "audit_checkpoint"}
IDENTITY = {"access_control", "approvals"}

# Controls whose meaning fixes what must support them; a mapping that loses one of these kinds
# has changed what the index claims.
ANCHORS = {
    "eu-ai-act": {"Art. 12": AUDIT, "Art. 10": {"data_contract", "fairness_report"},
                  "Art. 13": {"model_card", "explainability"},
                  "Art. 72": {"drift_history", "monitoring_history"}},
    "nist-ai-rmf": {"MEASURE 2.11": {"fairness_report"}, "MEASURE 2.9": {"explainability"},
                    "MEASURE 2.13": {"process_metrics"}, "MANAGE 4.1": {"drift_history"},
                    "MEASURE 2.7": {"artifact_signatures"}},
    "iso-42001": {"A.6.2.8": AUDIT, "A.6.2.4": {"validation_report"},
                  "A.6.2.6": {"drift_history", "monitoring_history"},
                  "A.7.5": {"lineage"}, "A.7.4": {"data_contract"}},
    "soc2": {"CC6.1": {"access_control"}, "CC6.3": {"access_control", "approvals"},
             "CC8.1": {"approvals", "validation_report"}, "PI1.2": {"data_contract"},
             "CC7.2": {"monitoring_history"}},
    "gdpr": {"Art. 5(2)": {"approvals", "audit_slice"}, "Art. 15(1)(h)": {"explainability"},
             "Art. 32": {"access_control", "artifact_signatures"}},
    "hipaa": {"164.312(b)": AUDIT, "164.312(a)(1)": {"access_control"},
              "164.312(d)": {"access_control"}, "164.308(a)(1)(ii)(D)": {"audit_slice"}},
}  # fmt: skip

# Duties no model evidence can discharge: each must stay an honest gap.
BY_DESIGN = {
    "eu-ai-act": {"Art. 27", "Art. 73", "Art. 4"},
    "nist-ai-rmf": {"GOVERN 2.2", "MAP 5.1"},
    "iso-42001": {"A.5.2", "A.2.2"},
    "soc2": {"CC1.4", "CC9.2"},
    "gdpr": {"Art. 35", "Art. 33", "Art. 30", "Art. 22"},
    "hipaa": {"164.308(b)(1)", "164.308(a)(5)", "164.308(a)(1)(ii)(A)"},
}


def test_every_shipped_framework_is_present_and_loads() -> None:
    assert framework_names() == sorted(FRAMEWORKS)
    for name in FRAMEWORKS:
        fw = load_framework(name)
        assert fw.name == name and fw.path == compliance_dir() / f"{name}.yaml"
        assert fw.title and fw.source.startswith("https://")
        assert 10 <= len(fw.controls) <= 20, name
        assert all(c.title.strip() for c in fw.controls)


def test_kinds_used_are_the_vocabulary_and_every_kind_supports_something() -> None:
    used = {k for name in FRAMEWORKS for c in load_framework(name).controls for k in c.evidence}
    assert used <= set(EVIDENCE_KINDS)
    assert used == set(EVIDENCE_KINDS), f"never mapped: {set(EVIDENCE_KINDS) - used}"


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_each_framework_maps_its_anchor_controls_and_keeps_honest_gaps(name: str) -> None:
    controls = {c.id: c for c in load_framework(name).controls}
    for control_id, kinds in ANCHORS[name].items():
        assert kinds <= set(controls[control_id].evidence), (name, control_id)
    for control_id in BY_DESIGN[name]:
        assert controls[control_id].evidence == (), (name, control_id)
    kinds = [set(c.evidence) for c in controls.values()]
    assert any(k & AUDIT for k in kinds), f"{name}: nothing rests on the audit trail"
    assert any(k & IDENTITY for k in kinds), f"{name}: nothing rests on identified decisions"
    assert any(k for k in kinds) and any(not k for k in kinds)


def _framework(*controls: Control) -> Framework:
    return Framework("t", "T", "https://example.org/t", Path("t.yaml"), controls)


def test_statuses_follow_what_the_pack_holds() -> None:
    fw = _framework(
        Control("C1", "all there", ("audit_slice", "audit_verification")),
        Control("C2", "some there", ("audit_slice", "fairness_report")),
        Control("C3", "none there", ("drift_history",)),
        Control("C4", "outside", ()),
        Control("C5", "empty kind", ("reproduction",)),
    )
    present = {
        "audit_slice": ["audit/slice.jsonl", "audit/slice.md"],
        "audit_verification": ["audit/verification.json", "audit/slice.jsonl"],
        "reproduction": [],  # a kind with no files is absent
        "model_card": ["card.md"],
    }
    m = map_controls(fw, present)
    by_id = {s.control.id: s for s in m.controls}
    assert [s.status for s in m.controls] == ["evidenced", "partial", "gap", "gap", "gap"]
    assert by_id["C1"].files == ("audit/slice.jsonl", "audit/slice.md", "audit/verification.json")
    assert by_id["C1"].missing == ()
    assert by_id["C2"].files == ("audit/slice.jsonl", "audit/slice.md")
    assert by_id["C2"].missing == ("fairness_report",)
    assert by_id["C3"].files == () and by_id["C3"].missing == ("drift_history",)
    assert by_id["C4"].outside_pipeline and by_id["C4"].missing == ()
    assert (by_id["C4"].id, by_id["C4"].title) == ("C4", "outside")
    assert by_id["C5"].missing == ("reproduction",)
    assert [s.control.id for s in m.gaps] == ["C2", "C3", "C4", "C5"]

    d = m.to_dict()
    assert d["counts"] == {"evidenced": 1, "partial": 1, "gap": 3}
    assert d["controls"][1] == {
        "id": "C2", "title": "some there", "status": "partial",
        "evidence": ["audit_slice", "fairness_report"],
        "files": ["audit/slice.jsonl", "audit/slice.md"], "missing": ["fairness_report"],
        "outside_pipeline": False,
    }  # fmt: skip

    md = m.to_markdown()
    assert "| C1 | all there | evidenced | `audit/slice.jsonl`, `audit/slice.md`, " in md
    table, gaps = md.split("## Gaps")
    assert "C1" not in gaps
    assert f"`fairness_report`: {EVIDENCE_KINDS['fairness_report']}" in gaps
    assert "**C4** (gap): lies outside the pipeline" in gaps
    assert "**C3** (gap), missing:\n  - `drift_history`" in gaps
    assert "| C4 | outside | gap | none (outside the pipeline) |" in table


def test_a_full_pack_leaves_only_the_gaps_by_design() -> None:
    fw = load_framework("eu-ai-act")
    m = map_controls(fw, {kind: [f"{kind}/file.json"] for kind in EVIDENCE_KINDS})
    assert {s.control.id for s in m.gaps} == {c.id for c in fw.controls if not c.evidence}
    assert "None: every control" not in m.to_markdown()
    everything = _framework(Control("C1", "x", ("lineage",)))
    assert "None: every control" in map_controls(everything, {"lineage": ["l.json"]}).to_markdown()


def test_a_kind_the_vocabulary_lacks_in_the_pack_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown evidence kind 'audit_log'.*valid kinds"):
        map_controls(_framework(), {"audit_log": ["a.jsonl"]})


GOOD_CONTROL = '  - id: "A1"\n    title: "first"\n    evidence: [audit_slice]\n'


def _write(tmp: Path, monkeypatch: pytest.MonkeyPatch, body: str, name: str = "acme") -> Path:
    (tmp / "compliance").mkdir(parents=True, exist_ok=True)
    path = tmp / "compliance" / f"{name}.yaml"
    path.write_text(body)
    monkeypatch.setenv("MLSTEWARD_CONFIG_DIR", str(tmp))
    return path


def _doc(controls: str, framework: str = "acme") -> str:
    head = f'framework: {framework}\ntitle: "Acme"\nsource: "https://example.org"\ncontrols:\n'
    return head + controls


@pytest.mark.parametrize(
    ("controls", "framework", "expected"),
    [
        (GOOD_CONTROL + '  - id: "A.9"\n    title: "x"\n    evidence: [audit_slice, audit_log]\n',
         "acme", ["control #2 (id 'A.9')", "evidence", "unknown evidence kind 'audit_log'",
                  "valid kinds: " + ", ".join(EVIDENCE_KINDS)]),
        (GOOD_CONTROL + '  - id: "A1"\n    title: "again"\n    evidence: []\n',
         "acme", ["control #2 (id 'A1')", "duplicate id, already control #1"]),
        (GOOD_CONTROL + '  - id: "B2"\n    evidence: [lineage]\n',
         "acme", ["control #2 (id 'B2')", "title: Field required"]),
        (GOOD_CONTROL + '  - id: "B2"\n    title: "  "\n    evidence: [lineage]\n',
         "acme", ["control #2 (id 'B2')", "title: must not be empty"]),
        (GOOD_CONTROL + '  - id: "B2"\n    title: "t"\n',
         "acme", ["control #2 (id 'B2')", "evidence: Field required"]),
        (GOOD_CONTROL + '  - id: "B2"\n    title: "t"\n    evidence: [lineage, lineage]\n',
         "acme", ["control #2 (id 'B2')", "'lineage' listed more than once"]),
        ("  - id: 9.1\n    title: t\n    evidence: []\n",
         "acme", ["control #1 (id 9.1)", "id: Input should be a valid string (quote it"]),
        ('  - id: "B2"\n    title: "t"\n    evidence: []\n    evidnce: [lineage]\n',
         "acme", ["control #1 (id 'B2')", "evidnce: Extra inputs are not permitted"]),
        (GOOD_CONTROL, "other", ["framework: 'other' must equal the file name 'acme'"]),
    ],
)  # fmt: skip
def test_a_malformed_mapping_names_file_control_and_rule(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    controls: str,
    framework: str,
    expected: list[str],
) -> None:
    path = _write(tmp_path, monkeypatch, _doc(controls, framework))
    with pytest.raises(ConfigError) as err:
        load_framework("acme")
    message = str(err.value)
    assert message.startswith(f"{path}: invalid control mapping (1 problem(s))")
    for part in expected:
        assert part in message


def test_every_problem_in_a_file_is_reported_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = '  - id: "X"\n    title: ""\n    evidence: [nope]\n  - "just a string"\n'
    _write(tmp_path, monkeypatch, _doc(bad))
    with pytest.raises(ConfigError) as err:
        load_framework("acme")
    message = str(err.value)
    assert "(3 problem(s))" in message
    assert "control #1 (id 'X'): title: must not be empty" in message
    assert "control #1 (id 'X'): evidence: unknown evidence kind 'nope'" in message
    assert "control #2 (id '?'): <entry>:" in message


def test_a_file_that_is_not_a_mapping_or_not_yaml_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, monkeypatch, "- just\n- a list\n")
    with pytest.raises(ConfigError, match=f"{path}: a control mapping is a YAML mapping"):
        load_framework("acme")
    _write(tmp_path, monkeypatch, "framework: [acme\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_framework("acme")


def test_a_framework_the_team_adds_is_found_by_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path, monkeypatch, _doc(GOOD_CONTROL))
    assert framework_names() == ["acme"]
    assert load_framework("acme").controls == (Control("A1", "first", ("audit_slice",)),)


@pytest.mark.parametrize("name", ["iso-27001", "../profiles/local", "EU-AI-ACT"])
def test_an_unknown_framework_lists_the_available_ones(name: str) -> None:
    with pytest.raises(MlstewardError) as err:
        load_framework(name)
    message = str(err.value)
    assert f"unknown framework {name!r}" in message
    assert "available: " + ", ".join(sorted(FRAMEWORKS)) in message
