"""Output validation in a folder and on S3 (moto stands in for AWS); preflight, the code bundle."""

from __future__ import annotations

import json
import zipfile
from io import BytesIO

import pytest

from fruits_jobs import contract
from fruits_pipeline import outputs_state, summary
from fruits_pipeline.code_bundle import bundle_version, package_zip
from fruits_pipeline.outputs_state import survey
from fruits_pipeline.preflight import bucket_problems
from fruits_pipeline.stores import LocalStore, S3Store
from fruits_pipeline.validation import validate
from tests.conftest import ROOT

FIT = "20261124T093000Z-1a2b3c4d"
OLD_FIT = "20261123T093000Z-0f0f0f0f"


def commit_batch(store, batch, featurized, quarantined=1, images=None):
    """A committed batch, as featurize leaves it: its data files, then its report."""
    store.write(f"{contract.FEATURES}/batch={batch}/part-0.parquet", b"PAR1")
    store.write(f"{contract.QUARANTINE}/batch={batch}/part-0.parquet", b"PAR1")
    counts = {"featurized": featurized, "quarantined": quarantined}
    report = {"input": featurized + quarantined if images is None else images, **counts}
    store.write(contract.featurize_report_key(batch), json.dumps(report).encode())


def write_contract(store, *, batch="b1", rows=4, csv_rows=None, consistent=True, covers=None):
    """A committed batch and a current PCA fit over ``covers`` (default: that batch)."""
    commit_batch(store, batch, rows - 1, 1 if consistent else 2, images=rows)
    lines = csv_rows or [f"s3://l/K/{i}.jpg,K,{i}.5,-0.25" for i in range(rows - 1)]
    store.write(
        f"{contract.fit_key(contract.PCA_CSV, FIT)}/part-0.csv",
        ("path,label,pc_1,pc_2\n" + "\n".join(lines)).encode(),
    )
    store.write(f"{contract.fit_key(contract.PCA, FIT)}/part-0.parquet", b"PAR1")
    store.write(f"{contract.fit_key(contract.PCA_MODEL, FIT)}/metadata/part-00000", b"{}")
    for name in contract.PCA_PLOTS:
        store.write(contract.plot_key(FIT, name), b"\x89PNG")
    pointer = {
        "fit": FIT,
        "k": 2,
        "rows": rows - 1,
        "explained_variance": [0.5, 0.2],
        "cumulative_explained_variance": [0.5, 0.7],
        "batches": covers or [batch],
    }
    store.write(contract.PCA_REPORT_KEY, json.dumps(pointer).encode())


def write_left_overs(store):
    """What runs killed at different moments leave: their files, never their commit."""
    store.write(f"{contract.FEATURES}/batch=b2/part-0.parquet", b"PAR1")
    store.write(f"{contract.FEATURES}/batch=b2/.part-0.parquet.crc", b"crc")
    store.write(f"{contract.QUARANTINE}/batch=b2/_temporary/0/part-1.parquet", b"PAR")
    store.write(f"{contract.REPORTS}/attribution/b2/LICENSE", b"CC BY-SA 4.0")
    store.write(f"{contract.featurize_report_key('b2')}.0a1b2c3d.tmp", b'{"input": 1')
    store.write(contract.featurize_report_key("b3"), b"")  # the old code's half-written report
    store.write(f"{contract.fit_key(contract.PCA_MODEL, OLD_FIT)}/metadata/part-00000", b"{}")
    store.write(contract.plot_key(OLD_FIT, contract.PCA_PLOTS[0]), b"\x89PNG")


LEFT_OVERS = [
    "_reports/attribution/b2/",
    "_reports/featurize-b2.json.0a1b2c3d.tmp",
    "_reports/featurize-b3.json",
    f"_reports/pca/{OLD_FIT}/",
    "features/batch=b2/",
    f"pca_model/{OLD_FIT}/",
    "quarantine/batch=b2/",
]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_valid_outputs_pass_in_both_stores(tmp_path, s3, where):
    store = LocalStore(tmp_path) if where == "local" else S3Store(s3, "lake", "outputs")
    write_contract(store)
    findings = validate(store, "b1")
    assert findings.ok, (findings.missing, findings.wrong)
    assert findings.summary["feature_rows"] == 3 and findings.summary["pca"]["fit"] == FIT


