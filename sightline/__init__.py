"""Sightline's shell: the ``sightline`` CLI, the typed settings and the local stack.

Domain logic lives in the stage packages (streaming, features, models, serving,
campaigns, experiments); this package only wires them to settings and the terminal.
"""

from sightline.settings import Settings, SettingsError, load_settings

__all__ = ["Settings", "SettingsError", "load_settings"]
