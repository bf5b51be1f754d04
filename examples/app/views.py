"""Rendering, kept apart from app.py the way a real project splits its modules."""


def page(release, pid, path):
    return f"hello from release {release} (worker pid {pid}, path {path})\n".encode()
