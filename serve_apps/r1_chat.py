"""`serve run serve_apps.r1_chat:app`: the OpenAI-compatible R1 app, built from R1P_* settings."""

from r1platform.config import load_settings
from r1platform.serving.app import build_app

app = build_app(load_settings())
