#!/usr/bin/env bash
# Builds retbyte's training corpus from Debian packages: bash scripts/corpus.sh OUT [--held-out-only]
#
# Each package is fetched with `apt-get download` (nothing is installed), unpacked with dpkg-deb,
# and the files its recipe names are turned into what retbyte trains on: plain text, source code
# and data as they are (gzip/dictzip unpacked), photographs and drawings as PNG at several sizes,
# sound as 16-bit WAV. Identical outputs are kept once (sha256). OUT/MANIFEST.tsv lists every
# package with its version, licence (from its copyright file), split, files and bytes.
#
# Splits: OUT/train/... trains models; OUT/held-out/... holds whole packages that no training data
# comes from, for judging a model on files it has never seen (see bench/NOTES.md).
# Needs: apt (with its lists), dpkg-deb, netpbm, webp, sox with libsox-fmt-all (installed when needed).
set -euo pipefail

usage() { echo "usage: bash scripts/corpus.sh OUT [--held-out-only]" >&2; exit 2; }
[ $# -ge 1 ] || usage
out=$1
held_only=0
[ "${2:-}" = "--held-out-only" ] && held_only=1
mkdir -p "$out"
out=$(cd "$out" && pwd)
work="$out/.work"
mkdir -p "$work/debs" "$work/x"

bash "$(dirname "$0")/install-deps.sh" netpbm webp sox libsox-fmt-all  # decoders and scalers

# split kind package cap_MB recipe regex (on the path inside the package)
# Recipes: text (as is; .gz/.dz unpacked), image (PNG, longest side fitted to 1024, 512 and 256,
# plus a greyscale copy at 512), icon (PNG as is, drawings), sound (16-bit WAV, first 60 s).
recipes=$(cat <<'EOF'
train   prose   fortunes              4  text   /usr/share/games/fortunes/[^.]+$
train   prose   dict-devil            2  text   \.dict\.dz$
train   prose   dict-vera             2  text   \.dict\.dz$
train   prose   dict-elements         1  text   \.dict\.dz$
train   prose   miscfiles             4  text   /usr/share/misc/[^/]+$
train   prose   doc-debian            1  text   /usr/share/doc/debian/.*\.(txt|html)(\.gz)?$
train   docs    perl-doc             12  text   /pod/.*\.pod$
train   docs    manpages              4  text   /usr/share/man/man[1-8]/.*\.gz$
train   docs    manpages-dev          5  text   /usr/share/man/man[23]/.*\.gz$
train   docs    debian-reference-en   4  text   /debian-reference/.*\.html$
train   docs    debian-handbook      12  text   /html/en-US/.*\.html$
train   docs    debian-policy         4  text   \.(txt|html|rst)(\.gz)?$
train   docs    gnu-standards         2  text   /usr/share/info/.*\.gz$
train   docs    python3.11-doc       16  text   /html/.*\.html$
train   docs    linux-doc-6.1        16  text   /Documentation/.*\.(rst|txt)(\.gz)?$
train   code    libpython3.11-stdlib 16  text   /usr/lib/python3\.11/.*\.py$
train   code    golang-1.19-src      16  text   /src/.*\.go$
train   code    rust-src             12  text   /library/.*\.rs$
train   code    node-typescript       8  text   /lib/[^/]*\.(d\.ts|js)$
train   code    emacs-el             10  text   /lisp/.*\.el\.gz$
train   code    vim-runtime           8  text   /(doc|syntax|autoload|ftplugin)/.*\.(vim|txt)(\.gz)?$
train   code    libc6-dev             4  text   /usr/include/.*\.h$
train   code    linux-libc-dev        4  text   /usr/include/.*\.h$
train   code    texlive-base          6  text   \.(tex|sty|cls)$
train   data    iso-codes            12  text   \.(json|po)$
train   data    hwdata                4  text   \.ids$
train   data    tzdata                1  text   (tzdata\.zi|\.tab)$
train   data    sgml-data             2  text   \.(dtd|xml|ent|mod)$
train   data    shared-mime-info      4  text   \.xml(\.in)?$
train   data    distro-info-data      1  text   \.csv$
train   photo   ukui-wallpapers      60  image  /backgrounds/.*\.(jpg|jpeg|png)$
train   photo   python3-skimage       4  image  /skimage/data/[^/]*\.(jpg|png)$
train   photo   lomiri-wallpapers-20.04 10 image \.(jpg|png)$
train   drawing gnome-backgrounds    30  image  \.(jpg|jpeg|png|webp)$
train   drawing plasma-workspace-wallpapers 40 image /contents/images/(2560x1600|3840x2160)\.(jpg|png)$
train   drawing desktop-base          6  icon   /usr/share/desktop-base/.*\.png$
train   drawing adwaita-icon-theme    6  icon   /(48x48|64x64|96x96|256x256)/.*\.png$
train   speech  klettres-data        30  sound  /usr/share/klettres/.*\.ogg$
train   speech  ktuberling-data      30  sound  /sounds/.*\.(ogg|wav)$
train   sound   oxygen-sounds        10  sound  \.ogg$
train   sound   sound-theme-freedesktop 4 sound \.oga$
train   music   lmms-common          30  sound  \.(ogg|wav)$
held-out prose  dict-jargon           4  text   \.dict\.dz$
held-out docs   dict-foldoc           4  text   \.dict\.dz$
held-out data   unicode-data          8  text   /UnicodeData\.txt$
held-out prose  wordnet-base          4  text   /data\.verb$
held-out code   libruby3.1            8  text   /usr/lib/ruby/3\.1\.0/.*\.rb$
held-out photo  mate-backgrounds     30  image  /nature/.*\.jpg$
held-out speech alsa-utils            4  sound  \.wav$
EOF
)

declare -A seen=()
manifest="$out/MANIFEST.tsv"
printf 'split\tkind\tpackage\tversion\tlicence\tfiles\tbytes\n' > "$manifest"

decode_pnm() {  # SRC: any image (JPEG, PNG with alpha blended on white, WebP) as PNM on stdout
  case "$1" in
    *.png) pngtopnm -mix -background white "$1" ;;
    *.webp) dwebp -quiet -ppm -o - "$1" ;;
    *) jpegtopnm -quiet "$1" ;;
  esac 2>/dev/null
}

