# hupwatch's warm preflight checker: `python -c BOOTSTRAP hupwatch-warm-checker`, the bootstrap
# taking this file from $HUPWATCH_WARM_CHECKER (out of the environment before anything runs).
#
# Why: `python -m gunicorn --check-config APP` spends most of its time starting the
# interpreter and importing Gunicorn before it imports the app. This process pays that once:
# it imports Gunicorn (never the app), then forks one child per check. The child does what
# `python -m gunicorn --check-config ARGS` would do in the release directory, and exits; the
# app's modules only ever exist in the child.
#
# Protocol: one JSON object per line. hupwatch -> stdin:
#   {"id": N, "dir": DIR, "argv": [ARGS after "-m gunicorn"], "env": [[K, V], ...],
#    "checks": {} | {"health": {"path": P, "timeout": SECONDS}}}
# The child runs app_check from framework_check.py, which hupwatch prepends to this file.
# stdout -> hupwatch:
#   {"event": "ready", "gunicorn": VERSION}                  once, after the imports
#   {"event": "started", "id": N, "pid": CHILD}              the child exists
#   {"event": "done", "id": N, "status": S, "code": C|null, "output": TAIL}
# S is the child's exit code, or -SIGNAL; C is the check's own exit code as the child reported
# it just before exiting (null when it never got there: killed, crashed, os._exit in the app).
# EOF on stdin (hupwatch gone) ends the checker.
import json
import os
import sys

OUTPUT_TAIL = 16384


def emit(obj):
    os.write(1, (json.dumps(obj) + "\n").encode())


def read_all(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def child(req, out_fd, res_fd):
    """The check itself; never returns."""
    code = 70
    try:
        os.setpgid(0, 0)  # hupwatch kills the group on a timeout: the app's helpers too
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.environ.clear()
        os.environ.update(dict(req["env"]))
        sys.dont_write_bytecode = True
        os.chdir(req["dir"])
        # `python -m` puts the start directory first on sys.path (unless -P/PYTHONSAFEPATH).
        if not sys.flags.safe_path:
            sys.path.insert(0, os.getcwd())
        # Some of Gunicorn's defaults are computed when gunicorn.config is imported. This
        # process was started with the check's environment except $PWD and $HUPWATCH_RELEASE
        # (hupwatch restarts it when anything else differs), as the same user, so the only one
        # that differs is `chdir` (from $PWD and the cwd): computed again here, in the release,
        # as a fresh `python -m gunicorn` would. A Gunicorn without that class gets its whole
        # config module re-executed instead (~8 ms).
        import gunicorn.config
        import gunicorn.util
        if isinstance(getattr(gunicorn.config, "Chdir", None), type):
            gunicorn.config.Chdir.default = gunicorn.util.getcwd()
        else:
            import importlib
            importlib.reload(gunicorn.config)
        # What `python -m gunicorn ARGS` does, then Django's checks and the health request.
        code = app_check(req["argv"], req.get("checks") or {})
    except BaseException:  # noqa: B036 - anything the app raises fails the check
        import traceback
        traceback.print_exc()
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: B036
        pass
    os.write(res_fd, str(code).encode())
    os._exit(code)


def check(req):
    out_fd = os.memfd_create("hupwatch-check-output")
    res_fd = os.memfd_create("hupwatch-check-result")
    pid = os.fork()
    if pid == 0:
        child(req, out_fd, res_fd)
    emit({"event": "started", "id": req["id"], "pid": pid})
    _, status = os.waitpid(pid, 0)
    status = os.waitstatus_to_exitcode(status)
    reported = read_all(res_fd).decode(errors="replace").strip()
    output = read_all(out_fd)[-OUTPUT_TAIL:].decode(errors="replace")
    os.close(out_fd)
    os.close(res_fd)
    code = int(reported) if reported.lstrip("-").isdigit() else None
    emit({"event": "done", "id": req["id"], "status": status, "code": code, "output": output})


def main():
    # Nothing of a release may be imported here: only Gunicorn, from the interpreter's paths.
    while sys.path and sys.path[0] in ("", os.getcwd()):
        sys.path.pop(0)
    sys.dont_write_bytecode = True
    try:
        import gunicorn
        import gunicorn.app.wsgiapp  # noqa: F401 - the imports the check needs, done once
        import gunicorn.__main__  # noqa: F401
    except BaseException as e:  # noqa: B036
        emit({"event": "fatal", "error": f"{type(e).__name__}: {e}"})
        return 1
    try:
        # One throw-away config and its argument parser, so the caches they fill (argparse,
        # re) are filled once here instead of in every check (≈ 8 ms of each, measured).
        gunicorn.config.Config("%(prog)s [OPTIONS] [APP_MODULE]", prog="gunicorn").parser()
    except Exception:  # noqa: BLE001 - only a warm-up
        pass
    emit({"event": "ready", "gunicorn": gunicorn.__version__})
    stdin = os.fdopen(0, "rb", buffering=0)
    pending = b""
    while True:
        chunk = stdin.read(65536)
        if not chunk:
            return 0
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            try:
                req = json.loads(line)
                check(req)
            except Exception as e:  # noqa: BLE001 - report, keep serving
                emit({"event": "error", "error": f"{type(e).__name__}: {e}"})


sys.exit(main())
