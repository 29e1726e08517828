"""Spark jobs of the Fruits! pipeline: MobileNetV2 featurization and PCA (no Airflow here)."""
