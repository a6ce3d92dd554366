"""The recommendations process: the range's per-call recommendations themed in chunks, merged into one report.

Map (one task per chunk of calls): the chunk's calls are claimed (``pending -> processing``, counted),
the LLM groups their recommendations into themes, the themes go to S3 beside the chunk, and the calls
end ``success`` (folded into the report) or ``failed`` with the reason; one chunk's failure is only its
own. Reduce (one task): the chunks' themes are merged, every count is computed from the stored
analyses, and the report is stored in S3 as JSON and Markdown with a pointer on the run.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from callsight.dal.calls import CallKey, CallRepository, status_attr
from callsight.dal.recordings import ObjectStore, report_key
from callsight.dal.runs import RunRepository, running_check
from callsight.dates import DateRange
from callsight.models import ChunkTask
from callsight.processes import CallStatus, Process
from callsight.report import (
    ChunkThemes,
    ReportFailed,
    ThemeWriter,
    build_report,
    recommendations_of,
    render_markdown,
)

logger = Logger(child=True)

REC = Process.RECOMMENDATIONS.value
PENDING, PROCESSING, SUCCESS, FAILED = (s.value for s in CallStatus)


def themes_key(chunk_key: str) -> str:
    """Where a chunk's themes are stored: beside the chunk's plan."""
    return chunk_key.removesuffix(".json") + ".themes.json"


class ThemeChunkWorker:
    """Map: one chunk's calls claimed, their recommendations themed, the calls ended success or failed."""

    def __init__(self, *, calls: CallRepository, store: ObjectStore, writer: ThemeWriter) -> None:
        self.calls = calls
        self.store = store
        self.writer = writer

    def run(self, task: ChunkTask) -> dict[str, int]:
        keys = [CallKey.from_sk(entry["sk"]) for entry in self.store.get_json(task.chunk_key)]
        claimed = self._claim(keys, task)
        found = self.calls.get_many(claimed)
        recommendations = [rec for key in claimed for rec in recommendations_of(found.get(key.sk) or {})]
        moves = [(key, PROCESSING) for key in claimed]
        try:
            themes = self.writer.theme_chunk(recommendations) if recommendations else ChunkThemes(themes=[])
        except ReportFailed as exc:
            logger.warning("chunk could not be themed", extra={"chunk": task.chunk_key, "error": str(exc)})
            failed = self.calls.transition_many(REC, moves, FAILED, set_attrs={f"{REC}_error": str(exc)[:500]})
            return {"succeeded": 0, "failed": len(failed), "not_pending": len(keys) - len(claimed)}
        self.store.put_json(themes_key(task.chunk_key), themes.model_dump(mode="json"))
        done = self.calls.transition_many(REC, moves, SUCCESS, remove=[f"{REC}_error"])
        result = {"succeeded": len(done), "failed": 0, "not_pending": len(keys) - len(claimed),
                  "recommendations": len(recommendations), "themes": len(themes.themes)}
        logger.info("chunk themed", extra=result)
        return result

    def _claim(self, keys: list[CallKey], task: ChunkTask) -> list[CallKey]:
        """The chunk's calls this delivery works on: those it moves to processing while its run is recorded running,
        and those a first delivery of the same run had claimed (a retried task takes them back); a call another
        run holds is left alone."""
        run_id = task.run_id
        guard = running_check(self.calls.client_id, REC, task.range, run_id)
        moved = set(self.calls.transition_many(REC, [(key, PENDING) for key in keys], PROCESSING,
                                               set_attrs={f"{REC}_run": run_id}, guard=guard))
        others = [key for key in keys if key not in moved]
        current = self.calls.get_many(others) if others else {}
        mine = {key for key in others if current.get(key.sk, {}).get(status_attr(REC)) == PROCESSING
                and current.get(key.sk, {}).get(f"{REC}_run") == run_id}
        return [key for key in keys if key in moved or key in mine]


def build_range_report(*, calls: CallRepository, store: ObjectStore, runs: RunRepository, days: DateRange,
                       run_id: str, chunk_keys: list[str], writer: ThemeWriter, model: str) -> dict[str, Any]:
    """Reduce: the report of the range from the chunks' themes and the stored analyses, stored in S3."""
    client_id = calls.client_id
    items = calls.in_range(days)
    chunks = [ChunkThemes.model_validate(found) for key in chunk_keys
              if (found := store.get_json_or_none(themes_key(key))) is not None]
    report = build_report(client_id=client_id, start_date=days.start, end_date=days.end, calls=items, chunks=chunks,
                          writer=writer, model=model)
    start, end = days.start.isoformat(), days.end.isoformat()
    key = report_key(client_id, start, end, "json")
    store.put_text(key, report.model_dump_json(), "application/json; charset=utf-8")
    store.put_text(report_key(client_id, start, end, "md"), render_markdown(report), "text/markdown; charset=utf-8")
    runs.set_fields(client_id, REC, days, execution_name=run_id,
                    fields={"report_key": key, "report_generated_at": report.generated_at})
    usage = writer.usage
    summary = {"report_key": key, "problems": len(report.problems), "folded_calls": report.folded_calls,
               "chunks": len(chunk_keys), "chunks_themed": len(chunks), "llm_requests": usage.requests,
               "largest_prompt_tokens": usage.largest_prompt_tokens}
    logger.info("report built", extra=summary)
    return summary
