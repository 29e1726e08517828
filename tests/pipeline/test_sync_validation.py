"""Output validation in a folder and on S3 (moto stands in for AWS); preflight, packaging."""

from __future__ import annotations

import json
import zipfile
from io import BytesIO

import pytest

from fruits_jobs import contract
from fruits_pipeline.packaging import bundle_version, package_zip
from fruits_pipeline.preflight import bucket_problems
from fruits_pipeline.stores import LocalStore, S3Store
from fruits_pipeline.validation import validate
from tests.conftest import ROOT


def write_contract(store, *, batch="b1", rows=4, csv_rows=None, consistent=True):
    store.write(
        contract.featurize_report_key(batch),
        json.dumps(
            {"input": rows, "featurized": rows - 1, "quarantined": 1 if consistent else 2}
        ).encode(),
    )
    store.write(
        contract.PCA_REPORT_KEY,
        json.dumps({"k": 2, "rows": rows - 1, "explained_variance": [0.5, 0.2]}).encode(),
    )
    lines = csv_rows or [f"s3://l/K/{i}.jpg,K,{i}.5,-0.25" for i in range(rows - 1)]
    store.write(
        f"{contract.PCA_CSV}/part-0.csv", ("path,label,pc_1,pc_2\n" + "\n".join(lines)).encode()
    )
    for name in contract.PCA_PLOTS:
        store.write(contract.plot_key(name), b"\x89PNG")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_valid_outputs_pass_in_both_stores(tmp_path, s3, where):
    store = LocalStore(tmp_path) if where == "local" else S3Store(s3, "lake", "outputs")
    write_contract(store)
    findings = validate(store, "b1")
    assert findings.ok, (findings.missing, findings.wrong)
    assert findings.summary["feature_rows"] == 3


def test_counts_that_do_not_add_up_are_wrong(tmp_path):
    store = LocalStore(tmp_path)
    write_contract(store, consistent=False)
    assert validate(store, "b1").wrong == ["batch b1: input 4 != featurized 3 + quarantined 2"]


def test_nan_in_the_csv_sample_is_wrong(tmp_path):
    store = LocalStore(tmp_path)
    write_contract(store, csv_rows=["a,K,1.0,2.0", "b,K,nan,2.0", "c,K,0.5,0.5"])
    (problem,) = validate(store, "b1").wrong
    assert problem == "PCA CSV line 3: NaN or infinite component for b"


def test_pca_rows_must_match_every_batch(tmp_path):
    store = LocalStore(tmp_path)
    write_contract(store)
    store.write(
        contract.featurize_report_key("b0"), b'{"input": 2, "featurized": 2, "quarantined": 0}'
    )
    assert validate(store, "b1").wrong == ["PCA rows 3 != feature rows 5"]


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