fit_png() {  # PNM DEST SIZE [grey]: a PNG whose longest side is SIZE (1 when smaller: never enlarged)
  local pnm=$1 dest=$2 size=$3 grey=${4:-}
  local w h
  read -r w h < <(pamfile "$pnm" | sed -E 's/.* ([0-9]+) by ([0-9]+).*/\1 \2/')
  [ "$w" -ge "$size" ] || [ "$h" -ge "$size" ] || return 1
  if [ -n "$grey" ]; then
    pamscale -xyfit "$size" "$size" "$pnm" 2>/dev/null | ppmtopgm | pnmtopng > "$dest" 2>/dev/null
  else
    pamscale -xyfit "$size" "$size" "$pnm" 2>/dev/null | pnmtopng > "$dest" 2>/dev/null
  fi
}

# Packages whose doc folder is a link to another package's (no copyright file of their own).
declare -A licence_of_linked=([libpython3.11-stdlib]="PSF-2.0 (as libpython3.11-minimal)"
                              [manpages-dev]="GPL-2+ and others (as manpages)")

licence_of() {  # COPYRIGHT_FILE: the first License: field (DEP-5), else the licences the text names
  local l
  l=$(grep -m1 -h '^License:' "$1" 2>/dev/null | sed 's/^License: *//' || true)
  [ -n "$l" ] && { echo "$l"; return; }
  l=$(grep -oiE "GNU General Public License|GNU Lesser General Public License|GNU Library General Public License|\
GNU Free Documentation License|GNU Copyleft License \(GPL\)|Artistic License|BSD|MIT License|Apache License|\
Creative Commons|public domain|Python Software Foundation License|Unicode, Inc\. License Agreement" "$1" 2>/dev/null |
    tr 'A-Z' 'a-z' | sort -u | paste -sd ';' | sed 's/;/; /g' || true)
  echo "${l:-unknown (see its copyright file)}"
}

