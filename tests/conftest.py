"""pytest hooks only; shared helpers live in settings.py (JIT_DISABLED, kernel_settings) and shared.py.

Tests import the *installed* microtrain (tests/ is not a package, so the checkout root is not put on
sys.path): run them with `pytest`, after `pip install -e ".[dev,oracle,images]"` or a plain install.
"""
