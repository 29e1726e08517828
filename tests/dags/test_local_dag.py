"""The local DAG's spark-submit task, called as Airflow calls it: a failed job is named.

Whole runs of the DAG (schedule, REST trigger, dry run, a failing preflight, two daily batches
with quarantine and a refit over all) are run by the deployed Airflow in
``tests/running_airflow``, as users run them.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone

import pytest


def test_a_failed_job_is_named_by_its_first_error_line(tmp_path):
    from airflow.sdk.exceptions import AirflowException

    from fruits_pipeline.config import SAMPLE_IMAGES, Settings
    from fruits_pipeline.local_tasks import spark_submit_local
    from fruits_pipeline.runs import resolve_run

    fake = tmp_path / "weights.h5"
    fake.write_text("not weights")
    settings = Settings(local_root=str(tmp_path / "local"), weights=str(fake))
    label = next((SAMPLE_IMAGES / "Training").iterdir())
    (tmp_path / "local" / "lake" / label.name).mkdir(parents=True)
    shutil.copy2(next(label.glob("*.jpg")), tmp_path / "local" / "lake" / label.name)
    run = resolve_run(
        {"image_source": str(SAMPLE_IMAGES), "variance": 0.9}, None, datetime.now(timezone.utc)
    )
    with pytest.raises(AirflowException) as raised:
        spark_submit_local.function("featurize", run, {}, settings)
    message = str(raised.value)
    assert message.startswith("spark-submit featurize exited 2: featurize: error: "), message
    assert str(fake) in message and "\n" not in message
