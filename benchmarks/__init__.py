"""The iotpush benchmark: iotpush vs a bare ASGI app vs the vendor SDK's receiver pattern.

Run ``python benchmarks/run.py --help``; see ``benchmarks/README.md``.
"""
