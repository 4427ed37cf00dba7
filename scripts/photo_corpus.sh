#!/usr/bin/env bash
# Downloads the Debian packages named in scripts/photo_corpus_files.tsv, extracts
# them and builds the photo corpus (docs/PHOTO_CORPUS.md):
#
#   scripts/photo_corpus.sh [OUT_DIR]     # default: data/photo_corpus (repo root)
#
# Needs apt-get (package lists fetched: `apt-get update`) and dpkg-deb; not run by CI.
# PYTHON overrides the interpreter (default: .venv/bin/python, else python3).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$repo/data/photo_corpus}"
manifest="$repo/scripts/photo_corpus_files.tsv"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"; else python=python3; fi
fi
for tool in apt-get apt-cache dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found; run this on Debian/Ubuntu." >&2; exit 1; }
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/debs" "$tmp/root"

# package<TAB>version, once per package (columns 1 and 2 of the manifest).
tail -n +2 "$manifest" | cut -f1,2 | sort -u > "$tmp/packages.tsv"
while IFS=$'\t' read -r pkg version; do
  if apt-cache madison "$pkg" | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "$version"; then
    spec="$pkg=$version"
  else
    echo "warning: $pkg $version is not offered by apt; downloading the available version" \
         "instead, so sha256 checks may fail." >&2
    spec="$pkg"
  fi
  (cd "$tmp/debs" && apt-get download -q "$spec")
  deb="$(ls "$tmp/debs/${pkg}_"*.deb | head -n 1)"
  mkdir -p "$tmp/root/$pkg"
  dpkg-deb -x "$deb" "$tmp/root/$pkg"
  rm -f "$deb"
done < "$tmp/packages.tsv"

"$python" "$repo/scripts/photo_corpus.py" --root="$tmp/root" --out_dir="$out" --manifest="$manifest"
