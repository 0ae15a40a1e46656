#!/usr/bin/env bash
# Upload one User Data file to an lcsync upload/ folder with curl, retrying with backoff.
#
#   upload-curl.sh [--tls] [--insecure] [--cacert FILE] [--host H] [--port P] [--user U] [--name REMOTE] FILE
#
# Settings come from the options above or from the environment:
#   LCSYNC_HOST      server name or address            (default 127.0.0.1)
#   LCSYNC_PORT      control port                      (default 2121)
#   LCSYNC_USER      account username                  (default demo-sandbox)
#   LCSYNC_PASSWORD  account password; required unless the user is one of the demo accounts of the sample
#                    accounts.yaml (demo-sandbox / demo-sandbox-2026, demo / demo-production-2026)
#   LCSYNC_TLS=1     explicit FTPS (AUTH TLS, PROT P); required by production accounts
#   LCSYNC_INSECURE=1  accept the server's certificate without checking it (the demo's self-signed certificate)
#   LCSYNC_CACERT    a CA or certificate file to check the server's certificate against (better than insecure)
#   LCSYNC_TRIES     attempts in all                   (default 5)
#   LCSYNC_DELAY     seconds before the first retry, doubled after each failure, at most 300 (default 10)
#
# The password is passed to curl on its standard input, never on the command line, so it does not show in `ps`.
#
# Exit status: 0 when the server confirmed the whole file (226); 1 when every attempt failed or the server refused
# for a reason a retry cannot fix (wrong password, address not allowed, file name not allowed); 2 on a usage error.
# An upload that is cut off is discarded by the server and answered with 451; this script then uploads the whole
# file again (the server refuses resumed uploads).
set -euo pipefail

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
log() { printf '%s upload-curl: %s\n' "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$*" >&2; }

host=${LCSYNC_HOST:-127.0.0.1}
port=${LCSYNC_PORT:-2121}
user=${LCSYNC_USER:-demo-sandbox}
password=${LCSYNC_PASSWORD:-}
tls=${LCSYNC_TLS:-0}
insecure=${LCSYNC_INSECURE:-0}
cacert=${LCSYNC_CACERT:-}
tries=${LCSYNC_TRIES:-5}
delay=${LCSYNC_DELAY:-10}
remote_name=""

while (($#)); do
    case $1 in
        --tls) tls=1 ;;
        --insecure | -k) insecure=1 ;;
        --cacert) cacert=${2:?--cacert needs a file}; shift ;;
        --host) host=${2:?--host needs a value}; shift ;;
        --port) port=${2:?--port needs a value}; shift ;;
        --user) user=${2:?--user needs a value}; shift ;;
        --name) remote_name=${2:?--name needs a value}; shift ;;
        --help | -h) usage ;;
        --) shift; break ;;
        -*) echo "unknown option: $1" >&2; usage ;;
        *) break ;;
    esac
    shift
done
(($# == 1)) || usage
file=$1
[[ -f $file && -r $file ]] || { echo "cannot read $file" >&2; exit 2; }
remote_name=${remote_name:-$(basename -- "$file")}

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

url="ftp://${host}:${port}/upload/$(urlencode "$remote_name")"
options=(--silent --show-error --ftp-pasv --connect-timeout 30 --speed-limit 1024 --speed-time 120
    --upload-file "$file" --config -)
if [[ $tls == 1 ]]; then options+=(--ssl-reqd --tlsv1.2); fi
if [[ $insecure == 1 ]]; then options+=(--insecure); fi
if [[ -n $cacert ]]; then options+=(--cacert "$cacert"); fi

# curl's config syntax: inside double quotes, backslash and double quote are escaped with a backslash.
credentials="$user:$password"
credentials=${credentials//\\/\\\\}
credentials=${credentials//\"/\\\"}

attempt=1
while :; do
    log "attempt $attempt of $tries: $file -> $url"
    status=0
    curl "${options[@]}" "$url" <<<"user = \"$credentials\"" || status=$?
    if ((status == 0)); then
        log "done: the server confirmed the whole file"
        exit 0
    fi
    case $status in
        67) log "login refused (exit 67): wrong password, address not allowed, or TLS required (try --tls)."
            log "not retrying: repeated failed logins get this address banned"
            exit 1 ;;
        9 | 25) log "the server refused the upload (exit $status), e.g. 553 file name not allowed; not retrying"
            exit 1 ;;
        58 | 60 | 64 | 77) log "TLS failed (exit $status): certificate not trusted (--cacert, or --insecure for the demo)"
            log "or the server offers no TLS; not retrying"
            exit 1 ;;
        2 | 26 | 27) log "curl could not run or could not read the file (exit $status); not retrying"
            exit 1 ;;
    esac
    if ((attempt >= tries)); then
        log "giving up after $attempt attempts (last curl exit status $status)"
        exit 1
    fi
    log "failed (curl exit status $status); the server keeps nothing of a broken upload; retrying in ${delay}s"
    sleep "$delay"
    attempt=$((attempt + 1))
    delay=$((delay * 2 > 300 ? 300 : delay * 2))
done
