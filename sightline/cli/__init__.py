"""The ``sightline`` command: one click module per noun, imported only when used.

Heavy libraries (torch, feast, xgboost) are imported inside commands, so
``sightline --help`` answers in well under a second.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

import click

from sightline.settings import Settings, SettingsError, load_settings

# noun -> module defining a click command or group named ``cli``
_COMMANDS: dict[str, tuple[str, str]] = {
    "stack": ("sightline.cli.stack", "Start, stop and inspect the local Kafka broker and Feast repo."),
    "demo": ("sightline.cli.demo", "Run the whole story on the embedded defaults."),
    "campaigns": ("sightline.cli.campaigns", "Advertisers, campaigns, creatives, products; delivery reports."),
    "simulate": ("sightline.cli.simulate", "The synthetic world, traffic and responder with known ground truth."),
    "ingest": ("sightline.cli.ingest", "Consume context, consent and feedback from Kafka into Feast."),
    "train": ("sightline.cli.train", "Train a ranking model (TorchRec or XGBoost) and register it."),
    "models": ("sightline.cli.models", "List, show and promote registered models."),
    "serve": ("sightline.cli.serve", "Run the gRPC recommendation and admin server."),
    "experiments": ("sightline.cli.experiments", "Define, run and analyse A/B experiments."),
    "privacy": ("sightline.cli.privacy", "Erase a user, purge expired data, manage API keys."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n, (mod, _) in _COMMANDS.items() if importlib.util.find_spec(mod) is not None)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        module_name, help_text = _COMMANDS[name]
        if importlib.util.find_spec(module_name) is None:
            return None
        if ctx.resilient_parsing or "--help" in sys.argv and sys.argv[-1] == "--help" and len(sys.argv) <= 2:
            # `sightline --help` lists commands without importing them.
            return click.Command(name, help=help_text, short_help=help_text)
        command = importlib.import_module(module_name).cli
        command.short_help = command.short_help or help_text
        return command


def get_settings(ctx: click.Context) -> Settings:
    """The settings object the root command built; subcommands call this."""
    return ctx.find_root().obj["settings"]


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), envvar="SIGHTLINE_CONFIG",
              help="TOML settings file (default: none; SIGHTLINE_* variables override it).")
@click.option("--profile", type=click.Choice(["local", "prod"]), default=None,
              help="Settings profile (default: local, or SIGHTLINE_PROFILE).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where local services keep their data (default: ./var, or SIGHTLINE_DATA_DIR).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def main(ctx: click.Context, config: Path | None, profile: str | None, data_dir: Path | None, verbose: int) -> None:
    """Sightline: contextual ads and shopping suggestions for AI assistants.

    Start with `sightline stack up`, then `sightline demo`. Every command has --help.
    """
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if verbose == 0:
        # Library chatter that says nothing actionable to an operator; -v shows it again.
        import warnings

        logging.getLogger("kafka").setLevel(logging.ERROR)
        logging.getLogger("torchrec").setLevel(logging.ERROR)
        for module in ("fbgemm_gpu", "torch", "torchrec", "feast"):
            warnings.filterwarnings("ignore", module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    overrides: dict = {}
    if profile:
        overrides["profile"] = profile
    if data_dir:
        overrides["data_dir"] = data_dir
    try:
        settings = load_settings(config, **overrides)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    ctx.obj = {"settings": settings}