@pytest.mark.parametrize("where", ["local", "s3"])
def test_left_overs_are_named_never_counted_and_cleaned(tmp_path, s3, capsys, where):
    store = LocalStore(tmp_path) if where == "local" else S3Store(s3, "lake", "outputs")
    write_contract(store)
    write_left_overs(store)
    findings = validate(store, "b1")
    assert findings.ok, (findings.missing, findings.wrong)
    assert findings.summary["feature_rows"] == 3
    assert findings.summary["left_overs"] == LEFT_OVERS
    assert validate(store, "b2").missing == [f"{store.uri}/_reports/featurize-b2.json"]
    state = survey(store)
    assert (sorted(state.committed), state.fit) == (["b1"], FIT)
    assert sum(len(x.keys) for x in state.left_overs) == 8  # the checksum travels with its file

    assert outputs_state.main([store.uri, "--clean"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("deleted 8 files of 7 left-overs\n")
    assert "b1: 4 images, 3 featurized, 1 quarantined" in printed
    assert f"PCA: fit {FIT}, k=2, 3 rows, covers b1" in printed and "left-overs: none" in printed
    assert survey(store).left_overs == [] and validate(store, "b1").ok
    assert len(list(store.listing())) == 9  # the batch's 3 files, the fit's 5, pca.json
    if where == "local":
        assert not (tmp_path / "features" / "batch=b2").exists()


def test_the_summary_exits_from_the_findings_it_prints(tmp_path, capsys):
    store = LocalStore(tmp_path)
    write_contract(store)
    assert summary.main([str(tmp_path), "--batch", "b1"]) == 0
    printed = capsys.readouterr().out
    assert "PCA: k=2 components explain 70.0% of the variance over 3 images of 1 batches" in printed
    assert printed.endswith("\noutputs valid\n")
    commit_batch(store, "b2", 5)
    assert summary.main([str(tmp_path), "--batch", "b2"]) == 1
    assert capsys.readouterr().out.endswith(
        f"outputs INVALID: [\"a PCA fit over the committed batches: fit {FIT} covers ['b1'], "
        "not ['b2']\"]\n"
    )


def test_counts_that_do_not_add_up_are_wrong(tmp_path):
    store = LocalStore(tmp_path)
    write_contract(store, consistent=False)
    assert validate(store, "b1").wrong == ["batch b1: input 4 != featurized 3 + quarantined 2"]


def test_nan_in_the_csv_sample_is_wrong(tmp_path):
    store = LocalStore(tmp_path)
    write_contract(store, csv_rows=["a,K,1.0,2.0", "b,K,nan,2.0", "c,K,0.5,0.5"])
    (problem,) = validate(store, "b1").wrong
    assert problem == "PCA CSV line 3: NaN or infinite component for b"


def test_pca_rows_must_match_the_batches_it_covers(tmp_path):
    store = LocalStore(tmp_path)
    commit_batch(store, "b0", 2, 0)
    write_contract(store, covers=["b0", "b1"])
    assert validate(store, "b1").wrong == ["PCA rows 3 != feature rows 5"]


def test_a_batch_the_pca_does_not_cover_yet_is_missing(tmp_path):
    store = LocalStore(tmp_path)
    write_contract(store)
    commit_batch(store, "b2", 5)
    findings = validate(store, "b2")
    assert not findings.wrong
    assert findings.missing == [
        f"a PCA fit over the committed batches: fit {FIT} covers ['b1'], not ['b2']"
    ]


def test_a_fit_named_without_its_files_is_wrong(tmp_path):
    store = LocalStore(tmp_path)
    write_contract(store)
    store.delete(f"{contract.fit_key(contract.PCA_MODEL, FIT)}/metadata/part-00000")
    assert validate(store, "b1").wrong == [f"{tmp_path}/pca_model/{FIT}/ is absent"]


def test_missing_outputs_are_missing_not_wrong(tmp_path, s3):
    findings = validate(S3Store(s3, "lake", "outputs"), "b1")
    assert not findings.wrong
    assert "s3://lake/outputs/_reports/featurize-b1.json" in findings.missing
    assert "s3://lake/outputs/_reports/pca.json" in findings.missing


def test_preflight_names_every_bucket_problem(s3):
    problems = bucket_problems(s3, "lake", "eu-west-1")
    assert any("public access" in p for p in problems)
    s3.put_public_access_block(
        Bucket="lake",
        PublicAccessBlockConfiguration=dict.fromkeys(
            ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"),
            True,
        ),
    )
    s3.put_bucket_encryption(
        Bucket="lake",
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]
        },
    )
    assert bucket_problems(s3, "lake", "eu-west-1") == []
    assert bucket_problems(s3, "lake", "eu-central-1") == [
        "bucket lake is in eu-west-1, not in eu-central-1"
    ]
    assert "cannot be read" in bucket_problems(s3, "absent", "eu-west-1")[0]


def test_package_zip_is_deterministic_and_importable(tmp_path):
    package = ROOT / "spark_jobs" / "fruits_jobs"
    first, second = package_zip(package), package_zip(package)
    assert first == second
    names = zipfile.ZipFile(BytesIO(first)).namelist()
    assert "fruits_jobs/featurize.py" in names and "fruits_jobs/contract.py" in names
    assert bundle_version({"a": first}) == bundle_version({"a": second})
    assert bundle_version({"a": first}) != bundle_version({"a": first + b"x"})


def test_the_summary_of_an_s3_root_names_its_objects(s3):
    store = S3Store(s3, "lake", "outputs")
    write_contract(store)
    text, findings = summary.summarize(store, "b1")
    assert findings.ok, (findings.missing, findings.wrong)
    lines = text.splitlines()
    assert lines[0].startswith("batch b1: 4 images in, 3 featurized, 1 quarantined, ")
    assert "features   s3://lake/outputs/features" in lines
    csv = f"s3://lake/outputs/{contract.fit_key(contract.PCA_CSV, FIT)}/part-0.csv"
    assert [line for line in lines if line.startswith("PCA matrix ")] == [f"PCA matrix {csv}"]
    assert lines[-1] == "outputs valid"
