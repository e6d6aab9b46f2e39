"""The resource that hands assets the flywheel settings of this deployment."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import dagster as dg

from flywheel import settings as flywheel_settings
from flywheel import store

# Read once, when the code location loads: what the definitions themselves need
# (partitions, schedule). Assets get theirs from FlywheelResource at run time.
SETTINGS = flywheel_settings.load()

# DuckDB allows one writing process per file: every asset that writes to it runs in
# this pool, whose limit is 1 (dagster.yaml), so parallel steps wait instead of failing.
DUCKDB_POOL = "flywheel_duckdb"

# A step that fails for a reason that may clear (a file lock held by a process outside
# Dagster, a full disk) is tried again twice, 15 s then 30 s later, before the run fails.
# Other errors fail the step at once: see `transient_retries`.
RETRY = dg.RetryPolicy(max_retries=2, delay=15, backoff=dg.Backoff.EXPONENTIAL)


def transient_retries(fn: Callable) -> Callable:
    """Wrap an asset's function so that only transient errors (:func:`flywheel.store.is_transient`)
    go through the retry policy; any other error fails the step at once, with its cause as
    the failure's description (a bug or bad input fails the same way every time)."""

    def permanent(exc: Exception) -> dg.Failure:
        text = " ".join(str(exc).split()) or "(no message)"
        return dg.Failure(description=f"{type(exc).__name__}: {text}", allow_retries=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except dg.Failure:
                raise
            except Exception as exc:
                if store.is_transient(exc):
                    raise
                raise permanent(exc) from exc

        return generator

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except dg.Failure:
            raise
        except Exception as exc:
            if store.is_transient(exc):
                raise
            raise permanent(exc) from exc

    return call


class FlywheelResource(dg.ConfigurableResource):
    """Where the flywheel home is and how it behaves.

    Fields left unset come from the FLYWHEEL_* environment variables (see the README's
    Settings table); set them in the launchpad or in code to override one run.
    """

    home: Optional[str] = None
    pii_mode: Optional[str] = None
    max_rejected_share: Optional[float] = None

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Tag the run with the process that runs it (unless the CLI did): a run killed
        while it holds the DuckDB pool slot is then recognized, and its slot freed."""
        from jobs import pool

        run = context.dagster_run
        if context.instance is not None and run is not None and pool.PID_TAG not in run.tags:
            context.instance.add_run_tags(run.run_id, pool.run_tags())

    def settings(self) -> flywheel_settings.Settings:
        """Return the :class:`flywheel.settings.Settings` this resource stands for."""
        overrides = {
            name: value
            for name, value in (
                ("home", Path(self.home).expanduser().resolve() if self.home else None),
                ("pii_mode", self.pii_mode),
                ("max_rejected_share", self.max_rejected_share),
            )
            if value is not None
        }
        settings = flywheel_settings.load().replace(**overrides)
        if not settings.home.is_dir():
            # A typo in FLYWHEEL_HOME must not start a new, empty home (`flywheel init` makes one).
            raise dg.Failure(
                description=f"FLYWHEEL_HOME={settings.home} does not exist (a typo?); create a new home with "
                "`flywheel init` or `flywheel demo`",
                allow_retries=False,
            )
        return settings


class LLMResource(dg.ConfigurableResource):
    """The OpenAI-compatible endpoint the judges and prompt evaluations talk to.

    Fields left unset come from OPENAI_BASE_URL, OPENAI_API_KEY and the FLYWHEEL_LLM_*
    variables, read at run time (see the README's Settings table). With no base URL,
    :meth:`client` raises :class:`flywheel.llm.NoEndpoint` and the LLM assets skip.
    """

    base_url: Optional[str] = None
    api_key: Optional[str] = None  # prefer the OPENAI_API_KEY environment variable
    model: Optional[str] = None
    timeout: Optional[float] = None
    max_retries: Optional[int] = None
    concurrency: Optional[int] = None
    max_calls: Optional[int] = None
    max_tokens: Optional[int] = None

    def apply(self, settings: flywheel_settings.Settings) -> flywheel_settings.Settings:
        """Return ``settings`` with the fields set on this resource in place of theirs."""
        overrides = {
            f"llm_{name}": value
            for name, value in (
                ("base_url", self.base_url), ("api_key", self.api_key), ("model", self.model),
                ("timeout", self.timeout), ("max_retries", self.max_retries),
                ("concurrency", self.concurrency), ("max_calls", self.max_calls),
                ("max_tokens", self.max_tokens),
            )
            if value is not None
        }
        return settings.replace(**overrides)

    def client(self, settings: flywheel_settings.Settings, con, *, run_id: Optional[str] = None):
        """Return a :class:`flywheel.llm.LLMClient` for one run (raises NoEndpoint)."""
        from flywheel.llm import LLMClient

        return LLMClient.from_settings(self.apply(settings), con, run_id=run_id)
