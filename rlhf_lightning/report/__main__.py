"""`python -m rlhf_lightning.report <run_dir> [--format html|md]` or `--sweep <multirun_dir>`.

Exit codes: 0 written; 2 a bad argument or path (one line on stderr naming the fix).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlhf_lightning.errors import RLHFError
from rlhf_lightning.report import FORMATS, write_report, write_sweep


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rlhf_lightning.report",
        description="Write a run's report page and plots, or tabulate a multirun sweep.",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("run_dir", nargs="?", type=Path, help="a run directory (hydra.run.dir)")
    target.add_argument(
        "--sweep", type=Path, metavar="MULTIRUN_DIR", help="a multirun directory (hydra.sweep.dir)"
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="html", help="page format (default html)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command; return the exit code."""
    args = parse_args(argv)
    try:
        if args.sweep is not None:
            table = write_sweep(args.sweep)
            print(table.markdown())
            print(f"\nwrote {table.csv_path} and {table.md_path}", file=sys.stderr)
        else:
            page = write_report(args.run_dir, fmt=args.format)
            print(page)
    except RLHFError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
