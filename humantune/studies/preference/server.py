"""The study's web application (FastAPI on uvicorn): participants vote, the admin watches.

Routes (every token is a path segment; the server logs no request lines, so no token reaches a log):

    GET  /s/{token}                          the voting page (static HTML + JS; the prompt is set as text, never HTML)
    GET  /join/{join_token}                  hands out the next free participant slot (the quota) and redirects
    GET  /api/p/{token}/next                 the participant's next pair: prompt, image URLs, progress
    GET  /api/p/{token}/image/{id}/{side}    one image of one of the participant's own assignments
    POST /api/p/{token}/vote                 {"assignment": id, "choice": "left"|"right"|"tie", "response_ms": n}
    GET  /admin/{admin_token}                the admin page; /api/admin/{admin_token}/status its data
    POST /api/admin/{admin_token}/pause | /resume   stop / restart taking votes
    GET  /static/{file}                      the page's script and style sheet

Bad requests change nothing and get a 4xx with ``{"detail": "..."}``: unknown token 404, a pair not assigned to the
participant 403, a second vote for a pair 409 (with the recorded choice, so a client that retried after a lost
answer knows its vote stands), malformed JSON or fields 400, a body over :data:`MAX_BODY` bytes 413, a file path
leaving its folder 400, votes while paused 423, a full study 409.
"""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from humantune.studies.preference.storage import (
    CHOICES, TOKEN_PATTERN, NotFound, StudyStore, UnknownToken, VoteRejected, safe_file,
)
from humantune.studies.preference.study import read_access

ASSETS = Path(__file__).resolve().parent / "assets"
MAX_BODY = 4096
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
     b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),  # a page URL holds its token: never send it elsewhere
    (b"x-frame-options", b"DENY"),
]


class TooLarge(VoteRejected):
    status = 413


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response (plain ASGI middleware: no per-request task overhead)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _error(e: VoteRejected) -> JSONResponse:
    body = {"detail": str(e)}
    if hasattr(e, "recorded"):
        body["recorded"] = e.recorded
    return JSONResponse(body, status_code=e.status)


async def _read_json(request: Request) -> dict:
    """The request body as a JSON object, read at most :data:`MAX_BODY` + 1 bytes (chunked bodies too)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise TooLarge(f"request body over {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise TooLarge(f"request body over {MAX_BODY} bytes")
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VoteRejected(f"malformed JSON: {e}") from None
    if not isinstance(value, dict):
        raise VoteRejected("the body must be a JSON object")
    return value


def _parse_vote(body: dict) -> tuple[int, str, int | None]:
    unknown = set(body) - {"assignment", "choice", "response_ms"}
    if unknown:
        raise VoteRejected(f"unknown field(s): {', '.join(sorted(unknown))}")
    assignment, choice, ms = body.get("assignment"), body.get("choice"), body.get("response_ms")
    if not isinstance(assignment, int) or isinstance(assignment, bool) or assignment < 1:
        raise VoteRejected("'assignment' must be a positive integer")
    if choice not in CHOICES:
        raise VoteRejected(f"'choice' must be one of {', '.join(CHOICES)}")
    if ms is not None and (not isinstance(ms, int) or isinstance(ms, bool) or not 0 <= ms <= 86_400_000):
        raise VoteRejected("'response_ms' must be an integer number of milliseconds")
    return assignment, choice, ms


def _page(name: str) -> HTMLResponse:
    return HTMLResponse((ASSETS / name).read_text(encoding="utf-8"), headers={"cache-control": "no-store"})


def _not_found_page() -> HTMLResponse:
    return HTMLResponse("<!DOCTYPE html><title>Unknown link</title><p>This study link is not valid.</p>",
                        status_code=404)


def tally(store: StudyStore) -> list[dict]:
    """People's live tally per system pair: wins of each side and ties (comparison pairs, first showings)."""
    rows = store.rows("""
        SELECT sa.name AS a, sb.name AS b,
               SUM((v.choice = 'left' AND a.left_image = p.image_a) OR (v.choice = 'right' AND a.right_image = p.image_a))
                   AS wins_a,
               SUM((v.choice = 'left' AND a.left_image = p.image_b) OR (v.choice = 'right' AND a.right_image = p.image_b))
                   AS wins_b,
               SUM(v.choice = 'tie') AS ties
        FROM votes v JOIN assignments a ON a.id = v.assignment_id JOIN participants pt ON pt.id = a.participant_id
        JOIN pairs p ON p.id = a.pair_id JOIN images ia ON ia.id = p.image_a JOIN images ib ON ib.id = p.image_b
        JOIN systems sa ON sa.id = ia.system_id JOIN systems sb ON sb.id = ib.system_id
        WHERE p.kind = 'comparison' AND a.is_repeat = 0 AND pt.kind = 'person'
        GROUP BY sa.id, sb.id ORDER BY sa.id, sb.id""")
    return rows


