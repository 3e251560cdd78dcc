"""``genlab``: the instructor's command line (also ``python -m genlab.classroom.cli``).

genlab release  CH                      student version of CH into chapters/
genlab collect  CH --from PATH          a folder of student folders, or an LMS .zip
genlab grade    CH [--workers N] [...]  sandboxed parallel autograde, report in reports/CH.csv
genlab feedback CH                      feedback/ID/CH/*.html without hidden tests
genlab export   [--to grades.csv]       every grade as CSV
genlab similarity CH                    answers that share code: reports/CH-similarity.{csv,html}
genlab demo     [--workers N]           build, grade and report the demo class
genlab hub ...                          a class on JupyterHub (genlab hub --help; its module: hub)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from genlab.classroom import steps
from genlab.classroom.limits import GB, Limits


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genlab", description="GenLab classroom commands")
    parser.add_argument("--course", type=Path, default=Path.cwd(),
                        help="course folder with nbgrader_config.py (default: here)")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("release").add_argument("chapter")
    p = sub.add_parser("collect")
    p.add_argument("chapter")
    p.add_argument("--from", dest="source", type=Path, required=True)
    p.add_argument("--lms-timezone", default="UTC",
                   help="the time zone of the LMS's times (e.g. Europe/Berlin)")  # fmt: skip
    p = sub.add_parser("grade")
    p.add_argument("chapter")
    p.add_argument("--student", action="append", help="grade only these (repeatable)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    defaults = Limits()
    p.add_argument("--cell-timeout", type=int, default=defaults.cell_seconds)
    p.add_argument("--notebook-timeout", type=int, default=defaults.notebook_seconds)
    p.add_argument("--memory-gb", type=float, default=defaults.memory_bytes / GB)
    p.add_argument("--processes", type=int, default=defaults.processes,
                   help="processes and threads one sandbox may run at once")  # fmt: skip
    p.add_argument("--tmp-mb", type=int, default=defaults.tmp_bytes >> 20,
                   help="size of the sandbox's /tmp (a tmpfs), in MB")  # fmt: skip
    p.add_argument(
        "--unsafe-no-sandbox",
        action="store_true",
        help="grade without bubblewrap (scores can then be forged; every row says so)",
    )
    sub.add_parser("feedback").add_argument("chapter")
    sub.add_parser("export").add_argument("--to", type=Path, default=Path("grades.csv"))
    sub.add_parser("similarity").add_argument("chapter")
    p = sub.add_parser("demo")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dir", type=Path, default=None, help="default: build/demo-class")
    _hub_parser(sub)
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "hub":
        return _hub_main(args)
    root = args.course.resolve()
    try:
        if args.command == "release":
            print(steps.release(root, args.chapter))
        elif args.command == "collect":
            collection = steps.collect(root, args.chapter, args.source, tz=args.lms_timezone)
            print(collection.summary(args.chapter))
            if collection.unmatched:
                print("error: some files were not collected (above): rename them to a supported "
                      "form and collect again", file=sys.stderr)  # fmt: skip
                return 1
        elif args.command == "grade":
            limits = Limits(cell_seconds=args.cell_timeout, notebook_seconds=args.notebook_timeout,
                            memory_bytes=int(args.memory_gb * GB), processes=args.processes,
                            tmp_bytes=args.tmp_mb << 20)  # fmt: skip
            rows = steps.grade(root, args.chapter, args.student, workers=args.workers,
                                   limits=limits, sandbox=not args.unsafe_no_sandbox)  # fmt: skip
            print(steps.format_table(rows))
            print(f"report: {root / 'reports' / (args.chapter + '.csv')}")
        elif args.command == "feedback":
            for path in steps.feedback(root, args.chapter):
                print(path)
        elif args.command == "export":
            print(steps.export(root, args.to))
        elif args.command == "similarity":
            from genlab.classroom import similarity as classroom_similarity

            report = classroom_similarity.similarity(root, args.chapter)
            flagged = report.flagged()
            for p in flagged:
                print(f"{p.a:16s} {p.b:28s} similarity {p.score:.2f}  {' '.join(p.cells)}")
            print(f"{len(flagged)} flagged of {len(report.pairs) + len(report.reference)} "
                  f"scored pairs; skipped: {len(report.skipped)}")  # fmt: skip
            print(f"report: {root / 'reports' / (args.chapter + '-similarity.html')}")
        elif args.command == "demo":
            from genlab.classroom.demo import run_demo

            target = (args.dir or root / "build" / "demo-class").resolve()
            result = run_demo(target, root, workers=args.workers)
            print(result.table)
            print(f"demo course: {target}")
    except (steps.ClassroomError, FileNotFoundError, LookupError, ValueError) as error:
        print(f"genlab {args.command}: {error}", file=sys.stderr)
        return 1
    return 0


# --- genlab hub: a class on JupyterHub (genlab.classroom.hub, deploy/jupyterhub) ---------------


def _hub_parser(sub) -> None:
    hub = sub.add_parser("hub", help="a class on JupyterHub (see genlab.classroom.hub)")
    hub.add_argument(
        "--state", type=Path, default=None,
        help="the hub's state folder (default: $GENLAB_HUB_STATE or /srv/genlab-hub)",
    )  # fmt: skip
    hub_steps = hub.add_subparsers(dest="step", required=True)
    p = hub_steps.add_parser("setup", help="(root) users, exchange, shared cache, course folder")
    p.add_argument("--instructor", default="genlab-instructor")
    p.add_argument("--students", required=True, help="comma-separated user names")
    p.add_argument("--exchange", type=Path, default=None, help="default: /srv/nbgrader/exchange")
    p.add_argument("--course-id", default="genlab")
    p.add_argument(
        "--python", default=sys.executable,
        help="the Python (with genlab) user servers run; every account must be able to run it",
    )  # fmt: skip
    p.add_argument("--chapters", default="", help="comma-separated; default: every chapter")
    p.add_argument("--password-file", type=Path, default=None,
                   help="lines of user:password for chpasswd (PAM login)")  # fmt: skip
    p = hub_steps.add_parser("python", help="a Python every account can run, over this environment")
    p.add_argument("target", type=Path)
    p.add_argument("--base", default="/usr/bin/python3")
    p = hub_steps.add_parser(
        "release", help="generate, release to the exchange, warm the JAX cache"
    )
    p.add_argument("chapter")
    p.add_argument("--no-warm", action="store_true")
    hub_steps.add_parser("collect").add_argument("chapter")
    p = hub_steps.add_parser("grade", help="collect, grade in sandboxes, release feedback")
    p.add_argument("chapter")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    hub_steps.add_parser("feedback").add_argument("chapter")
    hub_steps.add_parser("start", help="(root) run the hub in the foreground")
    hub_steps.add_parser("remove", help="(root) delete the class's users and exchange")


def _hub_main(args) -> int:
    from genlab.classroom import hub

    try:
        if args.step == "setup":
            state = args.state or Path(os.environ.get(hub.STATE_ENV) or hub.DEFAULT_STATE)
            repository = Path(__file__).resolve().parents[3]
            chapters = [c for c in args.chapters.split(",") if c] or sorted(
                p.name for p in (repository / "solutions").glob("[0-9][0-9]_*"))  # fmt: skip
            passwords = {}
            if args.password_file:
                for line in args.password_file.read_text().splitlines():
                    user, _, password = line.partition(":")
                    passwords[user] = password
            spec = hub.HubClass(
                course_id=args.course_id, instructor=args.instructor,
                students=[s for s in args.students.split(",") if s],
                exchange=str(args.exchange or hub.DEFAULT_EXCHANGE), state=str(state),
                python=args.python,
            )  # fmt: skip
            spec = hub.setup(spec, passwords=passwords, repository=repository, chapters=chapters)
            print(f"class: {Path(spec.state) / hub.CLASS_FILE}")
            return 0
        if args.step == "python":
            print(hub.shared_python(args.target, args.base))
            return 0
        spec = hub.HubClass.load(args.state)
        if args.step == "release":
            print(hub.release(spec, args.chapter, warm_cache=not args.no_warm))
        elif args.step == "collect":
            print(", ".join(hub.collect(spec, args.chapter)))
        elif args.step == "grade":
            timings: dict[str, float] = {}
            rows = hub.grade(spec, args.chapter, workers=args.workers, timings=timings)
            print(steps.format_table(rows))
            print(", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items()))
        elif args.step == "feedback":
            for path in hub.return_feedback(spec, args.chapter):
                print(path)
        elif args.step == "start":
            os.environ[hub.STATE_ENV] = spec.state
            os.chdir(spec.state)
            os.execv(spec.python, hub.hub_command(spec))
        elif args.step == "remove":
            hub.remove(spec)
    except (hub.HubError, FileNotFoundError, LookupError, ValueError) as error:
        print(f"genlab hub {args.step}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
