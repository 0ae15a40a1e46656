#!/usr/bin/env bash
# Upload one User Data file to an lcsync upload/ folder with lftp, under a temporary name that is renamed to the
# real name once the server has confirmed every byte, retrying the whole upload with backoff.
#
#   upload-lftp.sh [--tls] [--insecure] [--cacert FILE] [--host H] [--port P] [--user U] [--name REMOTE] FILE
#
# Settings come from the options above or from the environment (the same variables as upload-curl.sh):
#   LCSYNC_HOST (127.0.0.1)  LCSYNC_PORT (2121)  LCSYNC_USER (demo-sandbox)
#   LCSYNC_PASSWORD   required unless the user is one of the demo accounts of the sample accounts.yaml
#   LCSYNC_TLS=1      explicit FTPS on control and data connections; required by production accounts
#   LCSYNC_INSECURE=1 do not check the server's certificate (the demo's self-signed certificate)
#   LCSYNC_CACERT     a CA or certificate file to check the server's certificate against
#   LCSYNC_TRIES (5)  LCSYNC_DELAY (10 seconds before the first retry, doubled each time, at most 300)
#
# The commands, password included, reach lftp on its standard input, never on the command line.
# Exit status: 0 when the file was uploaded and renamed; 1 when every attempt failed or the server refused for a
# reason a retry cannot fix (login refused, file name not allowed, certificate not trusted); 2 on a usage error.
set -euo pipefail

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
log() { printf '%s upload-lftp: %s\n' "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$*" >&2; }

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

# lftp's command syntax: inside double quotes, backslash and double quote are escaped with a backslash.
quote() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }

settings=(
    "set cmd:fail-exit true"          # stop at the first failed command; lftp's exit status is then non-zero
    "set net:max-retries 1"           # no retries inside lftp: this script retries the whole upload
    "set net:timeout 60"
    "set ftp:passive-mode true"
    "set ftp:rest-stor false"         # never resume an upload (REST+STOR); the server refuses it
)
if [[ $tls == 1 ]]; then
    settings+=("set ftp:ssl-force true" "set ftp:ssl-protect-data true" "set ftp:ssl-protect-list true")
else
    settings+=("set ftp:ssl-allow false")   # lftp would otherwise try AUTH TLS on its own
fi
if [[ $insecure == 1 ]]; then settings+=("set ssl:verify-certificate no"); fi
if [[ -n $cacert ]]; then settings+=("set ssl:ca-file $(quote "$cacert")"); fi

partial="$remote_name.part"
script() {
    printf '%s\n' "${settings[@]}"
    printf 'open -p %s %s\n' "$port" "$(quote "ftp://$host")"
    printf 'user %s %s\n' "$(quote "$user")" "$(quote "$password")"
    printf 'cd upload\n'
    printf 'put %s -o %s\n' "$(quote "$file")" "$(quote "$partial")"
    printf 'mv %s %s\n' "$(quote "$partial")" "$(quote "$remote_name")"
    printf 'bye\n'
}

errors=$(mktemp)
trap 'rm -f "$errors"' EXIT

attempt=1
while :; do
    log "attempt $attempt of $tries: $file -> ftp://$host:$port/upload/$remote_name (via $partial)"
    status=0
    script | lftp 2>"$errors" || status=$?
    cat "$errors" >&2
    if ((status == 0)); then
        log "done: uploaded and renamed"
        exit 0
    fi
    if grep -q -E 'Login failed|: 55[0-9] |[Cc]ertificate' "$errors"; then
        log "refused for a reason a retry cannot fix (login, file name, TLS or certificate); not retrying"
        log "(repeated failed logins get this address banned)"
        exit 1
    fi
    if ((attempt >= tries)); then
        log "giving up after $attempt attempts (last lftp exit status $status)"
        exit 1
    fi
    log "failed (lftp exit status $status); the server keeps nothing of a broken upload; retrying in ${delay}s"
    sleep "$delay"
    attempt=$((attempt + 1))
    delay=$((delay * 2 > 300 ? 300 : delay * 2))
done
