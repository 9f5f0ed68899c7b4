"""``python -m iotpush.cli``: the ``iotpush`` command."""

from . import main

if __name__ == "__main__":  # pragma: no cover
    main()
