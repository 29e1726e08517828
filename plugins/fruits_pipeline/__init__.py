"""Airflow-side logic of the Fruits! pipeline (config, EMR specs, sync, validation); no Spark."""
