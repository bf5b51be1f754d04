# hupwatch's in-process release check, shared by the cold check (`python -c BOOTSTRAP ARGS`,
# see cold_main) and each child of the warm checker (warm_checker.py calls app_check).
#
# Why one process: `gunicorn --check-config` imports the app, and for a Django project that is
# not enough — Django imports its URLconfs, and so the views, on the first request. A syntax
# error in a view passes --check-config and then every request answers 500. Running Django's
# system checks (they import the URLconfs) in the process that has just loaded the app costs
# only the checks, not a second interpreter start and a second import of Django.
#
# Steps, each only when the one before passed:
#   1. what `python -m gunicorn --check-config ARGS` does (Gunicorn's own code, its messages);
#   2. Django's system checks, when the app imported Django or the release has a manage.py;
#   3. with checks["health"] = {"path": P, "timeout": SECONDS}: one WSGI GET for P on the app
#      Gunicorn loaded, in-process.
# On success the last line of output is REPORT_PREFIX + JSON (what ran, the answer to the GET,
# and which files the app read while loading and where its templates live); hupwatch decides
# from it whether the answer passes, and which changed files are code (watch/code_files.rs). Any failure before that exits 1
# with the traceback, whose last line hupwatch shows.
import json
import os
import sys
import time

REPORT_PREFIX = "hupwatch-framework-check: "
BODY_START = 300
# More files than this read at load is unusual; beyond it the rest are not listed.
MAX_READ_FILES = 5000
_read_files = set()


def _record_reads():
    """Note every file under the release that is opened for reading from now on (an audit
    hook: it sees `open()` and `os.open()` whoever calls them). What the app only writes while
    serving (a cache file, uploads) is never opened for reading here, so it never deploys."""
    root = os.path.realpath(os.getcwd()) + os.sep

    def hook(event, args):
        if event != "open" or len(_read_files) >= MAX_READ_FILES:
            return
        try:
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            if isinstance(path, bytes):
                path = os.fsdecode(path)
            if not isinstance(path, str) or path.endswith((".py", ".pyc")):
                return
            if mode is not None:
                if any(c in str(mode) for c in "wax+"):
                    return
            elif isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR):
                return
            full = os.path.realpath(path)
            if full.startswith(root) and os.path.isfile(full):
                _read_files.add(full)
        except Exception:  # noqa: BLE001 - an audit hook must never fail the app's open()
            pass

    sys.addaudithook(hook)


def _template_dirs(wsgi):
    """Template directories the framework knows (read at request time, not while loading);
    directories named `templates` are recognised by hupwatch by their name alone."""
    dirs = []
    if "django" in sys.modules:
        try:
            from django.conf import settings

            if settings.configured:
                for engine in settings.TEMPLATES:
                    dirs += [str(d) for d in engine.get("DIRS", [])]
        except Exception:  # noqa: BLE001 - only a hint
            pass
    for app in (wsgi, getattr(wsgi, "app", None)):
        for owner in [app] + list(getattr(app, "blueprints", {}).values()):
            folder, root = getattr(owner, "template_folder", None), getattr(owner, "root_path", None)
            if isinstance(folder, str) and isinstance(root, str):
                dirs.append(os.path.join(root, folder))
    return sorted({os.path.realpath(d) for d in dirs})


def _exit_code(e):
    if isinstance(e.code, int):
        return e.code
    if e.code is None:
        return 0
    print(e.code, file=sys.stderr)
    return 1


def app_check(argv, checks):
    """Run the check in this process (cwd = the release); returns the exit code."""
    import gunicorn.__main__ as main_module
    from gunicorn.app.wsgiapp import WSGIApplication

    sys.argv = [main_module.__file__] + list(argv)
    settings_before = os.environ.get("DJANGO_SETTINGS_MODULE")
    try:
        app = WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]", prog="gunicorn")
    except SystemExit as e:
        return _exit_code(e)
    loaded = []
    real_load = app.load
    load_ms = []

    def load():
        # What a worker does in load_wsgi(): how long requests wait after a HUP.
        started = time.monotonic()
        wsgi = real_load()
        load_ms.append((time.monotonic() - started) * 1000)
        loaded.append(wsgi)
        return wsgi

    app.load = load
    _record_reads()
    try:
        app.run()
        code = 0
    except SystemExit as e:
        code = _exit_code(e)
    if code != 0 or not loaded:
        return code
    report = {"django": None, "health": None, "load_ms": load_ms[0] if load_ms else None}
    django = django_checks(settings_before)
    if django is not None and "failed" in django:
        return 1
    report["django"] = django
    health = checks.get("health")
    if health:
        report["health"] = health_request(loaded[0], app.cfg, health["path"], health["timeout"])
    report["read"] = sorted(_read_files)
    report["templates"] = _template_dirs(loaded[0])
    sys.stdout.flush()
    sys.stderr.flush()
    print(REPORT_PREFIX + json.dumps(report), flush=True)
    return 0


