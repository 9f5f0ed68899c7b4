"""``python -m iotpush``: the ``iotpush`` command."""

from .cli import main

if __name__ == "__main__":  # pragma: no cover
    main(prog_name="iotpush")
