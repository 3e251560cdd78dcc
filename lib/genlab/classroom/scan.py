"""A static scan of submissions for code an instructor should look at before trusting a score.

Nothing inside one kernel is tamper-proof, so the scan reads each student code cell without
running it, after IPython's input transformation (``%time``, ``!ls``, ``%%capture``), and flags:

- a cell that cannot be parsed (flagged, never skipped);
- rebinding, at the top level, a name the tests use (``PROTECTED``): assignment, ``del``,
  ``class``/``def``, ``for``/``with``/``except ... as``, ``:=``, ``global``/``nonlocal``, star
  imports, or an import of anything but its conventional module (``import numpy as np`` is fine,
  ``from numpy import random as np`` is not);
- assigning or deleting attributes of those names or of aliases of their modules, ``setattr`` /
  ``delattr`` on them, and passing such a module around as a value (``m = np``: an escaping alias);
- any use of the escape hatches in the tables below (``exec``, ``__import__``, ``inspect``,
  ``sys.modules``, ``__dict__``, ``subprocess``, ``os.environ``, file listing, ...), magics other
  than a few harmless ones, shell commands, ``/proc``, and paths outside the submission;
- importing (or using through ``genlab.``) the library's reference modules, or the grader's
  probes (``genlab.probing``, ``genlab.probes``: their seeds, cases, references and records are
  the grader's; a graded test cell, which nbgrader restores from the release anyway, may).

A flag is a reason for manual review, not a verdict. Calls into a reference that the course
notebook itself imported (``gan.generator_loss``) are caught while grading, by genlab.probing.
"""

from __future__ import annotations

import ast
import builtins
import json
import re
import warnings

from IPython.core.inputtransformer2 import TransformerManager

REFERENCE = {"primer", "gan", "vae", "attention", "gpt", "sampling", "diffusion", "evaluation",
             "watermark", "bpe", "finetune", "markov"}  # fmt: skip
LIBRARY = REFERENCE - {"markov"} | {"runtime", "data", "nn", "train", "plot", "probing"}
# The module each name stands for; importing that module under it is not a rebinding.
MODULE_OF = {"np": "numpy", "numpy": "numpy", "jnp": "jax.numpy", "jax": "jax", "nnx": "flax.nnx",
             "optax": "optax", "genlab": "genlab", "check": "genlab.check", "math": "math",
             "os": "os", "sys": "sys", "functools": "functools",
             "builtins": "builtins"}  # fmt: skip
CONVENTIONAL = MODULE_OF | {m: f"genlab.{m}" for m in LIBRARY}
PROTECTED = set(CONVENTIONAL)
ALIASED = {"numpy", "jax", "flax", "optax", "genlab", "math", "os", "sys", "functools", "builtins"}

FORBIDDEN_NAMES = {"exec", "eval", "compile", "__import__", "vars", "globals", "locals"}
FORBIDDEN_ATTRS = {
    "__dict__", "__code__", "__wrapped__", "__globals__", "__builtins__", "__closure__",
    "__defaults__", "__kwdefaults__", "__self__", "__func__", "__subclasses__", "__bases__",
    "__base__", "__mro__", "__file__", "__path__", "__loader__", "__spec__", "__setattr__",
    "__delattr__", "__import__", "get_ipython", "displayhook", "excepthook", "f_globals",
    "f_locals", "f_builtins", "f_back", "gi_frame", "cr_frame", "tb_frame", "_getframe",
}  # fmt: skip
FORBIDDEN_MODULES = {
    "importlib", "inspect", "subprocess", "multiprocessing", "threading", "_thread", "ctypes",
    "socket", "urllib", "http", "requests", "sqlite3", "nbgrader", "pkgutil", "linecache",
    "pickle", "marshal", "shelve", "dill", "cloudpickle", "runpy", "zipimport", "gc", "pty",
    "posix", "asyncio", "IPython", "ipykernel", "shutil", "pydoc", "joblib",
}  # fmt: skip
IMPORT_ONLY = {"code", "codeop", "signal"}  # also common variable names: flagged when imported
SYS_ATTRS = {"modules", "settrace", "setprofile", "meta_path", "path_hooks", "addaudithook"}
OS_ATTRS = {"system", "popen", "fork", "forkpty", "kill", "killpg", "environ", "environb", "getenv",
            "putenv", "unsetenv", "startfile", "chdir", "remove", "unlink", "rename", "replace",
            "rmdir", "removedirs", "symlink"}  # fmt: skip
