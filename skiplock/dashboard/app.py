"""The Flask application: routes, the safety checks every request passes, errors as pages.

Every request: a `Host` the dashboard answers to (400 otherwise, before
anything else: security.py, DNS rebinding), credentials when configured (401
otherwise), no NUL anywhere in its path, query or form (400: no stored text can
hold one); every POST: the dashboard must have been started with
--allow-actions, come from a page of its own (Origin or Referer) and carry the
session's CSRF token (403 otherwise). Every response: a Content Security
Policy that allows only this server's own scripts and styles (payloads and
errors are attacker-controlled text; Jinja escapes them, and even a mistake
there could not run a script), no framing, and a Server-Timing header with the
time the server spent on the page (what `python -m bench dashboard` reads).
"""

from __future__ import annotations

import secrets
import time
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, abort, flash, g, redirect, render_template, request, session, url_for
from werkzeug.exceptions import HTTPException

from skiplock.dashboard import actions, formats, reads
from skiplock.dashboard.security import (
    CSRF_FIELD,
    authenticate,
    csrf_ok,
    for_log,
    host_allowed,
    new_csrf_token,
    safe_back,
    same_origin,
)
from skiplock.dashboard.settings import DashboardSettings
from skiplock.queue_core.errors import DatabaseUnavailable, SkiplockError

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


class _Dashboard(Flask):
    def log_exception(self, exc_info: tuple[type, BaseException, TracebackType]
                      | tuple[None, None, None]) -> None:
        # Flask's own writes the path as it came, decoded: %0a in a URL would start
        # a forged line of the log, \x1b an escape sequence on an operator's terminal.
        self.logger.error("Exception on %s [%s]", for_log(request.path),
                          for_log(request.method), exc_info=exc_info)


def _has_nul(values: Any) -> bool:
    return any("\x00" in key or "\x00" in value for key, value in values.items(multi=True))


