"""Command-line face of the toolkit: ``asr <command> ...``. Each sub-command lives in
its own module exposing ``register(subparsers)``; logic stays in the library."""