OS_PREFIXES = ("exec", "spawn", "posix_spawn")
LISTING = {"listdir", "scandir", "walk", "glob", "iglob", "rglob", "iterdir"}
SAFE_MAGICS = {"matplotlib", "pinfo", "pdoc", "pdef", "who", "whos", "lsmagic"}
CODE_MAGICS = {"time", "timeit", "capture"}  # their argument / body is Python: scanned
SHELL_CALLS = {"system", "getoutput"}
ATTR_CALLS = {"getattr", "setattr", "delattr", "hasattr"}
PROBES = {"probing", "probes"}
PROBES_MARK = "the grader's probes"
TIMEIT_OPTIONS = re.compile(r"^\s*(?:-[nrp]\s*\d+\s*|-[tcqo]\s+)*")


def _reason(parts: list[str], importing: bool = False) -> str | None:
    """Why the dotted name ``parts`` (root resolved to its module) is flagged, or None."""
    root = parts[0]
    if root in FORBIDDEN_MODULES | (IMPORT_ONLY if importing else set()):
        if parts[:2] != ["IPython", "display"]:
            return f"uses {root}"
    for i, last in enumerate(parts):
        text = ".".join(parts[: i + 1])
        if last in FORBIDDEN_ATTRS or (i == 0 and last in FORBIDDEN_NAMES):
            return f"uses {text}"
        if i == 1 and root in ("builtins", "__builtins__") and last in FORBIDDEN_NAMES:
            return f"uses {text}"
        if i == 1 and root == "sys" and last in SYS_ATTRS:
            return f"uses {text}"
        if i == 1 and root == "os" and (last in OS_ATTRS or last.startswith(OS_PREFIXES)):
            return f"uses {text}"
        if i == 1 and root == "genlab" and last in REFERENCE:
            verb = "imports" if importing else "uses"
            return f"{verb} the library's reference module {text}: answers must not call it"
        if i == 1 and root == "genlab" and last == "classroom":
            verb = "imports" if importing else "uses"
            return f"{verb} the grader's own code ({text})"
        if i == 1 and root == "genlab" and last in PROBES:
            verb = "imports" if importing else "uses"
            return f"{verb} {PROBES_MARK} ({text}): answers must not use them"
        if last in LISTING:
            return f"lists files with {text}"
    return None


def _outside_path(text: str) -> bool:
    if "\n" in text or len(text) < 2:
        return False
    return text.startswith(("/", "~")) or ".." in re.split(r"[/\\]", text)


