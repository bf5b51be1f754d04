#!/usr/bin/env bash
# Checks a built .deb (default: the newest in target/debian/): it holds the binary, the
# units, the man page and the bash / zsh / fish completions in their standard places, and
# the man page renders without a single groff warning. Exit 1 naming what is wrong.
set -euo pipefail
cd "$(dirname "$0")/.."

deb=${1:-$(ls -t target/debian/hupwatch_*.deb 2>/dev/null | head -n 1)}
if [[ -z "$deb" || ! -f "$deb" ]]; then
    echo "check-deb: no package (build one with packaging/build-deb.sh)" >&2
    exit 1
fi

contents=$(dpkg-deb -c "$deb")
missing=0
for path in \
    ./usr/bin/hupwatch \
    ./lib/systemd/system/hupwatch.service \
    ./lib/systemd/system/hupwatch@.service \
    ./usr/share/man/man1/hupwatch.1.gz \
    ./usr/share/bash-completion/completions/hupwatch \
    ./usr/share/zsh/vendor-completions/_hupwatch \
    ./usr/share/fish/vendor_completions.d/hupwatch.fish; do
    if ! grep -qE " ${path//./\\.}\$" <<<"$contents"; then
        echo "check-deb: $deb lacks $path" >&2
        missing=1
    fi
done
[[ $missing == 0 ]] || exit 1

unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
dpkg-deb -x "$deb" "$unpacked"
page="$unpacked/usr/share/man/man1/hupwatch.1.gz"
# -ww: every warning; -z: no output, only the diagnostics; -k: through preconv, as man does
# (that is where a non-ASCII character in the roff warns).
warnings=$(zcat "$page" | groff -man -Tutf8 -ww -z 2>&1; zcat "$page" | groff -k -man -Tutf8 -ww -z 2>&1)
if zcat "$page" | LC_ALL=C grep -q '[^[:print:][:space:]]'; then
    warnings+=$'\nnot ASCII: '$(zcat "$page" | LC_ALL=C grep -n -m 3 '[^[:print:][:space:]]')
fi
if [[ -n "$warnings" ]]; then
    echo "check-deb: the man page renders with warnings:" >&2
    echo "$warnings" >&2
    exit 1
fi
MANWIDTH=80 man -l "$page" >"$unpacked/page.txt"
if ! grep -q "hupwatch watch" "$unpacked/page.txt"; then
    echo "check-deb: man -l $page does not show the watch subcommand" >&2
    exit 1
fi
for completion in bash-completion/completions/hupwatch zsh/vendor-completions/_hupwatch \
    fish/vendor_completions.d/hupwatch.fish; do
    if ! grep -q "check-config" "$unpacked/usr/share/$completion"; then
        echo "check-deb: $completion does not complete the subcommands" >&2
        exit 1
    fi
done
bash -n "$unpacked/usr/share/bash-completion/completions/hupwatch"
echo "check-deb: $deb holds the binary, units, man page and completions; the page renders clean"