def create_app(settings: DashboardSettings) -> Flask:
    app = _Dashboard(__name__)
    app.config.update(
        SECRET_KEY=secrets.token_bytes(32),  # sessions (and CSRF tokens) end with the process
        SESSION_COOKIE_NAME="skiplock_dashboard",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    app.extensions["skiplock_settings"] = settings
    _install_filters(app)

    @app.before_request
    def guard() -> Response | None:
        g.started = time.perf_counter()
        host = request.headers.get("Host")
        if not host_allowed(settings, host):
            # Plain text and no session: nothing of the dashboard for a rebound name.
            return Response("this dashboard does not answer to that host name (Host header); "
                            "see --allowed-host\n", 400, mimetype="text/plain")
        who = authenticate(settings, request.headers.get("Authorization"))
        if who is None:
            return Response("credentials required\n", 401,
                            {"WWW-Authenticate": 'Basic realm="skiplock dashboard", charset="UTF-8"'})
        g.who = who
        if "\x00" in request.path or _has_nul(request.args):
            abort(400, "a NUL character in the address: no job, filter or search holds one")
        if request.method == "POST":
            if not settings.allow_actions:
                abort(403, "this dashboard is read-only: start it with --allow-actions to act")
            if not same_origin(host, request.headers.get("Origin"), request.headers.get("Referer")):
                abort(403, "this form was not sent from a page of this dashboard (Origin)")
            if not csrf_ok(session.get(CSRF_FIELD), request.form.get(CSRF_FIELD)):
                abort(403, "the form's CSRF token is missing or wrong: reload the page and try again")
            if _has_nul(request.form):
                abort(400, "a NUL character in the form: no job type holds one")
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        if request.endpoint != "static":
            response.headers["Cache-Control"] = "no-store"
        if "started" in g:
            spent = (time.perf_counter() - g.started) * 1000
            response.headers["Server-Timing"] = f"app;dur={spent:.1f}"
        return response

    @app.context_processor
    def common() -> dict[str, Any]:
        if CSRF_FIELD not in session:
            session[CSRF_FIELD] = new_csrf_token()
        return {"settings": settings, "csrf_token": session[CSRF_FIELD], "who": g.get("who"),
                "csrf_field": CSRF_FIELD, "statuses": reads.STATUSES,
                "bulk_actions": actions.BULK_ACTIONS}

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[str, int]:
        return render_template("error.html", code=exc.code, message=exc.description), exc.code or 500

    @app.errorhandler(DatabaseUnavailable)
    def database_error(exc: DatabaseUnavailable) -> tuple[str, int]:
        return render_template("error.html", code=503, message=str(exc)), 503

    @app.errorhandler(SkiplockError)
    def bad_input(exc: SkiplockError) -> tuple[str, int]:
        return render_template("error.html", code=400, message=str(exc)), 400

    # -- pages ---------------------------------------------------------------------------------

    @app.get("/")
    def overview() -> str:
        data = reads.overview(settings)
        if request.args.get("fragment"):
            return render_template("overview_figures.html", o=data)
        return render_template("overview.html", o=data)

    @app.get("/jobs")
    def jobs() -> Any:
        q = (request.args.get("q") or "").strip()
        if q:
            found = reads.find_job(settings, q)
            if len(found) == 1:
                return redirect(url_for("job", job_id=found[0]))
            return render_template("jobs.html", page=None, q=q, found=found,
                                   filters=reads.JobFilters())
        filters = reads.JobFilters.parse(request.args)
        page = reads.list_jobs(settings, filters, request.args.get("after"))
        next_url = (url_for("jobs") + "?" + urlencode({**filters.query(), "after": page.next_cursor})
                    if page.next_cursor else None)
        first_url = url_for("jobs") + ("?" + urlencode(filters.query()) if filters.query() else "")
        return render_template("jobs.html", page=page, q="", found=None, filters=filters,
                               next_url=next_url, first_url=first_url)

    @app.get("/jobs/<job_id>")
    def job(job_id: str) -> str:
        view = reads.job_view(settings, job_id)
        if view is None:
            abort(404, f"no job with id {job_id}")
        view.actions = [a for a in actions.JOB_ACTIONS.values() if a.applies(view.job, view.ready_now)]
        return render_template("job.html", v=view, j=view.job)

    @app.post("/jobs/<job_id>/actions/<name>")
    def job_action(job_id: str, name: str) -> Any:
        view = reads.job_view(settings, job_id)
        if view is None:
            abort(404, f"no job with id {job_id}")
        action = actions.JOB_ACTIONS.get(name)
        if action is None:
            abort(404, f"no action {name}")
        changed = actions.run_job_action(name, view.job, view.ready_now, _actor())
        if changed:
            flash(f"{action.label}: job {job_id} {action.done}.", "ok")
        else:
            flash(f"{action.label}: nothing to do, the job is {view.job.status} now.", "warn")
        return redirect(url_for("job", job_id=job_id), 303)

    @app.post("/actions/<name>")
    def bulk_action(name: str) -> Any:
        action = actions.BULK_ACTIONS.get(name)
        if action is None:
            abort(404, f"no action {name}")
        job_type = (request.form.get("type") or "").strip() or None
        back = safe_back(request.form.get("back"))
        if action.confirm and request.form.get("confirmed") != "yes":
            n = actions.bulk_count(name, job_type)
            return render_template("confirm.html", action=action, job_type=job_type, n=n,
                                   back=back, sentence=action.explain.format(n=n, type=job_type))
        changed = actions.run_bulk_action(name, job_type, _actor())
        target = f" {job_type}" if job_type else ""
        flash(f"{action.label}{target}: done, {changed} jobs.", "ok")
        return redirect(back, 303)

    @app.get("/processes")
    def processes() -> str:
        return render_template("processes.html", groups=reads.process_groups(settings))

    @app.get("/schedules")
    def schedules() -> str:
        rows, source = reads.schedule_rows(settings)
        return render_template("schedules.html", rows=rows, source=source)

    @app.get("/actions")
    def action_log() -> str:
        return render_template("actions.html", rows=reads.recent_actions(settings))

    return app


def _actor() -> actions.Actor:
    return actions.Actor(g.who, request.remote_addr)


def _install_filters(app: Flask) -> None:
    app.jinja_env.filters.update(formats.FILTERS)
