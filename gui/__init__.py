"""unimoe_audio.gui: the desktop panel (PySide6), speaking to the daemon only through the client."""
from .qtcompat import guard_none_refcount

guard_none_refcount()
