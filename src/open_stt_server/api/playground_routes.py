"""The browser playground: one static page shipped inside the package, no build step, no CDN."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/playground")


@router.get("/playground")
async def playground() -> HTMLResponse:
    page = files("open_stt_server").joinpath("static/playground.html").read_text(encoding="utf-8")
    return HTMLResponse(page, headers={"Cache-Control": "no-cache"})


@router.get("/favicon.svg")
@router.get("/favicon.ico")  # browsers ask for it whatever the page declares; an SVG body is fine for them
async def favicon() -> Response:
    icon = files("open_stt_server").joinpath("static/favicon.svg").read_bytes()
    return Response(icon, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})
