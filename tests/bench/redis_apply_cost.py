"""Redis CPU per message for three ways of writing a batch the way cowlogd
does (two lists, variadic LPUSH + LTRIM each, one PUBLISH per message, a
subscriber on the channel):

- plain:  a pipeline of the commands (no exactly-once guarantee),
- lua:    one EVALSHA of apply.lua (marker check + the commands),
- multi:  MULTI, SET marker, the commands, EXEC (what cowlogd sends).

Usage: python3 tests/bench/redis_apply_cost.py   (needs redis-server and redis-py)
"""
import os
import subprocess
import threading
import time

import redis

port = 16999
server = subprocess.Popen(
    ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
    stdout=subprocess.DEVNULL,
)
time.sleep(0.5)
r = redis.Redis(port=port)


def redis_cpu():
    fields = open(f"/proc/{server.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


subscriber = redis.Redis(port=port).pubsub()
subscriber.subscribe("F2B_CHANNEL")


def drain():
    try:
        for _ in subscriber.listen():
            pass
    except Exception:
        pass


threading.Thread(target=drain, daemon=True).start()
sha = r.script_load(open(os.path.join(os.path.dirname(__file__), "apply.lua")).read())
entry = (
    b'{"time":"1712345678","priority":"info","program":"postfix/smtpd","message":"connect from unknown[203.0.113.7] '
    + b"x" * 150
    + b'"}\n'
)
payload = b"connect from unknown[203.0.113.7] " + b"x" * 120
keys = [b"POSTFIX_MAILLOG", b"DOVECOT_MAILLOG"]
seq = 0


def plain(batch):
    p = r.pipeline(transaction=False)
    for k in keys:
        p.lpush(k, *([entry] * (batch // 2)))
        p.ltrim(k, 0, 9999)
    for _ in range(batch):
        p.publish("F2B_CHANNEL", payload)
    p.execute()


def lua(batch):
    global seq
    first = seq + 1
    seq += batch
    args = [first, seq, 86400, "F2B_CHANNEL", batch]
    for _ in keys:
        args += [9999, batch // 2] + [entry] * (batch // 2)
    args += [payload] * batch
    r.evalsha(sha, 1 + len(keys), b"cowlogd:applied:x", *keys, *args)


def multi(batch):
    global seq
    seq += batch
    p = r.pipeline(transaction=True)
    p.execute_command("SET", "cowlogd:applied:x", seq, "EX", 86400)
    for k in keys:
        p.execute_command("LPUSH", k, *([entry] * (batch // 2)))
        p.execute_command("LTRIM", k, 0, 9999)
    for _ in range(batch):
        p.execute_command("PUBLISH", "F2B_CHANNEL", payload)
    p.execute()


for batch in [20, 200, 2000]:
    for name, write in [("plain", plain), ("lua", lua), ("multi", multi)]:
        total = 200_000 if batch >= 200 else 40_000
        before = redis_cpu()
        for _ in range(total // batch):
            write(batch)
        print(f"batch {batch:5} {name:6} redis cpu/msg {1e6 * (redis_cpu() - before) / total:.2f} us", flush=True)
server.kill()
