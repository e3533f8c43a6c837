#!/usr/bin/env python3
"""SAML logins at a fixed rate against a running `varco demo` (bench/logins.sh runs it).

What a login asks of the gateway is two requests from the browser: the chooser's SPID form
POSTed (the gateway signs an AuthnRequest, RSA, and answers with a redirect to the IdP) and
the IdP's signed Response POSTed to the ACS (the gateway verifies it with xmlsec, checks
replay, stores a session and answers 303 with its cookie). The IdP's part (its page, its
signature) runs elsewhere in production; here the development IdP shares the machine, so
its Responses are made first, untimed ("prepare": one whole login each), and the timed
burst then sends, at RATE per second, each login's two gateway requests: a new login
start and a prepared Response to the ACS.

    logins.py BASE_URL CA_FILE RATE SECONDS THREADS [--wait]
    logins.py --burn CORES SECONDS

With --wait, the burst starts when a line arrives on standard input. The burst's line
also gives the CPU this client used during it.

--burn is the control: CORES of CPU spent by processes that have nothing to do with the
gateway (busy loops in 3 ms slices, about what one login's signature takes, spread over
every CPU as the gateway's blocking threads are), for SECONDS.
What the same CPU does to the proxied p99 when it is not a login tells the machine's
share of the burst's effect from the gateway's.

Spread over THREADS clients, each with its own loopback source address (127.0.1.2, ...:
the gateway limits logins per address) and keep-alive connections. Prints one line:
logins sent, completed, failed, achieved rate and latency percentiles (from when each
login was due). Standard library only.
"""

import http.client
import queue
import re
import ssl
import sys
import threading
import time
import urllib.parse
from html import unescape


def fields_of(page, marker):
    """The action and fields of the first form containing `marker`."""
    for form in re.findall(r"<form[^>]*>.*?</form>", page, re.S):
        if marker in form:
            action = unescape(re.search(r'action="([^"]*)"', form).group(1))
            pairs = re.findall(r'<input[^>]*name="([^"]*)"[^>]*value="([^"]*)"', form)
            return action, [(unescape(n), unescape(v)) for n, v in pairs]
    raise RuntimeError("no form with " + marker)


class Client:
    def __init__(self, base, ctx, source):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.ctx, self.source = ctx, (source, 0)
        self.gw = None
        self.idp = {}

    def _gw(self):
        if self.gw is None:
            self.gw = http.client.HTTPSConnection(
                self.host, self.port, context=self.ctx, source_address=self.source, timeout=30
            )
        return self.gw

    def _idp(self, netloc):
        if netloc not in self.idp:
            h, p = netloc.rsplit(":", 1)
            self.idp[netloc] = http.client.HTTPConnection(
                h, int(p), source_address=self.source, timeout=30
            )
        return self.idp[netloc]

    @staticmethod
    def _do(conn, method, path, body=None, headers=None):
        h = dict(headers or {})
        if body is not None:
            h["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read().decode("utf-8", "replace")
        return r.status, r.headers, data

    def start(self, chooser_form):
        """The chooser's form POSTed: returns the binding cookie and the IdP's URL."""
        action, fields = chooser_form
        st, h, _ = self._do(self._gw(), "POST", action, urllib.parse.urlencode(fields))
        if st != 302:
            raise RuntimeError("login start answered %d" % st)
        return h["Set-Cookie"].split(";")[0], urllib.parse.urlsplit(h["Location"])

    def prepare(self, chooser_form):
        """A login up to the IdP's signed Response: (binding cookie, ACS path, fields)."""
        binding, sso = self.start(chooser_form)
        idp = self._idp(sso.netloc)
        st, _, page = self._do(idp, "GET", sso.path + "?" + sso.query)
        if st != 200:
            raise RuntimeError("IdP page answered %d" % st)
        answer, fields = fields_of(page, 'value="operatore"')
        st, _, page = self._do(idp, "POST", answer, urllib.parse.urlencode(fields))
        if st != 200:
            raise RuntimeError("IdP answer %d" % st)
        acs, fields = fields_of(page, "SAMLResponse")
        return binding, urllib.parse.urlsplit(acs).path, fields

    def finish(self, prepared):
        binding, acs, fields = prepared
        st, h, body = self._do(
            self._gw(), "POST", acs, urllib.parse.urlencode(fields), {"Cookie": binding}
        )
        if st != 303 or "Set-Cookie" not in h:
            raise RuntimeError("ACS answered %d: %s" % (st, body[:200]))

    def reset(self):
        for c in [self.gw, *self.idp.values()]:
            if c is not None:
                c.close()
        self.gw, self.idp = None, {}


def burn(cores, seconds):
    """Busy loops worth `cores` CPUs, in 3 ms slices, one process per CPU."""
    import os

    procs = os.cpu_count() or 1
    duty = min(1.0, cores / procs)
    slice_s = 0.003
    children = []
    for _ in range(procs):
        pid = os.fork()
        if pid == 0:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t = time.perf_counter()
                while time.perf_counter() - t < slice_s * duty:
                    pass
                if duty < 1.0:
                    time.sleep(slice_s * (1 - duty))
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)


