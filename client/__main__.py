"""``python -m unimoe_audio.client`` runs the command line (handy in embedded Pythons without the script)."""
import sys

from .cli import main

sys.exit(main())
