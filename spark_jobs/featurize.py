"""spark-submit entry point: ``spark-submit spark_jobs/featurize.py --help``."""

import sys

from fruits_jobs.featurize import main

if __name__ == "__main__":
    sys.exit(main())
