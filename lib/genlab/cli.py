"""``genlab``: the instructor's command line (also ``python -m genlab.cli``).

genlab release  CH                      student version of CH into chapters/
genlab collect  CH --from PATH          a folder of student folders, or an LMS .zip
genlab grade    CH [--workers N] [...]  sandboxed parallel autograde, report in reports/CH.csv
genlab feedback CH                      feedback/ID/CH/*.html without hidden tests
genlab export   [--to grades.csv]       every grade as CSV
genlab demo     [--workers N]           build, grade and report the demo class
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from genlab import classroom
from genlab.classroom_limits import GB, Limits


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genlab", description="GenLab classroom commands")
    parser.add_argument("--course", type=Path, default=Path.cwd(),
                        help="course folder with nbgrader_config.py (default: here)")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("release").add_argument("chapter")
    p = sub.add_parser("collect")
    p.add_argument("chapter")
    p.add_argument("--from", dest="source", type=Path, required=True)
    p = sub.add_parser("grade")
    p.add_argument("chapter")
    p.add_argument("--student", action="append", help="grade only these (repeatable)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    defaults = Limits()
    p.add_argument("--cell-timeout", type=int, default=defaults.cell_seconds)
    p.add_argument("--notebook-timeout", type=int, default=defaults.notebook_seconds)
    p.add_argument("--memory-gb", type=float, default=defaults.memory_bytes / GB)
    p.add_argument(
        "--unsafe-no-sandbox",
        action="store_true",
        help="grade without bubblewrap (scores can then be forged; every row says so)",
    )
    sub.add_parser("feedback").add_argument("chapter")
    sub.add_parser("export").add_argument("--to", type=Path, default=Path("grades.csv"))
    p = sub.add_parser("demo")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dir", type=Path, default=None, help="default: build/demo-class")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    root = args.course.resolve()
    try:
        if args.command == "release":
            print(classroom.release(root, args.chapter))
        elif args.command == "collect":
            students = classroom.collect(root, args.chapter, args.source)
            print(f"{len(students)} submissions of {args.chapter}: {', '.join(students)}")
        elif args.command == "grade":
            limits = Limits(cell_seconds=args.cell_timeout, notebook_seconds=args.notebook_timeout,
                            memory_bytes=int(args.memory_gb * GB))  # fmt: skip
            rows = classroom.grade(root, args.chapter, args.student, workers=args.workers,
                                   limits=limits, sandbox=not args.unsafe_no_sandbox)  # fmt: skip
            print(classroom.format_table(rows))
            print(f"report: {root / 'reports' / (args.chapter + '.csv')}")
        elif args.command == "feedback":
            for path in classroom.feedback(root, args.chapter):
                print(path)
        elif args.command == "export":
            print(classroom.export(root, args.to))
        elif args.command == "demo":
            from genlab.classroom_demo import run_demo

            target = (args.dir or root / "build" / "demo-class").resolve()
            result = run_demo(target, root, workers=args.workers)
            print(result.table)
            print(f"demo course: {target}")
    except (classroom.ClassroomError, FileNotFoundError, LookupError, ValueError) as error:
        print(f"genlab {args.command}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
