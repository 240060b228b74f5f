"""``medsynbench turing serve``: the rating pages (FastAPI + Jinja2, answers in the study's SQLite database).

Rater routes live under ``/r/<token>``, the owner's under ``/admin/<token>``; a missing or wrong token gets 403
before anything else is looked at. Image ids are checked against :data:`db.ID_PATTERN` and the database before a
file name is built from them (never from the request). Answers are validated (pydantic: known fields only, answer
``real`` | ``synthetic``, confidence 1..N, comment up to 2000 characters) and saved on every click; a second answer
for one image replaces the first. A rater sees only their own answers, never the ground truth (at most their score,
when the study shows it, once every image is answered, after which their answers are locked).
"""
from __future__ import annotations

import contextlib
import re
import threading
import time
from pathlib import Path
from typing import Literal, Optional

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from medsynbench.benchmark.turing import db

HERE = Path(__file__).resolve().parent
_ID = re.compile(db.ID_PATTERN)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
}


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_id: str = Field(pattern=db.ID_PATTERN)
    answer: Literal["real", "synthetic"]
    confidence: Optional[int] = Field(default=None, ge=1, le=10)
    comment: Optional[str] = Field(default=None, max_length=2000)
    elapsed_ms: Optional[int] = Field(default=None, ge=0, le=86_400_000)


def create_app(study_dir: str | Path) -> FastAPI:
    study_dir = Path(study_dir)
    db.connect(study_dir).close()  # fails now, naming the folder, if it holds no study
    images_dir = (study_dir / "images").resolve()
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app = FastAPI(title="medsynbench visual Turing test", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    def conn():
        return db.connect(study_dir)

    def rater_or_403(c, token: str):
        rater = db.rater_for_token(c, token)
        if rater is None:
            raise HTTPException(status_code=403, detail="invalid or expired link")
        return rater

    def admin_or_403(c, token: str):
        if not db.is_admin(c, token):
            raise HTTPException(status_code=403, detail="invalid admin link")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if "application/json" in request.headers.get("accept", "") or request.method != "GET" \
                or "/image/" in request.url.path or request.url.path.endswith(".json"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        return templates.TemplateResponse(request, "error.html", {"status": exc.status_code, "detail": exc.detail},
                                          status_code=exc.status_code)

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request):
        raise HTTPException(status_code=403, detail="open the personal link you were given")

    # --- rater -------------------------------------------------------------------------------------------------
    @app.get("/r/{token}", response_class=HTMLResponse)
    def rate_page(request: Request, token: str):
        c = conn()
        try:
            rater = rater_or_403(c, token)
            s = db.settings(c)
        finally:
            c.close()
        return templates.TemplateResponse(request, "rate.html", {"s": s, "rater": rater["name"]})

    @app.get("/r/{token}/state")
    def state(token: str):
        c = conn()
        try:
            rater = rater_or_403(c, token)
            s = db.settings(c)
            answers = db.rater_answers(c, rater["id"])
            order = db.rater_order(c, rater["id"])
        finally:
            c.close()
        items = [{"id": i, **answers.get(i, {"answer": None, "confidence": None, "comment": None})} for i in order]
        return {"total": len(items), "items": items, "finished": rater["finished_at"] is not None,
                "require_confidence": s["require_confidence"], "confidence_levels": s["confidence_levels"],
                "show_score": s["show_score"]}

    @app.get("/r/{token}/image/{image_id}")
    def image(token: str, image_id: str):
        c = conn()
        try:
            rater_or_403(c, token)
            row = c.execute("SELECT id FROM images WHERE id=?", (image_id,)).fetchone() if _ID.match(image_id) \
                else None
        finally:
            c.close()
        if row is None:
            raise HTTPException(status_code=404, detail="no such image")
        path = images_dir / f"{row['id']}.png"  # built from the database's id, which matched ID_PATTERN
        return Response(path.read_bytes(), media_type="image/png")

    @app.post("/r/{token}/answer")
    async def answer(token: str, request: Request):
        raw = await request.body()  # parsed after the token check: a wrong token is 403 whatever the body
        return await run_in_threadpool(save, token, raw)

    def save(token: str, raw: bytes):
        c = conn()
        try:
            rater = rater_or_403(c, token)
            try:
                body = Answer.model_validate_json(raw)
            except ValidationError as err:
                raise HTTPException(status_code=422, detail=[{"loc": e["loc"], "msg": e["msg"]}
                                                             for e in err.errors()]) from None
            s = db.settings(c)
            if rater["finished_at"] is not None:
                raise HTTPException(status_code=409, detail="this rating is finished; answers are locked")
            if body.confidence is not None and body.confidence > s["confidence_levels"]:
                raise HTTPException(status_code=422, detail=f"confidence must be 1..{s['confidence_levels']}")
            if c.execute("SELECT 1 FROM images WHERE id=?", (body.image_id,)).fetchone() is None:
                raise HTTPException(status_code=404, detail="no such image")
            db.save_answer(c, rater["id"], body.image_id, body.answer, body.confidence, body.comment or None,
                           body.elapsed_ms)
            done = db.complete_count(c, rater["id"], s["require_confidence"])
            total = c.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        finally:
            c.close()
        return {"saved": True, "complete": done, "total": total}

    @app.post("/r/{token}/finish")
    def finish(token: str):
        c = conn()
        try:
            rater = rater_or_403(c, token)
            s = db.settings(c)
            total = c.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            done = db.complete_count(c, rater["id"], s["require_confidence"])
            if done < total:
                raise HTTPException(status_code=409, detail=f"{total - done} images are not answered yet")
            with db.transaction(c):
                c.execute("UPDATE raters SET finished_at=COALESCE(finished_at, ?) WHERE id=?",
                          (time.time(), rater["id"]))
            out = {"finished": True, "total": total}
            if s["show_score"]:
                correct = c.execute("SELECT COUNT(*) FROM answers a JOIN images i ON i.id = a.image_id "
                                    "WHERE a.rater_id=? AND a.answer = i.truth", (rater["id"],)).fetchone()[0]
                out.update(correct=correct, accuracy=correct / total)
        finally:
            c.close()
        return out

    # --- study owner -------------------------------------------------------------------------------------------
    @app.get("/admin/{token}", response_class=HTMLResponse)
    def admin_page(request: Request, token: str):
        c = conn()
        try:
            admin_or_403(c, token)
            s, rows = db.settings(c), db.progress(c)
        finally:
            c.close()
        return templates.TemplateResponse(request, "admin.html", {"s": s, "rows": rows})

    @app.get("/admin/{token}/progress.json")
    def admin_progress(token: str):
        c = conn()
        try:
            admin_or_403(c, token)
            return {"raters": db.progress(c)}
        finally:
            c.close()

    @app.get("/admin/{token}/results", response_class=HTMLResponse)
    def admin_results(request: Request, token: str):
        from medsynbench.benchmark.turing.results import analyse, render_html

        c = conn()
        try:
            admin_or_403(c, token)
        finally:
            c.close()
        return HTMLResponse(render_html(analyse(study_dir), standalone=False))

    return app


def serve(study_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    """Run the server until Ctrl-C. Access logs are off: request paths carry tokens."""
    import uvicorn

    uvicorn.run(create_app(study_dir), host=host, port=port, log_level=log_level, access_log=False)


@contextlib.contextmanager
def running(study_dir: str | Path, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 30.0):
    """The server in a background thread (port 0: a free one); yields its base URL, stops it on exit. For tests
    and scripts; ``medsynbench turing serve`` runs it in the foreground."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(study_dir), host=host, port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, name="turing-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the Turing-test server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
