"""Every setting of flywheel, read once from the environment.

Each setting is an environment variable with a documented default (see the README's
"Settings" table). :func:`load` reads them all and returns a frozen :class:`Settings`;
nothing else in the project reads the environment for configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

PII_MODES = ("redact", "flag", "off")
STORAGE_MODES = ("duckdb", "ducklake")


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """The configuration of one flywheel home.

    Attributes mirror the environment variables ``FLYWHEEL_<NAME>`` (upper case).
    """

    home: Path = Path("data")
    pii_mode: str = "redact"
    max_rejected_share: float = 0.05
    max_ts_skew_days: int = 3650  # a record whose ts is more days than this before or after its day: rejected
    start_date: str = "2025-01-01"
    nightly_cron: str = "0 2 * * *"
    timezone: str = "UTC"
    storage: str = "duckdb"
    duckdb_threads: int = 0  # 0: DuckDB's default (all cores)
    duckdb_memory_limit: str = ""  # "": DuckDB's default (80% of RAM)
    # Crashes and concurrent access (#13).
    inbox_settle_seconds: float = 3.0  # an inbox file is imported once unchanged this long
    busy_timeout_seconds: float = 10.0  # how long status/report wait for a writing process
    crash_at: str = ""  # tests only: a point of flywheel/crashpoints.py where the process dies
    # Classifiers (#5).
    min_labels_per_class: int = 50  # fewer consensus labels of either class: the task is not trained
    gate_confidence: float = 0.95  # a candidate is kept out only when worse at this confidence
    scoring_batch_rows: int = 100_000  # logs scored per Arrow batch
    scoring_threads: int = 0  # threads scoring a batch (0: one per core)
    classifier_min_auroc: float = 0.65  # trust floor: 95% lower bound of the held-out AUROC (per task and source)
    classifier_min_trust_rows: int = 50  # fewer held-out rows: no verdict of its own (see classifiers/trust.py)
    # Storage mode "ducklake": where the lake's catalog and its Parquet files live.
    lake_catalog: str = ""  # "": SQLite file HOME/lake/catalog.sqlite; or "postgres:dbname=... host=..."
    lake_data_path: str = ""  # "": HOME/lake/data/; or s3://bucket/prefix/
    # LLM endpoint (#6): OPENAI_BASE_URL / OPENAI_API_KEY (no FLYWHEEL_ prefix, see ENV_NAMES).
    llm_base_url: str = ""  # "": no endpoint, LLM assets are skipped
    llm_api_key: str = field(default="", repr=False)  # a secret: never printed
    llm_model: str = "gpt-4o-mini-2024-07-18"
    llm_timeout: float = 60.0  # seconds per HTTP attempt
    llm_max_retries: int = 3  # on 408/409/429/5xx/timeouts, exponential backoff
    llm_concurrency: int = 4  # parallel requests
    llm_max_calls: int = 2000  # per-run budget: paid requests
    llm_max_tokens: int = 2_000_000  # per-run budget: prompt + completion tokens
    llm_prompt_price_per_1k: float = 0.00015  # USD per 1k prompt tokens (cost estimate)
    llm_completion_price_per_1k: float = 0.0006  # USD per 1k completion tokens
    # LLM judges (#6).
    judge_min_kappa: float = 0.4  # below: the judge prompt version is not trusted
    judge_min_items: int = 20  # fewer held-out items: not trusted
    judge_holdout_size: int = 200  # consensus items per criterion held out for alignment
    judge_few_shot: int = 4  # few-shot examples per judge prompt (half positive)
    judge_sample_size: int = 200  # recent logs judged per run (besides the held-out set)
    # Prompts and few-shot refresh (#6).
    few_shot_k: int = 4  # few-shot examples per prompt
    few_shot_lambda: float = 0.7  # MMR trade-off: 1 = most typical, 0 = most diverse
    prompt_eval_size: int = 60  # logs in each prompt's fixed evaluation set
    prompt_eval_alpha: float = 0.05  # significance level for promoting a candidate prompt

    # Derived locations inside the home.
    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def annotations_inbox(self) -> Path:
        return self.home / "annotations" / "inbox"

    @property
    def annotations_outbox(self) -> Path:
        return self.home / "annotations" / "outbox"

    @property
    def prompts_dir(self) -> Path:
        return self.home / "prompts"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def database_path(self) -> Path:
        return self.home / "flywheel.duckdb"

    @property
    def lake_catalog_uri(self) -> str:
        """Return the DuckLake catalog (``ducklake:`` URI without the prefix) of the lake mode."""
        return self.lake_catalog or f"sqlite:{self.home / 'lake' / 'catalog.sqlite'}"

    @property
    def lake_data_uri(self) -> str:
        """Return where the lake mode writes its Parquet files (a folder or an object-store prefix)."""
        return self.lake_data_path or f"{self.home / 'lake' / 'data'}/"

    def source_name(self, path: Path) -> str:
        """Return how a file is named in the tables: relative to the home when inside it."""
        try:
            return path.resolve().relative_to(self.home.resolve()).as_posix()
        except ValueError:
            return str(path)

    def landing_for(self, day: str) -> Path:
        """Return the landing folder of one day (``YYYY-MM-DD``)."""
        return self.landing_dir / day

    def replace(self, **changes) -> "Settings":
        """Return a copy with some settings changed (values are validated)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return _validated(Settings(**values))