def create_app(study_dir: str | Path) -> FastAPI:
    """The ASGI app serving the study folder ``study_dir``."""
    study_dir = Path(study_dir)
    store = StudyStore(study_dir)
    participant_tokens = read_access(study_dir).get("participants", {})
    question, title = store.meta("question", ""), store.meta("title", "Preference study")

    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(SecurityHeaders)
    app.state.store = store

    @app.exception_handler(VoteRejected)
    async def rejected(request: Request, e: VoteRejected) -> JSONResponse:
        return _error(e)

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse("<!DOCTYPE html><title>Preference study</title><p>Open your personal study link.</p>")

    @app.get("/static/{name:path}")
    def static(name: str) -> FileResponse:
        return FileResponse(safe_file(ASSETS, name), headers={"cache-control": "public, max-age=300"})

    @app.get("/s/{token}", response_class=HTMLResponse)
    def vote_page(token: str) -> HTMLResponse:
        try:
            participant = store.participant(token)
        except UnknownToken:
            return _not_found_page()
        store.claim(participant.id)
        return _page("vote.html")

    @app.get("/join/{token}")
    def join(token: str, request: Request) -> Response:
        if not store.check_secret("join_token_hash", token):
            return _not_found_page()
        remembered = request.cookies.get("humantune_participant", "")
        if remembered and TOKEN_PATTERN.match(remembered):
            try:
                store.participant(remembered)
                return RedirectResponse(f"/s/{remembered}", status_code=303)
            except UnknownToken:
                pass
        issued = store.claim_free_slot(participant_tokens)
        response = RedirectResponse(f"/s/{issued}", status_code=303)
        response.set_cookie("humantune_participant", issued, max_age=30 * 86400, path="/join", httponly=True,
                            samesite="strict")
        return response

    @app.get("/api/p/{token}/next")
    def next_pair(token: str) -> JSONResponse:
        participant = store.participant(token)
        answered, total = store.progress(participant.id)
        body = {"question": question, "title": title, "answered": answered, "total": total,
                "paused": store.paused, "done": False}
        nxt = store.next_assignment(participant.id)
        if nxt is None:
            body["done"] = True
        else:
            base = f"/api/p/{token}/image/{nxt.id}"
            body.update(assignment=nxt.id, prompt=nxt.prompt, left=f"{base}/left", right=f"{base}/right")
        return JSONResponse(body, headers={"cache-control": "no-store"})

    @app.get("/api/p/{token}/image/{assignment_id}/{side}")
    def image(token: str, assignment_id: int, side: str) -> FileResponse:
        if side not in ("left", "right"):
            raise NotFound("side must be left or right")
        participant = store.participant(token)
        a = store.assignment(participant.id, assignment_id)
        path = safe_file(study_dir, a.left_path if side == "left" else a.right_path)
        return FileResponse(path, headers={"cache-control": "private, max-age=3600"})

    @app.post("/api/p/{token}/vote")
    async def vote(token: str, request: Request) -> JSONResponse:
        participant = await run_in_threadpool(store.participant, token)
        assignment, choice, ms = _parse_vote(await _read_json(request))
        await run_in_threadpool(store.record_vote, participant.id, assignment, choice, ms)
        answered, total = await run_in_threadpool(store.progress, participant.id)
        return JSONResponse({"status": "recorded", "answered": answered, "total": total})

    def check_admin(token: str) -> None:
        if not store.check_secret("admin_token_hash", token):
            raise UnknownToken("unknown admin token")

    @app.get("/admin/{token}", response_class=HTMLResponse)
    def admin_page(token: str) -> HTMLResponse:
        if not store.check_secret("admin_token_hash", token):
            return _not_found_page()
        return _page("admin.html")

    @app.get("/api/admin/{token}/status")
    def admin_status(token: str) -> JSONResponse:
        check_admin(token)
        people = store.participant_progress()
        for row in people:
            if row["kind"] == "person" and row["name"] in participant_tokens:
                row["link"] = f"/s/{participant_tokens[row['name']]}"
        return JSONResponse({"title": title, "question": question, "paused": store.paused,
                             "systems": store.systems(), "participants": people, "tally": tally(store)},
                            headers={"cache-control": "no-store"})

    @app.post("/api/admin/{token}/{action}")
    def admin_action(token: str, action: str) -> JSONResponse:
        check_admin(token)
        if action not in ("pause", "resume"):
            raise NotFound(f"unknown admin action {action!r}")
        store.set_meta("paused", "1" if action == "pause" else "0")
        return JSONResponse({"paused": store.paused})

    return app


def serve(study_dir: str | Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the study until interrupted (uvicorn; request lines are not logged because URLs hold tokens)."""
    import uvicorn

    app = create_app(study_dir)
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning", server_header=False)
