"""Benchmarks of kvis against ParaView (pvbatch + ffmpeg) and a PyVista movie loop.

Run with ``python -m bench.run`` (or ``make bench``); ``bench/README.md`` states
the method and ``bench/RESULTS.md`` contains the measured numbers.
"""
