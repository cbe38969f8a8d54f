#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on 127.0.0.1 (the tests' real services),
# starting or installing them if they do not. Also Chromium for the browser tests.
# Installing (apt-get), starting PostgreSQL (pg_ctlcluster) and giving its postgres role a
# password need root; where everything already runs and answers, nothing is changed.
set -euo pipefail

need_apt=()
command -v pg_ctlcluster >/dev/null || need_apt+=(postgresql)
command -v redis-server >/dev/null || need_apt+=(redis-server)
[ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ] || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} from Debian's packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
# The tests sign in as postgres:postgres over 127.0.0.1 (tests/settings.py). A fresh Debian
# cluster asks for a password there (scram-sha-256) and the role has none: give it that one,
# over the local socket, where Debian lets the postgres system user in without one (peer).
if ! answer=$(PGPASSWORD=postgres psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -Atqc 'select 1' 2>&1); then
  as_postgres() { (cd / && runuser -u postgres -- psql -d postgres -Atq "$@"); }
  if ! grep -qiE 'password|authentication' <<<"$answer"; then
    echo "$answer" >&2  # not a password asked for: the tests will say more
  elif [ "$(id -u)" -ne 0 ]; then
    echo "PostgreSQL asks for a password on 127.0.0.1 and the tests' postgres:postgres is refused;" \
         "as root this script would set it (sudo -u postgres psql -c \"ALTER USER postgres PASSWORD 'postgres'\")," \
         "or put the role's password in DATABASE_URL" >&2
  elif [ "$(as_postgres -c "select rolpassword is null from pg_authid where rolname = 'postgres'")" = t ]; then
    echo "PostgreSQL asks for a password on 127.0.0.1: giving the postgres role the tests' password, 'postgres'"
    as_postgres -c "ALTER USER postgres PASSWORD 'postgres'"
    PGPASSWORD=postgres psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -Atqc 'select 1' >/dev/null
  else
    echo "PostgreSQL's postgres role has a password of its own (left as it is): put it in DATABASE_URL," \
         "e.g. DATABASE_URL=postgres://postgres:PASSWORD@127.0.0.1:5432/chatnexus" >&2
  fi
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 30); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432
redis-cli -h 127.0.0.1 -p 6379 ping
