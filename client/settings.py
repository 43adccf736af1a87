"""Every setting of unimoe-audio, in one table: name, environment variable, default, help.

Resolution order (highest first): explicit overrides passed by code or CLI flags, the environment
(``UNIMOE_AUDIO_<NAME>``), ``config.toml`` in the config folder, the defaults below. Paths default to
the platform's folders (platformdirs); ``UNIMOE_AUDIO_HOME`` moves them all under one folder, which is
what tests and portable installs use.

This module is light on purpose (pydantic, platformdirs): the daemon, the client, the panel and DAW
scripts all read the same table.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

APP_NAME = "unimoe-audio"
ENV_PREFIX = "UNIMOE_AUDIO_"
DEFAULT_MODEL = "UniMoE-Audio-preview"
#: Ports used when listening beyond loopback and the port setting is 0 (fixed, so a firewall can be set:
#: TCP 9138-9140; OSC stays on UDP 9137). On loopback, 0 keeps picking free ports.
NETWORK_PORTS = {"request": 9138, "control": 9139, "events": 9140}
TINY_MODEL = "tiny"


class Settings(BaseSettings):
    """The settings table. Each field's description is its help text (shown by ``unimoe-audio config``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    # -- folders ---------------------------------------------------------------------------------
    home: Path | None = Field(None, description="Put config, data, cache, logs and runtime files under this one folder.")
    config_dir: Path | None = Field(None, description="Folder holding config.toml.")
    data_dir: Path | None = Field(None, description="Folder for models, voices, outputs and the job database.")
    cache_dir: Path | None = Field(None, description="Folder for caches (downloads in progress, decoded media).")
    log_dir: Path | None = Field(None, description="Folder for the daemon's rotated logs.")
    runtime_dir: Path | None = Field(None, description="Folder for the connection file, pid file and sockets (user-only).")
    models_dir: Path | None = Field(None, description="Folder of installed models (default: <data>/models).")
    voices_dir: Path | None = Field(None, description="Folder of saved voices (default: <data>/voices).")
    output_dir: Path | None = Field(None, description="Where generated audio is written (default: <data>/outputs).")
    allowed_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders the daemon may read media from and write audio to, besides the output folder "
        "(default: the user's home and the temp folder). Comma- or os.pathsep-separated in the environment.",
    )

    # -- model -----------------------------------------------------------------------------------
    model: str = Field(DEFAULT_MODEL, description="Model to serve: a name under the models folder, a path, or 'tiny'.")
    hf_repo: str = Field("foggyforest/UniMoE-Audio-preview", description="Hugging Face repo that 'models pull' downloads.")
    dac: Path | None = Field(None, description="DAC 16 kHz weights (weights_16khz.pth or an HF folder); default: <model>/dac.")
    device: Literal["auto", "cuda", "mps", "cpu"] = Field("auto", description="Device for the model.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weight dtype (auto: bf16 on GPU and on CPUs with avx512_bf16/AMX, else fp32).")
    quant: Literal["none", "int8", "int4"] = Field(
        "none", description="Weight-only quantization of the attention and expert linears: int8 (about half "
        "the bf16 memory) or int4 (about a third). A model imported with --quant loads as stored.")
    memory_budget: float | None = Field(
        None, gt=0, description="Memory in GB the model may use (default: what the device reports free). "
        "Loading refuses, naming what would fit, when the estimate exceeds it.")
    keep_alive: float = Field(300.0, ge=0, description="Seconds an idle model stays loaded; 0 keeps it loaded forever.")
    load_at_start: bool = Field(False, description="Load the model when the daemon starts instead of on first use.")
    max_batch: int = Field(4, ge=1, le=64, description="Most compatible requests (same task, same CFG on/off) generated together; a new one joins the running batch between steps.")
    decode: Literal["auto", "static", "eager"] = Field("auto", description="Decode steps: static (bucketed shapes, CUDA graphs), eager (plain forward), auto (static on CUDA, eager elsewhere).")
    batch_invariant: bool = Field(True, description="A take does not depend on the jobs sharing its batch: a seed repeats it exactly whatever else runs. Off: faster batched decode (bench/bench_invariance.py), but a seeded take may change in its last bits when other jobs join.")

    # -- scale-out -------------------------------------------------------------------------------
    backend: Literal["local", "ray"] = Field(
        "local", description="Where generation runs: 'local' (this daemon's own model) or 'ray' (Ray actors, one per "
        "GPU or CPU slot of a Ray cluster; the daemon keeps the queue, the protocol and the files).")
    ray_address: str = Field(
        "auto", description="Ray cluster to use with backend 'ray': 'auto' (the cluster this machine joined with "
        "'ray start') or HOST:PORT of its head.")
    ray_actors: int = Field(0, ge=0, le=1024, description="Upper bound on engine actors on Ray; 0: one per GPU of "
                            "each live node, or one per ray_actor_cpus CPUs where the cluster has no GPU.")
    ray_actor_cpus: float = Field(1.0, gt=0, description="CPUs each Ray engine actor reserves.")
    ray_namespace: str = Field("unimoe-audio", description="Ray namespace of the engine actors (a restarted daemon "
                               "re-attaches to the actors of its namespace).")
    ray_unavailable_s: float = Field(300.0, ge=0, description="How long queued jobs wait for an unreachable Ray cluster "
                                     "before they fail with backend_unavailable (a connected cluster with no engine "
                                     "actor alive keeps them waiting).")

    # -- network ---------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Interface the daemon listens on. Anything but loopback requires CurveZMQ keys.")
    request_port: int = Field(0, ge=0, le=65535, description="ZeroMQ request (ROUTER) port; 0 picks a free one on loopback, 9138 beyond it.")
    control_port: int = Field(0, ge=0, le=65535, description="ZeroMQ control (ROUTER) port for cancel/shutdown; 0 picks a free one on loopback, 9139 beyond it.")
    events_port: int = Field(0, ge=0, le=65535, description="ZeroMQ event (PUB) port; 0 picks a free one on loopback, 9140 beyond it.")
    osc_port: int = Field(9137, ge=0, le=65535, description="OSC (UDP) port; 0 disables OSC.")
    osc_host: str = Field(
        "127.0.0.1",
        description="Interface the OSC server listens on. OSC is unauthenticated: beyond loopback anyone on the "
        "network can queue jobs, so anything but loopback also needs osc_allow.",
    )
    osc_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Sender addresses (IPs or networks such as 10.0.0.0/24) the OSC server takes requests from when "
        "osc_host is not loopback (loopback senders are always taken). Comma- or space-separated.",
    )
    curve_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Client public keys allowed when listening beyond loopback with CurveZMQ: Z85 keys, or files "
        "holding keys (one per line, # comments; e.g. a client.public copied from a workstation), or folders of "
        "*.public files (comma- or space-separated).",
    )
    remote: str | None = Field(None, description="Connection profile (see 'unimoe-audio remote add') that clients use "
                               "instead of the local daemon; the CLI's --host NAME sets it.")
    max_message_bytes: int = Field(1 << 20, ge=1024, description="Largest request frame the daemon accepts.")
    max_queue: int = Field(64, ge=1, description="Queued jobs beyond this are answered 'busy'.")
    upload_quota_mb: float = Field(
        2048.0, gt=0, description="Media each remote workstation may keep uploaded on this host (reference audio, "
        "videos), in MB; the least recently used uploads make room first.")
    upload_keep_days: float = Field(7.0, gt=0, description="Days an uploaded media file stays on the host after "
                                    "its last use.")

    # -- output ----------------------------------------------------------------------------------
    sample_rate: int = Field(48000, description="Output sample rate in Hz.")
    channels: int = Field(2, ge=1, le=2, description="Output channels (1 mono, 2 stereo).")
    bit_depth: Literal[16, 24, 32] = Field(24, description="Output WAV bit depth (32 = float).")
    loudness_lufs: float | None = Field(-16.0, description="Integrated loudness target in LUFS; empty disables normalization.")
    true_peak_db: float = Field(-1.0, le=0, description="True-peak ceiling in dBTP.")

    # -- misc ------------------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Daemon log level.")

    @field_validator("allowed_roots", mode="before")
    @classmethod
    def _split_paths(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = value.replace(os.pathsep, ",").split(",")
            return [p.strip() for p in parts if p.strip()]
        return value

    @field_validator("curve_allow", "osc_allow", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        # Z85 keys may contain ':' (os.pathsep) but never ',' or spaces.
        if isinstance(value, str):
            return [p for p in value.replace(",", " ").split() if p]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Overrides given in code win, then the environment; the config file comes in as defaults (see load()).
        return (init_settings, env_settings)

    # -- derived folders -------------------------------------------------------------------------
    def _base(self, kind: str) -> Path:
        explicit = getattr(self, f"{kind}_dir")
        if explicit is not None:
            return Path(explicit).expanduser()
        if self.home is not None:
            return Path(self.home).expanduser() / {"runtime": "run", "log": "logs"}.get(kind, kind)
        if kind == "runtime":
            # user_runtime_dir warns and falls back to /tmp when XDG_RUNTIME_DIR is unset; say it ourselves.
            xdg = os.environ.get("XDG_RUNTIME_DIR")
            if sys.platform.startswith("linux") and not xdg:
                return Path(tempfile.gettempdir()) / f"{APP_NAME}-{os.getuid()}"
            return Path(platformdirs.user_runtime_dir(APP_NAME, appauthor=False))
        fn = {
            "config": platformdirs.user_config_dir,
            "data": platformdirs.user_data_dir,
            "cache": platformdirs.user_cache_dir,
            "log": platformdirs.user_log_dir,
        }[kind]
        return Path(fn(APP_NAME, appauthor=False))

    @property
    def config_path(self) -> Path:
        return self._base("config")

    @property
    def data_path(self) -> Path:
        return self._base("data")

    @property
    def cache_path(self) -> Path:
        return self._base("cache")

    @property
    def log_path(self) -> Path:
        return self._base("log")

    @property
    def runtime_path(self) -> Path:
        return self._base("runtime")

    @property
    def models_path(self) -> Path:
        return Path(self.models_dir).expanduser() if self.models_dir else self.data_path / "models"

    @property
    def voices_path(self) -> Path:
        return Path(self.voices_dir).expanduser() if self.voices_dir else self.data_path / "voices"

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir).expanduser() if self.output_dir else self.data_path / "outputs"

    @property
    def queue_db_path(self) -> Path:
        return self.data_path / "jobs.sqlite3"

    @property
    def uploads_path(self) -> Path:
        """Media that remote workstations uploaded (one folder per client key; inside the data folder)."""
        return self.data_path / "uploads"

    @property
    def connection_file(self) -> Path:
        return self.runtime_path / "daemon.json"

    @property
    def pid_file(self) -> Path:
        return self.runtime_path / "daemon.pid"

    @property
    def config_file(self) -> Path:
        return self.config_path / "config.toml"

    def allowed_root_paths(self) -> list[Path]:
        roots = [self.output_path, self.data_path]
        roots += [Path(p).expanduser() for p in self.allowed_roots] or [Path.home(), Path(tempfile.gettempdir())]
        return [r.resolve() for r in roots]

    def is_loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")

    def listen_port(self, which: str) -> int:
        """The port to bind for ``request``, ``control`` or ``events``: the setting, else a fixed default
        beyond loopback (NETWORK_PORTS), else 0 (a free port)."""
        port = int(getattr(self, f"{which}_port"))
        if port or self.is_loopback():
            return port
        return NETWORK_PORTS[which]

    @property
    def remotes_path(self) -> Path:
        """Installed connection profiles ('remote add'), one NAME.json each (user-only)."""
        return self.config_path / "remotes"


def _config_file_values(overrides: dict[str, Any]) -> dict[str, Any]:
    probe = Settings(**{k: v for k, v in overrides.items() if k in ("home", "config_dir")})
    path = probe.config_file
    if not path.is_file():
        return {}
    with path.open("rb") as fh:
        raw = tomllib.load(fh)
    unknown = sorted(set(raw) - set(Settings.model_fields))
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) {', '.join(unknown)}; see 'unimoe-audio config'")
    return raw


def load_settings(**overrides: Any) -> Settings:
    """Settings from overrides > environment > config.toml > defaults."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    from_file = _config_file_values(overrides)
    env_names = {name for name in Settings.model_fields if f"{ENV_PREFIX}{name.upper()}" in os.environ}
    merged = {k: v for k, v in from_file.items() if k not in env_names}
    merged.update(overrides)
    return Settings(**merged)


def settings_table() -> list[dict[str, str]]:
    """Rows of (name, environment variable, default, help) for docs and `unimoe-audio config`."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        rows.append(
            {
                "name": name,
                "env": f"{ENV_PREFIX}{name.upper()}",
                "default": "" if default is None else str(default),
                "help": field.description or "",
            }
        )
    return rows
