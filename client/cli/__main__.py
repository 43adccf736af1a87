"""``python -m unimoe_audio.client.cli`` runs the command line too."""
import sys

from . import main

sys.exit(main())
