"""The ``%fusion`` / ``%%fusion`` magic: one IPython magic, line and cell, with sub-commands.

``%load_ext fusionkit`` registers it. The magic is a thin parser over the Python API: each
sub-command lives in :mod:`fusionkit.notebook.commands`; its settings are traitlets of
:class:`FusionMagics`, listed and set with ``%config FusionMagics`` and defaulted from
``[tool.fusionkit]`` of the nearest ``pyproject.toml`` (from the working folder upwards).

In a notebook (IPython syntax, not a doctest)::

    %load_ext fusionkit
    %fusion connect
    %fusion serve ctr-api --model ctr
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from traitlets import Float, Int, TraitError, Unicode, observe, validate

from fusionkit.errors import FusionError, NotConnectedError
from fusionkit.notebook import live
from fusionkit.notebook.commands import COMMANDS, find, overview
from fusionkit.notebook.parsing import FusionUsageError, parse, split
from fusionkit.notebook.parsing import publish_every as _publish_every

HELP_FLAGS = ("-h", "--help")


@magics_class
class FusionMagics(Magics):
    """``%fusion`` and ``%%fusion``: define, run and watch the pipeline's stages."""

    address = Unicode(None, allow_none=True, config=True,
                      help="Ray address %fusion connect joins (auto, ray://host:10001); "
                           "None starts a local Ray.")
    rate = Float(5000.0, config=True,
                 help="Events per second of synthetic and replayed sources when --rate is "
                      "not given (0: as fast as taken).")
    batch_size = Int(500, config=True, help="Events per batch of a stream stage (--batch).")
    publish_every = Unicode("1s", config=True,
                            help="When train stages publish a version: a duration (1s, 500ms) "
                                 "or a number of events (1000).")
    serve_port = Int(8000, config=True,
                     help="HTTP port of serve stages on 127.0.0.1 (0: the port Ray Serve uses "
                          "already, else a free one).")
    serve_replicas = Int(1, config=True, help="Replicas of a serve stage (--replicas).")
    refresh_rate = Float(2.0, config=True,
                         help="Updates per second of the live status shown by %fusion results.")
    max_live_views = Int(8, config=True,
                         help="How many %fusion results keep updating at once (older ones "
                              "freeze).")
    wait_timeout = Float(120.0, config=True,
                         help="Seconds %fusion wait waits before raising TimeoutError.")

    def __init__(self, shell: Any = None, **kwargs: Any):
        super().__init__(shell=shell, **kwargs)
        live.configure(rate=self.refresh_rate, max_live=self.max_live_views)

    # -- validation of the settings ------------------------------------------------------------
    @validate("rate")
    def _check_rate(self, proposal: dict) -> float:
        if proposal["value"] < 0:
            raise TraitError(f"rate must be a positive number of events per second (or 0 "
                             f"for as fast as taken), not {proposal['value']}")
        return proposal["value"]

    @validate("batch_size", "serve_replicas", "max_live_views")
    def _check_positive(self, proposal: dict) -> int:
        if proposal["value"] < 1:
            raise TraitError(f"{proposal['trait'].name} must be at least 1, "
                             f"not {proposal['value']}")
        return proposal["value"]

    @validate("serve_port")
    def _check_port(self, proposal: dict) -> int:
        if not 0 <= proposal["value"] <= 65535:
            raise TraitError(f"serve_port must be 0 (auto) or a port up to 65535, "
                             f"not {proposal['value']}")
        return proposal["value"]

    @validate("publish_every")
    def _check_publish(self, proposal: dict) -> str:
        try:
            _publish_every(proposal["value"])
        except Exception as exc:
            raise TraitError(f"publish_every {exc}") from None
        return proposal["value"]

    @validate("refresh_rate", "wait_timeout")
    def _check_positive_float(self, proposal: dict) -> float:
        name, value = proposal["trait"].name, proposal["value"]
        if not value > 0:
            raise TraitError(f"{name} must be positive, not {value}")
        if name == "refresh_rate" and value > 20:
            raise TraitError(f"refresh_rate is in updates per second, at most 20, not {value}")
        return value

    @observe("refresh_rate", "max_live_views")
    def _apply_live(self, change: dict) -> None:
        live.configure(rate=self.refresh_rate, max_live=self.max_live_views)

    # -- the magic -------------------------------------------------------------------------------
    @line_magic
    @cell_magic
    def fusion(self, line: str, cell: str | None = None) -> Any:
        """(replaced below by the full help: see ``overview()``)"""
        words = split(line)
        if not words or words[0] in ("help", *HELP_FLAGS):
            return COMMANDS["help"].run(self, parse(COMMANDS["help"].run,
                                                    " ".join(words[1:2]), "%fusion help"),
                                        None)
        cmd = find(words[0])
        magic = "%%fusion" if cell is not None else "%fusion"
        rest = line.strip()[len(words[0]):]
        if any(w in HELP_FLAGS for w in words[1:]):
            return COMMANDS["help"].run(self, parse(COMMANDS["help"].run, cmd.name, ""), None)
        if cell is not None and cell.strip() and not cmd.cell:
            raise FusionUsageError(f"%fusion {cmd.name} takes no cell body: write it as a line "
                                   f"magic (%fusion {cmd.name} ...) and put the code in a cell "
                                   f"of its own")
        args = parse(cmd.run, rest, f"{magic} {cmd.name}")
        if cmd.connected:
            _require_connection()
        try:
            return cmd.run(self, args, cell)
        except FusionError as exc:
            if not hasattr(exc, "_render_traceback_"):  # a plain message says it all
                exc._render_traceback_ = lambda e=exc: [f"{type(e).__name__}: {e}"]
            raise


