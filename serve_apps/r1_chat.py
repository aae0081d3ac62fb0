"""The OpenAI-compatible R1 app for Ray Serve, two ways in:

serve run serve_apps.r1_chat:app                    # settings from R1P_* / R1P_CONFIG
import_path: serve_apps.r1_chat:build_app_from_args  # settings as the application's args
"""

from typing import Any

from r1platform.serving.app import build_app_from_args as build_app_from_args


def __getattr__(name: str) -> Any:
    # `app` is built on first access, not at import: Serve imports this module for the builder
    # route too, where building the env-configured app would be wasted work or an error.
    if name == "app":
        from r1platform.config import load_settings
        from r1platform.serving.app import build_app

        built = globals()["app"] = build_app(load_settings())
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
