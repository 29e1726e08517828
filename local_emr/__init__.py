"""A local stand-in for Amazon EMR: moto's API, with clusters and steps that really run.

``python -m local_emr --port 5055`` (``make local-emr``) serves S3, EMR, IAM and EC2 on
127.0.0.1 and runs each EMR step's ``spark-submit`` on this machine's Spark with separate
executor JVMs. Pointing ``AIRFLOW_CONN_AWS_DEFAULT`` at it (:func:`server.connection_uri`) is
all ``fruits_emr`` needs; the DAGs, the pipeline package and the jobs do not know about it.
See :mod:`local_emr.server`, :mod:`local_emr.control`, :mod:`local_emr.runner` and
:mod:`local_emr.staging`; README "Without an AWS account" says what differs from EMR.
"""
