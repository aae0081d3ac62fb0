"""Spans leave over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set (a real local receiver)."""

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer


def test_spans_are_exported_over_otlp_http_when_endpoint_is_set():
    received: list[tuple[str, bytes]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    code = (
        "from opentelemetry import trace\n"
        "from r1platform import telemetry\n"
        "with telemetry.span('t', 'pools.reconcile', pool='l4'):\n"
        "    pass\n"
        "trace.get_tracer_provider().force_flush()\n"
    )
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "PATH": ""}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
    server.shutdown()
    assert proc.returncode == 0, proc.stderr.decode()[-1000:]
    assert [p for p, _ in received] == ["/v1/traces"]
    assert b"pools.reconcile" in received[0][1] and b"r1-platform" in received[0][1]
