"""The live heatmap page: an HTML file, a script and a stylesheet bundled in the package (no CDN,
no framework, no map tiles), served by the query application."""

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.exceptions import HTTPException

WEB = files("serve_apps") / "web"
TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "paths.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

router = APIRouter(include_in_schema=False)


def _file(name: str) -> Response:
    if name not in TYPES:
        raise HTTPException(404, f"no asset {name!r}")
    body = (WEB / name).read_bytes()
    # small files; no-cache makes a browser revalidate, so an upgrade shows at once
    return Response(body, media_type=TYPES[name], headers={"Cache-Control": "no-cache"})


@router.get("/")
async def index() -> Response:
    """The page; it asks for an API key unless the URL carries one (`/#key=...`)."""
    return _file("index.html")


@router.get("/static/{name}")
async def asset(name: str) -> Response:
    return _file(name)
