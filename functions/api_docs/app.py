"""GET /api/openapi.json and GET /api/docs: the API's OpenAPI description and Swagger UI for it, no API key needed.

The description is ``openapi.json`` beside this file, generated from the handlers' routes and models by
``make openapi`` (infra/openapi.py; a test fails when it drifts) and read once at cold start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from callsight.config import ApiDocsConfig
from callsight.http import error_responses, rest_api
from callsight.processes import DOCS_PATH, OPENAPI_PATH

CONFIG = ApiDocsConfig()
logger = Logger()
app = rest_api(CONFIG.allowed_origin)
DESCRIPTION: Final = (Path(__file__).parent / "openapi.json").read_text(encoding="utf-8")
#: Swagger UI's assets come from a CDN (the page is for people with a browser; nothing of ours is served from there)
SWAGGER_UI: Final = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5.17.14"

#: The page finds the description beside itself (behind API Gateway's stage prefix too: /prod/api/docs reads
#: /prod/api/openapi.json) and sends "Try it out" requests to the same prefix.
PAGE: Final = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Callsight API</title>
  <link rel="stylesheet" href="{SWAGGER_UI}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{SWAGGER_UI}/swagger-ui-bundle.js"></script>
  <script>
    var page = window.location.pathname.replace(/\\/+$/, "");
    var prefix = page.slice(0, page.length - "{DOCS_PATH}".length);
    fetch(prefix + "{OPENAPI_PATH}").then(function (answer) {{ return answer.json(); }}).then(function (spec) {{
      spec.servers = [{{url: prefix || "/"}}];
      SwaggerUIBundle({{spec: spec, dom_id: "#swagger-ui", deepLinking: true, persistAuthorization: false}});
    }});
  </script>
</body>
</html>
"""


@app.get(OPENAPI_PATH, operation_id="openApiDescription", tags=["docs"],
         summary="This description (OpenAPI 3.1), no API key needed",
         responses={200: {"description": "The OpenAPI description", "content": {
             "application/json": {"schema": {"type": "object"}}}}, **error_responses(503)})
def description() -> Response[str]:
    return Response(status_code=200, content_type="application/json", body=DESCRIPTION)


@app.get(DOCS_PATH, operation_id="apiDocs", tags=["docs"], summary="Swagger UI for this description, no API key needed",
         responses={200: {"description": "An HTML page (Swagger UI's assets come from a CDN)", "content": {
             "text/html": {"schema": {"type": "string"}}}}, **error_responses(503)})
def docs() -> Response[str]:
    return Response(status_code=200, content_type="text/html; charset=utf-8", body=PAGE)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