def main():
    if sys.argv[1] == "--burn":
        burn(float(sys.argv[2]), float(sys.argv[3]))
        return
    base, ca, rate, seconds, threads = sys.argv[1:6]
    rate, seconds, threads = float(rate), float(seconds), int(threads)
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False
    first = Client(base, ctx, "127.0.0.1")
    st, _, page = first._do(first._gw(), "GET", "/_varco/login?return=%2Fhello")
    if st != 200:
        sys.exit("chooser answered %d" % st)
    chooser_form = fields_of(page, "/_varco/saml/login")
    first.finish(first.prepare(chooser_form))  # one whole login first: the path works

    n = int(rate * seconds)
    clients = [
        Client(base, ctx, "127.0.%d.%d" % (1 + i // 250, 2 + i % 250)) for i in range(threads)
    ]
    lock = threading.Lock()
    errors = {}

    def note(e):
        with lock:
            errors[str(e)[:80]] = errors.get(str(e)[:80], 0) + 1

    # Untimed: the IdP's part of each login.
    prepared = [[] for _ in clients]

    def prepare(i):
        c = clients[i]
        for _ in range(i, n, threads):
            try:
                prepared[i].append(c.prepare(chooser_form))
            except Exception as e:  # noqa: BLE001 - counted and reported
                c.reset()
                note(e)

    t0 = time.monotonic()
    pool = [threading.Thread(target=prepare, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    ready = sum(len(p) for p in prepared)
    print("prepared %d logins at the IdP in %.1f s" % (ready, time.monotonic() - t0), flush=True)
    if len(sys.argv) > 6 and sys.argv[6] == "--wait":
        sys.stdin.readline()  # the caller starts the proxied traffic, then says go

    # Timed: the gateway's part, at RATE.
    queues = [queue.Queue() for _ in clients]
    done, failed, lat = [0], [0], []

    def burst(i):
        c = clients[i]
        while True:
            job = queues[i].get()
            if job is None:
                return
            due, item = job
            try:
                c.start(chooser_form)
                c.finish(item)
                ok = True
            except Exception as e:  # noqa: BLE001 - counted and reported
                c.reset()
                note(e)
                ok = False
            with lock:
                if ok:
                    done[0] += 1
                    lat.append(time.monotonic() - due)
                else:
                    failed[0] += 1

    pool = [threading.Thread(target=burst, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    most = max(len(p) for p in prepared)
    items = [(i, prepared[i][j]) for j in range(most) for i in range(threads) if j < len(prepared[i])]
    start = time.monotonic()
    cpu0 = time.process_time()
    for k, (i, item) in enumerate(items):
        due = start + k / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        queues[i].put((due, item))
    for q in queues:
        q.put(None)
    for t in pool:
        t.join(timeout=60)
    took = time.monotonic() - start
    cpu = time.process_time() - cpu0
    lat.sort()

    def pct(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    print(
        "logins: sent %d, completed %d, failed %d in %.1f s (%.0f/s); "
        "latency p50 %.1f ms p99 %.1f ms; client CPU %.2f s"
        % (len(items), done[0], failed[0], took, done[0] / took, pct(0.5), pct(0.99), cpu)
    )
    for e, k in errors.items():
        print("  failure x%d: %s" % (k, e))


if __name__ == "__main__":
    main()