keep() {  # FILE: 0 (keep) unless an identical file was kept already
  local h
  h=$(sha256sum "$1" | cut -c1-64)
  if [ -n "${seen[$h]:-}" ]; then rm -f "$1"; return 1; fi
  seen[$h]=1
  return 0
}

while read -r split kind pkg cap recipe regex; do
  [ -z "$split" ] && continue
  [ $held_only = 1 ] && [ "$split" != held-out ] && continue
  deb=$(ls "$work/debs/${pkg}_"*.deb 2>/dev/null | head -1 || true)
  if [ -z "$deb" ]; then
    (cd "$work/debs" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null)
    deb=$(ls "$work/debs/${pkg}_"*.deb | head -1)
  fi
  x="$work/x/$pkg"
  [ -d "$x" ] || { mkdir -p "$x.tmp" && dpkg-deb -x "$deb" "$x.tmp" && mv "$x.tmp" "$x"; }
  version=$(dpkg-deb -f "$deb" Version)
  licence=${licence_of_linked[$pkg]:-$(licence_of "$x/usr/share/doc/$pkg/copyright")}
  dest="$out/$split/$kind/$pkg"
  mkdir -p "$dest"
  budget=$((cap * 1000000))
  bytes=0 files=0
  while IFS= read -r f; do
    [ $bytes -ge $budget ] && break
    rel=${f#"$x"/}
    name=$(echo "$rel" | tr '/ ' '__')
    case $recipe in
      text)
        name=${name%.gz}; name=${name%.dz}
        case "$f" in *.gz | *.dz) zcat -f "$f" > "$dest/$name" 2>/dev/null || continue ;; *) cp "$f" "$dest/$name" ;; esac
        outs=("$dest/$name") ;;
      icon)
        cp "$f" "$dest/$name"; outs=("$dest/$name") ;;
      image)
        base=${name%.*}; outs=()
        decode_pnm "$f" > "$work/image.pnm" || continue
        for s in 1024 512 256; do
          fit_png "$work/image.pnm" "$dest/$base-$s.png" $s && outs+=("$dest/$base-$s.png") || rm -f "$dest/$base-$s.png"
        done
        fit_png "$work/image.pnm" "$dest/$base-512-grey.png" 512 grey && outs+=("$dest/$base-512-grey.png") ||
          rm -f "$dest/$base-512-grey.png" ;;
      sound)
        base=${name%.*}
        sox -q "$f" -b 16 "$dest/$base.wav" trim 0 60 2>/dev/null || { rm -f "$dest/$base.wav"; continue; }
        outs=("$dest/$base.wav") ;;
    esac
    for o in "${outs[@]}"; do
      [ -s "$o" ] || { rm -f "$o"; continue; }
      keep "$o" || continue
      bytes=$((bytes + $(stat -c %s "$o"))) files=$((files + 1))
    done
  done < <(find "$x" -type f | grep -E "$regex" | LC_ALL=C sort)
  printf '%s\t%s\t%s\t%s\t%s\t%d\t%d\n' "$split" "$kind" "$pkg" "$version" "$licence" $files $bytes >> "$manifest"
  echo "corpus: $split $kind $pkg $version: $files files, $((bytes / 1000)) kB" >&2
done <<< "$recipes"

rm -rf "$work/x"
echo "corpus: $(du -sh "$out/train" 2>/dev/null | cut -f1) for training, $(du -sh "$out/held-out" | cut -f1) held out; manifest in $manifest" >&2
