"""The embedded default's SQLite database under the threads that share it (`manage.py serve` runs
web requests and two worker threads in one process, each with its own connection)."""
import subprocess
import sys

from tests.conftest import ROOT, embedded_env

READ_THEN_WRITE = """
import threading
import django
django.setup()
from django.db import connection, transaction

with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE counter (n INTEGER)")
    cursor.execute("INSERT INTO counter VALUES (0)")
committed = threading.Event()

def other_thread():
    from django.db import connection, transaction
    with transaction.atomic():
        connection.cursor().execute("UPDATE counter SET n = n + 1")
    committed.set()
    connection.close()

with transaction.atomic():  # as receive(): read first (a dedupe lookup), then write
    connection.cursor().execute("SELECT n FROM counter").fetchall()
    thread = threading.Thread(target=other_thread)
    thread.start()
    committed.wait(2)  # the other thread commits meanwhile, where it can
    connection.cursor().execute("UPDATE counter SET n = n + 10")
thread.join()
print("n =", connection.cursor().execute("SELECT n FROM counter").fetchone()[0])
"""


def test_a_transaction_that_reads_then_writes_waits_for_another_threads_commit_instead_of_failing(tmp_path):
    """In WAL mode a deferred transaction that read before another connection committed cannot write:
    SQLite answers "database is locked" at once, busy timeout or not. A WhatsApp webhook answered 500
    (and the message was lost), a polled mail was kept as unparseable."""
    env = embedded_env(tmp_path)
    (tmp_path / "var").mkdir()
    done = subprocess.run([sys.executable, "-c", READ_THEN_WRITE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "n = 11"
