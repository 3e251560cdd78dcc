"""nbgrader's Execute step, made to survive what students hand in.

nbgrader's own ``Execute`` interrupts a cell that runs past ``Execute.timeout``. That works for
a Python loop, but a loop inside compiled XLA code ignores the interrupt: the kernel stays busy
and every later cell then waits out its own timeout, and a kernel that dies (``os._exit``, the
memory limit) aborts the whole notebook. :class:`ResilientExecute` instead

- restarts the kernel after a cell that timed out, killed it or hit the memory limit, re-runs
  (silently) every earlier cell that had run cleanly, and continues with the next cell, so only
  the exercise whose cell failed loses its points; the replayed test cells run without their
  hidden tests (each probe already recorded, and its seed was consumed);
- caps the output a single cell may record (a print loop cannot fill memory or the notebook).

:class:`DropDuplicateIds` replaces nbgrader's ``DeduplicateIds``, whose emptied metadata makes
``OverwriteCells.add_missing_cells`` crash (``KeyError: 'grade_id'``) on a notebook in which a
student duplicated a graded cell.

``nbgrader_config.py`` puts it in place of ``Execute`` in ``Autograde.autograde_preprocessors``,
so plain ``nbgrader autograde`` and ``genlab grade`` behave the same. Its settings are the
usual ``Execute`` ones (``c.Execute.timeout`` applies) plus ``ResilientExecute.max_output_chars``.
"""

from __future__ import annotations

import asyncio
import time

from jupyter_core.utils import run_sync
from nbclient.exceptions import DeadKernelError
from nbclient.util import ensure_async
from nbformat import NotebookNode
from nbgrader.api import MissingEntry
from nbgrader.preprocessors import DeduplicateIds, Execute, NbGraderPreprocessor, OverwriteCells
from traitlets import Integer

from genlab.classroom.feedback import strip_hidden

TIMEOUT_ENAME = "CellTimeoutError"
DEAD_ENAME = "KernelDied"
PROCESS_LIMIT_ENAME = "BlockingIOError"  # what fork raises at RLIMIT_NPROC (EAGAIN)
RESTART_AFTER = {TIMEOUT_ENAME, "MemoryError", PROCESS_LIMIT_ENAME}
RESTART_ATTEMPTS = 4
TRUNCATED_NOTE = "[output truncated by the grader: more than {} characters]"


