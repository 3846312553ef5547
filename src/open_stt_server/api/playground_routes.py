"""The browser playground: one static page shipped inside the package, no build step, no CDN."""

from __future__ import annotations

import html
from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/playground")


@router.get("/playground")
async def playground(request: Request) -> HTMLResponse:
    """The page, told the server's default model so that its model list opens on it."""
    page = files("open_stt_server").joinpath("static/playground.html").read_text(encoding="utf-8")
    default = html.escape(request.app.state.models.default, quote=True)
    return HTMLResponse(page.replace("{{default_model}}", default), headers={"Cache-Control": "no-cache"})


@router.get("/favicon.svg")
@router.get("/favicon.ico")  # browsers ask for it whatever the page declares; an SVG body is fine for them
async def favicon() -> Response:
    icon = files("open_stt_server").joinpath("static/favicon.svg").read_bytes()
    return Response(icon, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})
