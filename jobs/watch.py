"""Ray job entry point for the orchestrator: `ray job submit --working-dir . -- python jobs/watch.py [--once]`.

What `litelora watch` runs, without the CLI: with RAY_ADDRESS set (as `ray job submit` does), Ray Train jobs run
on that cluster; S3 and MLflow come from the usual variables (LITELORA_BUCKET, MLFLOW_TRACKING_URI, AWS_*).
Exit codes as the CLI's: 0 done, 1 a drop failed or the setup is wrong (one line on stderr), 130 interrupted,
143 stopped by SIGTERM (`ray job stop`); a drop in progress is handed back to the next watcher.
"""

import argparse
import sys

from pipeline.errors import USER_ERRORS
from pipeline.orchestrator.service import WatchOptions, build_watcher
from pipeline.orchestrator.watcher import WatchConfig
from pipeline.settings import connection, load_settings
from pipeline.shutdown import exit_code, sigterm_interrupts


def main() -> int:
    options, config = WatchOptions(), WatchConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="process the drops that are there, then exit")
    parser.add_argument("--workers", type=int, default=options.workers, help="Ray Train workers per job")
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker")
    parser.add_argument(
        "--cpus-per-worker", type=float, default=None, help="CPUs each worker reserves (default 0.5 on CPU)"
    )
    parser.add_argument("--tune", choices=("auto", "off"), default=None, help="Ray Tune before each drop")
    parser.add_argument("--trials", type=int, default=options.trials)
    parser.add_argument(
        "--poll", type=float, default=config.poll_s, help="seconds between looks at the bucket"
    )
    parser.add_argument(
        "--quiet-period",
        type=float,
        default=config.quiet_period_s,
        help="seconds after which a drop without _READY is complete",
    )
    parser.add_argument(
        "--lease", type=float, default=config.lease_s, help="seconds of silence before a takeover"
    )
    parser.add_argument(
        "--guard", type=float, default=None, help="promotion guard bound (0-1; 1 turns it off)"
    )
    args = parser.parse_args()
    sigterm_interrupts()
    try:
        options = WatchOptions(
            workers=args.workers,
            gpu=args.gpu,
            cpus_per_worker=args.cpus_per_worker,
            tune=args.tune,
            trials=args.trials,
            max_accuracy_drop=args.guard,
            config=WatchConfig(quiet_period_s=args.quiet_period, poll_s=args.poll, lease_s=args.lease),
        )
        done = build_watcher(connection(load_settings()), options).run(once=args.once)
    except KeyboardInterrupt as e:
        print(f"interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
        return exit_code(e)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"processed {len(done)} drop(s)")
    return 1 if any(d["state"] == "failed" for d in done) else 0


if __name__ == "__main__":
    sys.exit(main())
