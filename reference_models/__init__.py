"""Reference model specs (YAML) and the weights the project makes itself. Installed as
`microtrain.reference_models`."""

from pathlib import Path

SPEC_DIR = Path(__file__).resolve().parent
NAMES = ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3")
