#!/usr/bin/env bash
# Download every file in an lcsync reports/ folder with curl, and delete each one from the server only after it
# was downloaded in full (its size on disk equals the size the server reports).
#
#   download-reports-curl.sh [--tls] [--insecure] [--cacert FILE] [--host H] [--port P] [--user U]
#                            [--folder reports|results] [--keep] [DESTINATION]
#
# DESTINATION is a local folder (default: the current folder). --keep downloads without deleting.
# --folder results fetches the import result files instead.
#
# Settings come from the options above or from the environment (the same variables as upload-curl.sh):
#   LCSYNC_HOST (127.0.0.1)  LCSYNC_PORT (2121)  LCSYNC_USER (demo-sandbox)
#   LCSYNC_PASSWORD   required unless the user is one of the demo accounts of the sample accounts.yaml
#   LCSYNC_TLS=1      explicit FTPS (AUTH TLS, PROT P); required by production accounts
#   LCSYNC_INSECURE=1 do not check the server's certificate (the demo's self-signed certificate)
#   LCSYNC_CACERT     a CA or certificate file to check the server's certificate against
#
# A file that fails to download is left on the server and the script goes on with the next; run it again later.
# Exit status: 0 when every file was downloaded (and deleted, without --keep); 1 when any file failed or the
# folder could not be listed; 2 on a usage error.
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
log() { printf '%s download-reports: %s\n' "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$*" >&2; }

host=${LCSYNC_HOST:-127.0.0.1}
port=${LCSYNC_PORT:-2121}
user=${LCSYNC_USER:-demo-sandbox}
password=${LCSYNC_PASSWORD:-}
tls=${LCSYNC_TLS:-0}
insecure=${LCSYNC_INSECURE:-0}
cacert=${LCSYNC_CACERT:-}
folder=reports
keep=0

while (($#)); do
    case $1 in
        --tls) tls=1 ;;
        --insecure | -k) insecure=1 ;;
        --cacert) cacert=${2:?--cacert needs a file}; shift ;;
        --host) host=${2:?--host needs a value}; shift ;;
        --port) port=${2:?--port needs a value}; shift ;;
        --user) user=${2:?--user needs a value}; shift ;;
        --folder) folder=${2:?--folder needs a value}; shift ;;
        --keep) keep=1 ;;
        --help | -h) usage ;;
        --) shift; break ;;
        -*) echo "unknown option: $1" >&2; usage ;;
        *) break ;;
    esac
    shift
done
(($# <= 1)) || usage
destination=${1:-.}
[[ $folder == reports || $folder == results ]] || { echo "--folder must be reports or results" >&2; exit 2; }
mkdir -p -- "$destination"

if [[ -z $password ]]; then
    case $user in
        demo-sandbox) password=demo-sandbox-2026 ;;    # the documented demo account, never a real one
        demo) password=demo-production-2026 ;;
        *) echo "set LCSYNC_PASSWORD for user $user" >&2; exit 2 ;;
    esac
fi

urlencode() {
    local text=$1 out="" char i
    for ((i = 0; i < ${#text}; i++)); do
        char=${text:i:1}
        case $char in
            [a-zA-Z0-9._~-]) out+=$char ;;
            *) out+=$(printf '%%%02X' "'$char") ;;
        esac
    done
    printf '%s' "$out"
}

base="ftp://${host}:${port}/${folder}/"
options=(--silent --show-error --ftp-pasv --connect-timeout 30 --speed-limit 1024 --speed-time 120 --config -)
if [[ $tls == 1 ]]; then options+=(--ssl-reqd --tlsv1.2); fi
if [[ $insecure == 1 ]]; then options+=(--insecure); fi
if [[ -n $cacert ]]; then options+=(--cacert "$cacert"); fi
credentials="$user:$password"
credentials=${credentials//\\/\\\\}
credentials=${credentials//\"/\\\"}

# Every curl call reads the credentials from its standard input, so the password never shows in `ps`.
ftp() { curl "${options[@]}" "$@" <<<"user = \"$credentials\""; }

listing=$(ftp --list-only "$base") || { log "cannot list $base"; exit 1; }
failed=0
count=0
while IFS= read -r name; do
    name=${name%$'\r'}
    [[ -n $name && $name != . && $name != .. && $name != */* ]] || continue
    count=$((count + 1))
    url="$base$(urlencode "$name")"
    target="$destination/$name"
    partial="$destination/.$name.part"
    log "downloading $name"
    if ! ftp --output "$partial" "$url"; then
        log "download of $name failed; it stays on the server"
        rm -f -- "$partial"
        failed=1
        continue
    fi
    # curl --head asks the server for SIZE; compare it with what arrived before deleting anything.
    expected=$(ftp --head "$url" | tr -d '\r' | sed -n 's/^Content-Length: *//Ip')
    actual=$(wc -c <"$partial" | tr -d ' ')
    if [[ -z $expected || $expected != "$actual" ]]; then
        log "$name: got $actual bytes, the server reports ${expected:-no size}; kept on the server"
        rm -f -- "$partial"
        failed=1
        continue
    fi
    mv -f -- "$partial" "$target"
    log "saved $target ($actual bytes)"
    if ((keep)); then continue; fi
    # Quote commands run before curl changes folder, so DELE takes the full path from the home folder.
    if ftp --list-only --output /dev/null --quote "DELE /$folder/$name" "ftp://${host}:${port}/"; then
        log "deleted $name from the server"
    else
        log "could not delete $name from the server (downloaded copy kept)"
        failed=1
    fi
done <<<"$listing"

log "$count file(s) in $folder/"
exit "$failed"
