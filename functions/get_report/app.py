"""GET /api/recommendations/report: a range's recommendations report, JSON or Markdown (``format=md``)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from callsight.config import GetReportConfig
from callsight.dal.clients import ClientRepository
from callsight.dal.recordings import ObjectStore, report_key
from callsight.dal.table import Table
from callsight.http import (
    ClientIdQuery,
    EndDateAliasQuery,
    EndDateQuery,
    FormatQuery,
    StartDateAliasQuery,
    StartDateQuery,
    error,
    error_responses,
    require_key_for,
    rest_api,
)
from callsight.models import ReportQuery
from callsight.processes import REPORT_PATH, Process
from callsight.report.models import Report

CONFIG = GetReportConfig()
logger = Logger()
app = rest_api(CONFIG.allowed_origin)
clients = ClientRepository(Table(CONFIG.table_name))
store = ObjectStore(CONFIG.bucket)
MEDIA_TYPES = {"json": "application/json; charset=utf-8", "md": "text/markdown; charset=utf-8"}


@app.get(REPORT_PATH, operation_id="getReport", tags=["report"],
         summary="The range's recommendations report, as JSON or as Markdown with Russian headings (`format=md`)",
         description=f"Built by {Process.RECOMMENDATIONS.spec.start_path}; its status carries `report_url`.",
         responses={200: {"description": "The report", "content": {
             "application/json": {"model": Report}, "text/markdown": {"schema": {"type": "string"}}}},
             **error_responses(400, 401, 403, 404, 503)})
def report(*, client_id: ClientIdQuery, start_date: StartDateQuery = None, end_date: EndDateQuery = None,
           start_date_str: StartDateAliasQuery = None, end_date_str: EndDateAliasQuery = None,
           format: FormatQuery = "json") -> Response[Any]:
    # the query as the route declares it (either spelling of each date), validated by ReportQuery as before
    query = ReportQuery.model_validate(app.current_event.query_string_parameters or {})
    require_key_for(app, query.client_id)  # 403 for another clinic's key (before 404: no probing)
    clients.get(query.client_id)  # 404 for an unknown clinic
    start, end = query.start_date.isoformat(), query.end_date.isoformat()
    body = store.get_text_or_none(report_key(query.client_id, start, end, query.format))
    if body is None:
        return error(404, "report_not_found",
                     f"no recommendations report for {query.client_id} {start}..{end}: run "
                     f"{Process.RECOMMENDATIONS.spec.start_path} for this range first",
                     [{"field": "start_date", "problem": "no report for this range"}])
    return Response(status_code=200, content_type=MEDIA_TYPES[query.format], body=body)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
