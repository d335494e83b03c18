"""End-to-end probe (until the load generator replaces it): N postfix lines (Docker syslog driver framing) over one
TCP connection to cowlogd's syslog input; time until all are in Redis, CPU
of cowlogd and of Redis per message. Usage: probe.py BINARY [N] [RUNS]"""
import os, socket, subprocess, sys, tempfile, time, threading
import redis

binary = sys.argv[1]
total = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
tick = os.sysconf("SC_CLK_TCK")

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

lines = []
for n in range(total):
    inner = f"Nov 24 13:49:59 mail postfix/smtpd[{1000 + n % 1000}]: connect from unknown[203.0.113.{n % 250}] msg {n}"
    line = f"<30>Nov 24 13:49:59 mailcowdockerized-postfix-mailcow-1[4840]: {inner}\n"
    lines.append(f"{len(line)} {line}")
payload = "".join(lines).encode()

for run in range(runs):
    rport, sport, mport = free_port(), free_port(), free_port()
    d = tempfile.mkdtemp()
    rs = subprocess.Popen(["redis-server", "--port", str(rport), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    r = redis.Redis(port=rport)
    sub = r.pubsub(); sub.subscribe("F2B_CHANNEL")
    got = [0]
    def listen():
        try:
            for m in sub.listen():
                if m["type"] == "message": got[0] += 1
        except Exception:
            pass
    threading.Thread(target=listen, daemon=True).start()
    cfg = os.path.join(d, "c.toml")
    open(cfg, "w").write(f'''[redis]
url = "redis://127.0.0.1:{rport}"
list_cap = {total * 2}
[inputs]
gelf_udp = ""
gelf_tcp = ""
syslog_udp = ""
syslog_tcp = "127.0.0.1:{sport}"
[metrics]
listen = "127.0.0.1:{mport}"
''')
    cw = subprocess.Popen([binary, "--config", cfg], stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    c0, r0 = cpu(cw.pid), cpu(rs.pid)
    s = socket.create_connection(("127.0.0.1", sport))
    t0 = time.time()
    s.sendall(payload)
    while r.llen("POSTFIX_MAILLOG") < total:
        time.sleep(0.002)
    t1 = time.time()
    while got[0] < total and time.time() - t1 < 10:
        time.sleep(0.005)
    c1, r1 = cpu(cw.pid), cpu(rs.pid)
    print(f"run {run}: {total} lines in {t1 - t0:.3f} s = {total / (t1 - t0):,.0f} msg/s; "
          f"list {r.llen('POSTFIX_MAILLOG')}, channel {got[0]}; "
          f"cowlogd {1e6 * (c1 - c0) / total:.2f} us/msg, redis {1e6 * (r1 - r0) / total:.2f} us/msg", flush=True)
    s.close(); cw.terminate(); cw.wait(); rs.kill(); rs.wait()
