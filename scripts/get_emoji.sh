#!/usr/bin/env bash
# get_emoji.sh DIR: builds the emoji benchmark, an image folder of colour
# pictures any user can fetch (docs/datasets.md):
#
#   DIR/train/<category>/<vendor>-<code points>.png   64x64 RGBA, as shipped
#   DIR/test/<category>/...                            about 10% of the emoji
#   DIR/README.txt                                     where they come from, licences
#
# The pictures are the 64-pixel PNGs of the npm packages emoji-datasource-google
# (Noto Emoji, Apache-2.0) and emoji-datasource-twitter (Twemoji graphics,
# CC-BY 4.0), version 16.0.0, fetched with `npm pack` or, without npm, over
# HTTPS from the registry; each tarball is checked against the sha512 pinned
# below, which is the registry's (`npm view PKG@16.0.0 dist.integrity`).
# The Apple and Facebook sets are left out: their images are not freely
# licensed.
#
# Classes are the packages' categories (emoji.json's "category", "Component"
# dropped: skin-tone and hair swatches), as folder names in snake case:
# activities, animals_nature, flags, food_drink, objects, people_body,
# smileys_emotion, symbols, travel_places. Skin-tone variants are included.
# An emoji is in the test split when the first 4 bytes of the SHA-256 of its
# base code points (emoji.json's "unified", e.g. "1F385"), as a big-endian
# number, are 0 modulo 10: both vendors' drawings of an emoji, and all its
# skin tones, land in the same split.
#
# Needs python3 (Debian's, which scripts/setup.sh installs) and npm or curl.
# DIR must not exist or be empty; KAKUSAN_EMOJI_CACHE (default
# ~/.cache/kakusan) keeps the tarballs so a second run downloads nothing.
set -euo pipefail

version=16.0.0
declare -A integrity=(
  [google]=sha512-ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A==
  [twitter]=sha512-7F+uCuHH+7Qnrc15P5tnbvKkg9E6tlzi4MnT2uW1RlN4pLYTza6cP/dstIfSDMtpjFLWuZewWg8jBbuL2eyELQ==
)

if [[ $# -ne 1 || $1 == -* ]]; then
  echo "usage: scripts/get_emoji.sh DIR   (builds the emoji image folder in DIR)" >&2
  exit 2
fi
out=$1
if [[ -e $out && ! -d $out ]]; then
  echo "get_emoji: $out exists and is not a folder" >&2
  exit 1
fi
if [[ -d $out && -n $(ls -A "$out") ]]; then
  echo "get_emoji: $out is not empty: give a new or empty folder (nothing was changed)" >&2
  exit 1
fi
command -v python3 >/dev/null || { echo "get_emoji: needs python3 (apt-get install python3)" >&2; exit 1; }

cache=${KAKUSAN_EMOJI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kakusan}
mkdir -p "$cache"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# sri FILE: the file's sha512 in the registry's "integrity" form.
sri() { echo "sha512-$(openssl dgst -sha512 -binary "$1" 2>/dev/null | base64 -w0 || python3 -c 'import base64,hashlib,sys; print(base64.b64encode(hashlib.sha512(open(sys.argv[1],"rb").read()).digest()).decode(), end="")' "$1")"; }

for vendor in google twitter; do
  pkg=emoji-datasource-$vendor
  tgz=$cache/$pkg-$version.tgz
  if [[ ! -f $tgz || $(sri "$tgz") != "${integrity[$vendor]}" ]]; then
    echo "get_emoji: fetching $pkg@$version" >&2
    if command -v npm >/dev/null; then
      (cd "$work" && npm pack --silent "$pkg@$version" >/dev/null)
      mv "$work/$pkg-$version.tgz" "$tgz.part"
    else
      curl -fsSL --retry 3 -o "$tgz.part" "https://registry.npmjs.org/$pkg/-/$pkg-$version.tgz"
    fi
    got=$(sri "$tgz.part")
    if [[ $got != "${integrity[$vendor]}" ]]; then
      rm -f "$tgz.part"
      echo "get_emoji: $pkg-$version.tgz has sha512 $got, want ${integrity[$vendor]}: not used" >&2
      exit 1
    fi
    mv "$tgz.part" "$tgz"
  fi
  mkdir -p "$work/$vendor"
  tar xzf "$tgz" -C "$work/$vendor" package/emoji.json "package/img/$vendor/64"
done

mkdir -p "$out"
python3 - "$work" "$out" "$version" <<'EOF'
import hashlib, json, os, re, shutil, sys
work, out, version = sys.argv[1:]
vendors = {"google": "noto", "twitter": "twemoji"}
def slug(cat):
    return re.sub(r"[^a-z]+", "_", cat.lower()).strip("_")
def test(unified):
    return int.from_bytes(hashlib.sha256(unified.encode()).digest()[:4], "big") % 10 == 0
counts = {}
for vendor, prefix in vendors.items():
    emoji = json.load(open(os.path.join(work, vendor, "package", "emoji.json")))
    img = os.path.join(work, vendor, "package", "img", vendor, "64")
    for e in emoji:
        if e["category"] == "Component":
            continue
        split = "test" if test(e["unified"]) else "train"
        cls = slug(e["category"])
        forms = [e] + list((e.get("skin_variations") or {}).values())
        for f in forms:
            src = os.path.join(img, f["image"])
            if not f.get("has_img_" + vendor) or not os.path.isfile(src):
                continue
            d = os.path.join(out, split, cls)
            os.makedirs(d, exist_ok=True)
            shutil.copyfile(src, os.path.join(d, prefix + "-" + f["image"]))
            counts[(split, cls)] = counts.get((split, cls), 0) + 1
classes = sorted({c for _, c in counts})
missing = [c for c in classes for s in ("train", "test") if (s, c) not in counts]
if missing:
    sys.exit("get_emoji: no images in some split of " + ", ".join(missing))
with open(os.path.join(out, "README.txt"), "w") as f:
    f.write(f"""The emoji benchmark of kakusan, built by scripts/get_emoji.sh from the npm
packages emoji-datasource-google and emoji-datasource-twitter {version}.

Images named noto-*.png: Noto Emoji, Copyright Google Inc., under the Apache
License 2.0 (https://github.com/googlefonts/noto-emoji/blob/main/LICENSE).
Images named twemoji-*.png: Twemoji graphics, Copyright Twitter, Inc. and
other contributors, under CC-BY 4.0
(https://creativecommons.org/licenses/by/4.0/; https://github.com/jdecked/twemoji).
The file names are the emoji's code points, as emoji-datasource names them.

class            train  test
""")
    for c in classes:
        f.write(f"{c:<16} {counts[('train', c)]:>5} {counts[('test', c)]:>5}\n")
    tr = sum(n for (s, _), n in counts.items() if s == "train")
    te = sum(n for (s, _), n in counts.items() if s == "test")
    f.write(f"{'all':<16} {tr:>5} {te:>5}\n")
print(f"get_emoji: {tr} train and {te} test images in {len(classes)} classes in {out}", file=sys.stderr)
EOF