def _settings_from_manage_py():
    import re

    try:
        with open("manage.py", encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    m = re.search(
        r"""environ\.setdefault\(\s*['"]DJANGO_SETTINGS_MODULE['"]\s*,\s*['"]([\w.]+)['"]""",
        text,
    )
    return m.group(1) if m else None


def _urlconf_state():
    """Whether loading the app imported ROOT_URLCONF. If not, each worker imports it, and so
    the views, at its first request: a worker that has served nothing since an edit imports the
    edited views, even of a release held back. Read before the system checks import it."""
    if "django.conf" not in sys.modules:
        return None
    try:
        from django.conf import settings

        name = settings.ROOT_URLCONF if settings.configured else None
    except Exception:  # noqa: BLE001 - only a hint
        return None
    if not isinstance(name, str):
        return None
    return {"module": name, "loaded": name in sys.modules}


def django_checks(settings_before):
    """Django's system checks (`manage.py check`), or None for a project that is not Django."""
    if "django" not in sys.modules and not os.path.isfile("manage.py"):
        return None
    urlconf = _urlconf_state()
    settings = os.environ.get("DJANGO_SETTINGS_MODULE")
    if settings and settings_before:
        source = "environment"
    elif settings:
        source = "the WSGI module"
    else:
        settings = _settings_from_manage_py()
        source = "manage.py"
        if not settings:
            return {"skipped": "no DJANGO_SETTINGS_MODULE in the environment, the WSGI module or manage.py"}
        os.environ["DJANGO_SETTINGS_MODULE"] = settings
    try:
        import django
    except ImportError:
        return {"skipped": "manage.py found, but this interpreter cannot import django"}
    started = time.monotonic()
    try:
        from django.core.management import call_command
        from django.core.management.base import SystemCheckError

        django.setup()
        try:
            call_command("check")
        except SystemCheckError as e:
            print(str(e).strip(), file=sys.stderr)
            return {"failed": True}
    except Exception:
        import traceback

        print("\nError in Django's system checks (settings %s):\n" % settings, file=sys.stderr)
        traceback.print_exc()
        return {"failed": True}
    took = time.monotonic() - started
    return {"settings": settings, "source": source, "ms": round(took * 1000, 1), "urlconf": urlconf}


def _request_host(cfg):
    """A Host header the app accepts: Django's first concrete ALLOWED_HOSTS entry, else the
    host Gunicorn binds (a wildcard or Unix socket bind: localhost)."""
    if "django.conf" in sys.modules:
        from django.conf import settings

        try:
            for host in settings.ALLOWED_HOSTS if settings.configured else []:
                host = host.lstrip(".")
                if host and "*" not in host:
                    return host, "80"
        except Exception:  # noqa: BLE001 - only a choice of host name
            pass
    bind = (cfg.bind or ["127.0.0.1:8000"])[0]
    if bind.startswith(("unix:", "fd://")):
        return "localhost", "80"
    host, _, port = bind.rpartition(":")
    host = host.strip("[]") if host else bind
    if host in ("", "0.0.0.0", "::"):
        host = "localhost"
    elif ":" in host:
        host = "[%s]" % host
    return host, port if port.isdigit() else "80"


class _NoAnswer(BaseException):
    """Raised by the timer inside the app: not an Exception, or the app's own error handling
    (Django turns any Exception in a view into a 500) would answer for it."""


def health_request(wsgi, cfg, path, timeout):
    """One GET on the loaded app, as a Gunicorn worker would make it: {status, body} or {error}."""
    import inspect
    import io
    import signal
    import traceback
    from urllib.parse import unquote

    worker = str(getattr(cfg, "worker_class_str", "") or "")
    call = getattr(wsgi, "__call__", wsgi)
    if "asgi" in worker.lower() or "uvicorn" in worker.lower() or inspect.iscoroutinefunction(call):
        return {"no_answer": "not supported: the app is an ASGI app (worker class %s); --health-path only calls WSGI apps" % worker}
    host, port = _request_host(cfg)
    path_only, _, query = path.partition("?")
    environ = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote(path_only, encoding="latin-1"),
        "QUERY_STRING": query,
        "SERVER_NAME": host,
        "SERVER_PORT": port,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": host,
        "HTTP_USER_AGENT": "hupwatch-preflight",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    status = []
    body = []

    def start_response(s, headers, exc_info=None):
        status[:] = [s]
        return body.append

    def alarm(signum, frame):
        raise _NoAnswer()

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, float(timeout))
    try:
        result = wsgi(environ, start_response)
        try:
            for chunk in result:
                body.append(chunk)
                if sum(map(len, body)) > BODY_START:
                    break
        finally:
            if hasattr(result, "close"):
                result.close()
        answer = {
            "status": status[0] if status else "",
            "host": host,
            "body": b"".join(body)[:BODY_START].decode("utf-8", "replace"),
        }
    except _NoAnswer:
        answer = {"no_answer": "no answer within %gs" % timeout, "host": host}
    except BaseException as e:  # noqa: B036 - anything the app raises fails the request
        traceback.print_exc()
        answer = {"error": "%s: %s" % (type(e).__name__, e), "host": host}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return answer


def cold_main():
    """`python -c BOOTSTRAP ARGS`: as `python -m gunicorn ARGS` would start, then app_check."""
    checks = json.loads(os.environ.pop("HUPWATCH_CHECKS", "{}") or "{}")
    # `-c` puts '' first on sys.path where `-m` puts the start directory.
    if sys.path and sys.path[0] == "":
        sys.path[0] = os.getcwd()
    try:
        return app_check(sys.argv[1:], checks)
    except BaseException:  # noqa: B036 - anything the app raises fails the check
        import traceback

        traceback.print_exc()
        return 1
