# Gunicorn settings for the demo app. Gunicorn reads ./gunicorn.conf.py from its working
# directory by default, so starting it in the deploy's `current` link picks this file up,
# and every HUP reads it again from the release `current` then points at.
import os

# Loopback only; demo.sh picks a free port and passes it in DEMO_PORT.
bind = f"127.0.0.1:{os.environ.get('DEMO_PORT', '8000')}"
workers = 2
# A HUP blocks the master until the old workers have drained (or this many seconds passed).
graceful_timeout = 5
# Gunicorn >= 25.1 opens a control socket, by default one shared by every master of the user
# (~/.gunicorn/gunicorn.ctl), which the demo must not take over. demo.sh gives it a private
# one: with setproctitle the master's command line no longer shows --preload, and hupwatch asks
# the socket (`show config`) whether the app is preloaded (then a HUP would load no new code).
_control_socket = os.environ.get("DEMO_CONTROL_SOCKET")
if _control_socket:
    control_socket = _control_socket
else:
    control_socket_disable = True
