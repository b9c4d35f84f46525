from . import cli  # noqa: F401  (bench commands are added by the bench helper)
