"""The tasks: one module each (:mod:`.speech`, :mod:`.music`, :mod:`.video_score`), read through the
registry (:mod:`.registry`). Modules named in ``UNIMOE_AUDIO_TASKS`` are imported too, so a task can
live outside this package (docs/architecture.md, "How to add a task")."""
from __future__ import annotations

# the built-in tasks register themselves on import, in this order (OSC addresses, CLI help, panel tabs)
from . import speech  # noqa: F401, I001
from . import music  # noqa: F401, I001
from . import video_score  # noqa: F401, I001
from .registry import (  # noqa: F401 - the registry's API
    PLUGIN_ENV, ModelContext, ProbeContext, TaskDef, all_tasks, find, get, input_fields, load_plugins, names,
    register,
)

load_plugins()
