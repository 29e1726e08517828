"""spark-submit entry point: ``spark-submit spark_jobs/pca.py --help``."""

import sys

from fruits_jobs.pca import main

if __name__ == "__main__":
    sys.exit(main())