ENV_PREFIX = "FLYWHEEL_"

# Settings read from a variable other than FLYWHEEL_<NAME>: the OpenAI client's own names.
ENV_NAMES = {"llm_base_url": "OPENAI_BASE_URL", "llm_api_key": "OPENAI_API_KEY"}


def _validated(settings: Settings) -> Settings:
    if settings.pii_mode not in PII_MODES:
        raise SettingsError(
            f"FLYWHEEL_PII_MODE={settings.pii_mode!r} is not one of {', '.join(PII_MODES)}"
        )
    if settings.storage not in STORAGE_MODES:
        raise SettingsError(
            f"FLYWHEEL_STORAGE={settings.storage!r} is not one of {', '.join(STORAGE_MODES)}"
        )
    if settings.few_shot_k < 0 or settings.prompt_eval_size < 1:
        raise SettingsError(
            f"FLYWHEEL_FEW_SHOT_K={settings.few_shot_k} must be >= 0 and "
            f"FLYWHEEL_PROMPT_EVAL_SIZE={settings.prompt_eval_size} >= 1"
        )
    if not 0.0 <= settings.few_shot_lambda <= 1.0:
        raise SettingsError(f"FLYWHEEL_FEW_SHOT_LAMBDA={settings.few_shot_lambda} must be between 0 and 1")
    if not 0.0 < settings.prompt_eval_alpha < 1.0:
        raise SettingsError(f"FLYWHEEL_PROMPT_EVAL_ALPHA={settings.prompt_eval_alpha} must be between 0 and 1")
    if settings.max_ts_skew_days < 0:
        raise SettingsError(f"FLYWHEEL_MAX_TS_SKEW_DAYS={settings.max_ts_skew_days} must be at least 0")
    if not 0.0 <= settings.max_rejected_share <= 1.0:
        raise SettingsError(
            f"FLYWHEEL_MAX_REJECTED_SHARE={settings.max_rejected_share} must be between 0 and 1"
        )
    if settings.crash_at:
        from flywheel.crashpoints import POINTS

        if settings.crash_at not in POINTS:
            raise SettingsError(f"FLYWHEEL_CRASH_AT={settings.crash_at!r} is not one of {', '.join(POINTS)}")
    for name in ("inbox_settle_seconds", "busy_timeout_seconds"):
        if getattr(settings, name) < 0:
            raise SettingsError(f"FLYWHEEL_{name.upper()}={getattr(settings, name)} must be at least 0")
    if settings.llm_timeout <= 0:
        raise SettingsError(f"FLYWHEEL_LLM_TIMEOUT={settings.llm_timeout} must be above 0 seconds")
    for name, low in (("llm_concurrency", 1), ("llm_max_retries", 0), ("llm_max_calls", 0),
                      ("llm_max_tokens", 0), ("judge_holdout_size", 1), ("judge_few_shot", 0)):
        if getattr(settings, name) < low:
            raise SettingsError(f"FLYWHEEL_{name.upper()}={getattr(settings, name)} must be at least {low}")
    if not -1.0 <= settings.judge_min_kappa <= 1.0:
        raise SettingsError(f"FLYWHEEL_JUDGE_MIN_KAPPA={settings.judge_min_kappa} must be between -1 and 1")
    for name, low in (("min_labels_per_class", 2), ("scoring_batch_rows", 1), ("scoring_threads", 0)):
        if getattr(settings, name) < low:
            raise SettingsError(f"FLYWHEEL_{name.upper()}={getattr(settings, name)} must be at least {low}")
    if not 0.0 <= settings.classifier_min_auroc <= 1.0:
        raise SettingsError(f"FLYWHEEL_CLASSIFIER_MIN_AUROC={settings.classifier_min_auroc} must be between 0 and 1")
    if settings.classifier_min_trust_rows < 1:
        raise SettingsError(
            f"FLYWHEEL_CLASSIFIER_MIN_TRUST_ROWS={settings.classifier_min_trust_rows} must be at least 1")
    if not 0.5 <= settings.gate_confidence < 1.0:
        raise SettingsError(f"FLYWHEEL_GATE_CONFIDENCE={settings.gate_confidence} must be in [0.5, 1)")
    return settings


def load(environ: dict[str, str] | None = None) -> Settings:
    """Return the settings read from ``environ`` (default: the process environment).

    ``FLYWHEEL_HOME`` is made absolute so that every process of a run (the Dagster
    webserver, daemon and run workers) resolves it to the same folder.
    """
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for f in fields(Settings):
        env_name = ENV_NAMES.get(f.name, ENV_PREFIX + f.name.upper())
        raw = env.get(env_name)
        if raw is None or raw == "":
            continue
        kind = type(f.default)
        try:
            if f.name == "home":
                values[f.name] = Path(raw)
            elif isinstance(f.default, int):
                values[f.name] = int(raw)
            elif isinstance(f.default, float):
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        except ValueError as exc:
            raise SettingsError(
                f"{env_name}={raw!r}: expected {kind.__name__} ({exc})"
            ) from None
    settings = Settings(**values)
    return settings.replace(home=settings.home.expanduser().resolve())