def _error(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(
        output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"]
    )


def _size(msg: dict) -> int:
    content = msg.get("content", {})
    if "text" in content:
        return len(content["text"])
    data = content.get("data", {})
    return sum(len(str(v)) for v in data.values()) if isinstance(data, dict) else 0


class ResilientExecute(Execute):
    """``Execute`` that restarts a stuck or dead kernel and caps each cell's output."""

    max_output_chars = Integer(
        200_000, help="Largest output (characters) one cell may record; the rest is dropped."
    ).tag(config=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clean_cells: list[int] = []
        self._cell_chars = 0
        self._truncated = False
        self.restarts: list[tuple[int, str]] = []

    def reset_execution_trackers(self) -> None:
        super().reset_execution_trackers()
        self._clean_cells = []
        self.restarts = []

    # -- output cap -----------------------------------------------------------------------
    def output(self, outs, msg, display_id, cell_index):
        if msg["msg_type"] == "error":  # an error decides the score: always keep it
            return super().output(outs, msg, display_id, cell_index)
        self._cell_chars += _size(msg)
        if self._cell_chars > self.max_output_chars:
            if not self._truncated:
                self._truncated = True
                note = TRUNCATED_NOTE.format(self.max_output_chars)
                # stdout: nbgrader scores any stderr output in a test cell as a failure
                outs.append(NotebookNode(output_type="stream", name="stdout", text=note + "\n"))
            return None
        return super().output(outs, msg, display_id, cell_index)

    # -- restart and replay ---------------------------------------------------------------
    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        self._cell_chars, self._truncated = 0, False
        if cell.cell_type != "code" or not cell.source.strip():
            return await super().async_execute_cell(
                cell, cell_index, execution_count, store_history
            )
        self._last_status = None
        try:
            cell = await super().async_execute_cell(
                cell, cell_index, execution_count, store_history
            )
        except DeadKernelError:
            cell.outputs.append(
                _error(
                    DEAD_ENAME,
                    "the kernel died while running this cell (it exited, crashed or ran out of "
                    "memory); the grader restarted it and re-ran the earlier cells",
                )
            )
            self.nb.cells[cell_index] = cell
            await self._restart_and_replay(cell_index, "kernel died")
            return cell
        errors = {o.get("ename") for o in cell.outputs if o.get("output_type") == "error"}
        if errors & RESTART_AFTER:
            # A stuck kernel, or one at its memory limit (what the bomb allocated stays
            # referenced by the traceback) or its process limit (the forked children hold the
            # count; a restart kills the kernel's process group), would fail the cells after it.
            await self._restart_and_replay(cell_index, ", ".join(sorted(errors & RESTART_AFTER)))
        elif self._last_status == "ok":
            self._clean_cells.append(cell_index)
        return cell

    execute_cell = run_sync(async_execute_cell)

    def on_cell_executed(self, **kwargs):
        self._last_status = kwargs["execute_reply"]["content"].get("status")
        super().on_cell_executed(**kwargs)

    async def _restart_and_replay(self, cell_index: int, why: str) -> None:
        self.log.warning("cell %d: %s; restarting the kernel and re-running earlier cells",
                         cell_index, why)  # fmt: skip
        self.restarts.append((cell_index, why))
        for attempt in range(RESTART_ATTEMPTS):
            # After a fork bomb the killed children still count against the process limit
            # until they are reaped, and a kernel started at once may die: try again.
            await ensure_async(self.km.restart_kernel(now=True))
            try:
                await ensure_async(self.kc.wait_for_ready(timeout=self.startup_timeout))
                break
            except RuntimeError:
                if attempt + 1 == RESTART_ATTEMPTS:
                    raise
                self.log.warning("the restarted kernel died; trying again")
                await asyncio.sleep(2.0 * (attempt + 1))
        for index in list(self._clean_cells):
            source, _ = strip_hidden(self.nb.cells[index].source)
            if not await self._run_quietly(source):
                self.log.warning("replaying cell %d failed; later cells may fail", index)
                break

    async def _run_quietly(self, source: str) -> bool:
        """Run ``source`` without recording output; True when it finished without error."""
        msg_id = self.kc.execute(source, silent=True, store_history=False)
        deadline = time.monotonic() + (self.timeout or 600)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                await ensure_async(self.km.restart_kernel(now=True))
                await ensure_async(self.kc.wait_for_ready(timeout=self.startup_timeout))
                return False
            try:
                reply = await ensure_async(self.kc.shell_channel.get_msg(timeout=remaining))
            except (asyncio.TimeoutError, TimeoutError, Exception):  # queue.Empty on timeout
                continue
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                return reply["content"].get("status") == "ok"


class DropDuplicateIds(DeduplicateIds):
    """``DeduplicateIds`` that removes a duplicate's nbgrader metadata instead of emptying it."""

    def preprocess_cell(self, cell, resources, cell_index):
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        if cell.metadata.get("nbgrader") == {}:
            del cell.metadata["nbgrader"]
        return cell, resources


class DropKernelResults(NbGraderPreprocessor):
    """Drop the ``execute_result`` outputs of graded test cells before nbgrader scores them.

    nbgrader reads a test cell's numeric ``execute_result`` as partial credit, so a kernel that
    calls ``sys.displayhook`` could forge it (or crash nbgrader with more than the cell's
    points). The course's scores come from the grader's verdict outside the kernel anyway.
    """

    def preprocess_cell(self, cell, resources, index):
        grading = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and grading.get("grade") and not grading.get("solution"):
            cell.outputs = [o for o in cell.outputs if o.get("output_type") != "execute_result"]
        return cell, resources


class QuietOverwriteCells(OverwriteCells):
    """``OverwriteCells`` without the false alarm on every test cell of an untouched submission.

    nbgrader keeps a test cell's source *with* its hidden tests in the gradebook (to put them
    back) and its checksum is of that source, while the student's copy has them removed, so
    nbgrader warns "Attribute 'checksum' for cell test_... has changed!" for each one. Here a
    locked cell that equals the gradebook's source with the hidden tests removed gets its source
    back first; a cell the student really changed is still reported (and restored).
    """

    def preprocess_cell(self, cell, resources, cell_index):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id is not None and cell.metadata.get("nbgrader", {}).get("locked"):
            try:
                source_cell = self.gradebook.find_source_cell(
                    grade_id, self.notebook_id, self.assignment_id
                )
            except MissingEntry:
                source_cell = None
            if source_cell is not None and source_cell.locked:
                released, _ = _without_hidden_tests(source_cell.source)
                if cell.source == released:
                    cell.source = source_cell.source
        return super().preprocess_cell(cell, resources, cell_index)


def _without_hidden_tests(source: str) -> tuple[str, bool]:
    """``source`` as nbgrader releases it: each hidden-test region (markers included) removed."""
    kept, inside, found = [], False, False
    for line in source.split("\n"):
        if "BEGIN HIDDEN TESTS" in line:
            inside, found = True, True
        elif "END HIDDEN TESTS" in line:
            inside = False
        elif not inside:
            kept.append(line)
    return "\n".join(kept), found
