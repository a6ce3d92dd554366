"""The pipeline: the four process runs of a range in one execution (the last ends with the PostgreSQL sync).

The pipeline execution holds the clinic's lock, so no other start gets in (409 naming the pipeline);
its steps are ordinary process runs: before each, ``begin_step`` records the run (so that process's
status endpoint follows it) and names its execution, which the state machine then starts and waits
for (``startExecution.sync:2``). The pipeline's run item keeps each step's execution name
(``step_<process>``): the pipeline's status reads its steps' runs by them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from callsight.dal.runs import RUNNING, RunRepository
from callsight.dal.table import Table
from callsight.dates import DateRange
from callsight.logic.runs import build_status, console_url, execution_arn, execution_name, finish_run
from callsight.models import OverallStatus, PipelineStatusResponse, StatusResponse
from callsight.processes import PIPELINE_STEPS, Process

PIPELINE = Process.PIPELINE.value


def _step_attr(process: Process | str) -> str:
    return f"step_{Process(process).value}"


def begin_step(table: Table, *, client_id: str, process: Process, days: DateRange, force: bool, pipeline_run_id: str,
               pipeline_execution_arn: str | None, state_machine_arn: str,
               clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> dict[str, Any]:
    """Record the step's run and its place in the pipeline; the execution name and input to start it with."""
    runs = RunRepository(table)
    name = execution_name(client_id, process.value, days, clock())
    if not runs.set_fields(client_id, PIPELINE, days, execution_name=pipeline_run_id,
                           fields={_step_attr(process): name}):
        raise RuntimeError(f"pipeline {pipeline_run_id} is not the range's current pipeline run")
    runs.started(client_id, process.value, days, execution_name=name,
                 execution_arn=execution_arn(state_machine_arn, name), pipeline=pipeline_run_id)
    step_input: dict[str, Any] = {"client_id": client_id, "process": process.value,
                                  "start_date": days.start.isoformat(), "end_date": days.end.isoformat(),
                                  "force": force}
    if pipeline_execution_arn:  # the console links the child execution to its parent
        step_input["AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID"] = pipeline_execution_arn
    return {"execution_name": name, "input": step_input}


def _begun(run: dict[str, Any] | None) -> dict[str, str]:
    """The steps this pipeline run has begun: process -> execution name, in order."""
    if not run:
        return {}
    return {p.value: str(run[_step_attr(p)]) for p in PIPELINE_STEPS if run.get(_step_attr(p))}


def pipeline_status(table: Table, *, client_id: str, days: DateRange) -> PipelineStatusResponse:
    run = RunRepository(table).get(client_id, PIPELINE, days)
    begun = _begun(run)
    steps: dict[str, StatusResponse] = {}
    for process in PIPELINE_STEPS:
        status = build_status(table, client_id=client_id, process=process.value, days=days)
        if run and process.value not in begun:  # this pipeline has not reached the step (or stopped before it)
            status = status.model_copy(update={"overall_status": "pending", "progress_percentage": 0.0})
        steps[process.value] = status
    run_status = run["status"] if run else None
    error = None
    overall: OverallStatus
    if run_status is None:
        overall = "pending"
    elif run_status == RUNNING:
        overall = "processing"
    elif run_status == "SUCCEEDED":
        overall = "partial" if any(s.overall_status == "partial" for s in steps.values()) else "completed"
    else:
        overall, error = "failed", str((run or {}).get("error") or f"the pipeline ended: {run_status}")
    current = next(reversed(begun), PIPELINE_STEPS[0].value) if run_status == RUNNING else None
    progress = round(sum(s.progress_percentage for s in steps.values()) / len(steps), 2)
    return PipelineStatusResponse(
        overall_status=overall, current_step=current, progress_percentage=progress, client_id=client_id,
        start_date=days.start.isoformat(), end_date=days.end.isoformat(),
        execution_name=run.get("execution_name") if run else None, started_at=run.get("started_at") if run else None,
        finished_at=run.get("finished_at") if run else None, error=error,
        console_url=console_url(run.get("execution_arn")) if run else None, steps=steps)


def end_failed_pipeline(table: Table, *, client_id: str, days: DateRange, run_id: str, outcome: str,
                        fallback: str | None) -> str:
    """Why a pipeline failed, in the words of the step that failed (its run's error), not Step Functions'.

    A step the pipeline had begun but whose run is still open (its execution never started, or the
    pipeline was stopped under it) is ended too, so that process's status never stays "processing"."""
    runs = RunRepository(table)
    pipeline = runs.get(client_id, PIPELINE, days)
    if not pipeline or pipeline.get("execution_name") != run_id:
        return fallback or "the pipeline failed"
    for process, name in reversed(_begun(pipeline).items()):
        step = runs.get(client_id, process, days) or {}
        if step.get("execution_name") != name:
            continue
        if step.get("status") == RUNNING:
            reason = f"the pipeline ended ({outcome}) in this step: {fallback or 'no cause given'}"
            finish_run(table, client_id=client_id, process=process, days=days, run_id=name, outcome=outcome,
                       error=reason)
            return f"the {Process(process).label} step failed: {reason}"
        if step.get("status") != "SUCCEEDED":
            reason = step.get("error") or f"its execution ended {step.get('status')}"
            return f"the {Process(process).label} step failed: {reason}"
    return fallback or "the pipeline failed"
