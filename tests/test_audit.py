"""dualpet.audit: the rule graph's pattern edges, the plan parser, the change reasons."""

from __future__ import annotations

from dualpet import audit

RULES = {  # a miniature of the workflow: wildcard constraints as Snakemake reports them
    "convert": (
        ["results/{patient}/{tracer}/inspect.json"],
        [("results/{patient,P1|P2}/{tracer,fdg|ga}/ct.nii.gz", False)],
    ),
    "inspect": ([], [("results/{patient,P1|P2}/{tracer,fdg|ga}/inspect.json", False)]),
    "match": (["results/{patient}/fdg/ct.nii.gz"], [("results/{patient,P1|P2}/lesions/crops", True)]),
    "lesion_metrics": (
        ["results/{patient}/lesions/crops/{lesion}.npz"],
        [("results/{patient,P1|P2}/lesions/metrics/{lesion,L\\d+}.json", False)],
    ),
    "patient_table": ([], [("results/{patient,P1|P2}/lesions.tsv", False)]),
    "cohort": (["results/P1/lesions.tsv", "results/P2/lesions.tsv"], [("results/cohort/lesions.tsv", False)]),
    "review_page": (["results/{patient}/lesions.tsv"], [("results/{patient,P1|P2}/review.html", False)]),
}


def test_pattern_edges_follow_files_into_checkpoint_directories_and_respect_constraints():
    edges = audit.pattern_edges(RULES)
    assert ("inspect", "convert") in edges and ("convert", "match") in edges
    assert ("match", "lesion_metrics") in edges  # a file inside the checkpoint's directory
    assert ("patient_table", "cohort") in edges and ("patient_table", "review_page") in edges
    # results/cohort/lesions.tsv is not a patient's lesions.tsv: 'cohort' is not a patient
    assert ("cohort", "review_page") not in edges
    assert ("lesion_metrics", "convert") not in edges


def test_plan_parser_reads_rule_wildcards_and_reason():
    text = """
rule convert:
    input: results/P1/fdg/inspect.json
    output: results/P1/fdg/ct.nii.gz
    jobid: 4
    reason: Missing output files: results/P1/fdg/ct.nii.gz
    wildcards: patient=P1, tracer=fdg
    resources: tmpdir=<TBD>

localcheckpoint match:
    jobid: 7
    reason: Input files updated by another job: results/P1/fdg/ct.nii.gz
    wildcards: patient=P1
"""
    rows = audit.parse_plan(text)
    assert [(r["rule"], r["patient"], r["tracer"]) for r in rows] == [("convert", "P1", "fdg"), ("match", "P1", "")]
    assert rows[0]["reason"].startswith("Missing output files")


def test_change_reason_tells_code_from_parameters():
    record = {"shellcmd": '"$DUALPET_PYTHON" -m dualpet figures --metric=suvmax', "params": ["'abc123'", "'fdg'"]}
    assert audit.change_reason("params changed", record, lambda cmd: "abc123") == "parameters changed"
    assert audit.change_reason("params changed", record, lambda cmd: "fff000").startswith("code changed")
    assert audit.change_reason("updated input files", record, lambda cmd: "x") == "input changed"
    assert audit.change_reason("missing", None, lambda cmd: "x") == "missing"
