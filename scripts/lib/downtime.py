"""The downtime of a live migration, as scripts/bench.sh measures it: a write load on the source
from before the copy until the moment writes are stopped, then the cut-over asked for at once.

usage: downtime.py LOG READY_TEXT FOLLOW_SECONDS LOAD FOLLOW CUTOVER [DONE_TEXT]

LOAD, FOLLOW and CUTOVER are shell commands. FOLLOW writes LOG and prints READY_TEXT once it
follows; FOLLOW_SECONDS later the load is stopped (the moment writes stop), CUTOVER is run, and
the time is taken when DONE_TEXT appears in LOG (the target is ready) and when FOLLOW ends.
Prints "ready_seconds ended_seconds exit_code", seconds from writes stopped; without DONE_TEXT,
ready is when FOLLOW ends. A FOLLOW still running LIMIT seconds after writes stopped is ended
there, and "- - timeout" printed; one that ended by itself before, "- - exit_code".
"""

import os
import signal
import subprocess
import sys
import time

log, ready_text, follow_seconds, load, follow, cutover, *rest = sys.argv[1:]
done_text = rest[0] if rest else None
# Seconds after writes stopped that a cut-over may take before it is given up.
LIMIT = 600


def logged():
    try:
        with open(log, errors="replace") as written:
            return written.read()
    except FileNotFoundError:
        return ""


# A session of its own: the signal that stops the load reaches pgbench, not only its shell
# (SIGTERM: a shell that started the benchmark in the background has SIGINT ignored).
load_process = subprocess.Popen(
    load, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
)


def stop_load():
    os.killpg(load_process.pid, signal.SIGTERM)
    load_process.wait()


time.sleep(3)
with open(log, "w") as output:
    follower = subprocess.Popen(follow, shell=True, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
started = time.monotonic()
while ready_text not in logged():
    if follower.poll() is not None:
        stop_load()
        sys.exit(f"the migration ended ({follower.returncode}) before it followed; see {log}")
    if time.monotonic() - started > 3600:
        stop_load()
        sys.exit(f"the migration did not follow within an hour; see {log}")
    time.sleep(0.2)
time.sleep(float(follow_seconds))
stop_load()
if follower.poll() is not None:
    # It ended on its own while following: a failure, not a cut-over.
    print(f"- - {follower.returncode}")
    sys.exit(0)
writes_stopped = time.monotonic()
asking = subprocess.Popen(cutover, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
ready = None
while True:
    now = time.monotonic() - writes_stopped
    if ready is None and done_text is not None and done_text in logged():
        ready = now
    if follower.poll() is not None:
        ended = now
        break
    if now > LIMIT:
        os.killpg(follower.pid, signal.SIGTERM)
        follower.wait()
        asking.wait()
        print("- - timeout")
        sys.exit(0)
    time.sleep(0.02)
asking.wait()
print(f"{ready if ready is not None else ended:.2f} {ended:.2f} {follower.returncode}")