class _Scanner(ast.NodeVisitor):
    """Walks the cells of one notebook in order (import aliases carry over between cells)."""

    def __init__(self):
        self.flags: dict[str, None] = {}  # an ordered set of messages
        self.aliases: dict[str, str] = {}  # name -> module, for imports of ALIASED modules
        self.module_aliases: set[str] = set()  # unprotected names bound to such modules
        self.offset = self.depth = 0
        self.reported: set[ast.AST] = set()  # constants already reported by a call
        self.probes_ok = False

    def cell(self, source: str, probes_ok: bool = False) -> list[str]:
        """Flags of one cell; ``probes_ok``: a graded test cell (it calls the probes)."""
        self.flags, self.reported, self.probes_ok = {}, set(), probes_ok
        self.scan(source, 0)
        return list(self.flags)

    def flag(self, line: int, message: str):
        if self.probes_ok and PROBES_MARK in message:
            return
        self.flags.setdefault(f"{message} (line {line + self.offset})")

    def scan(self, code: str, offset: int):
        saved, (self.offset, self.depth) = (self.offset, self.depth), (offset, 0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(TransformerManager().transform_cell(code))
        except Exception as e:  # whatever stops the parse (or the transformer) is reported
            detail = e.msg if isinstance(e, SyntaxError) else str(e)
            line = e.lineno if isinstance(e, SyntaxError) and e.lineno else 1
            self.flag(line, f"cannot be parsed ({type(e).__name__}: {detail})")
        else:
            try:
                self.visit(tree)
            except RecursionError:
                self.flag(1, "is too deeply nested to scan")
        self.offset, self.depth = saved

    # --- names and bindings -------------------------------------------------------------
    def parts(self, node) -> list[str]:
        """``a.b.c`` as ["a", "b", "c"] (root "(...)" when it is not a name)."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        parts.append(node.id if isinstance(node, ast.Name) else "(...)")
        return parts[::-1]

    def resolved(self, parts: list[str]) -> list[str]:
        module = self.aliases.get(parts[0]) or MODULE_OF.get(parts[0], parts[0])
        return module.split(".") + parts[1:]

    def guarded(self, name: str) -> bool:
        return name in PROTECTED or name in self.aliases

    def bind(self, node, name: str, module: str | None = None):
        if name in PROTECTED and self.depth == 0 and CONVENTIONAL.get(name) != module:
            self.flag(node.lineno, f"rebinds {name}" + (f" to {module}" if module else ""))
        elif self.depth == 0 and hasattr(builtins, name) and not name.startswith("_"):
            self.flag(node.lineno, f"rebinds the builtin {name}")  # the tests call builtins too

    def bind_import(self, node, name: str, module: str, is_module: bool):
        self.bind(node, name, module)
        if module.split(".")[0] in ALIASED:
            self.aliases[name] = module
            if is_module and name not in PROTECTED:
                self.module_aliases.add(name)

    def visit_Import(self, node):
        for alias in node.names:
            if reason := _reason(alias.name.split("."), importing=True):
                self.flag(node.lineno, reason)
            name = alias.asname or alias.name.split(".")[0]
            self.bind_import(node, name, alias.name if alias.asname else name, True)

    def visit_ImportFrom(self, node):
        base = node.module or ""
        for alias in node.names:
            full = f"{base}.{alias.name}" if alias.name != "*" else base
            if reason := _reason(full.split("."), importing=True):
                self.flag(node.lineno, reason)
            if alias.name == "*":
                self.flag(node.lineno, f"star-imports {base} (may rebind any name)")
            else:
                name = alias.asname or alias.name
                self.bind_import(node, name, full, alias.name in PROTECTED)

    def visit_Global(self, node):
        for name in set(node.names) & PROTECTED:
            self.flag(node.lineno, f"declares {type(node).__name__.lower()} {name}")

    visit_Nonlocal = visit_Global

    def visit_FunctionDef(self, node):  # also classes and lambdas: their body is a new scope
        if not isinstance(node, ast.Lambda):
            self.bind(node, node.name)
        for field in ("decorator_list", "bases", "keywords", "args", "returns"):
            value = getattr(node, field, None)
            for child in value if isinstance(value, list) else [value] if value else []:
                self.visit(child)
        self.depth += 1
        for child in node.body if isinstance(node.body, list) else [node.body]:
            self.visit(child)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_ClassDef = visit_Lambda = visit_FunctionDef

    def visit_ExceptHandler(self, node):  # also the names a match pattern captures
        for name in (getattr(node, "name", None), getattr(node, "rest", None)):
            if isinstance(name, str):
                self.bind(node, name)
        self.generic_visit(node)

    visit_MatchAs = visit_MatchStar = visit_MatchMapping = visit_ExceptHandler

    # --- uses ---------------------------------------------------------------------------
    def visit_Name(self, node):
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self.bind(node, node.id)
        elif node.id in MODULE_OF or node.id in self.module_aliases or node.id in ATTR_CALLS:
            self.flag(node.lineno, f"uses {node.id} as a value (an alias would escape the scan)")
        if reason := _reason(self.resolved([node.id])):
            self.flag(node.lineno, reason)

    def visit_Attribute(self, node):
        parts = self.parts(node)
        if isinstance(node.ctx, (ast.Store, ast.Del)) and self.guarded(parts[0]):
            verb = "deletes" if isinstance(node.ctx, ast.Del) else "assigns"
            self.flag(node.lineno, f"{verb} {'.'.join(parts)}")
        if reason := _reason(self.resolved(parts)):
            self.flag(node.lineno, reason)
        if not isinstance(node.value, ast.Name):
            self.visit(node.value)

    def visit_Subscript(self, node):
        parts = self.parts(node.value)
        if isinstance(node.ctx, (ast.Store, ast.Del)) and self.guarded(parts[0]):
            self.flag(node.lineno, f"assigns into {'.'.join(parts)}[...]")
        self.generic_visit(node)

    def visit_Constant(self, node):
        value = node.value
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        if not isinstance(text, str) or node in self.reported:
            return
        if "/proc" in text:
            self.flag(node.lineno, f"mentions {text[:60]!r}")
        elif _outside_path(text):
            self.flag(node.lineno, f"uses the path {text[:60]!r}")
        elif text in FORBIDDEN_ATTRS:
            self.flag(node.lineno, f"mentions {text!r}")

    def visit_Call(self, node):
        if self.magic(node):
            return
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        args, skip = node.args, set()  # nodes already judged here, not visited again
        if isinstance(func, ast.Name) and name in ATTR_CALLS:
            skip.add(func)  # a direct call, not getattr passed around as a value
        if name in ATTR_CALLS and args:
            obj = self.parts(args[0]) if isinstance(args[0], (ast.Name, ast.Attribute)) else None
            skip |= {args[0]} if isinstance(args[0], ast.Name) else set()  # not "np as a value"
            where = ".".join(obj) if obj else "a computed object"
            attr = args[1] if len(args) > 1 else None
            constant = isinstance(attr, ast.Constant) and isinstance(attr.value, str)
            if name in ("setattr", "delattr") and (
                obj is None or self.guarded(obj[0]) or (obj[0] != "self" and not constant)
            ):
                self.flag(node.lineno, f"{name} on {where}")
            elif constant and obj:
                if reason := _reason(self.resolved([*obj, attr.value])):
                    self.flag(node.lineno, reason)
                    self.reported.add(attr)
            elif obj and (self.guarded(obj[0]) or hasattr(builtins, obj[0])):
                self.flag(node.lineno, f"{name} on {where} with a computed name")
        path = args[0] if args else next((k.value for k in node.keywords if k.arg == "file"), None)
        if name == "open" and path is not None:
            if not (isinstance(path, ast.Constant) and isinstance(path.value, (str, bytes))):
                self.flag(node.lineno, "opens a computed path")
            elif _outside_path(str(path.value)) or "/proc" in str(path.value):
                self.flag(node.lineno, f"opens {path.value!r}")
                self.reported.add(path)
        if any(k.arg == "allow_pickle" for k in node.keywords):
            self.flag(node.lineno, "loads pickles (allow_pickle)")
        for child in ast.iter_child_nodes(node):
            if child not in skip:
                self.visit(child)

    def magic(self, node) -> bool:
        """Handle ``get_ipython().<magic or shell call>('const', ...)`` made by IPython."""
        func, args = node.func, [getattr(a, "value", None) for a in node.args]
        shell = isinstance(func, ast.Attribute) and ast.unparse(func.value) == "get_ipython()"
        if not (shell and args and all(isinstance(a, str) for a in args) and not node.keywords):
            return False
        line = node.lineno
        if func.attr in SHELL_CALLS and len(args) == 1:
            self.flag(line, f"runs the shell command {args[0][:60]!r}")
        elif func.attr == "run_line_magic" and len(args) == 2:
            if args[0] in CODE_MAGICS:
                self.scan(TIMEIT_OPTIONS.sub("", args[1]), self.offset + line - 1)
            elif args[0] not in SAFE_MAGICS:
                self.flag(line, f"uses the magic %{args[0]}")
        elif func.attr == "run_cell_magic" and len(args) == 3:
            if args[0] == "capture":
                for word in args[1].split():
                    if not word.startswith("-"):
                        self.bind(node, word)
            elif args[0] in CODE_MAGICS and args[1].strip():
                self.scan(TIMEIT_OPTIONS.sub("", args[1]), self.offset + line - 1)
            if args[0] in CODE_MAGICS:
                self.scan(args[2], self.offset + line)
            else:
                self.flag(line, f"uses the cell magic %%{args[0]}")
        else:
            return False
        return True


def scan_source(source: str) -> list[str]:
    """Flags for one cell's code (empty when nothing looks suspicious)."""
    return _Scanner().cell(source)


def scan_notebook(path, release_sources: set[str] | None = None) -> list[str]:
    """Flags for the code cells of the notebook at ``path``, each prefixed with the cell's grade_id
    (or ``cell N``). A cell whose source is one of ``release_sources`` (the released notebook's
    code cells) is the course's own code and is not scanned. An unreadable notebook gives []."""
    try:
        with open(path, encoding="utf-8") as f:
            nb = json.load(f)
    except (OSError, ValueError):
        return []
    cells = nb.get("cells") if isinstance(nb, dict) else None
    scanner, flags = _Scanner(), []
    for index, cell in enumerate(cells if isinstance(cells, list) else []):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(map(str, source)) if isinstance(source, list) else str(source)
        if release_sources is not None and source in release_sources:
            continue
        meta = cell.get("metadata")
        nbgrader = meta.get("nbgrader") if isinstance(meta, dict) else None
        grade_id = nbgrader.get("grade_id") if isinstance(nbgrader, dict) else None
        where = str(grade_id) if grade_id else f"cell {index}"
        test = (
            isinstance(nbgrader, dict)
            and bool(nbgrader.get("grade"))
            and not nbgrader.get("solution")
        )
        flags += [f"{where}: {flag}" for flag in scanner.cell(source, probes_ok=test)]
    return flags
