"""Ray job entry point for the orchestrator: `ray job submit --working-dir . -- python jobs/watch.py [--once]`.

The library behind `litelora watch`: with RAY_ADDRESS set (as `ray job submit` does), Ray Train jobs run on that
cluster; S3 and MLflow come from the usual variables (LITELORA_BUCKET, MLFLOW_TRACKING_URI, AWS_*).
"""

import argparse
import sys

from pipeline.orchestrator.service import WatchOptions, build_watcher
from pipeline.orchestrator.watcher import WatchConfig
from pipeline.settings import connection, load_settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="process the drops that are there, then exit")
    parser.add_argument("--workers", type=int, default=2, help="Ray Train workers per job")
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker")
    parser.add_argument("--tune", choices=("auto", "off"), default=None, help="Ray Tune before each drop")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between looks at the bucket")
    parser.add_argument(
        "--quiet-period",
        type=float,
        default=30.0,
        help="seconds after which a drop without _READY is complete",
    )
    parser.add_argument("--lease", type=float, default=300.0, help="seconds of silence before a takeover")
    parser.add_argument(
        "--guard", type=float, default=None, help="promotion guard bound (0-1; 1 turns it off)"
    )
    args = parser.parse_args()
    options = WatchOptions(
        workers=args.workers,
        gpu=args.gpu,
        tune=args.tune,
        trials=args.trials,
        max_accuracy_drop=args.guard,
        config=WatchConfig(quiet_period_s=args.quiet_period, poll_s=args.poll, lease_s=args.lease),
    )
    done = build_watcher(connection(load_settings()), options).run(once=args.once)
    print(f"processed {len(done)} drop(s)")
    return 1 if any(d["state"] == "failed" for d in done) else 0


if __name__ == "__main__":
    sys.exit(main())
