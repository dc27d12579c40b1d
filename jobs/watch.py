"""Ray job entry point for the orchestrator: `ray job submit --working-dir . -- python jobs/watch.py [--once]`.

The same code as `litelora watch`: with RAY_ADDRESS set (as `ray job submit` does), Ray Train jobs run on
that cluster; S3 and MLflow come from the usual variables (LITELORA_BUCKET, MLFLOW_TRACKING_URI, AWS_*).
"""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    main(["watch", *sys.argv[1:]])