FusionMagics.fusion.__doc__ = overview()


def _require_connection() -> None:
    from fusionkit.connect import connection

    try:
        connection()
    except NotConnectedError:
        err = NotConnectedError("not connected: run %fusion connect first "
                                "(or fusionkit.connect())")
        err._render_traceback_ = lambda: [f"NotConnectedError: {err}"]
        raise err from None


# -- settings from pyproject.toml ----------------------------------------------------------------

def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest ``pyproject.toml`` from ``start`` (the working folder) upwards."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def project_settings(path: Path | None) -> dict[str, Any]:
    """``[tool.fusionkit]`` of a pyproject.toml (an empty dict if there is none)."""
    if path is None:
        return {}
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            return {}
    with open(path, "rb") as f:
        data = tomllib.load(f)
    return dict(data.get("tool", {}).get("fusionkit", {}))


def apply_settings(magics: FusionMagics, settings: dict[str, Any], where: str) -> None:
    """Set traits from ``settings``; a bad value is an error naming the file, an unknown key
    a warning (other fusionkit tools may read the same table)."""
    from fusionkit._suggest import did_you_mean
    from fusionkit.notebook.parsing import HINT

    traits = magics.class_traits(config=True)
    for key, value in settings.items():
        name = key.replace("-", "_")
        if name not in traits:
            warnings.warn(f"{where}: [tool.fusionkit] {key} is not a FusionMagics setting"
                          f"{did_you_mean(name, traits, HINT)}", stacklevel=2)
            continue
        try:
            setattr(magics, name, value)
        except TraitError as exc:
            raise FusionUsageError(f"{where}: [tool.fusionkit] {key} = {value!r}: "
                                   f"{exc}") from None


def load_ipython_extension(ipython: Any) -> FusionMagics:
    """``%load_ext fusionkit``: register the magic and make its settings configurable."""
    ipython.configurables[:] = [c for c in ipython.configurables
                                if type(c).__name__ != "FusionMagics"]  # %reload_ext
    import ipywidgets  # noqa: F401  (imported now, so the first result displays at once)

    magics = FusionMagics(shell=ipython)  # Magics adds itself to shell.configurables
    path = find_pyproject()
    apply_settings(magics, project_settings(path), str(path))
    if ipython.config.get("FusionMagics"):  # explicit IPython config wins over the project's
        magics.update_config(ipython.config)
    ipython.register_magics(magics)
    return magics
